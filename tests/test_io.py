import numpy as np
import pytest
from PIL import Image

from common.data.io import (DataLayoutError, ImageReadError, atomic_path, list_images, open_npy_writer,
                            pair_files, read_image, write_image)


@pytest.mark.parametrize("ext", [".tif", ".png", ".gif", ".bmp", ".jpg"])
def test_round_trip_formats(tmp_path, ext):
    img = (np.arange(30 * 20).reshape(30, 20) % 256).astype(np.uint8)
    write_image(tmp_path / f"a{ext}", img)
    back = read_image(tmp_path / f"a{ext}", "gray")
    assert back.shape == (30, 20) and back.dtype == np.uint8
    if ext != ".jpg":
        np.testing.assert_array_equal(back, img)
    assert read_image(tmp_path / f"a{ext}", "rgb").shape == (30, 20, 3)


def test_size_check_names_file(tmp_path):
    write_image(tmp_path / "x.png", np.zeros((5, 6), np.uint8))
    with pytest.raises(ImageReadError, match=r"x\.png.*5x6"):
        read_image(tmp_path / "x.png", size=(6, 5))


def test_missing_empty_truncated_and_garbage_files(tmp_path):
    with pytest.raises(ImageReadError, match="nope.tif: file not found"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png: file is empty"):
        read_image(tmp_path / "empty.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png: cannot decode"):
        read_image(tmp_path / "t.png")
    (tmp_path / "g.tif").write_bytes(b"this is not a tiff at all")
    with pytest.raises(ImageReadError, match="g.tif: cannot decode"):
        read_image(tmp_path / "g.tif")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.npy") as tmp:
            np.save(tmp, np.zeros(3))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(tmp_path / "out.npy") as tmp:
        np.save(tmp, np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_npy_writer_streams_and_renames(tmp_path):
    with open_npy_writer(tmp_path / "a.npy", (3, 4), np.uint8) as arr:
        arr[:] = 7
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.full((3, 4), 7, np.uint8))
    with pytest.raises(KeyError):
        with open_npy_writer(tmp_path / "b.npy", (3, 4), np.uint8):
            raise KeyError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_pair_files_reports_unmatched(tmp_path):
    imgs = [tmp_path / "1.png", tmp_path / "2.png"]
    masks = [tmp_path / "1_mask.png", tmp_path / "3_mask.png"]
    stem = lambda p: p.stem  # noqa: E731
    mask_stem = lambda p: p.stem.replace("_mask", "")  # noqa: E731
    with pytest.raises(DataLayoutError, match=r"no mask for .*2\.png; no image for .*3_mask\.png"):
        pair_files(imgs, masks, stem, mask_stem)
    pairs, lone_i, lone_m = pair_files(imgs, masks, stem, mask_stem, strict=False)
    assert pairs == [(imgs[0], masks[0])] and lone_i == [imgs[1]] and lone_m == [masks[1]]


def test_list_images_errors(tmp_path):
    with pytest.raises(DataLayoutError, match="folder not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(DataLayoutError, match="no image files"):
        list_images(tmp_path)
