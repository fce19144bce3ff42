import cv2
import numpy as np
import pytest
from PIL import Image

from common.data.io import (DataLayoutError, ImageReadError, atomic_path, list_images, open_npy_writer,
                            pair_files, read_image, write_image)


def _reference_read(path):
    """The file as another library decodes it: OpenCV (BGR -> RGB), Pillow for GIF (OpenCV 5 has no GIF)."""
    if path.suffix == ".gif":
        return np.asarray(Image.open(path).convert("RGB"))
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("ext", [".tif", ".png", ".gif", ".bmp", ".jpg"])
def test_round_trip_formats(tmp_path, ext):
    img = (np.arange(30 * 20).reshape(30, 20) % 256).astype(np.uint8)
    write_image(tmp_path / f"a{ext}", img)
    back = read_image(tmp_path / f"a{ext}", "gray")
    assert back.shape == (30, 20) and back.dtype == np.uint8
    if ext != ".jpg":
        np.testing.assert_array_equal(back, img)
    assert read_image(tmp_path / f"a{ext}", "rgb").shape == (30, 20, 3)


@pytest.mark.parametrize("ext", [".tif", ".png", ".gif", ".bmp", ".jpg"])
def test_written_and_read_colours_agree_with_another_decoder(tmp_path, ext):
    """write_image and read_image against OpenCV's codecs, so a swapped channel order or a transposed array
    (invisible in a round trip through our own pair) fails: red top-left block, green column, blue row."""
    rgb = np.zeros((64, 48, 3), np.uint8)  # blocks on JPEG's 16x16 colour blocks
    rgb[:16, :16] = (220, 20, 10)
    rgb[:, 32:48] = (10, 200, 30)
    rgb[48:] = (0, 40, 230)
    # lossless formats: exact; JPEG: close on average (measured 1.7; swapped R and B are off by 53 on average,
    # a transposed array has another shape)
    def close(got, want):
        assert got.shape == want.shape
        diff = np.abs(got.astype(int) - want)
        assert (diff.mean() <= 4) if ext == ".jpg" else not diff.any()

    write_image(tmp_path / f"ours{ext}", rgb)
    close(_reference_read(tmp_path / f"ours{ext}"), rgb)
    if ext == ".gif":
        Image.fromarray(rgb).save(tmp_path / f"theirs{ext}")
    else:
        assert cv2.imwrite(str(tmp_path / f"theirs{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    close(read_image(tmp_path / f"theirs{ext}", "rgb"), rgb)
    gray = cv2.imread(str(tmp_path / f"theirs{ext}"), cv2.IMREAD_GRAYSCALE) if ext != ".gif" else \
        np.asarray(Image.open(tmp_path / f"theirs{ext}").convert("L"))
    diff = np.abs(read_image(tmp_path / f"theirs{ext}", "gray").astype(int) - gray)
    # JPEG: OpenCV decodes the luma plane alone, without the colour planes' upsampling at the block edges
    assert (diff.mean() <= 1) if ext == ".jpg" else (diff.max() <= 1)


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


def test_16_bit_images_are_scaled_like_opencv(tmp_path):
    """16-bit greyscale TIFF / PNG: scaled to 8 bits as OpenCV's 8-bit reader (the independent reference)
    converts them, never clipped to a constant white frame."""
    import cv2

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 65536, (42, 58), dtype=np.uint16)
    frame[0, :4] = [0, 255, 256, 65535]  # byte boundaries and the top value
    for name in ("f16.tif", "f16.png"):
        Image.fromarray(frame).save(tmp_path / name)
        expected = cv2.imread(str(tmp_path / name), cv2.IMREAD_GRAYSCALE)
        assert expected.dtype == np.uint8 and expected.std() > 10
        np.testing.assert_array_equal(read_image(tmp_path / name, "gray"), expected)
        np.testing.assert_array_equal(read_image(tmp_path / name, "rgb"), np.repeat(expected[..., None], 3, -1))
        back = read_image(tmp_path / name, "unchanged")
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back, frame)


def test_float_images_are_refused(tmp_path):
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match="f.tif: 32-bit floating-point image"):
        read_image(tmp_path / "f.tif")


def test_exif_orientation_alpha_palette_and_cmyk(tmp_path):
    import cv2

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:5, :10] = (200, 30, 10)  # a red block at the top left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "r.jpg", "rgb", exif=True)
    assert shown.shape == (30, 20, 3)  # upright, as a viewer (and cv2.imread) shows it
    reference = cv2.cvtColor(cv2.imread(str(tmp_path / "r.jpg"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(shown.astype(int) - reference).max() <= 2
    stored = read_image(tmp_path / "r.jpg", "rgb")  # the default: the stored grid, as PIL.Image.open gives it
    assert stored.shape == (20, 30, 3) and np.abs(stored.astype(int) - rgb).mean() < 4
    # alpha channel dropped, colour kept
    rgba = np.dstack([rgb, np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", "rgb"), rgb)
    # palette image: its colours, not its indices
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png", "rgb"), rgb)
    # CMYK JPEG -> RGB close to the colours it encodes
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    assert np.abs(read_image(tmp_path / "c.jpg", "rgb").astype(int) - rgb).max() <= 12


def test_atomic_dir_is_all_or_nothing(tmp_path):
    from common.data.io import atomic_dir
    from common.errors import UserError

    target = tmp_path / "prepared"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.npy").write_text("half")
            raise RuntimeError("bad input found half-way")
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    with atomic_dir(target) as tmp:
        (tmp / "a.npy").write_text("1")
    with pytest.raises(UserError, match="prepared: already exists; pass --overwrite"):
        with atomic_dir(target) as tmp:
            pass
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b.npy").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
    assert sorted(p.name for p in target.iterdir()) == ["b.npy"]


# EXIF orientation: what each original's reader does (see common.data.io.read_image). Orientation tag t tells a
# viewer how to turn the stored grid for display (EXIF 2.3, tag 0x0112), written here as NumPy operations:
SHOW = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def _tagged(path, array, tag, **save):
    exif = Image.Exif()
    exif[0x0112] = tag
    Image.fromarray(array).save(path, exif=exif, **save)
    return path


def _pattern():
    rgb = np.zeros((6, 9, 3), np.uint8)
    rgb[..., 0] = np.arange(9) * 25
    rgb[..., 1] = (np.arange(6) * 40)[:, None]
    rgb[0, 0] = (255, 255, 255)
    return rgb


@pytest.mark.parametrize("tag", range(1, 9))
def test_orientation_tags_stored_grid_by_default_and_applied_as_opencv_on_request(tmp_path, tag):
    """PNG and TIFF are lossless, so every orientation is checked pixel for pixel: ``exif=False`` gives the
    stored grid (as PIL.Image.open, scipy.misc.imread, skimage.io.imread / tifffile read it), ``exif=True`` the
    grid a viewer shows, which is what cv2.imread returns (OpenCV 4.5.2+ for PNG)."""
    import tifffile

    rgb = _pattern()
    png = _tagged(tmp_path / "a.png", rgb, tag)
    np.testing.assert_array_equal(read_image(png, "rgb"), rgb)
    np.testing.assert_array_equal(read_image(png, "rgb", exif=False), np.asarray(Image.open(png)))
    np.testing.assert_array_equal(read_image(png, "rgb", exif=True), SHOW[tag](rgb))
    opencv = cv2.cvtColor(cv2.imread(str(png), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(read_image(png, "rgb", exif=True), opencv)
    np.testing.assert_array_equal(read_image(png, "gray", exif=True),
                                  np.asarray(Image.fromarray(SHOW[tag](rgb)).convert("L")))
    tif = _tagged(tmp_path / "a.tif", rgb, tag)
    np.testing.assert_array_equal(tifffile.imread(tif), rgb)  # the stored grid, as skimage.io.imread reads .tif
    np.testing.assert_array_equal(read_image(tif, "rgb"), rgb)
    np.testing.assert_array_equal(read_image(tif, "rgb", exif=True), SHOW[tag](rgb))
    from common.data.io import exif_orientation

    assert exif_orientation(png) == exif_orientation(tif) == tag


def test_orientation_of_a_phone_jpeg_and_the_warning_that_names_it(tmp_path):
    from common.data.io import exif_orientation, warn_orientation

    photo = np.zeros((40, 60, 3), np.uint8)
    photo[:10, :20] = (220, 40, 20)  # a red block at the stored grid's top left
    jpg = _tagged(tmp_path / "phone.jpg", photo, 6, quality=95)
    stored, shown = read_image(jpg, "rgb"), read_image(jpg, "rgb", exif=True)
    assert stored.shape == (40, 60, 3) and stored[2:8, 2:18, 0].min() > 180  # as stored
    assert shown.shape == (60, 40, 3) and shown[2:18, -8:-2, 0].min() > 180  # turned 90 degrees clockwise
    opencv = cv2.cvtColor(cv2.imread(str(jpg), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(shown.astype(int) - opencv).max() <= 2  # cv2.imread applies the tag
    plain = tmp_path / "plain.png"
    Image.fromarray(photo).save(plain)
    upright = _tagged(tmp_path / "upright.jpg", photo, 1)
    assert exif_orientation(plain) == exif_orientation(upright) == 1 and exif_orientation(jpg) == 6
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_orientation([plain, upright], applied=False, reader="PIL.Image.open") == []
    with pytest.warns(UserWarning) as caught:
        tagged = warn_orientation([plain, jpg, upright, jpg], applied=False, reader="PIL.Image.open")
    assert len(caught) == 1 and tagged == [(jpg, 6), (jpg, 6)]
    message = str(caught[0].message)
    assert str(jpg) in message and "tag 6" in message and "as stored" in message and "PIL.Image.open" in message
