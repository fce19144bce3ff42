import numpy as np
import pytest

from common.rle import rle_decode, rle_encode


def _original_run_length_enc(mask, min_pixels=0):
    """The Kaggle nerve tutorial's run_length_enc (specs/ultrasound_nerve.md section 3): the indices > 0 of the
    flattened transpose, split into maximal consecutive runs, ``start+1 length`` pairs."""
    x = mask.transpose().flatten()
    y = np.where(x > 0)[0]
    if len(y) == 0 or len(y) < min_pixels:
        return ""
    z = np.where(np.diff(y) > 1)[0]
    start = np.insert(y[z + 1], 0, y[0])
    end = np.append(y[z], y[-1])
    return " ".join(f"{s + 1} {e - s + 1}" for s, e in zip(start, end))


def _pixel_loop_decode(rle, shape):
    """Each run painted pixel by pixel at number k = col * H + row + 1."""
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    values = [int(v) for v in rle.split()]
    for start, length in zip(values[0::2], values[1::2]):
        for k in range(start, start + length):
            col, row = divmod(k - 1, height)
            mask[row, col] = 1
    return mask


HAND = np.array([[0, 1, 1, 0],
                 [0, 1, 0, 0],
                 [1, 1, 0, 1]], dtype=np.uint8)


def test_hand_example_is_column_major():
    assert rle_encode(HAND) == "3 5 12 1"  # row-major would give "2 2 6 1 9 2 12 1"
    np.testing.assert_array_equal(rle_decode("3 5 12 1", HAND.shape), HAND)


def test_min_pixels_rule():
    assert rle_encode(HAND, min_pixels=10) == ""
    assert rle_encode(HAND, min_pixels=6) == "3 5 12 1"


@pytest.mark.parametrize("name, mask, expected", [
    ("empty", np.zeros((4, 5), np.uint8), ""),
    ("full", np.ones((4, 5), np.uint8), "1 20"),
    ("first pixel", np.eye(1, 20, 0).reshape(5, 4).T, "1 1"),
    ("last pixel", np.eye(1, 20, 19).reshape(5, 4).T, "20 1"),
    ("single inner pixel", np.pad([[1]], ((2, 1), (3, 1))), "15 1"),
])
def test_edge_cases(name, mask, expected):
    assert rle_encode(mask) == expected
    np.testing.assert_array_equal(rle_decode(expected, mask.shape), mask != 0)


def test_run_crossing_column_boundary():
    mask = np.zeros((4, 3), np.uint8)
    mask[2:, 0] = 1  # rows 2-3 of column 0 ...
    mask[:2, 1] = 1  # ... continue into rows 0-1 of column 1: one run
    assert rle_encode(mask) == "3 4"


def test_values_255_and_bool_count_as_foreground():
    assert rle_encode(HAND * 255) == rle_encode(HAND.astype(bool)) == "3 5 12 1"


def test_references_agree_on_the_spec_example():
    assert _original_run_length_enc(HAND) == "3 5 12 1" and _original_run_length_enc(HAND, min_pixels=10) == ""
    np.testing.assert_array_equal(_pixel_loop_decode("3 5 12 1", HAND.shape), HAND)


@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.97])
def test_random_masks_equal_the_original_encoder(density):
    rng = np.random.default_rng(int(density * 100))
    for shape in [(1, 1), (1, 7), (7, 1), (13, 17), (420, 580)]:
        mask = (rng.random(shape) < density).astype(np.uint8)
        rle = rle_encode(mask)
        assert rle == _original_run_length_enc(mask)
        assert rle_encode(mask, min_pixels=10) == _original_run_length_enc(mask, min_pixels=10)
        if mask.size < 1000:
            np.testing.assert_array_equal(rle_decode(rle, shape), _pixel_loop_decode(rle, shape))
        np.testing.assert_array_equal(rle_decode(rle, shape), mask)
        values = np.array(rle.split(), dtype=int) if rle else np.zeros(0, int)
        starts, lengths = values[0::2], values[1::2]
        assert (np.diff(starts) > lengths[:-1]).all()  # ascending, non-overlapping, maximal runs
        assert lengths.sum() == mask.sum()


def test_decode_rejects_malformed():
    for bad in ["3", "0 2", "3 0", "11 3"]:
        with pytest.raises(ValueError):
            rle_decode(bad, (3, 4))


def test_encode_rejects_non_2d():
    with pytest.raises(ValueError):
        rle_encode(np.zeros((2, 3, 1)))
