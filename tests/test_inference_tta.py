import numpy as np

from common.inference import predict_sliding_window, predict_whole, with_flips


def _not_flip_invariant(x):
    """A 'model' whose output depends on the absolute position: pixel value + row index + 10 * column index."""
    n, h, w, c = x.shape
    rows = np.arange(h)[None, :, None, None]
    cols = np.arange(w)[None, None, :, None]
    return x[..., :1] + rows + 10.0 * cols


def test_with_flips_bookkeeping_exact():
    rng = np.random.default_rng(0)
    x = rng.random((2, 5, 7, 1)).astype(np.float32)
    got = with_flips(_not_flip_invariant)(x)
    # by hand: the flipped input's prediction, flipped back, sees mirrored coordinates
    h, w = 5, 7
    rows = np.arange(h)[None, :, None, None]
    cols = np.arange(w)[None, None, :, None]
    identity = x + rows + 10 * cols
    hflip = x + rows + 10 * (w - 1 - cols)
    vflip = x + (h - 1 - rows) + 10 * cols
    np.testing.assert_allclose(got, (identity + hflip + vflip) / 3, rtol=1e-6)
    # a flip-invariant function is unchanged
    np.testing.assert_allclose(with_flips(lambda a: 2 * a)(x), 2 * x, rtol=1e-6)


def test_tta_in_whole_image_and_sliding_window():
    rng = np.random.default_rng(1)
    x = rng.random((1, 6, 6, 1)).astype(np.float32)
    plain = predict_whole(lambda a: a * 3, x, multiple=4)
    np.testing.assert_allclose(predict_whole(lambda a: a * 3, x, multiple=4, tta="flip"), plain, rtol=1e-6)
    # position-dependent model on the padded 8x8 input: identity, hflip, vflip of the 6x6 image
    whole = predict_whole(_not_flip_invariant, x, multiple=4, tta="flip")
    rows = np.arange(6)[None, :, None, None]
    cols = np.arange(6)[None, None, :, None]
    expected = (3 * x + rows + 10 * cols + (5 - rows) + 10 * (5 - cols) + rows + 10 * cols) / 3
    np.testing.assert_allclose(whole, expected, rtol=1e-5)
    # sliding window: flips per patch; a flip-invariant pointwise model gives the plain result
    sw = predict_sliding_window(lambda a: a + 1, x, patch=4, stride=2, tta="flip")
    np.testing.assert_allclose(sw, x + 1, rtol=1e-6)
