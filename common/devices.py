"""Devices and numerics: mixed precision and XLA options shared by the scripts.

* ``add_precision_arguments(parser, jit_compile=True)``: ``--mixed-precision {off,float16,bfloat16}``
  (default off = the originals' float32) and, for train scripts, ``--jit-compile`` (XLA, default off).
* ``set_precision(name)``: sets Keras's global dtype policy before a model is built or loaded.
"""

PRECISIONS = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def add_precision_arguments(parser, jit_compile=True):
    """``--mixed-precision`` (and ``--jit-compile`` when ``jit_compile``) on ``parser``."""
    parser.add_argument("--mixed-precision", choices=tuple(PRECISIONS), default="off",
                        help="compute in float16 or bfloat16 with float32 weights (Keras mixed precision; "
                             "GPUs with tensor cores) (default: %(default)s = float32, as the original)")
    if jit_compile:
        parser.add_argument("--jit-compile", action="store_true",
                            help="compile the training step with XLA (default: off, as the original)")


def set_precision(name="off"):
    """Set Keras's global dtype policy for ``--mixed-precision name``; returns the policy name.

    Call it before the model is built or loaded: layers take the policy in force when they are created.
    """
    import keras

    from common.errors import OptionError

    if name not in PRECISIONS:
        raise OptionError(f"--mixed-precision: unknown value {name!r}; choose one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(PRECISIONS[name])
    return PRECISIONS[name]
