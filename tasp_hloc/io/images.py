"""Reading, listing and resizing images exactly as hloc's ``extract_features`` does.

The one image reader of the package: extraction, training data, keypoint labels and the
benchmarks all decode through :func:`read_image`, so a photo is in the same pixel frame
everywhere. Decoding goes through OpenCV with hloc's flags: 16-bit images become 8-bit, RGBA
drops its alpha, grayscale files become RGB when colour is asked for, and EXIF orientation is
ignored (the stored pixels are used as they are): features written by
``python -m tasp_hloc extract`` equal those of hloc's own extraction, and keypoint labels match
the training images they were made for.
"""

import glob
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
import PIL.Image
import torch

from ..options import with_defaults
from .files import read_rows

IMAGE_GLOBS = ["*.jpg", "*.png", "*.jpeg", "*.JPG", "*.PNG"]  # hloc's
# Training photos and benchmark sources: more formats, any letter case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def extension_globs(extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
    """Case-insensitive globs for file endings, e.g. ``.jpg`` -> ``*.[jJ][pP][gG]``."""
    return [
        "*" + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext)
        for ext in extensions
    ]


class ImageReadError(ValueError, OSError):
    """An image file that cannot be decoded (an OSError too: it is a problem of the file)."""


def read_image(path: Path, grayscale: bool = False) -> np.ndarray:
    """Decode an image to uint8 ``H x W`` (grayscale) or ``H x W x 3`` (RGB)."""
    mode = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), mode | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageReadError(
            f"Cannot read image {path}: it is missing, empty, truncated or not an image "
            f"format OpenCV decodes. Replace or remove the file, then run again."
        )
    if not grayscale and image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, ::-1])  # BGR to RGB
    return image


def resize_image(image: np.ndarray, size: Sequence[int], interp: str = "cv2_area") -> np.ndarray:
    """Resize to ``size`` = (W, H) with ``cv2_<name>`` or ``pil_<name>`` interpolation."""
    if interp.startswith("cv2_"):
        flag = getattr(cv2, "INTER_" + interp[len("cv2_") :].upper())
        h, w = image.shape[:2]
        if flag == cv2.INTER_AREA and (w < size[0] or h < size[1]):
            flag = cv2.INTER_LINEAR  # INTER_AREA is meant for shrinking
        return cv2.resize(image, tuple(size), interpolation=flag)
    if interp.startswith("pil_"):
        flag = getattr(PIL.Image, interp[len("pil_") :].upper())
        resized = PIL.Image.fromarray(image.astype(np.uint8)).resize(tuple(size), resample=flag)
        return np.asarray(resized, dtype=image.dtype)
    raise ValueError(f"Unknown interpolation {interp!r}; use cv2_area, cv2_linear, pil_linear...")


def list_images(
    root: Path,
    globs: Sequence[str] = IMAGE_GLOBS,
    recursive: bool = True,
    allow_empty: bool = False,
) -> List[str]:
    """Sorted image names relative to ``root`` (POSIX), searched recursively by default.

    An empty result is an error unless ``allow_empty``; a missing folder always is.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist or is not a folder.")
    paths = set()
    for g in globs:
        pattern = glob.escape(root.as_posix()) + ("/**/" if recursive else "/") + g
        paths.update(p for p in glob.glob(pattern, recursive=recursive) if Path(p).is_file())
    if not paths and not allow_empty:
        raise ValueError(f"No image matching {list(globs)} found under {root}; check the folder.")
    return sorted(Path(p).relative_to(root).as_posix() for p in paths)


def read_image_list(path: Path) -> List[str]:
    """Names from a text file, one per line (further columns, e.g. intrinsics, are ignored)."""
    names = [cols[0] for _, cols in read_rows(path, 1, "an image name")]
    if not names:
        raise ValueError(f"Image list {path} names no image.")
    return names


class ImageDataset(torch.utils.data.Dataset):
    """Images of a folder, preprocessed like hloc's ``ImageDataset``.

    Items are dicts ``{"name", "image": C x H x W float32 in [0, 1], "original_size": (W, H)}``,
    or ``{"name", "error": message}`` for a file that cannot be decoded, so that one bad file
    does not stop a run that reads in background workers.
    """

    default_conf = {
        "globs": IMAGE_GLOBS,
        "grayscale": False,
        "resize_max": None,
        "resize_force": False,
        "interpolation": "cv2_area",
    }

    def __init__(self, root: Path, conf: Dict, names: Optional[List[str]] = None):
        self.conf = with_defaults(self.default_conf, conf, "preprocessing")
        self.root = Path(root)
        if names is None:
            names = list_images(self.root, self.conf["globs"])
        else:
            missing = [n for n in names if not (self.root / n).exists()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} listed images do not exist in {self.root}, e.g. "
                    f"{missing[:3]}; fix the image list or the --images folder."
                )
        self.names = list(names)

    def __len__(self):
        return len(self.names)

    def __getitem__(self, idx: int) -> Dict:
        name = self.names[idx]
        try:
            image = read_image(self.root / name, self.conf["grayscale"])
        except ImageReadError as e:
            return {"name": name, "error": str(e)}
        image = image.astype(np.float32)
        size = image.shape[:2][::-1]
        resize_max = self.conf["resize_max"]
        if resize_max and (self.conf["resize_force"] or max(size) > resize_max):
            scale = resize_max / max(size)
            size_new = tuple(int(round(x * scale)) for x in size)
            image = resize_image(image, size_new, self.conf["interpolation"])
        image = image[None] if self.conf["grayscale"] else image.transpose((2, 0, 1))
        return {"name": name, "image": image / 255.0, "original_size": np.array(size)}


def load_image(path: Union[str, Path], grayscale: bool = False) -> torch.Tensor:
    """Read an image as hloc does (OpenCV, EXIF orientation ignored) into a float tensor
    :math:`(3, H, W)` RGB, or :math:`(1, H, W)` if ``grayscale``, with values in [0, 1]."""
    image = read_image(Path(path), grayscale)
    tensor = torch.from_numpy(image.copy()).float() / 255.0
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()
