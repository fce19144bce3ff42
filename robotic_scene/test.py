"""Predict prepared ROBOT18 frames with a trained TDSNet and score them as the original (test.py, validation.py).

Per frame the prediction is the argmax of the segmentation output. Scores, for each of the 12 classes
(background included): IoU = (|G∩P| + 1e-15) / (|G∪P| + 1e-15) and Dice = (2|G∩P| + 1e-15) / (|G| + |P| +
1e-15) when the class is in the ground truth; 1 when it is absent from both, 0 when only predicted. They are
averaged over the classes of each image, then over the images of each video (sequence), then over the
videos (the README's "per image, then per video"); the mean over all images (the original's validation
number; identical when every video has the same number of frames) is reported too. Also reported (ours):
the mean IoU over the classes present in the truth or the prediction of each frame, which does not reward
classes absent from both, and the same scores for a trivial predictor (the majority class everywhere).

Options that are ours, off by default (the README mentions an ensemble and small-region removal, the code has
neither and no settings are published): ``--tta-sizes`` averages the softmax maps predicted at several input
sizes (multiples of 32), each resized bilinearly back to the frame size; ``--tta flip`` averages over the
left-right and up-down flips (flipped back; the classes keep their meaning under both, and training applies
both flips); ``--min-size`` (formerly ``--min-region``) relabels, per class, 8-connected regions smaller than
that many pixels as background (default 0: no size is published). Beside the original's scores (ours): HD95
and ASSD per class in pixels (``common.metrics.surface_distances``, MONAI's definitions), averaged over the
frames where the class is in both truth and prediction; ``--no-surface-distances`` skips them.

Written to ``--out-dir`` (default ``<work-dir>/test/<run folder>_<stage folder>_<best|last>`` plus the
non-default options; earlier results are refused without ``--overwrite``): ``predictions/seq_<N>/<frame>.png``
(colour PNGs in the label colours, as the original's ``data/predictions``; a temporary folder renamed at the
end), ``scores.md/.json`` (per video and overall, model and trivial predictor), ``per_class.md/.json`` and
``per_class.png`` (IoU and Dice of each class beside the paper's on-site test IoU), ``paper.md/.json`` (the
README's challenge table), ``overlay.png`` (image | ground truth | prediction) and ``run.json``.
"""

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, atomic_dir, read_image, write_image
from common.devices import add_precision_arguments
from common.inference import add_tta_argument
from common.metrics import multiclass_image_scores
from robotic_scene.prepare import CLASS_COLOURS, CLASS_NAMES, DEFAULT_WORK, NUM_CLASSES, PREPARED, index_to_colour
from robotic_scene.task import remove_small_regions  # noqa: F401  (one place: task.py)
from robotic_scene.train import DEFAULT_RUN, VAL_SEQS, load_trainer, normalise_images, sequence_frames

#: README table (ROBOT18 challenge on-site test, IoU %): column -> (class index, TDSNet, OTH, NCT2).
PAPER = {
    "Parenchyma": (4, 87.1, 87.5, 88.8), "Shaft": (1, 91.2, 92.2, 78.5), "Clasper": (2, 79.4, 81.3, 76.3),
    "Wrist": (3, 68.0, 73.3, 62.5), "Intestine": (10, 76.3, 15.3, 67.6), "Kidney": (5, 37.5, 29.6, 30.4),
    "Thread": (6, 47.5, 47.8, 33.0), "Needle": (8, 0.5, 1.4, 1.9), "Probe": (11, 42.8, 38.9, 44.2),
    "Clips": (7, 77.1, 84.9, 72.9),
}
PAPER_MEAN = {"Proposed (TDSNet)": 60.74, "OTH": 55.22, "NCT2": 55.61, "Digital": 49.60, "ODS": 51.50,
              "IRCAD": 48.10, "Fan": 51.86, "MEDYI": 37.32}


MIN_SIZE = 0  # the paper's "removing small regions" step has no published size, and the code has none


def parse_size(text):
    """``768x960`` -> (768, 960) (rows x cols, multiples of 32)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROWSxCOLS, e.g. 768x960") from None
    if rows <= 0 or cols <= 0 or rows % 32 or cols % 32:
        raise argparse.ArgumentTypeError(f"{text!r}: rows and cols must be positive multiples of 32")
    return rows, cols


class Predictor:
    """Softmax maps of a trained network at its own size and, optionally, at other sizes (test-time ensemble),
    each optionally averaged over the left-right and up-down flips (``tta="flip"``, flipped back)."""

    def __init__(self, network, normalise, sizes=(), tta="none"):
        import tensorflow as tf

        from common.models.tdsnet import tdsnet

        self.normalise = normalise
        self.native = tuple(network.inputs[0].shape[1:3])
        self.networks = {self.native: network}
        for size in sizes:
            if tuple(size) not in self.networks:  # same weights, another input size (the graph is size-bound)
                other = tdsnet((*size, 3), num_classes=network.outputs[0].shape[-1],
                               num_scenes=network.outputs[2].shape[-1])
                other.set_weights(network.get_weights())
                self.networks[tuple(size)] = other
        self.sizes = [tuple(s) for s in sizes] or [self.native]
        self._fns = {s: tf.function(lambda x, n=n: tf.exp(n(x, training=False)[0])) for s, n in self.networks.items()}
        if tta not in ("none", "flip"):
            raise ValueError(f"tta must be 'none' or 'flip', got {tta!r}")
        self.tta = tta

    def __call__(self, image):
        """(H, W, 3) uint8 RGB -> (H, W, C) float32 mean softmax over the sizes."""
        import tensorflow as tf

        x = normalise_images(image[None], self.normalise)
        h, w = image.shape[:2]
        total = 0.0
        from common.inference import with_flips

        for size in self.sizes:
            xs = x if size == (h, w) else tf.image.resize(x, size, method="bilinear")
            fn = lambda a, f=self._fns[size]: np.asarray(f(a))  # noqa: E731
            prob = (with_flips(fn) if self.tta == "flip" else fn)(np.asarray(xs))
            total += prob if size == (h, w) else tf.image.resize(prob, (h, w), method="bilinear")
        return np.asarray(total[0] / len(self.sizes), np.float32)


def video_means(per_image, videos):
    """Mean of ``per_image`` (N,) or (N, K) over each video, then over the videos; and the per-video means."""
    per_video = {v: per_image[videos == v].mean(axis=0) for v in np.unique(videos)}
    return np.mean(list(per_video.values()), axis=0), per_video


def present_mean(iou, present):
    """Per image: mean IoU over the classes present in the truth or the prediction (ours)."""
    return np.where(present, iou, 0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


def score_rows(truth, pred, videos, label):
    """Rows (per video, over videos, over images) of the original's mean IoU/Dice and the present-class IoU."""
    s = multiclass_image_scores(truth, pred, NUM_CLASSES)
    image_iou, image_dice = s["iou"].mean(axis=1), s["dice"].mean(axis=1)
    image_present = present_mean(s["iou"], s["present"])
    stacked = np.stack([image_iou, image_dice, image_present], axis=1)
    overall, per_video = video_means(stacked, videos)
    rows = [{"predictor": label, "video": f"seq_{v}", "frames": int((videos == v).sum()), "mean IoU": float(m[0]),
             "mean Dice": float(m[1]), "IoU (present classes)": float(m[2])} for v, m in per_video.items()]
    rows.append({"predictor": label, "video": "mean over videos", "frames": len(videos), "mean IoU": float(overall[0]),
                 "mean Dice": float(overall[1]), "IoU (present classes)": float(overall[2])})
    images = stacked.mean(axis=0)
    rows.append({"predictor": label, "video": "mean over images", "frames": len(videos), "mean IoU": float(images[0]),
                 "mean Dice": float(images[1]), "IoU (present classes)": float(images[2])})
    return rows, s


def surface_table(truths, preds):
    """Per image and class, HD95 and ASSD in pixels (``common.metrics.surface_distances``, MONAI's
    definitions): (N, C) arrays, NaN where the class is in neither mask, inf where it is in only one."""
    from common.metrics import surface_distances

    hd95 = np.full((len(truths), NUM_CLASSES), np.nan)
    assd = np.full((len(truths), NUM_CLASSES), np.nan)
    for i, (t, p) in enumerate(zip(truths, preds)):
        for c in np.union1d(np.unique(t), np.unique(p)):
            d = surface_distances(t == c, p == c)
            hd95[i, c], assd[i, c] = d["hd95"], d["assd"]
    return hd95, assd


def per_class_rows(scores, videos, surface=None):
    """IoU and Dice of each class (per image, per video, over videos) beside the paper's on-site test IoU;
    with ``surface`` = :func:`surface_table`'s arrays, also the mean HD95 and ASSD over the frames where the
    class is in both truth and prediction (ours; the original columns come first)."""
    iou, _ = video_means(scores["iou"], videos)
    dice, _ = video_means(scores["dice"], videos)
    paper = {idx: (col, tds) for col, (idx, tds, _, _) in PAPER.items()}
    rows = []
    for c in range(NUM_CLASSES):
        col, tds = paper.get(c, ("-", float("nan")))
        row = {"index": c, "class": CLASS_NAMES[c], "IoU": float(iou[c]), "Dice": float(dice[c]),
               "frames with class": int((scores["present"][:, c]).sum()), "paper column": col,
               "paper IoU (on-site test)": tds / 100}
        if surface is not None:
            for name, values in zip(("HD95 px", "ASSD px"), surface):
                finite = np.isfinite(values[:, c])
                row[name] = float(values[finite, c].mean()) if finite.any() else float("nan")
            row["frames in one mask only"] = int(np.isinf(surface[0][:, c]).sum())
        rows.append(row)
    return rows


def plot_per_class(rows, path):
    from common.report import _save, plt

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.bar(x - 0.2, [r["IoU"] for r in rows], 0.4, color=CLASS_COLOURS / 255.0, edgecolor="k", label="this run")
    ax.bar(x + 0.2, [r["paper IoU (on-site test)"] for r in rows], 0.4, color="lightgray", edgecolor="k",
           label="paper (challenge on-site test)")
    ax.set_xticks(x, [r["class"] for r in rows], rotation=45, ha="right")
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def read_normalise(run_dir):
    path = Path(run_dir) / "stages.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; pass --normalise or the --run-dir of robotic_scene/train.py")
    return json.loads(path.read_text())["settings"]["normalise"]


def final_checkpoint(run_dir):
    path = Path(run_dir) / "stages.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run robotic_scene/train.py first or pass --checkpoint")
    return Path(json.loads(path.read_text())["final_checkpoint"])


def evaluate(data_dir, checkpoint, out_dir, seqs=VAL_SEQS, normalise="torch", tta_sizes=(), min_size=0,
             n_overlay=4, verbose=True, tta="none", overwrite=False, min_region=None, surface=False,
             mixed_precision="off"):
    """Predict, write the colour PNGs, tables and figures; returns ``{"model": rows, "trivial": rows, ...}``.

    The colour PNGs go to a temporary folder renamed to ``<out_dir>/predictions`` once every frame is done, so
    a bad frame leaves no partial predictions. ``min_region`` is the former name of ``min_size``. ``surface``
    adds HD95/ASSD columns to the per-class table (:func:`surface_table`)."""
    from common.devices import apply_precision
    from common.report import overlay_grid, write_table

    if min_region is not None:
        min_size = min_region
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    frames = sequence_frames(data_dir, seqs)
    network = apply_precision(load_trainer(checkpoint).network, mixed_precision)
    predictor = Predictor(network, normalise, tta_sizes, tta)
    truths, preds, videos, shown = [], [], [], []
    with atomic_dir(out_dir / "predictions", overwrite=overwrite) as predictions:
        for image_path, mask_path, seq in tqdm(frames, desc="test", unit="frame", disable=not verbose):
            image, truth = read_image(image_path, "rgb"), read_image(mask_path, "gray")
            if image.shape[:2] != predictor.native:
                raise DataLayoutError(f"{image_path}: {image.shape[1]}x{image.shape[0]} (WxH) but the network was "
                                      f"trained on {predictor.native[1]}x{predictor.native[0]}")
            if truth.shape != image.shape[:2]:
                raise DataLayoutError(f"{mask_path}: {truth.shape[1]}x{truth.shape[0]} (WxH) but its frame is "
                                      f"{image.shape[1]}x{image.shape[0]}")
            if truth.max() >= NUM_CLASSES:
                raise DataLayoutError(f"{mask_path}: class index {truth.max()} >= {NUM_CLASSES}; prepare the "
                                      f"labels with robotic_scene/prepare.py")
            pred = np.argmax(predictor(image), axis=-1).astype(np.uint8)
            if min_size > 0:
                pred = remove_small_regions(pred, min_size)
            write_image(predictions / f"seq_{seq}" / image_path.name, index_to_colour(pred))
            truths.append(truth)
            preds.append(pred)
            videos.append(seq)
            if len(shown) < n_overlay and (not shown or shown[-1][2] != seq or len(frames) <= n_overlay):
                shown.append((image, truth, seq, pred))
    truths, preds, videos = np.stack(truths), np.stack(preds), np.asarray(videos)
    model_rows, scores = score_rows(truths, preds, videos, "TDSNet")
    majority = int(np.argmax(np.bincount(truths.ravel(), minlength=NUM_CLASSES)))
    trivial_rows, _ = score_rows(truths, np.full_like(truths, majority), videos,
                                 f"trivial ({CLASS_NAMES[majority]} everywhere)")
    settings = (f"checkpoint {checkpoint}; TTA sizes {list(tta_sizes) or 'none'}; flips {tta}; min size "
                f"{min_size or 'none'}")
    write_table(model_rows + trivial_rows, out_dir / "scores", title=f"Scores per video ({settings})")
    rows = per_class_rows(scores, videos, surface_table(truths, preds) if surface else None)
    write_table(rows, out_dir / "per_class", title="Per-class IoU and Dice (per image, per video, over videos)")
    plot_per_class(rows, out_dir / "per_class.png")
    paper_rows = [{"team": "Proposed (TDSNet)", **{k: v[1] for k, v in PAPER.items()}},
                  {"team": "OTH", **{k: v[2] for k, v in PAPER.items()}},
                  {"team": "NCT2", **{k: v[3] for k, v in PAPER.items()}}]
    for row in paper_rows:
        row["Mean IoU"] = PAPER_MEAN[row["team"]]
    write_table(paper_rows, out_dir / "paper", title="Paper (README): ROBOT18 challenge on-site test IoU %",
                digits=2)
    if shown:
        overlay_grid([s[0] for s in shown], [index_to_colour(s[1]) for s in shown],
                     [index_to_colour(s[3]) for s in shown], out_dir / "overlay.png")
    return {"model": model_rows, "trivial": trivial_rows, "per_class": rows, "frames": len(frames)}


def default_out_dir(work_dir, checkpoint, tta_sizes=(), tta="none", min_size=0):
    """``<work-dir>/test/<run folder>_<stage folder>_<best|last>[_sizes..][_tta-flip][_min<N>]``: results of
    different runs or checkpoints never share a folder."""
    from common.training import tagged_name

    checkpoint = Path(checkpoint)
    return Path(work_dir) / "test" / tagged_name(f"{checkpoint.parent.parent.name}_{checkpoint.parent.name}_"
                                                 f"{checkpoint.stem}", [
        (tuple(tta_sizes), (), lambda sizes: "sizes" + "-".join(f"{r}x{c}" for r, c in sizes)),
        (tta, "none", "tta-{}"), (min_size, 0, "min{}")])


RESULT_FILES = ("scores.json", "scores.md", "per_class.json", "predictions", "run.json")
EXAMPLES = """examples:
  python robotic_scene/test.py                                   # the default run's final checkpoint, fold-0 frames
  python robotic_scene/test.py --run-dir weights/robotic_scene/tdsnet_fold0_b2 --tta flip
  python robotic_scene/test.py --tta-sizes 1024x1280 768x960 512x640 --min-size 500   # ours, off by default
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help=f"prepare.py's output root (frames in <work-dir>/{PREPARED}; default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN,
                        help="train.py's run folder (default: %(default)s)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="model to test (default: the last stage's best checkpoint, from <run-dir>/stages.json)")
    parser.add_argument("--seqs", type=int, nargs="+", default=list(VAL_SEQS),
                        help="sequences to predict (default: fold 0 validation = 1 2 3 4)")
    parser.add_argument("--normalise", choices=("torch", "caffe"), default=None,
                        help="input preprocessing (default: the one train.py used, from stages.json)")
    parser.add_argument("--tta-sizes", type=parse_size, nargs="+", default=[], metavar="ROWSxCOLS",
                        help="ours: average the softmax over these input sizes, e.g. 1024x1280 768x960 512x640 "
                             "(default: none, the frame size only)")
    add_tta_argument(parser)
    parser.add_argument("--min-size", "--min-region", dest="min_size", type=int, default=MIN_SIZE,
                        help="ours: relabel connected regions (8-neighbour, per class) smaller than this many "
                             "pixels as background; the paper mentions removing small regions but gives no size "
                             "and the code has none (default: %(default)s = off, as the code)")
    parser.add_argument("--no-surface-distances", action="store_true",
                        help="skip the per-class HD95/ASSD columns (ours, in pixels, beside the original's scores)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: <work-dir>/test/<run folder>_<stage>_<best|last>, plus the "
                             "non-default options)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out-dir")
    add_precision_arguments(parser, jit_compile=False)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    from common.devices import set_precision
    from common.provenance import write_run_json

    args = build_parser().parse_args(argv)
    if args.min_size < 0:
        raise cli.option_error("--min-size", f"must be >= 0, got {args.min_size}")
    checkpoint = args.checkpoint or final_checkpoint(args.run_dir)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found; run robotic_scene/train.py first")
    normalise = args.normalise or read_normalise(args.run_dir if args.checkpoint is None else
                                                 _run_of(checkpoint, args.run_dir))
    out_dir = args.out_dir or default_out_dir(args.work_dir, checkpoint, args.tta_sizes, args.tta, args.min_size)
    found = [n for n in RESULT_FILES if (out_dir / n).exists()]
    if found and not args.overwrite:
        raise cli.option_error("--out-dir", f"{out_dir} already holds results ({', '.join(found[:3])}); pass "
                                            f"--overwrite to replace them, or another --out-dir")
    set_precision(args.mixed_precision)  # before the model is loaded
    result = evaluate(args.work_dir / PREPARED, checkpoint, out_dir, args.seqs, normalise, args.tta_sizes,
                      args.min_size, verbose=not args.quiet, tta=args.tta, overwrite=args.overwrite,
                      surface=not args.no_surface_distances, mixed_precision=args.mixed_precision)
    frames = sequence_frames(args.work_dir / PREPARED, args.seqs)
    write_run_json(out_dir, model_name="tdsnet", weights=[checkpoint],
                   options={**vars(args), "normalise": normalise}, inputs=[str(f[0]) for f in frames])
    model, trivial = result["model"][-2], result["trivial"][-2]
    print(f"{result['frames']} frames: mean IoU {model['mean IoU']:.4f}, mean Dice {model['mean Dice']:.4f}, IoU "
          f"over present classes {model['IoU (present classes)']:.4f} (trivial predictor: "
          f"{trivial['mean IoU']:.4f}, {trivial['mean Dice']:.4f}, {trivial['IoU (present classes)']:.4f}); "
          f"tables and figures in {out_dir}")
    return result


def _run_of(checkpoint, run_dir):
    """The run folder holding ``stages.json`` for a checkpoint ``<run>/<stage>/<best|last>.keras``."""
    candidate = Path(checkpoint).parent.parent
    return candidate if (candidate / "stages.json").is_file() else run_dir


if __name__ == "__main__":
    cli.run(main)
