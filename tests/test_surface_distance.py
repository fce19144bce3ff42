"""HD95 / ASSD (common.metrics.surface_distances, surface_scores) against independent references:

* a brute-force reference: boundary voxels found by looking at each voxel's face neighbours (no erosion),
  all pairwise distances of the two boundary point sets (scipy cdist on physical coordinates);
* the values MONAI's own tests expect (tests/metrics/test_hausdorff_distance.py and
  test_surface_distance.py, spheres in a 99^3 volume);
* MONAI's empty-mask conventions (both empty -> nan, one empty -> inf).
"""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from common.metrics import surface_distances, surface_scores


def brute_force_boundary(mask):
    """Foreground voxels with at least one face neighbour that is background or outside the array."""
    m = np.asarray(mask) != 0
    padded = np.pad(m, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(m.ndim))
    all_neighbours_in = np.ones_like(m)
    for axis in range(m.ndim):
        for step in (-1, 1):
            all_neighbours_in &= np.roll(padded, step, axis=axis)[inner]
    return m & ~all_neighbours_in


def brute_force(y_true, y_pred, spacing):
    a = np.argwhere(brute_force_boundary(y_true)) * np.asarray(spacing, dtype=float)
    b = np.argwhere(brute_force_boundary(y_pred)) * np.asarray(spacing, dtype=float)
    d = cdist(b, a)  # rows: prediction boundary points, columns: truth boundary points
    pred_to_true, true_to_pred = d.min(axis=1), d.min(axis=0)
    hd95 = max(np.percentile(pred_to_true, 95), np.percentile(true_to_pred, 95))
    return hd95, np.concatenate([pred_to_true, true_to_pred]).mean()


def random_mask(rng, shape):
    """Blobby random mask: a few random boxes, so there are interior voxels as well as thin parts."""
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        lo = [rng.integers(0, s - 1) for s in shape]
        hi = [rng.integers(l + 1, s + 1) for l, s in zip(lo, shape)]
        mask[tuple(slice(l, h) for l, h in zip(lo, hi))] = 1
    mask[rng.random(shape) < 0.05] ^= 1
    return mask


@pytest.mark.parametrize("shape, spacing", [((17, 23), (0.7, 1.9)), ((9, 11, 13), (2.5, 0.6, 1.1)),
                                            ((20, 20), None)])
def test_matches_brute_force_on_random_masks(shape, spacing):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    for _ in range(10):
        t, p = random_mask(rng, shape), random_mask(rng, shape)
        if not t.any() or not p.any():
            continue
        got = surface_distances(t, p * 255, spacing=spacing)
        hd95, assd = brute_force(t, p, spacing or (1.0,) * len(shape))
        np.testing.assert_allclose([got["hd95"], got["assd"]], [hd95, assd], rtol=1e-12)


def test_hand_computed_and_isotropic_scalar_spacing():
    t = np.zeros((8, 8), np.uint8)
    p = np.zeros((8, 8), np.uint8)
    t[2, 2] = 1
    p[2, 5] = 1
    # one point each, 3 columns apart, columns 0.5 wide
    assert surface_distances(t, p, spacing=(2.0, 0.5)) == {"hd95": 1.5, "assd": 1.5}
    assert surface_distances(t, p, spacing=3.0) == {"hd95": 9.0, "assd": 9.0}
    assert surface_distances(t, t) == {"hd95": 0.0, "assd": 0.0}
    # a trailing channel axis of length 1 is dropped
    assert surface_distances(t[..., None], p[..., None], spacing=(2.0, 0.5))["hd95"] == 1.5


def _sphere(radius, centre, spacing=(1.0, 1.0, 1.0), shape=(99, 99, 99)):
    y, x, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    y, x, z = y * spacing[0] - centre[0], x * spacing[1] - centre[1], z * spacing[2] - centre[2]
    return (x * x + y * y + z * z <= radius * radius).astype(np.int32)


def test_monai_reference_values():
    # MONAI test_hausdorff_distance (percentile 95, undirected, euclidean) and test_surface_distance
    # (symmetric, euclidean): radius-20 vs radius-40 spheres.
    got = surface_distances(_sphere(40, (20, 33, 22)), _sphere(20, (20, 33, 22)))
    np.testing.assert_allclose(got["hd95"], 20.09975124224178, rtol=1e-6)
    np.testing.assert_allclose(got["assd"], 15.117741, rtol=1e-5)
    # anisotropic spacing (MONAI test_surface_distance: 0.4951)
    spacing = (0.85, 1.2, 0.9)
    got = surface_distances(_sphere(33, (43, 45, 52), spacing), _sphere(33, (42, 45, 52), spacing), spacing)
    np.testing.assert_allclose(got["assd"], 0.4951, atol=1e-4)


def test_empty_masks_as_monai():
    empty = np.zeros((6, 7), np.uint8)
    some = empty.copy()
    some[2:4, 3:5] = 1
    both = surface_distances(empty, empty)
    assert np.isnan(both["hd95"]) and np.isnan(both["assd"])
    assert surface_distances(some, empty) == {"hd95": np.inf, "assd": np.inf}  # empty prediction
    assert surface_distances(empty, some) == {"hd95": np.inf, "assd": np.inf}  # empty ground truth


def test_surface_scores_batch_and_means():
    rng = np.random.default_rng(3)
    t = np.stack([random_mask(rng, (12, 14)) for _ in range(4)] + [np.zeros((12, 14), np.uint8)] * 2)
    p = np.stack([random_mask(rng, (12, 14)) for _ in range(5)] + [np.zeros((12, 14), np.uint8)])
    t[:4, 0, 0] = p[:5, 0, 0] = 1  # non-empty where intended
    spacing = (0.5, 1.5)
    got = surface_scores(t[..., None], p[..., None], spacing=spacing)
    ref = np.array([brute_force(t[i], p[i], spacing) for i in range(4)])
    np.testing.assert_allclose(got["hd95"][:4], ref[:, 0], rtol=1e-12)
    np.testing.assert_allclose(got["assd"][:4], ref[:, 1], rtol=1e-12)
    assert got["hd95"][4] == np.inf and np.isnan(got["hd95"][5])
    np.testing.assert_allclose(got["hd95_mean"], ref[:, 0].mean(), rtol=1e-12)
    np.testing.assert_allclose(got["assd_mean"], ref[:, 1].mean(), rtol=1e-12)
    assert (got["n_finite"], got["n_one_empty"], got["n_both_empty"]) == (4, 1, 1)
    per_item = [(0.5, 1.5), (2.0, 1.0), (1.0, 1.0), (0.3, 0.3), (1.0, 1.0), (1.0, 1.0)]
    got = surface_scores(t, p, spacing=per_item)
    ref = np.array([brute_force(t[i], p[i], per_item[i]) for i in range(4)])
    np.testing.assert_allclose(got["hd95"][:4], ref[:, 0], rtol=1e-12)
    with pytest.raises(ValueError, match="rows"):
        surface_scores(t, p, spacing=per_item[:2])
    none = surface_scores(np.zeros((2, 5, 5)), np.zeros((2, 5, 5)))
    assert np.isnan(none["hd95_mean"]) and none["n_finite"] == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        surface_distances(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0, 0.0))
