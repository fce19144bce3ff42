"""common/data/patches.py against straightforward loops written after the original extract_patches.py."""

import numpy as np
import pytest

from common.data import patches as P


def _loop_pad(images, ph, pw, sh, sw):
    """paint_border_overlap, as the original (channels-last here)."""
    n, h, w, c = images.shape
    hp = h + (sh - (h - ph) % sh) % sh
    wp = w + (sw - (w - pw) % sw) % sw
    out = np.zeros((n, hp, wp, c), images.dtype)
    out[:, :h, :w] = images
    return out


def _loop_extract(images, ph, pw, sh, sw):
    n, h, w, _ = images.shape
    out = []
    for i in range(n):
        for r in range((h - ph) // sh + 1):
            for c in range((w - pw) // sw + 1):
                out.append(images[i, r * sh:r * sh + ph, c * sw:c * sw + pw])
    return np.stack(out)


def _loop_recompose(patches, n, h, w, sh, sw):
    ph, pw, c = patches.shape[1:]
    prob, count, k = np.zeros((n, h, w, c)), np.zeros((n, h, w, c)), 0
    for i in range(n):
        for r in range((h - ph) // sh + 1):
            for col in range((w - pw) // sw + 1):
                prob[i, r * sh:r * sh + ph, col * sw:col * sw + pw] += patches[k]
                count[i, r * sh:r * sh + ph, col * sw:col * sw + pw] += 1
                k += 1
    return prob / count


@pytest.mark.parametrize("shape,patch,stride", [
    ((2, 13, 11, 1), 5, 3), ((3, 17, 19, 2), (4, 6), (3, 2)), ((1, 8, 8, 1), 8, 5), ((2, 9, 7, 3), 3, 1),
    ((1, 29, 31, 1), 8, 5)])
def test_extraction_and_recomposition_equal_the_original_loops(shape, patch, stride):
    rng = np.random.default_rng(0)
    x = rng.random(shape).astype(np.float32)
    (ph, pw), (sh, sw) = P._pair(patch, "p"), P._pair(stride, "s")
    padded = _loop_pad(x, ph, pw, sh, sw)
    np.testing.assert_array_equal(P.pad_to_stride(x, patch, stride), padded)
    ours = P.extract_ordered_overlap(x, patch, stride)
    np.testing.assert_array_equal(ours, _loop_extract(padded, ph, pw, sh, sw))
    assert P.grid_shape(x.shape, patch, stride) == ((padded.shape[1] - ph) // sh + 1,
                                                   (padded.shape[2] - pw) // sw + 1)
    # zero-copy view, read-only
    view = P.extract_ordered_overlap(x, patch, stride, materialize=False)
    assert not view.flags.writeable and view.shape[3:] == (ph, pw, shape[3])
    # recomposition: plain average of arbitrary patch values, like the original
    values = rng.random(ours.shape).astype(np.float32)
    reference = _loop_recompose(values, shape[0], padded.shape[1], padded.shape[2], sh, sw)
    np.testing.assert_allclose(P.recompose_overlap(values, padded.shape, stride), reference, rtol=1e-6)
    np.testing.assert_allclose(P.recompose_overlap(values, shape, stride),
                               reference[:, :shape[1], :shape[2]], rtol=1e-6)
    # exact inverse on the images themselves, odd sizes included
    back = P.recompose_overlap(ours, shape, stride)
    assert back.dtype == np.float32 and back.shape == shape
    np.testing.assert_array_equal(back, x)


def test_streamed_accumulation_in_any_batches_equals_one_shot():
    rng = np.random.default_rng(1)
    x = rng.random((3, 21, 18, 1)).astype(np.float32)
    p = P.extract_ordered_overlap(x, 6, 4)
    acc = P.OverlapAccumulator(x.shape, 6, 4)
    order = list(range(0, len(p), 7))
    rng.shuffle(order)
    for s in order:  # out of order, batches crossing row and image boundaries
        acc.add(p[s:s + 7], s)
    np.testing.assert_array_equal(acc.result(), x)
    with pytest.raises(ValueError, match="outside the grid"):
        acc.add(p[:3], len(p) - 2)


def test_recompose_rejects_a_wrong_number_of_patches():
    x = np.zeros((2, 10, 10, 1), np.float32)
    p = P.extract_ordered_overlap(x, 4, 3)
    with pytest.raises(ValueError, match="patches"):
        P.recompose_overlap(p[:-1], x.shape, 3)


def test_random_patches_follow_the_original_centres_and_are_seeded():
    """Every patch is located by brute force (each pixel carries its own number), so the reference does not
    replay the code's random draws: image k // per_image, image and mask cut at the same place, and the
    top-left corners uniform over all of [0, H - ph] x [0, W - pw], both ends included (the original's
    centre = random.randint(ph/2, H - ph/2), inclusive)."""
    rng = np.random.default_rng(2)
    n, h, w = 3, 23, 19
    numbers = np.arange(n * h * w, dtype=np.float64).reshape(n, h, w, 1)
    x = np.concatenate([numbers, rng.random((n, h, w, 1))], axis=-1)
    m = (x[..., 1:] > 0.5).astype(np.uint8)
    a, b = P.extract_random(x, m, 30, (6, 4), seed=3)
    assert a.shape == (30, 6, 4, 2) and b.shape == (30, 6, 4, 1) and b.dtype == np.uint8
    for k in range(30):
        i, top, left = np.unravel_index(int(a[k, 0, 0, 0]), (n, h, w))
        assert i == k // 10 and 0 <= top <= h - 6 and 0 <= left <= w - 4
        np.testing.assert_array_equal(a[k], x[i, top:top + 6, left:left + 4])
        np.testing.assert_array_equal(b[k], m[i, top:top + 6, left:left + 4])
    a2, _ = P.extract_random(x, m, 30, (6, 4), seed=3)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, P.extract_random(x, m, 30, (6, 4), seed=4)[0])
    # 3600 draws: each of the 18 tops and 16 lefts about 200 and 225 times (binomial sd < 15)
    many, _ = P.extract_random(x, m, 3600, (6, 4), seed=5)
    _, tops, lefts = np.unravel_index(many[:, 0, 0, 0].astype(np.int64), (n, h, w))
    top_counts, left_counts = np.bincount(tops, minlength=h), np.bincount(lefts, minlength=w)
    assert not top_counts[h - 6 + 1:].any() and not left_counts[w - 4 + 1:].any()
    assert top_counts[:h - 6 + 1].min() > 120 and top_counts.max() < 280
    assert left_counts[:w - 4 + 1].min() > 140 and left_counts.max() < 310
    with pytest.raises(ValueError, match="multiple"):
        P.extract_random(x, m, 31, 4)


def test_inside_fov_rule_keeps_only_centres_in_the_circle():
    """The original's is_patch_inside_FOV on the 565x565 crop: centre distance from (282, 282) < 225."""
    img = np.arange(565 * 565, dtype=np.float32).reshape(1, 565, 565, 1)
    a, _ = P.extract_random(img, img, 500, 64, seed=0, inside_fov=True)
    top, left = np.divmod(a[:, 0, 0, 0].astype(np.int64), 565)
    dist = np.hypot(top + 32 - 282, left + 32 - 282)
    assert dist.max() < 225
    a_all, _ = P.extract_random(img, img, 500, 64, seed=0)
    top, left = np.divmod(a_all[:, 0, 0, 0].astype(np.int64), 565)
    assert np.hypot(top + 32 - 282, left + 32 - 282).max() > 225  # off by default: anywhere in the crop
    assert P.fov_centre_mask(565, 565, 64).sum() == sum(
        1 for y in range(565) for x in range(565) if np.sqrt((x - 282) ** 2 + (y - 282) ** 2) < 225)
