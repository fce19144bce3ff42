"""ROBOT18 (EndoVis 2018) frames and colour labels -> cropped images and class-index masks (the original's prepare.py).

Reads the challenge's training layout under ``--raw-dir`` (the original's hard-coded ``train_path``)::

    seq_<N>/left_frames/frame<k>.png   RGB frame, 1280 x 1024 (W x H)
    seq_<N>/labels/frame<k>.png        colour-coded label, same name (right_frames/ is not used)

and writes, for every left frame, the top-left ``--height x --width`` crop (1024 x 1280: a no-op on the real
frames) to ``<work-dir>/cropted_train/seq_<N>/images/<name>`` and a single-channel uint8 class-index mask to
``<work-dir>/cropted_train/seq_<N>/instruments_masks/<name>`` (the original's folder names, typo included).

Colours are matched exactly against :data:`CLASS_COLOURS` (spec section 3.1). A label pixel whose colour is
not in the table stops the run with an error naming the file, the colour and how many pixels have it; the
original silently made it background (``--unknown-colours background`` does that, with a warning per file).
A missing or unreadable label is an error too (the original skipped the frame silently).

Also written: ``<work-dir>/cropted_train/prepare.json`` (frames per sequence, settings) and
``class_pixels.md``/``.json``/``.png`` (pixel share of each class).
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, ImageReadError, atomic_path, list_images, read_image, write_image

HEIGHT, WIDTH = 1024, 1280
DEFAULT_RAW = cli.repo_path("data", "robotic_scene", "train")
DEFAULT_WORK = cli.repo_path("work", "robotic_scene")
PREPARED = "cropted_train"  # the original's folder name
IMAGES, MASKS = "images", "instruments_masks"

#: (EndoVis 2018 class name, RGB colour of the label PNGs) by class index, as the original's util/config.py.
CLASSES = (
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
CLASS_NAMES = tuple(name for name, _ in CLASSES)
CLASS_COLOURS = np.array([colour for _, colour in CLASSES], np.uint8)
NUM_CLASSES = len(CLASSES)


class UnknownColourError(DataLayoutError):
    """A label image holds a colour that is not in the class table."""


def _codes(rgb):
    rgb = np.asarray(rgb, np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_TABLE_CODES = _codes(CLASS_COLOURS)
_ORDER = np.argsort(_TABLE_CODES)


def colour_to_index(label, path="label", unknown="error"):
    """Colour label (H, W, 3) uint8 RGB -> class indices (H, W) uint8 by exact match with :data:`CLASS_COLOURS`.

    Args:
        label: RGB array.
        path: name used in messages.
        unknown: ``"error"`` raises :class:`UnknownColourError` naming ``path``, the first unknown colour and
            the number of pixels with unknown colours; ``"background"`` maps them to 0 as the original, with a
            warning that says the same.
    """
    label = np.asarray(label)
    if label.ndim != 3 or label.shape[-1] != 3:
        raise UnknownColourError(f"{path}: expected an RGB label image, got shape {label.shape}")
    codes = _codes(label)
    sorted_codes = _TABLE_CODES[_ORDER]
    pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    known = sorted_codes[pos] == codes
    index = _ORDER[pos].astype(np.uint8)
    if not known.all():
        rows, cols = np.nonzero(~known)
        colours = np.unique(label[~known], axis=0)
        message = (f"{path}: {rows.size} pixels have colours not in the ROBOT18 table, e.g. RGB "
                   f"{tuple(int(v) for v in label[rows[0], cols[0]])} at row {rows[0]}, col {cols[0]} "
                   f"({len(colours)} unknown colour{'s' if len(colours) > 1 else ''})")
        if unknown == "error":
            raise UnknownColourError(message)
        if unknown != "background":
            raise ValueError(f"unknown must be 'error' or 'background', got {unknown!r}")
        warnings.warn(message + "; mapped to background as the original", stacklevel=2)
        index[~known] = 0
    return index


def index_to_colour(mask):
    """Class indices (H, W) -> RGB label (H, W, 3) uint8 with the colours of :data:`CLASS_COLOURS`."""
    mask = np.asarray(mask)
    if mask.size and mask.max() >= NUM_CLASSES:
        raise ValueError(f"class index {int(mask.max())} out of range (0..{NUM_CLASSES - 1})")
    return CLASS_COLOURS[mask]


def sequence_number(name):
    """``seq_12`` -> 12; anything else raises DataLayoutError."""
    prefix, _, number = Path(name).name.partition("_")
    if prefix != "seq" or not number.isdigit():
        raise DataLayoutError(f"{name}: not a sequence folder (expected seq_<N>)")
    return int(number)


def list_sequences(folder):
    """Sorted (by number) ``seq_<N>`` folders of ``folder``; none raises DataLayoutError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found")
    seqs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith("seq_")), key=sequence_number)
    if not seqs:
        raise DataLayoutError(f"{folder}: no seq_<N> folders")
    return seqs


def prepare_frame(image_path, label_path, height=HEIGHT, width=WIDTH, unknown="error"):
    """One frame -> (cropped RGB image, cropped class-index mask), both uint8."""
    image = read_image(image_path, "rgb")
    if not Path(label_path).is_file():
        raise DataLayoutError(f"{label_path}: label not found for {image_path}")
    label = read_image(label_path, "rgb")
    if label.shape != image.shape:
        raise DataLayoutError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} (WxH) but its frame is "
                              f"{image.shape[1]}x{image.shape[0]}")
    if image.shape[0] < height or image.shape[1] < width:
        raise ImageReadError(f"{image_path}: {image.shape[1]}x{image.shape[0]} (WxH) is smaller than the crop "
                             f"{width}x{height}")
    return image[:height, :width], colour_to_index(label[:height, :width], label_path, unknown)


def prepare(raw_dir, work_dir, height=HEIGHT, width=WIDTH, unknown="error", verbose=True):
    """Convert every sequence of ``raw_dir``; returns the summary dict written to prepare.json."""
    raw_dir, out = Path(raw_dir), Path(work_dir) / PREPARED
    frames = [(seq, path) for seq in list_sequences(raw_dir) for path in list_images(seq / "left_frames", (".png",))]
    counts = np.zeros(NUM_CLASSES, np.int64)
    per_seq = {}
    for seq, path in tqdm(frames, desc="prepare", unit="frame", disable=not verbose):
        image, mask = prepare_frame(path, seq / "labels" / path.name, height, width, unknown)
        counts += np.bincount(mask.ravel(), minlength=NUM_CLASSES)
        write_image(out / seq.name / IMAGES / path.name, image)
        write_image(out / seq.name / MASKS / path.name, mask)
        per_seq[seq.name] = per_seq.get(seq.name, 0) + 1
    summary = {"frames": len(frames), "sequences": per_seq, "height": height, "width": width,
               "unknown_colours": unknown, "raw_dir": str(raw_dir)}
    with atomic_path(out / "prepare.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    write_class_pixels(counts, out / "class_pixels")
    return summary


def write_class_pixels(counts, path):
    """Table (Markdown + JSON) and bar chart (PNG) of the pixel share of each class."""
    from common.report import _save, plt, write_table

    share = counts / max(int(counts.sum()), 1)
    rows = [{"index": c, "class": CLASS_NAMES[c], "pixels": int(counts[c]), "share %": 100 * float(share[c])}
            for c in range(NUM_CLASSES)]
    write_table(rows, path, title="Class pixel share of the prepared masks", digits=3)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.bar(range(NUM_CLASSES), 100 * share, color=CLASS_COLOURS / 255.0, edgecolor="k")
    ax.set_xticks(range(NUM_CLASSES), CLASS_NAMES, rotation=45, ha="right")
    ax.set_ylabel("% of pixels")
    ax.set_yscale("symlog", linthresh=0.1)
    _save(fig, Path(path).with_suffix(".png"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW,
                        help="EndoVis 2018 training folder with seq_<N>/left_frames and seq_<N>/labels "
                             "(default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help=f"output root; frames go to <work-dir>/{PREPARED} (default: %(default)s)")
    parser.add_argument("--height", type=int, default=HEIGHT, help="crop rows from the top (default: %(default)s)")
    parser.add_argument("--width", type=int, default=WIDTH, help="crop columns from the left (default: %(default)s)")
    parser.add_argument("--unknown-colours", choices=("error", "background"), default="error",
                        help="a label colour not in the table: stop with an error (default) or map it to "
                             "background with a warning (the original, silently)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = prepare(args.raw_dir, args.work_dir, args.height, args.width, args.unknown_colours, not args.quiet)
    print(f"{summary['frames']} frames of {len(summary['sequences'])} sequences -> {args.work_dir / PREPARED}")
    return summary


if __name__ == "__main__":
    cli.run(main)
