"""Evaluation scores on NumPy arrays (binary segmentation).

``segmentation_scores`` is the one scorer every task's evaluate script uses. Definitions (pixels pooled
over all images unless ``per_image``; TP/FP/TN/FN counted at ``y_score >= threshold``):

=============  =====================================  ==============================================
key            formula                                note
=============  =====================================  ==============================================
f1             2TP / (2TP + FP + FN)                  = Dice of the binary prediction
sensitivity    TP / (TP + FN)                         recall
specificity    TN / (TN + FP)
accuracy       (TP + TN) / N
precision      TP / (TP + FP)
jaccard        TP / (TP + FP + FN)                    IoU
auc            ROC-AUC of the continuous scores       scikit-learn ``roc_auc_score``
auc_pr         area under the precision-recall curve  only with ``curves=True`` (trapezoid, as BCDU-Net)
=============  =====================================  ==============================================

``legacy=True`` adds the original BCDU-Net evaluation's quirky definitions, so the paper's tables can be
reproduced beside the correct numbers:

* ``js_legacy``: scikit-learn's removed ``jaccard_similarity_score`` on 1-D binary labels, which was plain
  pixel accuracy (the papers' "JS" column);
* ``auc_legacy``: ROC-AUC of the *binarised* prediction, i.e. ``(sensitivity + specificity) / 2`` (the ISIC
  and lung tables).

A ratio whose denominator is zero is ``nan`` (for example sensitivity on an image without foreground), and
``per_image`` averages ignore ``nan``.

``surface_distances`` (one image or volume) and ``surface_scores`` (a batch) add the boundary metrics HD95
and ASSD as MONAI defines them (empty masks included), in units of the pixel/voxel spacing.
"""

import warnings

import numpy as np

SCORE_KEYS = ("f1", "sensitivity", "specificity", "accuracy", "precision", "jaccard", "auc")


def _ratio(num, den):
    return float(num) / float(den) if den else float("nan")


def confusion_counts(y_true, y_pred):
    """(TN, FP, FN, TP) of two binary arrays of the same size, as Python ints."""
    t = np.asarray(y_true).ravel() != 0
    p = np.asarray(y_pred).ravel() != 0
    tn, fp, fn, tp = np.bincount(t.astype(np.intp) * 2 + p, minlength=4)
    return int(tn), int(fp), int(fn), int(tp)


def _scores_from_flat(t, s, threshold, legacy, curves):
    from sklearn.metrics import roc_auc_score

    pred = s >= threshold
    tn, fp, fn, tp = confusion_counts(t, pred)
    scores = {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "jaccard": _ratio(tp, tp + fp + fn),
        "auc": float(roc_auc_score(t, s)) if 0 < tp + fn < t.size else float("nan"),
    }
    if legacy:
        scores["js_legacy"] = scores["accuracy"]
        scores["auc_legacy"] = float(roc_auc_score(t, pred)) if 0 < tp + fn < t.size else float("nan")
    if curves:
        scores["auc_pr"] = auc_pr(t, s)
        scores["confusion"] = [[tn, fp], [fn, tp]]
    return scores


def segmentation_scores(y_true, y_score, threshold=0.5, fov=None, per_image=False, legacy=False,
                        curves=False):
    """Binary segmentation scores.

    Args:
        y_true: ground truth, any shape (N, H, W[, 1]); nonzero = foreground (0/1 or 0/255).
        y_score: predicted probabilities (or binary predictions) of the same shape.
        threshold: a pixel is predicted foreground when ``y_score >= threshold``.
        fov: optional mask of the same shape; only pixels where it is nonzero are counted.
        per_image: score each image (first axis) separately and return the nan-ignoring mean.
        legacy: also return the original BCDU-Net definitions ``js_legacy`` and ``auc_legacy``.
        curves: also return ``auc_pr`` and the pooled ``confusion`` matrix ``[[TN, FP], [FN, TP]]``.
    Returns:
        dict of floats with the keys of ``SCORE_KEYS`` (plus the optional ones).
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.size != y_score.size:
        raise ValueError(f"y_true has {y_true.size} values but y_score has {y_score.size}")
    if fov is not None and np.asarray(fov).size != y_true.size:
        raise ValueError(f"fov has {np.asarray(fov).size} values but y_true has {y_true.size}")
    if per_image:
        n = y_true.shape[0]
        rows = [segmentation_scores(y_true[i], y_score.reshape(y_true.shape)[i], threshold,
                                    None if fov is None else np.asarray(fov).reshape(y_true.shape)[i],
                                    legacy=legacy)
                for i in range(n)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns (e.g. no foreground anywhere)
            return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    t = y_true.ravel() != 0
    s = y_score.ravel()
    if fov is not None:
        inside = np.asarray(fov).ravel() != 0
        t, s = t[inside], s[inside]
    if t.size == 0:
        raise ValueError("no pixels to score (empty input or empty FOV)")
    return _scores_from_flat(t, s, threshold, legacy, curves)


def auc_pr(y_true, y_score):
    """Area under the precision-recall curve by the trapezoid rule over recall (BCDU-Net's PR AUC)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(np.asarray(y_true).ravel() != 0, np.asarray(y_score).ravel())
    return float(np.trapezoid(precision[::-1], recall[::-1]))


def dice_score(y_true, y_pred, empty_score=1.0):
    """Dice of two binary masks; both empty gives ``empty_score`` (the Kaggle nerve convention: 1)."""
    t = np.asarray(y_true) != 0
    p = np.asarray(y_pred) != 0
    den = t.sum() + p.sum()
    return float(empty_score) if den == 0 else float(2.0 * np.logical_and(t, p).sum() / den)


def mean_dice(y_true, y_pred, empty_score=1.0):
    """Mean per-image Dice over the first axis (the Kaggle nerve leaderboard metric)."""
    return float(np.mean([dice_score(t, p, empty_score) for t, p in zip(y_true, y_pred)]))


def lesion_dice_per_class(y_true, y_pred, classes=(1, 2, 3)):
    """Dice of each class of a multi-class label volume, NaN where the ground truth lacks the class.

    The AI Challenger 2018 edema metric (``aic_fundus_lesion_segmentation``): the whole scan (e.g. 128 x
    1024 x 512 labels 0..3) is flattened; for class c, ``2|G_c ∩ P_c| / (|G_c| + |P_c|)`` if ``G_c`` is not
    empty, else NaN, so false positives of a class absent from the scan cost nothing.

    Returns:
        list of floats, one per entry of ``classes``.
    """
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.size != p.size:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    scores = []
    for c in classes:
        g, q = t == c, p == c
        n_true = int(g.sum())
        scores.append(2.0 * int(np.count_nonzero(g & q)) / (n_true + int(q.sum())) if n_true else float("nan"))
    return scores


def nan_skipping_means(per_scan):
    """Per-class mean over scans of NaN-able scores, skipping NaN, and the mean of those class means.

    ``per_scan`` is (n_scans, n_classes), e.g. rows of :func:`lesion_dice_per_class`. Returns
    ``(final, class_means)`` (the edema challenge's ``compute_segment_score``). A class that is NaN in every
    scan has mean NaN and is left out of ``final`` (the original divides by zero there); ``final`` is NaN
    only when every class is.
    """
    scores = np.asarray(per_scan, dtype=np.float64)
    if scores.ndim != 2 or not scores.size:
        raise ValueError(f"per_scan must be a non-empty (n_scans, n_classes) table, got shape {scores.shape}")
    present = ~np.isnan(scores)
    counts = present.sum(axis=0)
    sums = np.where(present, scores, 0.0).sum(axis=0)
    class_means = np.divide(sums, counts, out=np.full(len(counts), np.nan), where=counts > 0)
    final = float(class_means[counts > 0].mean()) if (counts > 0).any() else float("nan")
    return final, [float(m) for m in class_means]


def per_class_auc(y_true, y_score):
    """ROC-AUC of each column of (N, K) binary targets vs scores; NaN for a column with one class only."""
    from sklearn.metrics import roc_auc_score

    t = np.asarray(y_true) != 0
    s = np.asarray(y_score, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 2:
        raise ValueError(f"y_true and y_score must both be (N, K), got {t.shape} and {s.shape}")
    return [float(roc_auc_score(t[:, k], s[:, k])) if 0 < t[:, k].sum() < len(t) else float("nan")
            for k in range(t.shape[1])]


def multiclass_image_scores(y_true, y_pred, num_classes, eps=1e-15):
    """Per-image, per-class IoU and Dice of class-index maps (TDSNet's ``util/validation.py``).

    For image ``i`` and class ``c`` with ``G`` = truth pixels of ``c`` and ``P`` = predicted pixels of ``c``:
    ``IoU = (|G∩P| + eps) / (|G∪P| + eps)`` and ``Dice = (2|G∩P| + eps) / (|G| + |P| + eps)`` when ``c`` occurs
    in the truth; when it does not, both are 1 if ``c`` is also absent from the prediction, else 0.

    Args:
        y_true, y_pred: integer class maps (N, H, W) (or one image (H, W)).
        num_classes: number of classes C (background included).
    Returns:
        dict of (N, C) arrays: ``iou``, ``dice`` (the original's rule above) and ``present`` (True where ``c``
        occurs in the truth or the prediction; the classes a "present classes only" mean would average).
    """
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has {p.shape}")
    t = t.reshape((-1,) + t.shape[-2:]) if t.ndim >= 2 else t[None, None]
    p = p.reshape(t.shape)
    n = t.shape[0]
    flat_t, flat_p = t.reshape(n, -1).astype(np.int64), p.reshape(n, -1).astype(np.int64)
    offsets = (np.arange(n) * num_classes)[:, None]
    count = n * num_classes
    t_sum = np.bincount((flat_t + offsets).ravel(), minlength=count).reshape(n, num_classes).astype(np.float64)
    p_sum = np.bincount((flat_p + offsets).ravel(), minlength=count).reshape(n, num_classes).astype(np.float64)
    same = flat_t == flat_p
    inter = np.bincount((flat_t + offsets)[same], minlength=count).reshape(n, num_classes).astype(np.float64)
    absent_score = (p_sum == 0).astype(np.float64)
    iou = np.where(t_sum > 0, (inter + eps) / (t_sum + p_sum - inter + eps), absent_score)
    dice = np.where(t_sum > 0, (2 * inter + eps) / (t_sum + p_sum + eps), absent_score)
    return {"iou": iou, "dice": dice, "present": (t_sum > 0) | (p_sum > 0)}


# ---------------------------------------------------------------------------------------------------------
# Surface distances (HD95, ASSD) as MONAI defines them
# ---------------------------------------------------------------------------------------------------------

def _spatial(mask):
    """A mask as a boolean array without a trailing channel axis of length 1 ((H, W, 1) -> (H, W))."""
    mask = np.asarray(mask)
    if mask.ndim >= 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    return mask != 0


def _spacing(spacing, ndim):
    if spacing is None:
        return (1.0,) * ndim
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.ndim != 1 or values.size != ndim or not np.all(values > 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"spacing must be one positive number or {ndim} (one per axis), got {spacing!r}")
    return tuple(float(v) for v in values)


def _surface(mask):
    """Boundary voxels: the mask minus its binary erosion (scipy's default, face-connected structuring
    element; outside the array counts as background), as MONAI's ``get_mask_edges``."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(y_true, y_pred, spacing=None):
    """HD95 and average symmetric surface distance (ASSD) of one binary image or volume.

    Definitions follow MONAI (``monai.metrics.compute_hausdorff_distance(percentile=95)`` and
    ``compute_average_surface_distance(symmetric=True)``, i.e. ``HausdorffDistanceMetric`` /
    ``SurfaceDistanceMetric`` with the Euclidean distance):

    * surface S(M) of a mask M: ``M & ~binary_erosion(M)`` (MONAI's ``get_mask_edges``; the erosion uses
      scipy's default face-connected structuring element, and voxels on the array border are surface);
    * directed distances d(A -> B): for every voxel of S(A), the Euclidean distance (in units of
      ``spacing``) to the nearest voxel of S(B) (``scipy.ndimage.distance_transform_edt(~S(B),
      sampling=spacing)`` read at S(A));
    * ``hd95`` = max(P95 d(pred -> true), P95 d(true -> pred)), P95 = the 95th percentile with linear
      interpolation (``np.percentile``, as ``torch.quantile``);
    * ``assd`` = mean of the union of both directed distance sets (each surface voxel counts once, so
      the larger surface weighs more; current MONAI concatenates the two sets, which its test value
      15.117741 for radius-20 vs radius-40 spheres confirms; older releases averaged the two directed
      means, 13.98 there).

    Empty masks, as MONAI defines them (its ``get_surface_distance`` and the cases of its
    ``tests/metrics/test_hausdorff_distance.py``):

    * both masks empty: no surface distance at all -> ``nan`` for both (MONAI: NaN, left out of its
      mean, ``not_nans`` 0);
    * exactly one mask empty: every distance is infinite -> ``inf`` for both (MONAI's tests: "pred does
      not have foreground (but gt has), the metric should be inf", and the same for an empty ground
      truth). MONAI's own percentile path returns NaN in this case only because the linear interpolation
      of an all-inf set gives ``inf - inf``; we return the ``inf`` its tests and its plain HD and ASSD give.

    Args:
        y_true, y_pred: arrays of the same shape, any number of dimensions; nonzero = foreground. A
            trailing axis of length 1 is taken as a channel axis and dropped ((H, W, 1) -> (H, W)).
        spacing: pixel/voxel size per axis (a sequence, one per spatial axis, e.g. the NIfTI zooms in
            array axis order), one number for isotropic spacing, or None (1 per axis).
    Returns:
        dict ``{"hd95": float, "assd": float}`` in units of ``spacing``.
    """
    from scipy import ndimage

    t, p = _spatial(y_true), _spatial(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has {p.shape}")
    sampling = _spacing(spacing, t.ndim)
    t_any, p_any = bool(t.any()), bool(p.any())
    if not t_any and not p_any:
        return {"hd95": float("nan"), "assd": float("nan")}
    if not t_any or not p_any:
        return {"hd95": float("inf"), "assd": float("inf")}
    # Crop to the bounding box of both masks plus one voxel: the surfaces and the exact distances between
    # them do not change, the distance transforms get smaller.
    box = ndimage.find_objects((t | p).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    s_true, s_pred = _surface(t[box]), _surface(p[box])
    to_true = ndimage.distance_transform_edt(~s_true, sampling=sampling)[s_pred]
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=sampling)[s_true]
    hd95 = max(np.percentile(to_true, 95), np.percentile(to_pred, 95))
    assd = np.concatenate([to_true, to_pred]).mean()
    return {"hd95": float(hd95), "assd": float(assd)}


def surface_scores(y_true, y_pred, spacing=None):
    """:func:`surface_distances` of each image (or volume) of a batch, and their means.

    Args:
        y_true, y_pred: (N, ...) batches of the same shape (e.g. (N, H, W), (N, H, W, 1) or (N, D, H, W));
            nonzero = foreground; a trailing channel axis of length 1 is dropped.
        spacing: as for :func:`surface_distances` (the same for every item), or one row per item, shape
            (N, n_axes), e.g. each CT slice with the pixel spacing of its own volume.
    Returns:
        dict with
        ``hd95``, ``assd``: float64 arrays (N,), NaN where both masks of an item are empty and inf where
        exactly one is;
        ``hd95_mean``, ``assd_mean``: means over the finite entries only (items with both masks
        non-empty; NaN when there is none) -- MONAI's reduction skips the NaN of the both-empty case,
        an inf would make any mean inf, so they are skipped too and counted instead;
        ``n_finite``: the number of items in those means; ``n_one_empty``: items with exactly one empty
        mask (inf); ``n_both_empty``: items with both empty (NaN).
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has {p.shape}")
    if t.ndim < 2:
        raise ValueError(f"expected a batch (N, ...) of images or volumes, got shape {t.shape}")
    per_item = spacing is not None and np.ndim(spacing) == 2
    if per_item and len(spacing) != t.shape[0]:
        raise ValueError(f"spacing has {len(spacing)} rows but the batch has {t.shape[0]} items")
    rows = [surface_distances(t[i], p[i], spacing[i] if per_item else spacing) for i in range(t.shape[0])]
    out = {key: np.array([r[key] for r in rows], dtype=np.float64) for key in ("hd95", "assd")}
    finite = np.isfinite(out["hd95"])
    for key in ("hd95", "assd"):
        out[f"{key}_mean"] = float(out[key][finite].mean()) if finite.any() else float("nan")
    out["n_finite"] = int(finite.sum())
    out["n_one_empty"] = int(np.isinf(out["hd95"]).sum())
    out["n_both_empty"] = int(np.isnan(out["hd95"]).sum())
    return out


# ---------------------------------------------------------------------------------------------------------
# Multi-class label maps (the K-class heads of the binary families)
# ---------------------------------------------------------------------------------------------------------

MULTICLASS_KEYS = ("dice", "iou", "sensitivity", "precision", "hd95", "assd")


def multiclass_scores(y_true, y_pred, num_classes, spacing=None):
    """Per-class scores of integer label maps and their mean over the foreground classes.

    For each class c = 1..K-1 the binary masks ``y == c`` are scored as :func:`segmentation_scores` and
    :func:`surface_scores` score a binary task: ``dice`` = 2TP / (2TP + FP + FN) and ``iou`` = TP / (TP + FP +
    FN), ``sensitivity``, ``precision``, with pixels pooled over all images (NaN when the denominator is 0, e.g.
    a class neither in the truth nor in the prediction); ``hd95`` and ``assd`` = the means over the images in
    which both masks of the class are non-empty (:func:`surface_scores`; NaN when there is none), in units of
    ``spacing``.

    Args:
        y_true, y_pred: integer label maps of the same shape (N, H, W[, 1]) (or one image (H, W)), values
            0..num_classes-1, 0 = background.
        num_classes: K (background included), at least 2.
        spacing: pixel size, as :func:`surface_distances` (one for all images).
    Returns:
        ``{"classes": {c: {key: float, ..., "n_finite": int}}, "mean": {key: float}}`` with the keys of
        ``MULTICLASS_KEYS``; ``mean`` is the NaN-skipping mean of each key over the foreground classes.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has {p.shape}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    for name, labels in (("y_true", t), ("y_pred", p)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes
                            or (labels.dtype.kind == "f" and np.any(labels != np.round(labels)))):
            raise ValueError(f"{name} must hold integer labels 0..{num_classes - 1}")
    if t.ndim >= 3 and t.shape[-1] == 1:
        t, p = t[..., 0], p[..., 0]
    if t.ndim == 2:
        t, p = t[None], p[None]
    classes = {}
    for c in range(1, int(num_classes)):
        g, q = t == c, p == c
        tn, fp, fn, tp = confusion_counts(g, q)
        surface = surface_scores(g, q, spacing)
        classes[c] = {"dice": _ratio(2 * tp, 2 * tp + fp + fn), "iou": _ratio(tp, tp + fp + fn),
                      "sensitivity": _ratio(tp, tp + fn), "precision": _ratio(tp, tp + fp),
                      "hd95": surface["hd95_mean"], "assd": surface["assd_mean"], "n_finite": surface["n_finite"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a key that is NaN for every class
        mean = {k: float(np.nanmean([row[k] for row in classes.values()])) for k in MULTICLASS_KEYS}
    return {"classes": classes, "mean": mean}
