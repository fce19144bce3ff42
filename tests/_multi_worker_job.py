"""One worker of the two-worker test in test_distribute.py: trains a tiny model, saves its final weights."""

import json
import os
import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from common.training import fit, get_strategy  # noqa: E402


def main(out_dir, run_dir):
    strategy = get_strategy("multi_worker")
    import keras

    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.float32)
    model, _ = fit(model, (x, y), run_dir=run_dir, epochs=2, batch_size=8, seed=0, verbose=0, tensorboard=False)
    weights = np.concatenate([w.ravel() for w in model.get_weights()])
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    np.save(Path(out_dir) / f"weights_{index}.npy", weights)
    print("steps", int(model.optimizer.iterations.numpy()), "replicas", strategy.num_replicas_in_sync)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
