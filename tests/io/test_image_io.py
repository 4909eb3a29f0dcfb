import cv2
import numpy as np
import pytest

from tasp_hloc.io.images import (
    ImageDataset,
    ImageReadError,
    list_images,
    read_image,
    read_image_list,
)

from conftest import render_scene


def test_rgba_16bit_and_gray_files_decode_like_8bit_rgb(tmp_path):
    rgb = render_scene(40, 50, 3)
    bgr = rgb[:, :, ::-1]
    cv2.imwrite(str(tmp_path / "rgb.png"), bgr)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([bgr, np.full(rgb.shape[:2], 128, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), bgr.astype(np.uint16) * 257)  # 16-bit, same picture
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)

    ref = read_image(tmp_path / "rgb.png")
    assert ref.shape == (40, 50, 3) and ref.dtype == np.uint8
    assert np.array_equal(ref, rgb)  # RGB order, not OpenCV's BGR
    assert np.array_equal(read_image(tmp_path / "rgba.png"), ref)
    assert np.array_equal(read_image(tmp_path / "deep.png"), ref)
    g3 = read_image(tmp_path / "gray.png")
    assert (
        g3.shape == (40, 50, 3)
        and np.array_equal(g3[..., 0], gray)
        and np.array_equal(g3[..., 2], gray)
    )
    assert read_image(tmp_path / "deep.png", grayscale=True).dtype == np.uint8


def test_dataset_resize_and_layout(image_dir):
    ds = ImageDataset(image_dir, {"resize_max": 100})
    assert ds.names == ["a.png", "b.jpg", "sub/c.png"]
    item = ds[0]  # 131 x 97 -> 100 x 74
    assert item["image"].shape == (3, 74, 100) and item["image"].dtype == np.float32
    assert item["original_size"].tolist() == [131, 97]
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    small = ds[2]  # 64 x 64 is not upscaled unless forced
    assert small["image"].shape == (3, 64, 64)
    forced = ImageDataset(image_dir, {"resize_max": 100, "resize_force": True, "grayscale": True})[
        2
    ]
    assert forced["image"].shape == (1, 100, 100)


def test_corrupt_image_is_reported_not_raised(image_dir):
    (image_dir / "bad.jpg").write_bytes(b"not a jpeg at all")
    ds = ImageDataset(image_dir, {})
    item = ds[ds.names.index("bad.jpg")]
    assert "error" in item and "bad.jpg" in item["error"]
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image(image_dir / "bad.jpg")


def test_empty_or_missing_folder_and_bad_lists(tmp_path, image_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No image"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="ghost.png"):
        ImageDataset(image_dir, {}, names=["a.png", "ghost.png"])
    lst = tmp_path / "list.txt"
    lst.write_text("a.png SIMPLE_RADIAL 131 97 100 65 48 0\n\n# comment\nsub/c.png\n")
    assert read_image_list(lst) == ["a.png", "sub/c.png"]
    (tmp_path / "blank.txt").write_text("\n")
    with pytest.raises(ValueError, match="names no image"):
        read_image_list(tmp_path / "blank.txt")
