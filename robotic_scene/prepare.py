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

Your own data (``--images DIR --masks DIR`` or ``--nnunet-dataset DIR``, read by ``common.data.pairs``) is
written to the same layout, so train.py / test.py run unchanged; see :func:`prepare_own` and the README
section "Train on your own data".
"""

import argparse
import json
import re
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
from common.errors import OptionError

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


# ------------------------------------------------------------------------------------------------ own data

#: surgical phase (scene) names of the original (util/config.py), by scene id
SCENE_NAMES = ("preparing", "peeling", "incising")
SPLIT = "split.json"


def _natural_key(text):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def sequence_of(name, regex):
    """The sequence of a case name: its top folder (``seq_3/frame000`` -> ``seq_3``), or for a flat name the
    ``--group-by`` regex's group 1 (or whole match) in it, or the name itself when the regex does not match."""
    if "/" in name:
        return name.split("/", 1)[0]
    match = regex.search(name) if regex is not None else None
    if match is None:
        return name
    return match.group(1) if regex.groups else match.group(0)


def sequence_numbers(groups):
    """``{sequence name: N}`` of the prepared ``seq_<N>`` folders: the numbers of names that are all
    ``seq_<N>`` (distinct), else 1, 2, ... in natural order of the names."""
    groups = sorted(set(groups), key=_natural_key)
    found = [re.fullmatch(r"seq_(\d+)", g) for g in groups]
    if all(found) and len({int(m.group(1)) for m in found}) == len(groups):
        return {g: int(m.group(1)) for g, m in zip(groups, found)}
    return {g: k for k, g in enumerate(groups, 1)}


def read_scenes(path, sequences):
    """``{sequence name: scene id}`` from ``--scenes FILE.json``: ``{"<sequence>": 0|1|2 or a scene name}``
    (``preparing``, ``peeling``, ``incising``); every sequence needs one, a name not among the sequences is an
    error."""
    where = f"--scenes {path}"
    try:
        table = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OptionError(f"{where}: file not found") from None
    except (OSError, ValueError) as exc:
        raise OptionError(f"{where}: not a JSON object ({exc})") from None
    if not isinstance(table, dict):
        raise OptionError(f'{where}: expected a JSON object {{"<sequence>": scene}}, e.g. {{"seq_1": "peeling"}}')
    scenes = {}
    for key, value in table.items():
        if isinstance(value, str) and value.lower() in SCENE_NAMES:
            value = SCENE_NAMES.index(value.lower())
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(SCENE_NAMES):
            raise OptionError(f"{where}: scene of {key!r} is {value!r}; give 0, 1, 2 or "
                              f"{', '.join(SCENE_NAMES)} (TDSNet's three surgical phases)")
        scenes[str(key)] = value
    unknown = sorted(set(scenes) - set(sequences), key=_natural_key)
    missing = sorted(set(sequences) - set(scenes), key=_natural_key)
    if unknown:
        known = ", ".join(sorted(sequences, key=_natural_key)[:8])
        raise OptionError(f"{where}: {len(unknown)} name(s) that are not sequences of the data: "
                          f"{', '.join(unknown[:5])}; the sequences are {known}")
    if missing:
        raise OptionError(f"{where}: no scene for {len(missing)} sequence(s): {', '.join(missing[:5])}"
                          f"{' ...' if len(missing) > 5 else ''}; every sequence needs one")
    return scenes


def _own_dataset(args):
    """The own dataset and its colour table: ROBOT18's unless --label-colours (or the dataset's own)."""
    from common.data.pairs import OwnDataset, find_pairs, load_own_data

    robot = {index: tuple(int(v) for v in colour) for index, colour in enumerate(CLASS_COLOURS)}
    if args.nnunet_dataset is None and args.label_colours is None and args.images is not None \
            and args.masks is not None:
        pairs = find_pairs(args.images, args.masks, skip_unpaired=args.skip_unpaired)
        for option in ("val_fraction", "test_fraction"):  # load_own_data's checks, done here for this path
            value = getattr(args, option)
            if not 0 <= value < 1:
                raise cli.option_error("--" + option.replace("_", "-"), f"{value} must be in [0, 1)")
        return OwnDataset(pairs=pairs, labels=dict(enumerate(CLASS_NAMES)), source="folders",
                          label_colours=robot), "ROBOT18"
    dataset = load_own_data(args, binary=False)
    if args.label_colours is not None:
        return dataset, str(args.label_colours)
    if dataset.source == "nnunet":
        return dataset, None  # label maps: values as stored, named by dataset.json
    return dataset, "ROBOT18"


def _check_labels(labels, path):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = sorted(int(v) for v in np.unique(labels) if not 0 <= v < NUM_CLASSES)
        raise DataLayoutError(f"{path}: labels {bad[:5]} are outside TDSNet's {NUM_CLASSES} classes 0.."
                              f"{NUM_CLASSES - 1} ({', '.join(f'{i} {n}' for i, n in enumerate(CLASS_NAMES[:3]))}, "
                              f"...); map your classes onto 0..{NUM_CLASSES - 1}")
    return labels.astype(np.uint8)


def _frame_size(pair):
    from PIL import Image

    try:
        with Image.open(pair.image[0]) as img:
            return img.size[::-1]
    except Exception:  # read_pair reports the reason
        return None


def prepare_own(args, verbose=True):
    """Own frames and label maps -> the prepared layout (``seq_<N>/images``, ``seq_<N>/instruments_masks``),
    ``split.json`` (by sequence) and ``prepare.json``; returns the summary.

    Sequences: a frame's top folder, or for flat names the ``--group-by`` regex; kept whole in one split.
    Folders named ``seq_<N>`` keep their number, other names are numbered 1, 2, ... in natural order.
    Masks go through ``common.data.pairs.read_pair`` (binary=False) with the ROBOT18 colour table (or
    ``--label-colours``; nnU-Net label maps as stored); labels must lie in 0..11. Frames are cropped to their
    top-left ``--height`` x ``--width`` as the benchmark's (default: the smallest frame, rounded down to
    multiples of 32, TDSNet's input rule). Scenes: ``--scenes FILE.json``; without it the data have no scene
    labels (train.py then refuses the scene stage 4: ``--last-stage 3``).
    """
    from common.data.pairs import read_pair, split_pairs, write_split

    dataset, colours_source = _own_dataset(args)
    volumes = [p.name for p in dataset.pairs if p.volume]
    if volumes:
        raise DataLayoutError(f"{volumes[0]}: a NIfTI volume; TDSNet takes 2-D RGB frames (PNG, JPEG, ...)")
    if dataset.labels:
        bad = sorted(k for k in dataset.labels if not 0 <= k < NUM_CLASSES)
        if bad:
            raise DataLayoutError(f"{args.nnunet_dataset or args.label_colours}: labels {bad[:5]} are outside "
                                  f"TDSNet's {NUM_CLASSES} classes 0..{NUM_CLASSES - 1}")
    try:
        regex = re.compile(args.group_by) if args.group_by else None
    except re.error as exc:
        raise cli.option_error("--group-by", f"{args.group_by!r} is not a regular expression ({exc})") from None
    group = {p.name: sequence_of(p.name, regex) for p in dataset.pairs}
    numbers = sequence_numbers(group.values())
    seq_split = split_pairs(sorted(numbers), val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                            seed=args.seed, group_by=None)
    scenes = read_scenes(args.scenes, numbers) if args.scenes is not None else None
    out = Path(args.work_dir) / PREPARED
    if out.exists() and not args.overwrite:
        raise DataLayoutError(f"{out}: already exists (a previous prepare.py run); pass --overwrite to replace it, "
                              f"or another --work-dir")
    sizes = [s for s in (_frame_size(p) for p in dataset.pairs) if s is not None]
    height = args.height or (min(h for h, _ in sizes) // 32 * 32 if sizes else 0)
    width = args.width or (min(w for _, w in sizes) // 32 * 32 if sizes else 0)
    if height <= 0 or width <= 0:
        raise DataLayoutError(f"{dataset.pairs[0].image[0]}: frames smaller than 32 x 32; TDSNet needs sides that "
                              f"are multiples of 32")
    warn_orientation([f for p in dataset.pairs for f in (*p.image, p.mask)], applied=False,
                     reader="common.data.pairs.read_pair")
    frame_names = {}
    for pair in dataset.pairs:
        rest = pair.name.split("/", 1)[1] if "/" in pair.name else pair.name
        key = (numbers[group[pair.name]], rest.replace("/", "_") + ".png")
        if key in frame_names:
            raise DataLayoutError(f"{pair.image[0]}: gives the same prepared frame seq_{key[0]}/{key[1]} as "
                                  f"{frame_names[key]}; rename one of them")
        frame_names[key] = pair.image[0]
    counts = np.zeros(NUM_CLASSES, np.int64)
    per_seq = {}
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        for pair in tqdm(dataset.pairs, desc="prepare", unit="frame", disable=not verbose):
            image, labels = read_pair(pair, mode="rgb", binary=False, label_colours=dataset.label_colours)
            if image.ndim != 3 or image.shape[-1] != 3:
                channels = 1 if image.ndim == 2 else image.shape[-1]
                raise DataLayoutError(f"{pair.image[0]}: {channels} channel(s); TDSNet takes RGB frames (3 channels"
                                      f"{', nnU-Net channels 0, 1, 2' if len(pair.image) > 1 else ''})")
            if image.shape[0] < height or image.shape[1] < width:
                raise ImageReadError(f"{pair.image[0]}: {image.shape[1]}x{image.shape[0]} (WxH) is smaller than the "
                                     f"crop {width}x{height}; pass smaller --height/--width")
            mask = _check_labels(labels, pair.mask)[:height, :width]
            number = numbers[group[pair.name]]
            rest = pair.name.split("/", 1)[1] if "/" in pair.name else pair.name
            name = rest.replace("/", "_") + ".png"
            counts += np.bincount(mask.ravel(), minlength=NUM_CLASSES)
            write_image(tmp / f"seq_{number}" / IMAGES / name, np.ascontiguousarray(image[:height, :width]))
            write_image(tmp / f"seq_{number}" / MASKS / name, mask)
            per_seq[f"seq_{number}"] = per_seq.get(f"seq_{number}", 0) + 1
        frames = {part: sorted((n for n in group if group[n] in seq_split[part]), key=_natural_key)
                  for part in ("train", "val", "test")}
        record = write_split(tmp / SPLIT, frames, source=dataset.source, seed=args.seed, group_by=args.group_by,
                             fractions=(args.val_fraction, args.test_fraction), verbose=False)
        record.update(split_unit="sequence",
                      sequences={f"seq_{n}": g for g, n in sorted(numbers.items(), key=lambda kv: kv[1])},
                      **{f"{part}_seqs": sorted(numbers[g] for g in seq_split[part]) for part in frames},
                      scenes=None if scenes is None else {str(numbers[g]): s for g, s in scenes.items()})
        write_json(tmp / SPLIT, record)
        summary = {"frames": len(dataset.pairs), "sequences": per_seq, "height": height, "width": width,
                   "source": dataset.source, "own_data": str(args.nnunet_dataset or args.images),
                   "label_colours": colours_source, "class_names": list(CLASS_NAMES),
                   "scenes": args.scenes is not None}
        write_json(tmp / "prepare.json", summary)
        write_class_pixels(counts, tmp / "class_pixels")
    print(f"{SPLIT}: " + " / ".join(f"{part} {len(seq_split[part])} sequences ({len(frames[part])} frames)"
                                    for part in frames))
    if dataset.test:
        print(f"note: the {len(dataset.test)} imagesTs case(s) have no labels and are not prepared; segment them "
              "with robotic_scene/predict.py", file=sys.stderr)
    if scenes is None:
        print("note: no --scenes: the frames have no scene (surgical phase) labels; train with --last-stage 3 "
              "(stage 4 trains the scene head)", file=sys.stderr)
    return summary


EXAMPLES = """examples:
  python robotic_scene/prepare.py                                       # data/robotic_scene/train -> work/robotic_scene
  python robotic_scene/prepare.py --raw-dir /data/endovis18/train --work-dir /scratch/robot18
  python robotic_scene/prepare.py --unknown-colours background --overwrite   # the original: unknown -> background
  python robotic_scene/prepare.py --images my/frames --masks my/labels --scenes my/scenes.json --work-dir work/own
  python robotic_scene/prepare.py --nnunet-dataset nnUNet_raw/Dataset503_Robot --work-dir work/own_nnunet
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW,
                        help="EndoVis 2018 training folder with seq_<N>/left_frames and seq_<N>/labels "
                             "(default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help=f"output root; frames go to <work-dir>/{PREPARED} (default: %(default)s)")
    parser.add_argument("--height", type=int, default=None,
                        help=f"crop rows from the top (default: {HEIGHT}; own data: the smallest frame's rows, rounded "
                             "down to a multiple of 32)")
    parser.add_argument("--width", type=int, default=None,
                        help=f"crop columns from the left (default: {WIDTH}; own data: the smallest frame's columns, "
                             "rounded down to a multiple of 32)")
    parser.add_argument("--unknown-colours", choices=("error", "background"), default="error",
                        help="a label colour not in the table: stop with one error listing every unknown colour "
                             "(default) or map them to background with one warning (the original, silently)")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing <work-dir>/{PREPARED}")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from common.data.pairs import add_own_data_arguments
    from robotic_scene.task import OWN_DATA

    group = add_own_data_arguments(parser, val_fraction=OWN_DATA["val_fraction"],
                                   test_fraction=OWN_DATA["test_fraction"], group_by=OWN_DATA["group_by"],
                                   binary=False)
    helps = {"label_colours": "colour table of RGB colour-coded masks, e.g. {\"0\": [0, 0, 0], \"1\": [0, 255, 0]} "
                              "(default: the ROBOT18 colours of CLASSES)",
             "val_fraction": "fraction of the SEQUENCES for validation (default: %(default)s; fold 0: 4 of 15)",
             "test_fraction": "fraction of the sequences for testing (default: %(default)s)",
             "group_by": "a frame's sequence is its top folder; for flat names this regex's group 1 "
                         "(default: %(default)s, seq_3_frame000 -> seq_3)"}
    for action in group._group_actions:
        action.help = helps.get(action.dest, action.help)
    group.add_argument("--scenes", type=Path, metavar="FILE.json",
                       help='surgical phase of each sequence, e.g. {"seq_1": "preparing", "seq_2": 2} (0 preparing, '
                            "1 peeling, 2 incising); without it the scene head is not trained (train --last-stage 3)")
    group.add_argument("--seed", type=int, default=OWN_DATA["seed"], help="seed of the split (default: %(default)s)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if any(v is not None and v <= 0 for v in (args.height, args.width)):
        shown = [("?" if v is None else v) for v in (args.height, args.width)]
        raise cli.option_error("--height/--width", f"must be positive, got {shown[0]}x{shown[1]}")
    if args.images is not None or args.masks is not None or args.nnunet_dataset is not None:
        summary = prepare_own(args, not args.quiet)
        print(f"{summary['frames']} frames of {len(summary['sequences'])} sequences "
              f"({summary['height']}x{summary['width']}) -> {args.work_dir / PREPARED}")
        return summary
    if args.scenes is not None:
        raise cli.option_error("--scenes", "is for your own data (--images/--masks or --nnunet-dataset); the "
                               "ROBOT18 scenes are the original's")
    args.height, args.width = args.height or HEIGHT, args.width or WIDTH
    summary = prepare(args.raw_dir, args.work_dir, args.height, args.width, args.unknown_colours, not args.quiet,
                      args.overwrite)
    print(f"{summary['frames']} frames of {len(summary['sequences'])} sequences -> {args.work_dir / PREPARED}")
    return summary


if __name__ == "__main__":
    cli.run(main)
