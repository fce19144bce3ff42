"""Defaults a silent change would not trip elsewhere, pinned to the specs (issue 26 item 3).

Every expected value is written here from the text of ``../shared/specs/*.md`` (quoted beside it), never read
from the module under test. Where a training script is checked, ``keras.Model.fit`` is replaced by a spy that
records what ``common.training.fit`` hands to Keras (the dataset, the callbacks) and stops the run there, so
no training step is taken.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from common.cli import REPO_ROOT


class _Stop(Exception):
    """Raised by the spy instead of training."""


@pytest.fixture
def fit_calls(monkeypatch):
    calls = []

    def spy(self, x=None, *args, **kwargs):
        calls.append(dict(kwargs, data=x))
        raise _Stop

    monkeypatch.setattr(keras.Model, "fit", spy)
    return calls


def _checkpoint(call):
    from common.training import _RunCheckpoint

    return next(c for c in call["callbacks"] if isinstance(c, _RunCheckpoint))


def _shuffled(call):
    """Whether the training data handed to Keras reshuffles every epoch (common.training.array_dataset)."""
    order = call["data"].epoch_order
    return order.shuffle and not np.array_equal(order.order(0), np.arange(order.n))


def _frames(n, rows, cols, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, rows, cols) + ((channels,) if channels else ())
    return rng.integers(0, 256, shape).astype(np.uint8)


def test_nerve_shuffles_and_checkpoints_on_val_loss(tmp_path, monkeypatch, fit_calls):
    # spec ultrasound_nerve.md: "batch_size=32, 20 epochs, shuffle=True"; "ModelCheckpoint('weights.h5',
    # monitor='val_loss', save_best_only=True)"
    from ultrasound_nerve import train

    imgs, masks = _frames(40, 420, 580), (_frames(40, 420, 580, seed=1) > 200).astype(np.uint8) * 255
    monkeypatch.setattr(train, "load_train_data", lambda work_dir: (imgs, masks))
    with pytest.raises(_Stop):
        train.train(tmp_path, tmp_path / "run", img_size=32, verbose=0)
    call = fit_calls[0]
    assert _shuffled(call) and (_checkpoint(call).monitor, _checkpoint(call).mode) == ("val_loss", "min")


def test_nerve_reloads_the_best_checkpoint_after_training(tmp_path, monkeypatch):
    # spec ultrasound_nerve.md: "After training, the script reloads the **best** checkpoint"
    from ultrasound_nerve import train

    imgs, masks = _frames(10, 420, 580), (_frames(10, 420, 580, seed=1) > 200).astype(np.uint8) * 255
    monkeypatch.setattr(train, "load_train_data", lambda work_dir: (imgs, masks))

    def fake_fit(model, train_data, validation, *, run_dir, **kwargs):  # best and last differ
        best = keras.models.clone_model(model)
        best.set_weights([np.full_like(w, 0.25) for w in model.get_weights()])
        best.save(Path(run_dir) / "best.keras")
        model.save(Path(run_dir) / "last.keras")
        return model, {}

    import common.training

    monkeypatch.setattr(common.training, "fit", fake_fit)  # train() imports fit when it runs
    model, _ = train.train(tmp_path, tmp_path / "run", img_size=32, verbose=0)
    assert all(np.all(w == 0.25) for w in model.get_weights())


def test_retina_shuffles_and_checkpoints_on_val_loss(tmp_path, monkeypatch, fit_calls):
    # spec bcdu_net.md: "Common: shuffle=True; ModelCheckpoint(save_best_only, monitor val_loss, mode min"
    from retina_vessel import train_retina

    x = _frames(20, 16, 16, 1).astype(np.float32) / 255
    monkeypatch.setattr(train_retina, "load_patches", lambda work_dir: (x, (x > 0.5).astype(np.uint8)))
    with pytest.raises(_Stop):
        train_retina.train(tmp_path, tmp_path / "run", verbose=0)
    call = fit_calls[0]
    assert _shuffled(call) and (_checkpoint(call).monitor, _checkpoint(call).mode) == ("val_loss", "min")


def test_lung_and_skin_lesion_shuffle_and_checkpoint_on_val_loss(tmp_path, monkeypatch, fit_calls):
    # spec bcdu_net.md (ISIC, lung and DRIVE scripts): "Common: shuffle=True; ModelCheckpoint(save_best_only,
    # monitor val_loss, mode min"
    from lung import train_lung
    from skin_lesion import train_isic18

    slices = _frames(10, 16, 16)
    monkeypatch.setattr(train_lung, "load_arrays",
                        lambda work_dir, split, names: {"image": slices, "target": (slices > 128).astype(np.uint8)})
    with pytest.raises(_Stop):
        train_lung.train(tmp_path, tmp_path / "lung_run", verbose=0)
    photos = _frames(10, 16, 16, 3)
    monkeypatch.setattr(train_isic18, "load_split",
                        lambda work_dir, split: (photos, (photos[..., 0] > 128).astype(np.uint8) * 255))
    with pytest.raises(_Stop):
        train_isic18.train(tmp_path, tmp_path / "isic_run", encoder_weights="none", verbose=0)
    for call in fit_calls:
        assert _shuffled(call) and (_checkpoint(call).monitor, _checkpoint(call).mode) == ("val_loss", "min")
    assert len(fit_calls) == 2


def test_retinal_edema_shuffles_drops_the_last_batch_and_flips_half(tmp_path, monkeypatch):
    # spec retinal_edema.md: "RandomHorizontalFlip p=0.5 (image + label)"; "Shuffle on, drop_last on"
    from common.data.synthetic import write_retinal_edema_dataset
    from retinal_edema import dataset, gen_image, train

    write_retinal_edema_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, n_slices=4, shape=(32, 16),
                                seed=0)
    gen_image.gen_image(tmp_path / "data", tmp_path / "lists", verbose=False)
    images, labels = dataset.read_list(tmp_path / "lists", "train")
    assert len(images) == 8
    raw = [dataset.load_pair(tmp_path / "data", i, l)[0] for i, l in zip(images, labels)]
    mean, std = np.float32([0, 0, 0]), np.float32([1, 1, 1])
    ds = dataset.training_dataset(tmp_path / "data", images, labels, 3, mean, std, seed=7)  # the defaults
    flips, orders = 0, []
    for _ in range(12):  # 12 epochs of 8 slices in batches of 3: 2 batches each, the last 2 slices dropped
        batches = [x.numpy() for x, _ in ds]
        assert [len(b) for b in batches] == [3, 3]
        order = []
        for x in np.concatenate(batches):
            image = np.rint(x * 255).astype(np.uint8)
            k = next(k for k, r in enumerate(raw) if np.array_equal(r, image) or np.array_equal(r[:, ::-1], image))
            flips += not np.array_equal(raw[k], image)
            order.append(k)
        orders.append(order)
    assert len({tuple(o) for o in orders}) > 6  # reshuffled every epoch (the sorted order would be one)
    assert 72 * 0.5 - 3 * 4.25 < flips < 72 * 0.5 + 3 * 4.25  # p 0.5: 36 of 72, binomial sd 4.24
    # train.py hands its dataset the defaults above (shuffle, flip)
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(dataset, "training_dataset", spy)
    with pytest.raises(_Stop):
        train.train(tmp_path / "data", tmp_path / "lists", tmp_path / "run", name="unet", batch_size=2, verbose=0)
    assert seen.get("flip", True) is True and seen.get("shuffle", True) is True


def test_robotic_scene_flips_half_each_way_shuffles_and_the_whole_scene_map(tmp_path, monkeypatch):
    # spec tdsnet.md 3.3: scene 0 "preparing": seq 1, 2, 4, 5, 7; scene 1 "peeling": seq 3, 10, 11, 12, 16;
    # scene 2 "incising": seq 6, 9, 13, 14, 15. 3.4: "VerticalFlip p 0.5 and HorizontalFlip p 0.5
    # (independent, image+mask)". 2.1: "batch 1, shuffle on".
    from robotic_scene import train

    assert train.SCENES == {1: 0, 2: 0, 4: 0, 5: 0, 7: 0, 3: 1, 10: 1, 11: 1, 12: 1, 16: 1,
                            6: 2, 9: 2, 13: 2, 14: 2, 15: 2}
    assert train.NUM_SCENES == 3 and train.BATCH_SIZE == 1
    # the seed: ours (the original reseeds from the clock, deviation 4); pinned with the README's deviation
    args = train.build_parser().parse_args([])
    assert args.seed == 0 and "here `--seed` seeds the weights, the shuffling and the flips" in " ".join(
        (REPO_ROOT / "robotic_scene" / "README.md").read_text().split())
    from PIL import Image

    frames = []
    for k in range(80):
        image = np.zeros((32, 32, 3), np.uint8)
        image[:4, :8] = (200, k, 0)  # a block at the top left; green = the frame's number
        Image.fromarray(image).save(tmp_path / f"{k}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / f"{k}_m.png")
        frames.append((tmp_path / f"{k}.png", tmp_path / f"{k}_m.png", 3))
    ds = train.make_dataset(frames, (32, 32), batch_size=1, augment=True, shuffle=True, seed=args.seed)
    mean, std = np.float32(train.TORCH_MEAN), np.float32(train.TORCH_STD)

    def one_epoch(dataset):
        seen = []
        for x, _ in dataset:
            image = np.rint(((x[0].numpy() * std) + mean) * 255).astype(np.uint8)
            rows, cols = np.nonzero(image[..., 0])
            seen.append((int(image[rows[0], cols[0], 1]), rows.min() > 16, cols.min() > 16))
        return seen

    epochs = [one_epoch(ds) for _ in range(2)]
    assert [k for k, _, _ in epochs[0]] != [k for k, _, _ in epochs[1]]  # reshuffled every epoch
    # the flips are drawn afresh every epoch (as albumentations per call): keyed by (seed, epoch, position),
    # the positions flipped in epoch 1 are not those of epoch 0 (80 positions x 2 flips: equal by chance 4^-80)
    assert [(u, v) for _, u, v in epochs[0]] != [(u, v) for _, u, v in epochs[1]]
    # stateless: a new dataset pinned to epoch 1 (a resumed run; fit pins epoch_order) repeats epoch 1 exactly
    again = train.make_dataset(frames, (32, 32), batch_size=1, augment=True, shuffle=True, seed=args.seed)
    again.epoch_order.epoch = 1
    assert one_epoch(again) == epochs[1]
    assert sorted(k for k, _, _ in epochs[0]) != [k for k, _, _ in epochs[0]]
    ud, lr = sum(u for _, u, _ in epochs[0]), sum(v for _, _, v in epochs[0])
    both = sum(u and v for _, u, v in epochs[0])
    assert 40 - 3 * 4.5 < ud < 40 + 3 * 4.5 and 40 - 3 * 4.5 < lr < 40 + 3 * 4.5  # p 0.5 of 80: sd 4.47
    assert 20 - 3 * 3.9 < both < 20 + 3 * 3.9  # independent: p 0.25 of 80, sd 3.87
    # train.py asks for the shuffled, flipped dataset with its seed
    calls = []

    def spy(*a, **kwargs):
        calls.append(kwargs)
        raise _Stop

    monkeypatch.setattr(train, "make_dataset", spy)
    from common.data.synthetic import write_robotic_scene_dataset
    from robotic_scene import prepare

    write_robotic_scene_dataset(tmp_path / "raw", prepare.CLASS_COLOURS, {1: 0, 5: 0}, 1, (32, 32), 0)
    prepare.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(tmp_path / "work"), "--height", "32",
                  "--width", "32", "--quiet"])
    with pytest.raises(_Stop):
        train.train(tmp_path / "work" / "cropted_train", tmp_path / "run", encoder_weights="none", verbose=0)
    assert (calls[0]["augment"], calls[0]["shuffle"], calls[0]["seed"]) == (True, True, 0)


def test_lung_sample_slices_are_the_originals():
    # spec bcdu_net.md: "sample_results.png ... (5x3, test indices 1, 100, 200, 253, 193)"
    from lung import evaluate_performance

    assert list(evaluate_performance.sample_indices(300)) == [1, 100, 200, 253, 193]


def test_save_patch_seed_is_ours_and_listed_as_a_deviation(tmp_path):
    # spec bcdu_net.md: "Centre x and y drawn independently with Python random.randint(32, 533) ... Unseeded."
    from retina_vessel import save_patch

    assert save_patch.build_parser().parse_args([]).seed == 0
    readme = " ".join((REPO_ROOT / "retina_vessel" / "README.md").read_text().split())
    assert "The original is unseeded" in readme and "`save_patch.py --seed`" in readme
