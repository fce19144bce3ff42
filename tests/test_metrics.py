import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, auc, confusion_matrix, f1_score, jaccard_score, precision_score,
                             recall_score, roc_auc_score)

from common.metrics import SCORE_KEYS, confusion_counts, dice_score, mean_dice, segmentation_scores


def _sklearn_scores(t, s, thr=0.5):
    p = s >= thr
    return {"f1": f1_score(t, p), "sensitivity": recall_score(t, p), "specificity": recall_score(~t, ~p),
            "accuracy": accuracy_score(t, p), "precision": precision_score(t, p), "jaccard": jaccard_score(t, p),
            "auc": roc_auc_score(t, s)}


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.random((4, 16, 16)) < 0.3
    score = np.clip(y * 0.4 + rng.random(y.shape) * 0.7, 0, 1)
    return y, score


def test_equals_sklearn(data):
    y, s = data
    ours = segmentation_scores(y, s)
    ref = _sklearn_scores(y.ravel(), s.ravel())
    assert set(SCORE_KEYS) <= set(ours)
    for k in SCORE_KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-12), k


def test_threshold_is_inclusive():
    assert segmentation_scores([1, 0], [0.5, 0.49])["f1"] == 1.0


def test_fov_counts_only_fov_pixels(data):
    y, s = data
    fov = np.zeros_like(y)
    fov[:, 4:12, 2:14] = True
    s_outside = s.copy()
    s_outside[~fov] = 1 - s_outside[~fov]  # anything outside the FOV must not matter
    ours = segmentation_scores(y, s_outside, fov=fov, curves=True)
    ref = _sklearn_scores(y[fov], s[fov])
    for k in SCORE_KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-12), k
    assert ours["confusion"] == confusion_matrix(y[fov], s[fov] >= 0.5, labels=[False, True]).tolist()
    assert np.sum(ours["confusion"]) == fov.sum()


def test_confusion_counts_equal_sklearn(data):
    y, s = data
    for t, p in [(y, s >= 0.5), (y * 255, s > 0.9), (np.zeros(5), np.zeros(5)), (np.ones(3), np.zeros(3))]:
        assert confusion_counts(t, p) == tuple(confusion_matrix(t.ravel() != 0, p.ravel() != 0,
                                                                labels=[False, True]).ravel())


def _brute_force_pr_points(t, s):
    """(recall, precision) at every distinct score taken as the threshold (score >= thr), from the highest
    threshold down, plus the curve's start (recall 0, precision 1), as BCDU-Net's precision_recall_curve."""
    points = [(0.0, 1.0)]
    for thr in np.unique(s)[::-1]:
        p = s >= thr
        tp = np.sum(p & t)
        points.append((tp / t.sum(), tp / p.sum()))
        if tp == t.sum():  # sklearn stops the curve at full recall
            break
    return np.array(points)


def test_auc_pr_is_the_trapezoid_over_recall(data):
    y, s = data
    s = np.round(s, 2)  # ties between scores
    ours = segmentation_scores(y, s, curves=True)["auc_pr"]
    points = _brute_force_pr_points(y.ravel(), s.ravel())
    recall, precision = points[:, 0], points[:, 1]
    expected = np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2)
    assert ours == pytest.approx(expected, abs=1e-12)
    assert ours == pytest.approx(auc(recall, precision), abs=1e-12)
    assert 0.5 < ours < 1  # a useful, imperfect score


def test_per_image_is_mean_of_images(data):
    y, s = data
    ours = segmentation_scores(y, s, per_image=True)
    for k in SCORE_KEYS:
        assert ours[k] == pytest.approx(np.mean([_sklearn_scores(y[i].ravel(), s[i].ravel())[k] for i in range(4)]))


def test_legacy_definitions_reproduce_bcdu_quirks():
    # hand example: 8 pixels, TP=2, FN=1, FP=1, TN=4
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.35, 0.7, 0.1, 0.3, 0.4, 0.05])
    sc = segmentation_scores(y, s, legacy=True)
    assert sc["js_legacy"] == pytest.approx(6 / 8) == pytest.approx(sc["accuracy"])  # "JS" = accuracy
    assert sc["jaccard"] == pytest.approx(2 / 4)  # the real IoU
    assert sc["auc_legacy"] == pytest.approx((2 / 3 + 4 / 5) / 2)  # AUC of binarised scores
    assert sc["auc"] == pytest.approx(roc_auc_score(y, s)) != sc["auc_legacy"]


def test_undefined_ratios_are_nan_and_size_mismatch_raises():
    sc = segmentation_scores(np.zeros(4), np.zeros(4))
    assert np.isnan(sc["sensitivity"]) and np.isnan(sc["auc"]) and sc["specificity"] == 1.0
    with pytest.raises(ValueError):
        segmentation_scores(np.zeros(4), np.zeros(5))


def test_kaggle_dice_convention():
    empty = np.zeros((3, 3))
    one = np.eye(3)
    assert dice_score(empty, empty) == 1.0
    assert dice_score(one, empty) == 0.0
    assert mean_dice([one, empty], [one, empty]) == 1.0
    # partial overlap by hand: truth = diagonal (3 px), prediction = first row (3 px), shared pixel (0, 0)
    row = np.zeros((3, 3))
    row[0] = 255
    assert dice_score(one, row) == pytest.approx(2 * 1 / (3 + 3))
    assert mean_dice([one, empty, one], [row, empty, one]) == pytest.approx((1 / 3 + 1 + 1) / 3)


def test_mean_dice_is_sklearn_f1_per_image_with_empty_pairs_scored_one(data):
    y, s = data
    y, pred = y.copy(), s >= 0.5
    y[1], pred[1] = False, False  # an empty pair scores 1 (sklearn calls it ill-defined)
    pred[2] = False  # a missed mask scores 0
    expected = [1.0 if not (y[i].any() or pred[i].any()) else f1_score(y[i].ravel(), pred[i].ravel())
                for i in range(4)]
    assert expected[2] == 0.0
    assert mean_dice(y, pred) == pytest.approx(np.mean(expected), abs=1e-12)
