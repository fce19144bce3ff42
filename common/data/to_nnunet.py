"""Write a prepared task's train/test split as an nnU-Net v2 raw dataset: nnU-Net as a baseline on our split.

    python -m common.data.to_nnunet PREPARED --task NAME --out DIR [--format png|nifti]
                                    [--dataset-id N --dataset-name X] [--overwrite]

``PREPARED`` is the folder the task's prepare script wrote (its ``--work-dir``). The training cases (train and
validation parts: nnU-Net does its own 5-fold cross-validation on them) go to ``imagesTr``/``labelsTr``, the
test part to ``imagesTs`` (its labels to ``labelsTs``, which nnU-Net ignores; score nnU-Net's predictions
against them with ``nnUNetv2_evaluate_folder``), plus ``dataset.json``. Case names are those of the
``split.json`` beside the arrays (nested names ``a/b.png`` -> ``a__b``); without one (DRIVE HDF5, the Kaggle nerve
arrays) cases are numbered ``case_00000``, ... in array order. The arrays are written as prepared (resized as the
task's recipe resizes), with binary labels 0 = background, 1 = the task's foreground (K-class own datasets of
lung and retina_vessel, prepared with --keep-labels: their labels 0..K-1).

Tasks supported (PREPARED layout):

    skin_lesion       data_{train,val,test}.npy (N,S,S,3) uint8 and mask_*.npy (N,S,S) 0..255 (label: >= 128)
    ultrasound_nerve  imgs_train.npy / imgs_mask_train.npy (N,H,W) uint8 0/255, imgs_test.npy + imgs_id_test.npy
                      (test frames without masks, named test_<id>)
    fingernail        <work-dir>/<study>/ with x_{train,test}.npy (N,H,W,3) uint8 and y_{train,test}.npy 0/1
    retina_vessel     <work-dir> or its DRIVE_datasets_training_testing/ with the six HDF5 files (images 0..255,
                      ground truth 0/255; the FOV masks are not exported); an own dataset prepared with
                      --keep-labels (split.json num_classes K > 2): its label maps 0..K-1 as the labels
    lung              data_{train,test}.npy (N,S,S) float32 0..255 (the windowed, scaled CT slices; exported
                      rounded to uint8, channel "grey": nnU-Net's z-score, since they are not HU) and
                      mask_{train,test}.npy 0/255 (label 1 lung: the lung itself, not the around-lung target
                      BCDU-Net learns; FOV and target are not exported); one 2-D case per slice, named by
                      split.json's slices (<volume>:<index> -> <volume>_<index>); an own dataset prepared with
                      --keep-labels (split.json num_classes K > 2): its label-map targets Train_maska / Test_maska
                      as the labels 0..K-1 (class_1, ...)
    robotic_scene     <work-dir> or its cropted_train/: seq_<N>/images/<frame>.png (RGB) and
                      seq_<N>/instruments_masks/<frame>.png (class indices 0..11, the task's 12 classes as the
                      labels); cases ``seq_<N>__<frame>``; an own-data split.json's test sequences -> imagesTs

retinal_edema is not supported yet (its lists and slices live in two folders).

``--out DIR``: the dataset folder itself; with ``--dataset-id N`` it is nnU-Net's ``nnUNet_raw`` folder and the
dataset goes to ``DIR/Dataset<NNN>_<name>`` (name: ``--dataset-name``, default the task). Written to a temporary
folder and renamed into place; an existing folder is replaced only with ``--overwrite``.

Examples::

    python -m common.data.to_nnunet work/skin_lesion --task skin_lesion --out ~/nnUNet_raw --dataset-id 501
    nnUNetv2_plan_and_preprocess -d 501 --verify_dataset_integrity
    python -m common.data.to_nnunet work/fingernail/dataset1 --task fingernail --out /tmp/nails_nnunet --format nifti

Checked by hand once with nnU-Net's own check (nnunetv2 2.8.1 and torch 2.13.0 CPU in a scratch venv outside
the repository, never a project requirement), on exports of synthetic prepared arrays (skin_lesion: 8 RGB
training + 3 test cases, 32x32, as PNG and as NIfTI; ultrasound_nerve: 5 grey 42x58 frames as PNG)::

    python -m common.data.to_nnunet prep --task skin_lesion --out raw --dataset-id 501 --dataset-name ISICpng
    python -m common.data.to_nnunet prep --task skin_lesion --out raw --dataset-id 502 --format nifti ...
    python -m common.data.to_nnunet nerve --task ultrasound_nerve --out raw --dataset-id 503 --dataset-name nerve
    # check.py (run as a file: nnU-Net's check starts "spawn" worker processes), nnUNet_raw etc. set:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    if __name__ == "__main__":
        verify_dataset_integrity("raw/Dataset501_ISICpng", 1)   # and 502, 503

All three: "verify_dataset_integrity Done. If you didn't see any error messages then your dataset is most likely
OK!", no error message (NaturalImage2DIO for the PNGs, SimpleITKIO for the NIfTI). nnU-Net's readers gave back
the prepared arrays: the RGB PNG as 3 channels (3, 1, 32, 32), the NIfTI as (3, 1, 32, 32) with spacing
(999, 1, 1), i.e. 2-D, and the labels equal to mask >= 128.
"""

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np

from common import cli
from common.data.io import DataLayoutError
from common.data.nnunet import write_nnunet_dataset
from common.errors import UserError

FORMATS = {"png": ".png", "nifti": ".nii.gz"}
RGB = ["R", "G", "B"]


def _load_npy(path, task):
    path = Path(path)
    if not path.is_file():
        raise DataLayoutError(f"{path}: not found; is this the folder {task}'s prepare script wrote (--task {task})?")
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise DataLayoutError(f"{path}: not a readable .npy array ({exc.__class__.__name__})") from None


def read_split_names(prepared):
    """``{"train": [...], "val": [...], "test": [...]}`` from ``split.json`` beside the arrays, or None.

    Reads the own-data layout (top-level ``train``/``val``/``test`` lists: every task's own-data prepare and
    fingernail) and skin_lesion's benchmark layout (``{"splits": {...}}``)."""
    path = Path(prepared) / "split.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); prepare the task again") from None
    data = data.get("splits", data) if isinstance(data, dict) else {}
    names = {k: data[k] for k in ("train", "val", "test") if isinstance(data.get(k), list)}
    return names or None


def _names(split, parts, count, prefix, start=0):
    """The names of ``parts`` of the split (concatenated), or numbered names when they do not match ``count``."""
    if split is not None:
        names = [str(n) for part in parts for n in split.get(part, [])]
        if len(names) == count:
            return names
        if names:
            print(f"warning: split.json lists {len(names)} {'+'.join(parts)} names for {count} arrays; cases are "
                  f"numbered instead", file=sys.stderr)
    return [f"{prefix}_{i:05d}" for i in range(start, start + count)]


class Lazy:
    """Cases ``(name, image, label)`` made on access from memory-mapped arrays (bounded memory)."""

    def __init__(self, names, images, labels, image_fn, label_fn):
        self.names, self.images, self.labels = names, images, labels
        self.image_fn, self.label_fn = image_fn, label_fn

    def __len__(self):
        return len(self.names)

    def __iter__(self):
        for i, name in enumerate(self.names):
            label = None if self.labels is None else self.label_fn(np.asarray(self.labels[i]))
            yield name, self.image_fn(np.asarray(self.images[i])), label


def _gray(a):
    return a[..., None]


def _threshold(a):
    return (a >= 128).astype(np.uint8)


def _labels(a):
    """Stored label maps 0..K-1 (an own dataset prepared with ``--keep-labels``) -> uint8 labels as they are."""
    return np.asarray(a).astype(np.uint8)


def _class_names(num_classes):
    """nnU-Net labels of a K-class own dataset: ``{0: "background", 1: "class_1", ...}``."""
    return {0: "background", **{k: f"class_{k}" for k in range(1, num_classes)}}


def _split_num_classes(path):
    """``num_classes`` of a prepare script's ``split.json`` at ``path`` (2 when absent: binary)."""
    path = Path(path)
    if not path.is_file():
        return 2
    try:
        record = json.loads(path.read_text())
        return int((record.get("num_classes") if isinstance(record, dict) else None) or 2)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a split.json of the prepare script ({exc.__class__.__name__}); prepare the "
                        f"task again") from None


def skin_lesion(prepared):
    split = read_split_names(prepared)
    images = {p: _load_npy(Path(prepared) / f"data_{p}.npy", "skin_lesion") for p in ("train", "val", "test")}
    masks = {p: _load_npy(Path(prepared) / f"mask_{p}.npy", "skin_lesion") for p in ("train", "val", "test")}
    train = []
    for part in ("train", "val"):
        names = _names(split, [part], len(images[part]), f"{part}")
        train.append(Lazy(names, images[part], masks[part], np.asarray, _threshold))
    test = Lazy(_names(split, ["test"], len(images["test"]), "test"), images["test"], masks["test"], np.asarray,
                _threshold)
    return _chain(train), test, {0: "background", 1: "lesion"}, RGB


def ultrasound_nerve(prepared):
    split = read_split_names(prepared)
    imgs, masks = (_load_npy(Path(prepared) / n, "ultrasound_nerve") for n in ("imgs_train.npy",
                                                                              "imgs_mask_train.npy"))
    train = Lazy(_names(split, ["train", "val"], len(imgs), "case"), imgs, masks, _gray, _threshold)
    test = ()
    if (Path(prepared) / "imgs_test.npy").is_file():
        test_imgs = _load_npy(Path(prepared) / "imgs_test.npy", "ultrasound_nerve")
        ids = _load_npy(Path(prepared) / "imgs_id_test.npy", "ultrasound_nerve")
        names = _names(split, ["test"], len(test_imgs), "test") if split and split.get("test") else \
            [f"test_{int(i)}" for i in ids]
        test = Lazy(names, test_imgs, None, _gray, None)
    return train, test, {0: "background", 1: "nerve"}, ["ultrasound"]


def _squeeze(a):
    """fingernail's (H, W, 1) 0/1 masks -> (H, W) labels."""
    return (a[..., 0] if a.ndim == 3 else a).astype(np.uint8)


def fingernail(prepared):
    split = read_split_names(prepared)
    arrays = {k: _load_npy(Path(prepared) / f"{k}.npy", "fingernail") for k in ("x_train", "y_train", "x_test",
                                                                                  "y_test")}
    train = Lazy(_names(split, ["train", "val"], len(arrays["x_train"]), "train"), arrays["x_train"], arrays["y_train"],
                 np.asarray, _squeeze)
    test = Lazy(_names(split, ["test"], len(arrays["x_test"]), "test"), arrays["x_test"], arrays["y_test"],
                np.asarray, _squeeze)
    return train, test, {0: "background", 1: "nail"}, RGB


def retina_vessel(prepared):
    prepared = Path(prepared)
    folder = prepared / "DRIVE_datasets_training_testing"
    folder = folder if folder.is_dir() else prepared
    split = read_split_names(prepared) or read_split_names(folder)

    def load(kind, part):
        path = folder / f"DRIVE_dataset_{kind}_{part}.hdf5"
        if not path.is_file():
            raise DataLayoutError(f"{path}: not found; is this the --work-dir of retina_vessel/"
                                  f"prepare_datasets_DRIVE.py (--task retina_vessel)?")
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return f["image"][()]
        except (OSError, KeyError) as exc:
            raise DataLayoutError(f"{path}: not a DRIVE HDF5 file with an 'image' dataset ({exc})") from None

    num_classes = _split_num_classes(folder / "split.json")  # --keep-labels: groundTruth holds labels 0..K-1
    cases = {}
    for part in ("train", "test"):
        imgs = np.clip(np.rint(load("imgs", part)), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        truth = load("groundTruth", part)[:, 0]
        parts = ["train", "val"] if part == "train" else ["test"]
        cases[part] = Lazy(_names(split, parts, len(imgs), part), imgs, truth, np.asarray,
                           _labels if num_classes > 2 else _threshold)
    labels = _class_names(num_classes) if num_classes > 2 else {0: "background", 1: "vessel"}
    return cases["train"], cases["test"], labels, RGB


def _grey_uint8(a):
    """lung's float 0..255 slice -> (H, W, 1) uint8, rounded."""
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None]


def lung(prepared):
    prepared = Path(prepared)
    path = prepared / "split.json"
    summary = {}
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path}: not valid JSON ({exc}); prepare the task again") from None
    num_classes = _split_num_classes(path)  # --keep-labels: the targets Train_maska / Test_maska are label maps
    masks = ("Train_maska", "Test_maska") if num_classes > 2 else ("mask_train", "mask_test")
    cases = {}
    for part, images, mask in (("train", "data_train", masks[0]), ("test", "data_test", masks[1])):
        imgs, truth = (_load_npy(prepared / f"{n}.npy", "lung") for n in (images, mask))
        names = summary.get(f"{part}_slices", summary.get(part)) if isinstance(summary, dict) else None
        split = {part: names} if isinstance(names, list) else None
        cases[part] = Lazy(_names(split, [part], len(imgs), part), imgs, truth, _grey_uint8,
                           _labels if num_classes > 2 else _threshold)
    labels = _class_names(num_classes) if num_classes > 2 else {0: "background", 1: "lung"}
    return cases["train"], cases["test"], labels, ["grey"]


class _chain:
    """Several case sequences as one (length known, for the progress bar)."""

    def __init__(self, parts):
        self.parts = parts

    def __len__(self):
        return sum(len(p) for p in self.parts)

    def __iter__(self):
        for part in self.parts:
            yield from part


class _Files:
    """Cases ``(name, image, label)`` read from (image file, label file) pairs on access (bounded memory)."""

    def __init__(self, items):
        self.items = items  # [(name, image path, label path)]

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        from common.data.io import read_image

        for name, image, label in self.items:
            yield name, read_image(image, "rgb"), np.asarray(read_image(label, "gray"), np.uint8)


def robotic_scene(prepared):
    """robotic_scene/prepare.py's ``cropted_train``: every sequence's frames and index masks (12 classes); the
    test sequences of an own-data ``split.json`` go to imagesTs, everything else to imagesTr."""
    from common.data.io import list_images
    from common.tasks import get_task

    prepared = Path(prepared)
    folder = prepared / "cropted_train" if (prepared / "cropted_train").is_dir() else prepared
    seqs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith("seq_")),
                  key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 0)
    if not seqs:
        raise DataLayoutError(f"{folder}: no seq_<N> folders; is this the --work-dir of robotic_scene/prepare.py "
                              "(--task robotic_scene)?")
    test_seqs = set()
    if (folder / "split.json").is_file():
        try:
            test_seqs = {f"seq_{int(s)}" for s in json.loads((folder / "split.json").read_text()).get("test_seqs", [])}
        except (ValueError, TypeError, AttributeError) as exc:
            raise UserError(f"{folder / 'split.json'}: not a split.json of robotic_scene/prepare.py ({exc})") from None
    parts = {"train": [], "test": []}
    for seq in seqs:
        for image in list_images(seq / "images", (".png",)):
            label = seq / "instruments_masks" / image.name
            if not label.is_file():
                raise DataLayoutError(f"{label}: not found (the mask of {image}); prepare the data again")
            parts["test" if seq.name in test_seqs else "train"].append((f"{seq.name}/{image.stem}", image, label))
    classes = get_task("robotic_scene").CLASSES
    return _Files(parts["train"]), _Files(parts["test"]), dict(classes), RGB


TASKS = {"skin_lesion": skin_lesion, "ultrasound_nerve": ultrasound_nerve, "fingernail": fingernail,
         "retina_vessel": retina_vessel, "lung": lung, "robotic_scene": robotic_scene}
NOT_YET = ("retinal_edema",)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m common.data.to_nnunet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", type=Path, help="folder the task's prepare script wrote (its --work-dir)")
    parser.add_argument("--task", required=True, help=f"the task that prepared it: {', '.join(TASKS)}")
    parser.add_argument("--out", type=Path, required=True,
                        help="the dataset folder, or with --dataset-id the nnUNet_raw folder to write into")
    parser.add_argument("--format", choices=tuple(FORMATS), default="png",
                        help="png (2-D, RGB as one _0000 file) or nifti (.nii.gz, one file per channel) "
                             "(default: %(default)s)")
    parser.add_argument("--dataset-id", type=int, default=None,
                        help="nnU-Net dataset id: writes <out>/Dataset<NNN>_<name> (nnUNetv2_* -d NNN)")
    parser.add_argument("--dataset-name", default=None, help="dataset name (default: the task)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.task in NOT_YET:
        raise cli.option_error("--task", f"{args.task} is not supported yet (its prepared format is being "
                                         f"extended); supported: {', '.join(TASKS)}")
    if args.task not in TASKS:
        raise cli.option_error("--task", f"unknown task {args.task!r}; supported: {', '.join(TASKS)}")
    name = args.dataset_name or args.task
    if not name.replace("_", "").replace("-", "").isalnum():
        raise cli.option_error("--dataset-name", f"{name!r}: use letters, digits, '_' and '-' only")
    if args.dataset_id is not None and not 0 < args.dataset_id < 1000:
        raise cli.option_error("--dataset-id", f"{args.dataset_id}: nnU-Net ids are 1..999")
    out = args.out / f"Dataset{args.dataset_id:03d}_{name}" if args.dataset_id is not None else args.out
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    if not args.prepared.is_dir():
        raise DataLayoutError(f"{args.prepared}: folder not found; give the --work-dir of {args.task}'s prepare "
                              f"script")
    train, test, labels, channels = TASKS[args.task](args.prepared)
    written = write_nnunet_dataset(out, train_cases=train, test_cases=test, labels=labels, channel_names=channels,
                                   file_ending=FORMATS[args.format], dataset_name=name, overwrite=args.overwrite,
                                   verbose=not args.quiet,
                                   description=f"{args.task} prepared arrays of {args.prepared}, exported by "
                                               f"common.data.to_nnunet")
    print(f"Wrote {len(written['train'])} training and {len(written['test'])} test cases to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
