"""Tables (Markdown + JSON) and figures (PNG): training curves, ROC/PR curves, overlays.

Matplotlib runs on the non-interactive Agg backend, so figures work on servers without a display.
"""

import csv
import math
from pathlib import Path

import numpy as np

from common.data.io import atomic_path, write_json


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported on the first figure (not for a table or --help)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def __getattr__(name):
    """``common.report.plt`` (``from common.report import plt``) still works: pyplot, imported on first use."""
    if name == "plt":
        return pyplot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fmt(value, digits=4):
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows, columns=None, digits=4):
    """Markdown table of a list of dicts (one row each); ``columns`` defaults to the first row's keys."""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, ""), digits) for c in columns) + " |")
    return "\n".join(lines)


def write_table(rows, path, columns=None, title=None, digits=4):
    """Write ``rows`` as ``<path>.md`` (Markdown, optional title) and ``<path>.json``; returns the Markdown."""
    path = Path(path)
    text = markdown_table(rows, columns, digits)
    if title:
        text = f"## {title}\n\n{text}"
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text(text + "\n")
    write_json(path.with_suffix(".json"), rows)
    return text


def read_history(csv_path):
    """history.csv (Keras CSVLogger) as a dict of float lists; {} if the file does not exist."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    def number(text):
        return float(text) if text not in ("", "NA") else float("nan")  # CSVLogger writes NA for gaps

    columns = rows[0].keys() if rows else []
    history = {k: [number(r[k]) for r in rows] for k in columns}
    return {k: v for k, v in history.items() if not all(math.isnan(x) for x in v)}


def _save(fig, path):
    path = Path(path)
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def plot_history(history, path, title=None):
    """Training curves: one panel per quantity (loss, each metric), train and validation together."""
    plt = pyplot()
    names = [k for k in history if k not in ("epoch", "learning_rate", "lr") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(history[names[0]])))]
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, history[name], "o-", ms=3, label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], "o-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_roc_pr(y_true, y_score, path, fov=None, title=None):
    """ROC and precision-recall curves side by side (pixels inside ``fov`` only, if given)."""
    plt = pyplot()
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    t = np.asarray(y_true).ravel() != 0
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if fov is not None:
        inside = np.asarray(fov).ravel() != 0
        t, s = t[inside], s[inside]
    fpr, tpr, _ = roc_curve(t, s)
    precision, recall, _ = precision_recall_curve(t, s)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
    a1.plot(fpr, tpr, label=f"AUC = {auc(fpr, tpr):.4f}")
    a1.plot([0, 1], [0, 1], "k--", lw=0.8)
    a1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    a2.plot(recall, precision, label=f"AUC = {np.trapezoid(precision[::-1], recall[::-1]):.4f}")
    a2.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is a1 else "lower left")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def overlay_grid(images, truths, predictions, path, titles=("image", "ground truth", "prediction"),
                 max_rows=8, extra=None, value_range=None):
    """One row per sample: image | ground truth | prediction (| extra columns), saved as PNG.

    ``images`` are (N, H, W) or (N, H, W, 3); masks and predictions (N, H, W[, 1]) in [0, 1] or 0/255.
    ``extra`` is an optional list of further (N, H, W) arrays, titled by the remaining ``titles``.
    ``value_range`` (low, high) fixes the grey scale of the single-channel columns after the image (e.g.
    (0, 1) for probabilities); by default each panel is stretched to its own extremes.
    """
    plt = pyplot()
    columns = [images, truths, predictions] + list(extra or [])
    n = min(len(images), max_rows)
    fig, axes = plt.subplots(n, len(columns), figsize=(3 * len(columns), 3 * n), squeeze=False)
    for i in range(n):
        for j, col in enumerate(columns):
            img = np.asarray(col[i])
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            ax = axes[i, j]
            scale = value_range if (value_range is not None and j > 0 and img.ndim == 2) else (None, None)
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=scale[0], vmax=scale[1])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and j < len(titles):
                ax.set_title(titles[j])
    _save(fig, path)
