"""Optimizers with the exact update rules of the original (PyTorch) implementations.

``AdamL2`` is torch ``optim.Adam(params, lr, betas, eps, weight_decay)``: the weight decay is a *coupled* L2
term added to the gradient before the moment updates (``g <- g + wd·θ``), applied to every parameter it
is given (biases and BatchNorm gamma/beta included), and epsilon is added to the bias-corrected
``sqrt(v_hat)``. Keras' ``Adam(weight_decay=...)`` is the decoupled AdamW rule and adds epsilon to the
uncorrected ``sqrt(v)``, so neither matches. Used by the retinal-edema solution
(ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation ``train.py``: lr 1e-3, betas (0.9, 0.99), eps 1e-8,
weight_decay 1e-4; see shared/specs/retinal_edema.md section 4).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="common")
class AdamL2(keras.optimizers.Adam):
    """Adam with coupled L2 weight decay, step for step as torch ``Adam(weight_decay=l2)``.

    Per parameter θ with gradient g at step t (1-based)::

        g  = g + l2·θ
        m  = β1·m + (1-β1)·g
        v  = β2·v + (1-β2)·g²
        θ  = θ - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε)

    Args:
        learning_rate: float, schedule or callable (Keras semantics).
        beta_1, beta_2, epsilon: torch ``betas`` and ``eps`` (defaults: the edema solution's 0.9, 0.99, 1e-8).
        l2: torch's ``weight_decay`` (coupled L2 coefficient; 1e-4 in the edema solution). Equivalent to
            adding ``l2/2·Σθ²`` over all trained weights to the loss.
        **kwargs: other ``keras.optimizers.Optimizer`` arguments (clipnorm, ...). Keras' own decoupled
            ``weight_decay`` is still available but is not part of the torch rule; ``amsgrad`` is not
            supported.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.99, epsilon=1e-8, l2=1e-4, name="adam_l2",
                 **kwargs):
        if kwargs.pop("amsgrad", False):
            raise ValueError("AdamL2 does not implement amsgrad")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=False, name=name, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        if self.l2:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.l2, dtype), variable))
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        bias_correction_1 = 1.0 - ops.power(beta_1, step)
        bias_correction_2 = 1.0 - ops.power(beta_2, step)

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign(m, ops.add(ops.multiply(beta_1, m), ops.multiply(1.0 - beta_1, gradient)))
        self.assign(v, ops.add(ops.multiply(beta_2, v), ops.multiply(1.0 - beta_2, ops.square(gradient))))
        denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(bias_correction_2)), ops.cast(self.epsilon, dtype))
        self.assign_sub(variable, ops.multiply(lr / bias_correction_1, ops.divide(m, denominator)))

    def get_config(self):
        config = super().get_config()
        config.pop("amsgrad", None)
        config["l2"] = self.l2
        return config
