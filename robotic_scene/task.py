"""Task descriptor of robotic_scene (TDSNet on EndoVis 2018): the facts common tools need, in one place.

NumPy only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read their
defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import numpy as np

#: (EndoVis 2018 class name, RGB colour of the label PNGs) by class index, as the original's util/config.py.
LABEL_CLASSES = (
    ("background-tissue", (0, 0, 0)),
    ("instrument-shaft", (0, 255, 0)),
    ("instrument-clasper", (0, 255, 255)),
    ("instrument-wrist", (125, 255, 12)),
    ("kidney-parenchyma", (255, 55, 0)),
    ("covered-kidney", (24, 55, 125)),
    ("thread", (187, 155, 25)),
    ("clamps", (0, 255, 125)),
    ("suturing-needle", (255, 255, 125)),
    ("suction-instrument", (123, 15, 175)),
    ("intestine", (124, 155, 5)),
    ("ultrasound-probe", (12, 255, 141)),
)
CLASS_NAMES = tuple(name for name, _ in LABEL_CLASSES)
CLASS_COLOURS = np.array([colour for _, colour in LABEL_CLASSES], np.uint8)
NUM_CLASSES = len(LABEL_CLASSES)

NAME = "robotic_scene"
MODELS = ("tdsnet",)
DEFAULT_MODEL = "tdsnet"
CLASSES = dict(enumerate(CLASS_NAMES))
#: an RGB frame of any size (1024 x 1280 in the dataset); ``torch`` = (x / 255 - mean) / std (RGB), ``caffe`` =
#: BGR 0..255 minus the Caffe means (Keras's ImageNet VGG16); padded with zeros to multiples of 32
INPUT = {"mode": "rgb", "channels": 3, "network_channels": 3, "multiple": 32, "normalisation": ("torch", "caffe"),
         "torch_mean": (0.485, 0.456, 0.406), "torch_std": (0.229, 0.224, 0.225),
         "caffe_mean_bgr": (103.939, 116.779, 123.68), "size_rule": "any size, padded to a multiple of 32"}
#: train.py's defaults (train.sh, spec tdsnet.md 2.1): (name, alpha, beta, gamma, Adam lr, cumulative epochs)
RECIPE = {"optimizer": "adam", "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}, "batch_size": 1,
          "seed": 0, "shuffle": True, "loss": "loss_hybrid", "monitor": "val_mean_iou", "val_seqs": (1, 2, 3, 4),
          "stages": (("segmentation", 0.0, 0.0, 0.0, 1e-4, 10), ("class", 0.2, 0.0, 0.0, 1e-4, 30),
                     ("sync", 0.2, 0.6, 0.0, 5e-5, 50), ("scene", 0.2, 0.6, 0.2, 5e-5, 70))}
INFERENCE = {"min_size": 0}
#: prepare.py's own-data defaults (--images/--masks or --nnunet-dataset): fractions of the SEQUENCES (fold 0
#: validates on 4 of the 15 training sequences; the challenge's test set is separate: no test split), a frame's
#: sequence = its top folder (seq_3/frame000.png), or for flat names this regex's group 1 (seq_3_frame000 ->
#: seq_3); masks: RGB in the ROBOT18 colours (--label-colours for others), grey/palette label maps as stored
OWN_DATA = {"val_fraction": 0.27, "test_fraction": 0.0, "group_by": r"^(.+?)[_-]?(?:frame)?\d+$", "mode": "rgb",
            "binary": False, "split_unit": "sequence", "label_colours": "ROBOT18", "seed": 0}


#: compare_models.py recognises prepare.py's output (``is_prepared``) and refuses it with this reason
NOT_COMPARABLE = ("its prepared data are EndoVis frames with 12-class label maps for TDSNet, a multi-task network "
                  "(segmentation + instrument classes + surgical scene); compare_models.py compares binary "
                  "segmentation models, which cannot take 12-class maps: train and score TDSNet with "
                  "robotic_scene/train.py and test.py")


def is_prepared(path):
    """True for prepare.py's output: its ``--work-dir`` (holding ``cropted_train/``) or ``cropted_train/`` itself
    (``prepare.json`` beside ``seq_<N>/`` folders)."""
    from pathlib import Path

    path = Path(path)
    folder = path / "cropted_train" if (path / "cropted_train").is_dir() else path
    return (folder / "prepare.json").is_file() and any(p.is_dir() for p in folder.glob("seq_*"))


def normalise(images, mode="torch"):
    """uint8-valued RGB (..., H, W, 3) -> network input float32 (NumPy twin of train.py's graph version)."""
    x = np.asarray(images, np.float32)
    if mode == "torch":
        return (x / 255.0 - np.float32(INPUT["torch_mean"])) / np.float32(INPUT["torch_std"])
    if mode == "caffe":
        return x[..., ::-1] - np.float32(INPUT["caffe_mean_bgr"])
    raise ValueError(f"unknown normalisation {mode!r} (torch, caffe)")


def preprocess(image, *, normalise_mode="torch", **context):
    """One RGB frame (H, W, 3) uint8 -> (1, H', W', 3) float32: normalised, then zero-padded (the mean colour)
    at the bottom/right to multiples of 32."""
    x = normalise(np.asarray(image)[None, ..., :3], normalise_mode)
    h, w = x.shape[1:3]
    return np.pad(x, ((0, 0), (0, -h % 32), (0, -w % 32), (0, 0))).astype(np.float32)


def remove_small_regions(pred, min_size):
    """Per class (not background), 8-connected regions of fewer than ``min_size`` pixels -> background 0."""
    from common.postprocess import remove_small_regions as remove

    return remove(pred, min_size, background=0, connectivity=2).astype(np.uint8)


def postprocess(prob, *, shape=None, min_size=INFERENCE["min_size"], **context):
    """Softmax (H', W', 12) -> the label in the EndoVis colours (H, W, 3) uint8, cropped to ``shape``."""
    prob = np.asarray(prob)
    if shape is not None:
        prob = prob[:shape[0], :shape[1]]
    pred = np.argmax(prob, axis=-1).astype(np.uint8)
    if min_size > 0:
        pred = remove_small_regions(pred, min_size)
    return CLASS_COLOURS[pred]


def segment(image, network, *, normalise_mode="torch", tta="none", min_size=INFERENCE["min_size"], **context):
    """One RGB frame (H, W, 3) uint8 -> ``{"mask": colour label (H, W, 3) uint8, "classes": (H, W) uint8,
    "prob": (H, W, 12) float32 softmax}`` (test.py's inference: padded to multiples of 32 after the
    normalisation, cropped back; ``tta="flip"``: each flip padded at the bottom/right like the frame)."""
    from common.inference import predict_whole

    def softmax(batch):
        out = network(batch)
        return np.exp(np.asarray(out[0] if isinstance(out, (list, tuple)) else out, np.float32))

    x = normalise(np.asarray(image)[None, ..., :3], normalise_mode)
    prob = predict_whole(softmax, x, multiple=INPUT["multiple"], tta=tta)[0]
    pred = np.argmax(prob, axis=-1).astype(np.uint8)
    if min_size > 0:
        pred = remove_small_regions(pred, min_size)
    return {"mask": CLASS_COLOURS[pred], "classes": pred, "prob": prob}


def checkpoint_of(run_dir, weights="best"):
    """The final checkpoint of a train.py run (``stages.json``; ``weights="last"``: the last stage's last.keras)."""
    import json
    from pathlib import Path

    from common.errors import UserError

    record = Path(run_dir) / "stages.json"
    if not record.is_file():
        raise UserError(f"{record}: not found; give the --run-dir of a finished robotic_scene/train.py run, or "
                        f"--model FILE.keras")
    final = Path(json.loads(record.read_text())["final_checkpoint"])
    return final if weights == "best" else final.with_name("last.keras")


def run_context(checkpoint_dir, **options):
    """The normalisation the run trained with (``stages.json`` of the run: the checkpoint's grandparent)."""
    import json
    from pathlib import Path

    record = Path(checkpoint_dir).parent / "stages.json"
    if record.is_file():
        return {"normalise_mode": json.loads(record.read_text())["settings"]["normalise"]}
    return {}


def load_keras_network(checkpoint, mixed_precision="off"):
    """The TDSNet network of a train.py checkpoint (lazy Keras import)."""
    from common.devices import apply_precision, set_precision
    from common.errors import UserError
    from common.tdsnet_trainer import load_trainer

    set_precision(mixed_precision)
    try:
        return apply_precision(load_trainer(checkpoint).network, mixed_precision)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{checkpoint}: cannot load the model ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:160]})") from None
