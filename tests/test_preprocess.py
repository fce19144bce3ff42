"""The shared normalisations against straightforward re-statements of the originals' loops."""

import cv2
import numpy as np
import pytest

from common.data import preprocess


def _original_dataset_normalized(imgs):
    """The original's two steps, channels-first, float64: global z-score, then per-image min-max to 255."""
    normalized = (imgs - np.mean(imgs)) / np.std(imgs)
    for i in range(imgs.shape[0]):
        normalized[i] = (normalized[i] - normalized[i].min()) / (normalized[i].max() - normalized[i].min()) * 255
    return normalized


def test_dataset_normalized_equals_the_original_two_step_form():
    rng = np.random.default_rng(0)
    imgs = rng.uniform(0, 255, (4, 9, 7, 3)) * rng.uniform(0.1, 1, (4, 1, 1, 1))
    ours = preprocess.dataset_normalized(imgs)
    np.testing.assert_allclose(ours, _original_dataset_normalized(imgs.copy()), atol=1e-9)
    assert ours.min() == 0 and ours.max() == 255
    # image by image: a chunk gives the same values as the whole array (streaming is exact)
    np.testing.assert_array_equal(preprocess.dataset_normalized(imgs[2:3]), ours[2:3])
    assert np.all(preprocess.dataset_normalized(np.full((1, 3, 3), 7.0)) == 0)


def test_dataset_normalized_of_uint8_images_is_the_float64_formula_exactly():
    """ISIC's uint8 arrays go through a per-image lookup table: the same values as the float64 formula, cast."""
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 6, 7, 3)).astype(np.uint8)
    imgs[1] = np.clip(imgs[1], 40, 90)  # a narrow range
    imgs[3] = 17  # a constant image: zeros
    reference = _original_dataset_normalized(imgs.astype(np.float64))
    reference[3] = 0.0  # the original divides 0 by 0 here (NaN); documented as zeros
    for dtype in (np.float64, np.float32):
        ours = preprocess.dataset_normalized(imgs, dtype=dtype)
        assert ours.dtype == dtype and ours.shape == imgs.shape
        np.testing.assert_allclose(ours, reference.astype(dtype), rtol=1e-12 if dtype == np.float64 else 1e-6,
                                   atol=1e-9 if dtype == np.float64 else 1e-4)
        # the lookup table equals the formula on the same values in float64, bit for bit
        as_float = preprocess.dataset_normalized(imgs.astype(np.float64)).astype(dtype)
        np.testing.assert_array_equal(ours, as_float)
    assert preprocess.dataset_normalized(imgs).max() == 255.0


def test_rgb2gray_weights_and_shape():
    rgb = np.zeros((1, 2, 2, 3))
    rgb[0, 0, 0] = (100, 0, 0)
    rgb[0, 0, 1] = (0, 100, 0)
    rgb[0, 1, 0] = (0, 0, 100)
    gray = preprocess.rgb2gray(rgb)
    assert gray.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(gray[0, :, :, 0], [[29.9, 58.7], [11.4, 0]])
    with pytest.raises(ValueError, match="shape"):
        preprocess.rgb2gray(np.zeros((2, 2, 3)))


def test_clahe_and_gamma_truncate_like_the_original():
    table = preprocess.gamma_table(1.2)
    expected = np.array([int(((i / 255.0) ** (1 / 1.2)) * 255) for i in range(256)])
    np.testing.assert_array_equal(table, expected)
    x = np.array([[[10.9, 200.99], [0.5, 254.7]]])           # truncation, not rounding
    np.testing.assert_array_equal(preprocess.adjust_gamma(x)[0], table[[[10, 200], [0, 254]]])
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, (2, 32, 40, 1))
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    ours = preprocess.clahe_equalized(img)
    assert ours.shape == img.shape and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours[1, ..., 0], clahe.apply(img[1, ..., 0].astype(np.uint8)))


def test_brightest_pixel_truncates_to_255_like_the_original():
    """The original divides by (max - min) before multiplying by 255, so every image's brightest pixel is
    exactly 255.0 and stays 255 through the uint8 cast before CLAHE; 255 / span first (span 100 here) gives
    254.99999999999997, which the cast truncates to 254."""
    imgs = np.array([[[0.0, 30.0], [70.0, 100.0]], [[5.0, 25.0], [125.0, 205.0]]])[..., None]
    original = _original_dataset_normalized(imgs.copy())
    assert original[0].max() == 255.0 and original[1].max() == 255.0
    ours = preprocess.dataset_normalized(imgs)
    np.testing.assert_array_equal(ours.astype(np.uint8), original.astype(np.uint8))
    assert ours.astype(np.uint8).reshape(2, -1).max(axis=1).tolist() == [255, 255]


def _original_my_preproc(rgb):
    """The original's my_PreProc written out from scratch, channels-first as the original: rgb2gray with
    its weights, the two-step dataset_normalized, cv2 CLAHE (clip 2, 8x8 tiles) on np.array(., dtype=uint8),
    the gamma-1.2 look-up table of adjust_gamma (astype uint8), then / 255."""
    imgs = rgb.transpose(0, 3, 1, 2)
    gray = imgs[:, 0:1] * 0.299 + imgs[:, 1:2] * 0.587 + imgs[:, 2:3] * 0.114
    normalized = _original_dataset_normalized(gray)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    equalized = np.empty(normalized.shape)
    for i in range(normalized.shape[0]):
        equalized[i, 0] = clahe.apply(np.array(normalized[i, 0], dtype=np.uint8))
    table = np.array([((i / 255.0) ** (1.0 / 1.2)) * 255 for i in np.arange(0, 256)]).astype("uint8")
    adjusted = np.empty(equalized.shape)
    for i in range(equalized.shape[0]):
        adjusted[i, 0] = cv2.LUT(np.array(equalized[i, 0], dtype=np.uint8), table)
    return (adjusted / 255.0).transpose(0, 2, 3, 1)


def test_my_preproc_pipeline():
    rng = np.random.default_rng(2)
    rgb = rng.uniform(0, 255, (3, 24, 20, 3))
    # a dim grey image, gray values 0..100 (100 * 0.299 + 100 * 0.587 + 100 * 0.114 == 100.0 exactly): span 100
    # is where 255 / span first would turn its brightest pixel into 254, tied with its neighbour (99.7 -> 254.2)
    # for CLAHE, which then maps the neighbour differently
    rgb[2] = rng.integers(0, 99, (24, 20, 1))
    rgb[2, 0, :3] = [[0, 0, 0], [100, 100, 100], [99.7, 99.7, 99.7]]
    out = preprocess.my_preproc(rgb)
    assert out.shape == (3, 24, 20, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out, _original_my_preproc(rgb), atol=1e-6)


def test_flip_image_equals_the_reversed_views():
    from common.data.preprocess import flip_image

    rng = np.random.default_rng(0)
    for shape in ((5, 7), (5, 7, 1), (5, 7, 3), (4, 6, 4)):
        for dtype in (np.uint8, np.float32):
            image = (rng.random(shape) * 255).astype(dtype)
            for up_down, left_right, view in ((False, False, image), (True, False, image[::-1]),
                                              (False, True, image[:, ::-1]), (True, True, image[::-1, ::-1])):
                out = flip_image(image, up_down=up_down, left_right=left_right)
                assert out.shape == image.shape and out.dtype == image.dtype and out is not image
                np.testing.assert_array_equal(out, view)
    np.testing.assert_array_equal(flip_image(image[:, ::2], left_right=True), image[:, ::2][:, ::-1])  # a view
