"""Every task's predict.py with --onnx writes the masks its Keras path writes (issue 25 item 2).

For each of the seven tasks a tiny seeded network (the smallest shape the family takes) is saved as the task's
run folder, exported with ``python -m common.export ... --format onnx``, and predict.py is run on the same
files once with the Keras checkpoint and once with ``--onnx``: every mask file must be equal, and the
probabilities of ``load_segmenter`` (Keras run vs .onnx) within 1e-4. retinal_edema (dict outputs seg/det) and
robotic_scene (list outputs seg/class/scene) check the ONNX output layout of multi-output networks.
The reference is the Keras path; the TensorFlow-free subprocess runs are in tests/test_onnx.py.
"""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from tests._cli import export_in_child

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

TASKS = ["fingernail", "lung", "retina_vessel", "retinal_edema", "robotic_scene", "skin_lesion", "ultrasound_nerve"]


def _save(model, folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        model.save(folder / name)
    return folder


def _rgb_files(folder, sizes, ext=".png", seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}{ext}")
    return folder


def _setup(task, tmp, num_classes=None):
    """``(keras source options, export source args, inputs, load_segmenter path, reader)`` of a tiny run
    (``num_classes``: a K-class softmax head, for the families that take one)."""
    from common.models import build_model as build

    def build_model(*args, **options):
        return build(*args, **options, **({"num_classes": num_classes} if num_classes else {}))

    run = tmp / "weights" / task / "tiny"
    if task == "skin_lesion":
        _save(build_model("bcdu_net_d1", (8, 8, 3)), run, "best.keras")  # ConvLSTM: the smallest side, 8
        inputs = _rgb_files(tmp / "in", [(20, 30), (17, 23)], ".jpg")
        return ["--run-dir", str(run)], [str(run)], inputs, run, lambda p: np.asarray(Image.open(p).convert("RGB"))
    if task == "ultrasound_nerve":
        _save(build_model("nerve_unet", (32, 32, 1), filters=(4, 8, 16, 32, 64)), run, "best.keras")
        (run / "norm_stats.json").write_text(json.dumps({"mean": 100.0, "std": 40.0, "img_size": 32}))
        inputs = tmp / "in"
        inputs.mkdir()
        rng = np.random.default_rng(1)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 58), dtype=np.uint8)).save(inputs / f"{i}.tif")
        return ["--run-dir", str(run)], [str(run)], inputs, run, lambda p: np.asarray(Image.open(p))
    if task == "fingernail":  # the task's checkpoint is last.keras
        _save(build_model("unet2d_8_128", (16, 16, 3)), run, "best.keras", "last.keras")
        inputs = _rgb_files(tmp / "in", [(20, 26), (26, 18)])  # a landscape and a portrait (rotated) photo
        return ["--run-dir", str(run)], [str(run)], inputs, run, lambda p: np.asarray(Image.open(p).convert("RGB"))
    if task == "retina_vessel":  # the default inference 'full': photos padded to the 8 x 8 network
        _save(build_model("bcdu_net_d1", (8, 8, 1)), run, "best.keras")
        inputs = _rgb_files(tmp / "in", [(8, 7), (6, 8)])
        return ["--run-dir", str(run)], [str(run)], inputs, run, lambda p: np.asarray(Image.open(p).convert("RGB"))
    if task == "lung":
        import nibabel as nib

        from common.data.synthetic import write_lung_dataset

        net = _save(build_model("bcdu_net_d1", (16, 16, 1)), tmp / "net", "lung.keras") / "lung.keras"
        write_lung_dataset(tmp / "raw", 2, 6, 16, n_empty=1, seed=3)
        inputs = tmp / "raw" / "3d_images"
        return (["--model", str(net)], ["--model", str(net), "--task", "lung"], inputs, net,
                lambda p: np.asarray(nib.load(p).dataobj))
    if task == "retinal_edema":
        _save(build_model("edema_unet", (32, 32, 3), feature_scale=16), run, "best.keras")
        (run / "state.json").write_text(json.dumps({"settings": {"mean": [0.3, 0.31, 0.32],
                                                                 "std": [0.2, 0.21, 0.22]}}))
        cube = tmp / "in" / "P1_cube_z.img"
        cube.mkdir(parents=True)
        rng = np.random.default_rng(2)
        for k in range(1, 4):  # 30 x 27 slices, padded to the 32 x 32 network
            Image.fromarray(rng.integers(0, 256, (30, 27), dtype=np.uint8)).save(cube / f"{k}.bmp")

        def read_cube(folder):
            return np.stack([np.asarray(Image.open(folder / f"{k}.bmp")) for k in range(1, 4)])
        return ["--run-dir", str(run)], [str(run)], cube, run, read_cube
    if task == "robotic_scene":
        from common.tdsnet_trainer import trainer_classes

        trainer = trainer_classes()[0](build_model("tdsnet", (32, 32, 3)))
        final = _save(trainer, run / "stage4_scene", "best.keras", "last.keras") / "best.keras"
        (run / "stages.json").write_text(json.dumps({"final_checkpoint": str(final),
                                                     "settings": {"normalise": "torch"}}))
        inputs = _rgb_files(tmp / "in", [(30, 28), (32, 25)])
        return ["--run-dir", str(run)], [str(run)], inputs, run, lambda p: np.asarray(Image.open(p).convert("RGB"))
    raise AssertionError(task)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "run.json")


def _content(path):
    name = path.name
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(path).dataobj)
    if name.endswith((".png", ".tif", ".bmp", ".jpg")):
        return np.asarray(Image.open(path))
    if name.endswith(".csv"):
        rows = list(csv.reader(path.read_text().splitlines()))
        return rows[0], np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    raise AssertionError(name)


@pytest.mark.parametrize("task", TASKS)
def test_predict_with_onnx_writes_the_keras_masks(task, tmp_path):
    import importlib

    import keras

    from common.predict import load_segmenter

    keras.utils.set_random_seed(0)
    keras_source, export_source, inputs, seg_path, read = _setup(task, tmp_path)
    onnx_dir = tmp_path / "onnx"
    export_in_child(export_source + [onnx_dir, "--format", "onnx"])
    record = json.loads((onnx_dir / "preprocessing.json").read_text())
    assert record["task"] == task
    predict = importlib.import_module(f"{task}.predict")
    common = [str(inputs), "--quiet"]
    assert predict.main(common + keras_source + ["--out-dir", str(tmp_path / "keras")]) == 0
    assert predict.main(common + ["--onnx", str(onnx_dir / "model.onnx"), "--out-dir", str(tmp_path / "ox")]) == 0
    written = _files(tmp_path / "keras")
    assert written and written == _files(tmp_path / "ox")
    for name in written:
        ours, reference = _content(tmp_path / "ox" / name), _content(tmp_path / "keras" / name)
        if isinstance(reference, tuple):  # detections csv: header equal, values within 1e-4
            assert ours[0] == reference[0]
            np.testing.assert_allclose(ours[1], reference[1], atol=1e-4)
        else:
            np.testing.assert_array_equal(ours, reference, err_msg=name)
    keras_seg, onnx_seg = load_segmenter(seg_path, task=task), load_segmenter(onnx_dir / "model.onnx")
    sources = [inputs] if task == "retinal_edema" else sorted(p for p in inputs.iterdir() if p.is_file())
    for source in sources:
        image = read(source)
        a, b = keras_seg.predict(image, probabilities=True), onnx_seg.predict(image, probabilities=True)
        assert np.abs(np.asarray(a["prob"], np.float32) - np.asarray(b["prob"], np.float32)).max() <= 1e-4
        np.testing.assert_array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
        if task == "retinal_edema":  # the second output of the multi-output network, by its key
            assert np.abs(a["detection"] - b["detection"]).max() <= 1e-4


MULTICLASS = ["fingernail", "skin_lesion", "ultrasound_nerve"]


def _reference_labels(task, model, image, seg_options):
    """The label map of a K-class model, from the model's own softmax: each channel resized to the image's size
    (the binary path's resize: Pillow bilinear, rotated back for a portrait fingernail photo; cv2 bilinear for
    nerve frames), then the argmax over the channels."""
    import cv2

    from common.tasks import get_task

    module = get_task(task)
    h, w = image.shape[:2]
    if task == "ultrasound_nerve":
        x = module.preprocess(image, **seg_options)
    elif task == "skin_lesion":
        x = module.preprocess(image, size=model.inputs[0].shape[1])
    else:
        x = module.preprocess(image, rows=model.inputs[0].shape[1], cols=model.inputs[0].shape[2])
    out = np.asarray(model(x, training=False))[0]
    assert out.shape[-1] == 4 and np.allclose(out.sum(-1), 1, atol=1e-5)  # a softmax head
    channels = []
    for k in range(4):
        p = out[..., k]
        if task == "ultrasound_nerve":
            channels.append(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR))
        elif task == "skin_lesion":
            channels.append(np.asarray(Image.fromarray(p).resize((w, h), Image.BILINEAR)))
        else:
            turned = w < h
            full = Image.fromarray(p).resize((h, w) if turned else (w, h), Image.BILINEAR)
            channels.append(np.asarray(full.rotate(-90, expand=True) if turned else full))
    return np.argmax(np.stack(channels, -1), -1)


@pytest.mark.parametrize("task", MULTICLASS)
def test_predict_writes_palette_label_maps_of_a_four_class_model(task, tmp_path):
    """K = 4 (issue 23 item 2): predict.py writes palette PNG label maps 0..3 (the argmax of the resized
    softmax), probabilities (H, W, 4) as .npy, and --onnx writes the same files."""
    import importlib

    import keras

    from common.predict import load_checkpoint, load_segmenter

    keras.utils.set_random_seed(0)
    keras_source, export_source, inputs, seg_path, read = _setup(task, tmp_path, num_classes=4)
    predict = importlib.import_module(f"{task}.predict")
    options = [str(inputs), "--quiet", "--save-probabilities", "--overlay"]
    assert predict.main(options + keras_source + ["--out-dir", str(tmp_path / "keras")]) == 0
    seg = load_segmenter(seg_path, task=task)
    assert seg.num_classes == 4
    model = load_checkpoint(seg.source)
    files = sorted(p for p in inputs.iterdir() if p.is_file())
    mask_name = {"fingernail": "{}.png", "skin_lesion": "{}_segmentation.png",
                 "ultrasound_nerve": "{}_labels.png"}[task]
    seen = set()
    for path in files:
        image = read(path)
        with Image.open(tmp_path / "keras" / mask_name.format(path.stem)) as img:
            assert img.format == "PNG" and img.mode == "P"
            labels = np.asarray(img)
        assert labels.shape == image.shape[:2]
        np.testing.assert_array_equal(labels, _reference_labels(task, model, image, seg.options))
        seen |= set(np.unique(labels).tolist())
        prob = np.load(tmp_path / "keras" / f"{path.stem}_prob.npy")
        assert prob.shape == (*image.shape[:2], 4)
        assert (tmp_path / "keras" / f"{path.stem}_overlay.png").is_file()
    assert len(seen) > 1 and seen <= {0, 1, 2, 3}  # a label map, not a constant
    export_in_child(export_source + [tmp_path / "onnx", "--format", "onnx"])
    assert predict.main(options + ["--onnx", str(tmp_path / "onnx" / "model.onnx"), "--out-dir",
                                   str(tmp_path / "ox")]) == 0
    assert _files(tmp_path / "ox") == _files(tmp_path / "keras")
    for path in files:
        name = mask_name.format(path.stem)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "ox" / name)),
                                      np.asarray(Image.open(tmp_path / "keras" / name)))


def _spread_head(checkpoint, seed=0):
    """An untrained K-class head says class 0 almost everywhere: shift its biases so that every class's logit
    has the same median over random inputs in [0, 1], then sharpen it (x 20), so the label maps hold every class
    (the test then compares real label maps, not constants)."""
    import keras

    model = keras.models.load_model(checkpoint, compile=False)
    head = model.get_layer("head_output")  # common.layers.segmentation_output: 1x1 conv, softmax
    kernel, bias = head.get_weights()
    x = np.random.default_rng(seed).uniform(0, 1, (4, *model.input_shape[1:])).astype(np.float32)
    features = keras.Model(model.inputs, head.input).predict(x, verbose=0)
    logits = (features @ kernel[0, 0] + bias).reshape(-1, kernel.shape[-1])
    head.set_weights([kernel * 20.0, (bias - np.median(logits, axis=0)) * 20.0])
    model.save(checkpoint)


@pytest.mark.parametrize("task", ["lung", "retina_vessel"])
def test_onnx_predict_writes_the_keras_label_maps_of_a_three_class_run(task, tmp_path):
    """K = 3 lung and retina_vessel runs (issue 23): ``common.export --format onnx``, then predict.py ``--onnx``
    writes the files the Keras checkpoint writes: the same label maps (lung: NIfTI 0..2; retina_vessel: palette
    PNG 0..2), the softmax within 1e-4; the label maps are the argmax of the Keras softmax (not a constant)."""
    import importlib

    import keras

    from common.predict import load_segmenter

    keras.utils.set_random_seed(0)
    keras_source, export_source, inputs, seg_path, read = _setup(task, tmp_path, num_classes=3)
    _spread_head(seg_path if seg_path.is_file() else seg_path / "best.keras")
    predict = importlib.import_module(f"{task}.predict")
    options = [str(inputs), "--quiet", "--save-probabilities"]
    assert predict.main(options + keras_source + ["--out-dir", str(tmp_path / "keras")]) == 0
    onnx_dir = tmp_path / "onnx"
    export_in_child(export_source + [onnx_dir, "--format", "onnx"])
    assert predict.main(options + ["--onnx", str(onnx_dir / "model.onnx"), "--out-dir", str(tmp_path / "ox")]) == 0
    written = _files(tmp_path / "keras")
    assert written and written == _files(tmp_path / "ox")
    masks = [n for n in written if not n.endswith(".npy") and "PROB_" not in n]
    assert len(masks) == 2, written
    seen = set()
    for name in written:
        if name.endswith(".npy") or "PROB_" in name:  # the softmax (.npy or the 4-D NIfTI)
            load = np.load if name.endswith(".npy") else _content
            ours, reference = load(tmp_path / "ox" / name), load(tmp_path / "keras" / name)
            assert ours.shape == reference.shape and reference.shape[-1] == 3
            np.testing.assert_allclose(ours, reference, atol=1e-4, err_msg=name)
            continue
        reference = _content(tmp_path / "keras" / name)
        np.testing.assert_array_equal(_content(tmp_path / "ox" / name), reference, err_msg=name)
        if task == "retina_vessel":
            assert Image.open(tmp_path / "ox" / name).mode == "P"
        seen |= set(np.unique(reference).tolist())
    assert len(seen) > 1 and seen <= {0, 1, 2}, seen
    keras_seg, onnx_seg = load_segmenter(seg_path, task=task), load_segmenter(onnx_dir / "model.onnx")
    assert keras_seg.num_classes == onnx_seg.num_classes == 3
    for source in sorted(p for p in inputs.iterdir() if p.is_file()):
        image = read(source)
        a, b = keras_seg.predict(image, probabilities=True), onnx_seg.predict(image, probabilities=True)
        assert np.abs(np.asarray(a["prob"], np.float32) - np.asarray(b["prob"], np.float32)).max() <= 1e-4
        np.testing.assert_array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
        np.testing.assert_array_equal(np.asarray(a["mask"]), np.argmax(np.asarray(a["prob"]), -1))
