"""A JPEG tagged "rotate 90" (EXIF orientation 6) is read in one frame everywhere: hloc's
reader (stored pixels, orientation ignored), keypoint labels and training images."""

import cv2
import numpy as np
import PIL.Image
import pytest

from tasp_hloc.data.homographic import HomographicDataset
from tasp_hloc.io.images import read_image
from tasp_hloc.labels import Labeler

H, W = 96, 128  # stored pixels; a reader that applies the tag sees 128 x 96
# A bright rectangle in the top-right of the stored image: four corners a detector finds.
X0, Y0, X1, Y1 = 80, 16, 112, 40


@pytest.fixture
def rotated_jpeg(tmp_path):
    image = np.full((H, W, 3), 30, np.uint8)
    image[Y0 : Y1 + 1, X0 : X1 + 1] = (230, 200, 170)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    folder = tmp_path / "photos"
    folder.mkdir()
    path = folder / "rotated.jpg"
    PIL.Image.fromarray(image).save(path, quality=98, exif=exif)
    # The tag is there: OpenCV's default decoding applies it.
    assert cv2.imread(str(path), cv2.IMREAD_COLOR).shape[:2] == (W, H)
    return path


def hloc_rule(path):
    """hloc's ``read_image`` (hloc.utils.io), written out for where hloc is not installed."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return image[:, :, ::-1]


def test_reader_keeps_stored_pixels_like_hloc(rotated_jpeg):
    image = read_image(rotated_jpeg)
    assert image.shape == (H, W, 3)
    assert np.array_equal(image, hloc_rule(rotated_jpeg))
    try:
        from hloc.utils.io import read_image as hloc_read_image
    except ImportError:
        return
    assert np.array_equal(image, hloc_read_image(rotated_jpeg))


def test_labels_are_in_the_frame_of_the_reader(rotated_jpeg):
    labeler = Labeler({"resize_max": None, "adaptation": {"num_homographies": 1}})
    labels = labeler.label_file(rotated_jpeg)
    assert labels["image_size"].tolist() == [W, H]
    kpts = labels["keypoints"].numpy()
    corners = np.array([[X0, Y0], [X1, Y0], [X0, Y1], [X1, Y1]], np.float64)
    dist = np.linalg.norm(kpts[:, None] - corners[None], axis=-1)
    assert len(kpts) >= 4
    assert np.all(dist.min(1) < 3), kpts  # every label on a corner of the stored rectangle
    assert np.all(dist.min(0) < 3), kpts  # and every corner labelled


def test_training_images_are_in_the_frame_of_the_reader(rotated_jpeg):
    # A crop of the photo's own size at scale 1: image0 is the photo as stored.
    ds = HomographicDataset(
        {
            "image_dirs": [str(rotated_jpeg.parent)],
            "size": [H, W],
            "short_side": [H, H],
            "seed": 0,
            "photometric": {"enable": False},
        }
    )
    sample = ds[0]
    assert np.allclose(sample["source0_to_image0"].numpy(), np.eye(3), atol=1e-6)
    image0 = (sample["image0"].permute(1, 2, 0).numpy() * 255).round()
    assert np.array_equal(image0.astype(np.uint8), read_image(rotated_jpeg))
