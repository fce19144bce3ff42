"""One worker of the two-worker test in test_distribute.py: trains a tiny model, saves its initial and final
weights. With ``single`` as the third argument it is the test's reference instead: one process, no cluster,
the same data, batch size and seed, starting from worker 0's initial weights."""

import json
import os
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from common.training import fit, get_strategy  # noqa: E402


def _flat(weights):
    return np.concatenate([w.ravel() for w in weights])


def main(out_dir, run_dir, mode="worker"):
    single = mode == "single"
    strategy = get_strategy("default" if single else "multi_worker")
    import keras

    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
        # plain SGD, whose step is proportional to the gradient (Adam's is not: a doubled gradient would hide)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    if single:
        init = np.load(Path(out_dir) / "init_0.npy")
        shapes = [w.shape for w in model.get_weights()]
        bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
        model.set_weights([init[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes)])
        name = "single"
    else:
        name = str(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
        np.save(Path(out_dir) / f"init_{name}.npy", _flat(model.get_weights()))
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    model, _ = fit(model, (x, y), run_dir=run_dir, epochs=2, batch_size=8, seed=0, verbose=0, tensorboard=False)
    np.save(Path(out_dir) / f"weights_{name}.npy", _flat(model.get_weights()))
    print("steps", int(model.optimizer.iterations.numpy()), "replicas", strategy.num_replicas_in_sync)


if __name__ == "__main__":
    main(*sys.argv[1:])
