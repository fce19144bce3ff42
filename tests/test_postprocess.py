import numpy as np
import pytest

from common.postprocess import keep_largest_components, postprocess_mask, remove_small_components, remove_small_regions


def _blobs():
    """Three constructed components: 12, 4 and 1 pixels; the 1-pixel one touches the 4 only by a corner."""
    m = np.zeros((10, 12), bool)
    m[1:4, 1:5] = True       # 12 pixels
    m[6:8, 6:8] = True       # 4 pixels
    m[8, 8] = True           # diagonal neighbour of (7, 7)
    return m


def test_remove_small_components_constructed():
    m = _blobs()
    out = remove_small_components(m, min_size=5)  # 8-connectivity: 4 + 1 = 5 pixels survive together
    assert out.sum() == 17
    out = remove_small_components(m, min_size=5, connectivity=1)  # 4-connectivity: 4 and 1 go
    assert out.sum() == 12 and out[1:4, 1:5].all()
    assert remove_small_components(m, 0).sum() == m.sum()


def test_keep_largest_components_constructed():
    m = _blobs()
    assert keep_largest_components(m, 1, connectivity=1).sum() == 12
    two = keep_largest_components(m, 2, connectivity=1)
    assert two.sum() == 16 and not two[8, 8]
    assert keep_largest_components(m, 0).sum() == m.sum()
    assert keep_largest_components(np.zeros((4, 4)), 2).sum() == 0


def test_components_in_3d():
    v = np.zeros((4, 5, 5), bool)
    v[0:2, 0:2, 0:2] = True   # 8 voxels
    v[3, 4, 4] = True         # 1 voxel
    assert keep_largest_components(v, 1).sum() == 8
    assert remove_small_components(v, 2).sum() == 8


def test_remove_small_regions_of_a_label_map():
    labels = np.zeros((8, 8), np.int64)
    labels[0:3, 0:3] = 2       # 9 px of class 2
    labels[5, 5] = 2           # 1 px of class 2
    labels[6:8, 0:2] = 3       # 4 px of class 3
    out = remove_small_regions(labels, min_size=5)
    expected = np.zeros_like(labels)
    expected[0:3, 0:3] = 2
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(remove_small_regions(labels, 0), labels)


def test_postprocess_mask_both_steps_random_against_bruteforce():
    """Random masks: components found by a flood fill written here (the independent reference)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.random((15, 17)) > 0.6
        comps, seen = [], np.zeros_like(m)
        for start in zip(*np.nonzero(m)):
            if seen[start]:
                continue
            stack, comp = [start], []
            seen[start] = True
            while stack:
                r, c = stack.pop()
                comp.append((r, c))
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < 15 and 0 <= cc < 17 and m[rr, cc] and not seen[rr, cc]:
                            seen[rr, cc] = True
                            stack.append((rr, cc))
            comps.append(comp)
        big = [c for c in comps if len(c) >= 3]
        expected = np.zeros_like(m)
        for c in big:
            expected[tuple(np.array(c).T)] = True
        np.testing.assert_array_equal(postprocess_mask(m, min_size=3), expected)
        sizes = sorted(len(c) for c in big)
        got = postprocess_mask(m, min_size=3, keep_largest=2)
        assert got.sum() == sum(sizes[-2:])


def test_bad_connectivity():
    with pytest.raises(ValueError):
        remove_small_components(np.ones((3, 3)), 2, connectivity=3)
