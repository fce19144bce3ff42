"""ROBOT18 (EndoVis 2018) frames and colour labels -> cropped images and class-index masks (the original's prepare.py).

Reads the challenge's training layout under ``--raw-dir`` (the original's hard-coded ``train_path``)::

    seq_<N>/left_frames/frame<k>.png   RGB frame, 1280 x 1024 (W x H)
    seq_<N>/labels/frame<k>.png        colour-coded label, same name (right_frames/ is not used)

and writes, for every left frame, the top-left ``--height x --width`` crop (1024 x 1280: a no-op on the real
frames) to ``<work-dir>/cropted_train/seq_<N>/images/<name>`` and a single-channel uint8 class-index mask to
``<work-dir>/cropted_train/seq_<N>/instruments_masks/<name>`` (the original's folder names, typo included).

Colours are matched exactly against :data:`CLASS_COLOURS` (spec section 3.1). Every label is scanned; label
colours that are not in the table stop the run with ONE error listing each unknown colour with its pixel and
file counts and its first files; the original silently made them background (``--unknown-colours
background`` does that, with one such warning). A frame without its label or a label without its frame
(either side, any sequence) and an unreadable file are errors too (the original skipped such frames
silently). All or nothing: the output is built in a temporary folder renamed into place at the end, so a
failed run leaves nothing behind; an existing prepared folder is replaced only with ``--overwrite``.

Also written: ``<work-dir>/cropted_train/prepare.json`` (frames per sequence, settings) and
``class_pixels.md``/``.json``/``.png`` (pixel share of each class).
"""

import argparse
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import (DataLayoutError, ImageReadError, atomic_dir, list_images, read_image, warn_orientation,
                            write_image, write_json)

HEIGHT, WIDTH = 1024, 1280
DEFAULT_RAW = cli.repo_path("data", "robotic_scene", "train")
DEFAULT_WORK = cli.repo_path("work", "robotic_scene")
PREPARED = "cropted_train"  # the original's folder name
IMAGES, MASKS = "images", "instruments_masks"

from robotic_scene.task import CLASS_COLOURS, CLASS_NAMES, LABEL_CLASSES as CLASSES, NUM_CLASSES  # noqa: E402


class UnknownColourError(DataLayoutError):
    """A label image holds a colour that is not in the class table."""


def _codes(rgb):
    rgb = np.asarray(rgb, np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_TABLE_CODES = _codes(CLASS_COLOURS)
_ORDER = np.argsort(_TABLE_CODES)


def match_colours(label):
    """``(index, known)``: class indices (H, W) uint8 of an RGB label by exact match with :data:`CLASS_COLOURS`
    (0 where the colour is unknown) and the (H, W) bool map of the pixels whose colour is in the table."""
    label = np.asarray(label)
    codes = _codes(label)
    sorted_codes = _TABLE_CODES[_ORDER]
    pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    known = sorted_codes[pos] == codes
    index = _ORDER[pos].astype(np.uint8)
    index[~known] = 0
    return index, known


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
    if unknown not in ("error", "background"):
        raise ValueError(f"unknown must be 'error' or 'background', got {unknown!r}")
    index, known = match_colours(label)
    if not known.all():
        rows, cols = np.nonzero(~known)
        colours = np.unique(label[~known], axis=0)
        message = (f"{path}: {rows.size} pixels have colours not in the ROBOT18 table, e.g. RGB "
                   f"{tuple(int(v) for v in label[rows[0], cols[0]])} at row {rows[0]}, col {cols[0]} "
                   f"({len(colours)} unknown colour{'s' if len(colours) > 1 else ''})")
        if unknown == "error":
            raise UnknownColourError(message + "; pass --unknown-colours background to map them to background")
        warnings.warn(message + "; mapped to background as the original", stacklevel=2)
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


def read_frame(image_path, label_path, height=HEIGHT, width=WIDTH):
    """One frame -> (cropped RGB image, cropped RGB label), both uint8; size problems raise one-line errors.

    Both are read as the original's ``cv2.imread`` (IMREAD_COLOR) reads them: an orientation tag is applied
    (``exif=True``; OpenCV does so for JPEG since 3.1 and for PNG since 4.5.2)."""
    image = read_image(image_path, "rgb", exif=True)
    if not Path(label_path).is_file():
        raise DataLayoutError(f"{label_path}: label not found for {image_path}")
    label = read_image(label_path, "rgb", exif=True)
    if label.shape != image.shape:
        raise DataLayoutError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} (WxH) but its frame is "
                              f"{image.shape[1]}x{image.shape[0]}")
    if image.shape[0] < height or image.shape[1] < width:
        raise ImageReadError(f"{image_path}: {image.shape[1]}x{image.shape[0]} (WxH) is smaller than the crop "
                             f"{width}x{height}; pass --height/--width")
    return image[:height, :width], label[:height, :width]


def prepare_frame(image_path, label_path, height=HEIGHT, width=WIDTH, unknown="error"):
    """One frame -> (cropped RGB image, cropped class-index mask), both uint8."""
    image, label = read_frame(image_path, label_path, height, width)
    return image, colour_to_index(label, label_path, unknown)


def list_frames(raw_dir):
    """``[(sequence folder, frame path, label path)]`` of every left frame; a frame without its label or a label
    without its frame (in any sequence) raises one ``DataLayoutError`` naming the first orphan and the count."""
    frames, orphans = [], []
    for seq in list_sequences(raw_dir):
        images = {p.name: p for p in list_images(seq / "left_frames", (".png",))}
        label_dir = seq / "labels"
        if not label_dir.is_dir():
            raise DataLayoutError(f"{label_dir}: folder not found (the colour labels of {seq.name})")
        labels = {p.name: p for p in label_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
        orphans += [f"{labels[n]}: label without its frame {seq / 'left_frames' / n}" for n in sorted(set(labels) -
                                                                                                   set(images))]
        orphans += [f"{images[n]}: frame without its label {label_dir / n}" for n in sorted(set(images) - set(labels))]
        frames += [(seq, images[n], labels[n]) for n in sorted(set(images) & set(labels))]
    if orphans:
        more = f" (+{len(orphans) - 1} more unpaired file{'s' if len(orphans) > 2 else ''})" if len(orphans) > 1 else ""
        raise DataLayoutError(f"{orphans[0]}{more}; every seq_<N>/left_frames/<name>.png needs "
                              f"seq_<N>/labels/<name>.png and the reverse")
    return frames


def _unknown_message(raw_dir, unknown_colours, unknown):
    """One line for all unknown label colours: each colour with its pixel and file counts and first files."""
    n_files = len({f for info in unknown_colours.values() for f in info["files"]})
    parts = []
    for code, info in sorted(unknown_colours.items(), key=lambda kv: -kv[1]["pixels"])[:5]:
        rgb = (code >> 16, (code >> 8) & 255, code & 255)
        first = ", ".join(str(f) for f in info["files"][:2])
        parts.append(f"RGB {rgb} ({info['pixels']} px in {len(info['files'])} file"
                     f"{'s' if len(info['files']) > 1 else ''}, first {first})")
    more = f" and {len(unknown_colours) - 5} more" if len(unknown_colours) > 5 else ""
    head = (f"{raw_dir}: {n_files} label file{'s' if n_files > 1 else ''} hold{'' if n_files > 1 else 's'} "
            f"{len(unknown_colours)} colour{'s' if len(unknown_colours) > 1 else ''} not in the ROBOT18 table: "
            f"{'; '.join(parts)}{more}")
    if unknown == "error":
        return head + "; fix the labels, or pass --unknown-colours background to map them to background (the original)"
    return head + "; mapped to background (--unknown-colours background, as the original)"


def prepare(raw_dir, work_dir, height=HEIGHT, width=WIDTH, unknown="error", verbose=True, overwrite=False):
    """Convert every sequence of ``raw_dir``; returns the summary dict written to prepare.json.

    All or nothing: the pairing of every frame and label is checked first, the output is built in a temporary
    folder beside ``<work-dir>/cropted_train`` and renamed into place only when every frame was read and every
    label colour is known (``unknown="error"``: all labels are scanned, then one error lists every unknown
    colour). An existing prepared folder is refused unless ``overwrite``.
    """
    if unknown not in ("error", "background"):
        raise cli.option_error("--unknown-colours", f"must be 'error' or 'background', got {unknown!r}")
    raw_dir, out = Path(raw_dir), Path(work_dir) / PREPARED
    frames = list_frames(raw_dir)
    if out.exists() and not overwrite:
        raise DataLayoutError(f"{out}: already exists (a previous prepare.py run); pass --overwrite to replace it, "
                              f"or another --work-dir")
    counts = np.zeros(NUM_CLASSES, np.int64)
    per_seq, unknown_colours = {}, {}
    warn_orientation([p for _, image_path, label_path in frames for p in (image_path, label_path)
                      if Path(p).is_file()], applied=True, reader="cv2.imread")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for seq, image_path, label_path in tqdm(frames, desc="prepare", unit="frame", disable=not verbose):
            image, label = read_frame(image_path, label_path, height, width)
            mask, known = match_colours(label)
            if not known.all():
                codes, n = np.unique(_codes(label[~known]), return_counts=True)
                for code, count in zip(codes.tolist(), n.tolist()):
                    info = unknown_colours.setdefault(code, {"pixels": 0, "files": []})
                    info["pixels"] += count
                    info["files"].append(label_path.relative_to(raw_dir))
            if unknown_colours and unknown == "error":
                continue  # keep scanning the labels, write nothing more: the run fails at the end
            counts += np.bincount(mask.ravel(), minlength=NUM_CLASSES)
            write_image(tmp / seq.name / IMAGES / image_path.name, image)
            write_image(tmp / seq.name / MASKS / image_path.name, mask)
            per_seq[seq.name] = per_seq.get(seq.name, 0) + 1
        if unknown_colours and unknown == "error":
            raise UnknownColourError(_unknown_message(raw_dir, unknown_colours, unknown))
        if unknown_colours:
            warnings.warn(_unknown_message(raw_dir, unknown_colours, unknown), stacklevel=2)
        summary = {"frames": len(frames), "sequences": per_seq, "height": height, "width": width,
                   "unknown_colours": unknown, "raw_dir": str(raw_dir),
                   "unknown_colour_pixels": int(sum(i["pixels"] for i in unknown_colours.values()))}
        write_json(tmp / "prepare.json", summary)
        write_class_pixels(counts, tmp / "class_pixels")
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


EXAMPLES = """examples:
  python robotic_scene/prepare.py                                       # data/robotic_scene/train -> work/robotic_scene
  python robotic_scene/prepare.py --raw-dir /data/endovis18/train --work-dir /scratch/robot18
  python robotic_scene/prepare.py --unknown-colours background --overwrite   # the original: unknown -> background
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW,
                        help="EndoVis 2018 training folder with seq_<N>/left_frames and seq_<N>/labels "
                             "(default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help=f"output root; frames go to <work-dir>/{PREPARED} (default: %(default)s)")
    parser.add_argument("--height", type=int, default=HEIGHT, help="crop rows from the top (default: %(default)s)")
    parser.add_argument("--width", type=int, default=WIDTH, help="crop columns from the left (default: %(default)s)")
    parser.add_argument("--unknown-colours", choices=("error", "background"), default="error",
                        help="a label colour not in the table: stop with one error listing every unknown colour "
                             "(default) or map them to background with one warning (the original, silently)")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing <work-dir>/{PREPARED}")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.height <= 0 or args.width <= 0:
        raise cli.option_error("--height/--width", f"must be positive, got {args.height}x{args.width}")
    summary = prepare(args.raw_dir, args.work_dir, args.height, args.width, args.unknown_colours, not args.quiet,
                      args.overwrite)
    print(f"{summary['frames']} frames of {len(summary['sequences'])} sequences -> {args.work_dir / PREPARED}")
    return summary


if __name__ == "__main__":
    cli.run(main)
