"""Evaluation pairs for the benchmarks: homography pairs and pairs with known relative pose.

All images come out as H x W x 3 uint8 RGB, resized so that the longer side equals ``max_side``;
the geometry (H, K) is adjusted with the pixel-centre convention (top-left centre at (0, 0)).

* ``load_hpatches``: the HPatches layout ``<root>/<seq>/{1..6}.ppm`` + ``H_1_<k>``; sequences
  ``i_*`` are illumination changes, ``v_*`` viewpoint changes.
* ``make_homography_pairs``: a fixed, seeded substitute when HPatches is absent, built from photos
  that training does not use: per photo, viewpoint pairs (random rotation, scale, perspective,
  mild photometric change) and illumination pairs (almost no motion, strong photometric change).
* ``load_pose_pairs``: SuperGlue's pair-file format (``name0 name1 rot0 rot1 K0 K1 T_0to1``).
* ``load_multiview_pairs``: every pair below a relative rotation of scenes with one
  ``cameras.json`` each (the Strecha scenes of ``eval/strecha_dev``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from tasp_hloc.data.rgbd_layouts import read_trajectory_log
from tasp_hloc.io import images as image_io
from tasp_hloc.io.images import extension_globs, read_image

from .features import resize_max_side
from .metrics import angle_between_rotations, scale_homography, scale_intrinsics

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")
# The pose set of ICL-NUIM pairs: training uses these frames, so reports keep it apart, labelled
# so, and out of every summary.
ICL_SET = "icl_nuim (training domain)"


@dataclasses.dataclass
class HomographyPair:
    name: str
    kind: str  # "illumination" or "viewpoint"
    image0: np.ndarray  # H0 x W0 x 3 uint8
    image1: np.ndarray  # H1 x W1 x 3 uint8
    H: np.ndarray  # 3 x 3, pixels of image0 -> pixels of image1


@dataclasses.dataclass
class PosePair:
    name: str
    image0: np.ndarray
    image1: np.ndarray
    K0: np.ndarray  # 3 x 3, for the resized image0
    K1: np.ndarray
    T_0to1: np.ndarray  # 4 x 4, X1 = R X0 + t
    scale_ratio: Optional[float] = None  # >= 1, how much larger one view sees the scene


def default_data_root() -> Path:
    """``$TASP_DATA``, else the ``shared/data`` folder beside the checkout (may not exist)."""
    env = os.environ.get("TASP_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def require_data_root(root: Path) -> Path:
    """``root`` if it is a folder, else an error that says how to point at the data."""
    if not Path(root).is_dir():
        raise SystemExit(
            f"No evaluation data at {root}: set TASP_DATA or pass --data to the "
            f"folder that holds photos/ and eval/."
        )
    return Path(root)


# Images are decoded by the package's reader (hloc's rule); `read_rgb` is its name here.
read_rgb = read_image


# ----------------------------------------------------------------------------- HPatches
def load_hpatches(
    root: Path, max_side: int, sequences: Optional[int] = None
) -> List[HomographyPair]:
    """All 1->k pairs (k = 2..6) of the HPatches sequences under ``root`` (sorted, first n)."""
    root = Path(root)
    seqs = sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
    if not seqs:
        raise FileNotFoundError(f"no HPatches sequences (i_*/v_* folders) under {root}")
    pairs = []
    for seq in seqs[:sequences]:
        img0, s0 = resize_max_side(read_rgb(seq / "1.ppm"), max_side)
        for k in range(2, 7):
            img1, s1 = resize_max_side(read_rgb(seq / f"{k}.ppm"), max_side)
            H = np.loadtxt(seq / f"H_1_{k}")
            kind = "illumination" if seq.name.startswith("i_") else "viewpoint"
            pairs.append(
                HomographyPair(f"{seq.name}/1-{k}", kind, img0, img1, scale_homography(H, s0, s1))
            )
    return pairs


# ----------------------------------------------------------------------------- synthetic pairs
def interleaved_images(folders: Sequence[Path]) -> List[Path]:
    """Images of several folders, interleaved (a1, b1, a2, b2, ...) so any prefix mixes them."""
    per_folder = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"homography source folder {folder} does not exist")
        names = image_io.list_images(
            folder, extension_globs(IMAGE_SUFFIXES), recursive=False, allow_empty=True
        )
        per_folder.append([folder / n for n in names])
    out = []
    for i in range(max(map(len, per_folder), default=0)):
        out += [files[i] for files in per_folder if i < len(files)]
    return out


def random_viewpoint_homography(
    rng: np.random.Generator,
    w: int,
    h: int,
    max_angle: float = 30.0,
    scale_range=(0.7, 1.3),
    perspective: float = 0.12,
) -> np.ndarray:
    """Rotation about the centre, isotropic scale and independent corner shifts (perspective).

    Corner shifts are uniform in +-``perspective`` times the image size. Returns 3 x 3.
    """
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    angle = np.radians(rng.uniform(-max_angle, max_angle))
    scale = np.exp(rng.uniform(*np.log(scale_range)))
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (corners - centre) @ rot.T + centre
    moved += rng.uniform(-perspective, perspective, (4, 2)) * np.array([w, h])
    return cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))


def small_homography(rng: np.random.Generator, w: int, h: int, shift: float = 0.01) -> np.ndarray:
    """An almost-identity homography (corners moved by +-``shift`` of the size): a re-shot scene."""
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    moved = corners + rng.uniform(-shift, shift, (4, 2)) * np.array([w, h])
    return cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))


def photometric_change(rng: np.random.Generator, image: np.ndarray, strong: bool) -> np.ndarray:
    """Change the lighting of an RGB uint8 image.

    strong: gamma far from 1, colour cast, a smooth shading ramp across the image, lower contrast
    and sensor noise (like HPatches' i_* sequences). Otherwise a mild brightness/contrast change.
    """
    img = image.astype(np.float32) / 255.0
    h, w = img.shape[:2]
    if strong:
        gamma = np.exp(rng.choice([-1, 1]) * rng.uniform(np.log(1.8), np.log(3.0)))
        img = img**gamma
        img = img * rng.uniform(0.6, 1.4, 3)[None, None]  # colour cast
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xx / w - 0.5) * direction[0] + (yy / h - 0.5) * direction[1]  # in [-0.7, 0.7]
        img = img * (1.0 + rng.uniform(0.6, 1.0) * ramp)[..., None]  # shading
        contrast = rng.uniform(0.5, 0.8)
        img = (img - img.mean()) * contrast + img.mean()
        img = img + rng.normal(0, 3.0 / 255, img.shape)
    else:
        img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
        img = img + rng.normal(0, 1.0 / 255, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_homography_pairs(
    folders: Sequence[Path],
    max_side: int,
    n_images: int = 5,
    n_viewpoint: int = 2,
    n_illumination: int = 2,
    seed: int = 0,
) -> List[HomographyPair]:
    """Seeded homography pairs from the first ``n_images`` photos of ``folders`` (interleaved).

    Image 0 is the photo resized to ``max_side``; image 1 is it warped (black outside) and
    relit. The same seed gives the same pairs on any machine with the same OpenCV/numpy.
    """
    files = interleaved_images(folders)[:n_images]
    if not files:
        raise FileNotFoundError(f"no images in {', '.join(map(str, folders))}")
    rng = np.random.default_rng(seed)
    pairs = []
    for path in files:
        img0, _ = resize_max_side(read_rgb(path), max_side)
        h, w = img0.shape[:2]
        tag = f"{path.parent.name}/{path.stem}"
        jobs = [("viewpoint", k) for k in range(n_viewpoint)]
        jobs += [("illumination", k) for k in range(n_illumination)]
        for kind, k in jobs:
            if kind == "viewpoint":
                H = random_viewpoint_homography(rng, w, h)
            else:
                H = small_homography(rng, w, h)
            warped = cv2.warpPerspective(
                img0,
                H,
                (w, h),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            img1 = photometric_change(rng, warped, strong=kind == "illumination")
            pairs.append(HomographyPair(f"{tag}/{kind[0]}{k}", kind, img0, img1, H))
    return pairs


# ----------------------------------------------------------------------------- pose pairs
def load_pose_pairs(
    root: Path,
    max_side: int,
    pair_file: str = "scannet_sample_pairs_with_gt.txt",
    limit: Optional[int] = None,
) -> List[PosePair]:
    """Pairs of SuperGlue's ``*_with_gt.txt`` format; images under ``root/images``.

    Each line: name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16). Only rot = 0 is supported (all of
    ScanNet's are); the intrinsics follow the resize with the pixel-centre convention.
    """
    root = Path(root)
    lines = [ln.split() for ln in (root / pair_file).read_text().splitlines() if ln.strip()]
    pairs = []
    for fields in lines[:limit]:
        if len(fields) != 38:
            raise ValueError(f"{pair_file}: expected 38 fields, got {len(fields)}")
        if fields[2] != "0" or fields[3] != "0":
            raise NotImplementedError("EXIF-rotated pairs (rot != 0) are not supported")
        values = np.array(fields[4:], dtype=np.float64)
        img0, s0 = resize_max_side(read_rgb(root / "images" / fields[0]), max_side)
        img1, s1 = resize_max_side(read_rgb(root / "images" / fields[1]), max_side)
        pairs.append(
            PosePair(
                name=f"{Path(fields[0]).stem}-{Path(fields[1]).stem}",
                image0=img0,
                image1=img1,
                K0=scale_intrinsics(values[:9].reshape(3, 3), s0),
                K1=scale_intrinsics(values[9:18].reshape(3, 3), s1),
                T_0to1=values[18:].reshape(4, 4),
            )
        )
    return pairs


def load_multiview_pairs(
    root: Path, max_side: int, max_rotation_deg: float = 60.0, limit: Optional[int] = None
) -> List[PosePair]:
    """Pairs (i < j) with relative rotation below ``max_rotation_deg`` of calibrated scenes.

    Layout: ``root/<scene>/cameras.json`` (or ``root/cameras.json``: one scene; its optional
    ``pairs.txt`` of covisible pairs restricts the pairs) with ``images[k] = {name, K, R_w2c, t_w2c, ...}``
    (world to camera, ``x = R X + t``; K of the stored image, pixel-centre convention) and
    ``root/<scene>/images/<name>``. The pose of image j relative to image i is
    ``R = R_j R_i^T``, ``t = t_j - R t_i``. Each image is decoded once and shared by its pairs.
    """
    import json

    pairs = []
    if (Path(root) / "cameras.json").is_file():  # one scene, e.g. a built multiview scene
        scenes = [Path(root)]
    else:
        scenes = sorted(p for p in Path(root).iterdir() if (p / "cameras.json").is_file())
    if not scenes:
        raise FileNotFoundError(f"no <scene>/cameras.json under {root}")
    for scene in scenes:
        cams = json.loads((scene / "cameras.json").read_text())["images"]
        images, Ks, poses = [], [], []
        for cam in cams:
            image, s = resize_max_side(read_rgb(scene / "images" / cam["name"]), max_side)
            images.append(image)
            Ks.append(scale_intrinsics(np.array(cam["K"], np.float64), s))
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = np.array(cam["R_w2c"]), np.array(cam["t_w2c"])
            poses.append(T)
        covisible = None
        if (scene / "pairs.txt").is_file():  # a built scene lists its covisible pairs
            covisible = covisible_scale_ratios(scene / "pairs.txt")
        for i in range(len(cams)):
            for j in range(i + 1, len(cams)):
                if covisible is not None and (cams[i]["name"], cams[j]["name"]) not in covisible:
                    continue
                T_0to1 = poses[j] @ np.linalg.inv(poses[i])
                if angle_between_rotations(np.eye(3), T_0to1[:3, :3]) >= max_rotation_deg:
                    continue
                pairs.append(
                    PosePair(
                        f"{scene.name}/{Path(cams[i]['name']).stem}-{Path(cams[j]['name']).stem}",
                        images[i],
                        images[j],
                        Ks[i],
                        Ks[j],
                        T_0to1,
                        covisible[(cams[i]["name"], cams[j]["name"])] if covisible else None,
                    )
                )
    return pairs[:limit]


def covisible_scale_ratios(path: Path) -> Dict[Tuple[str, str], Optional[float]]:
    """``{(name0, name1): scale ratio >= 1 or None}`` of a built scene's ``pairs.txt``
    (``name0 name1 [overlap scale_ratio]``, D2-Net's ratio as ``scene_info`` writes it)."""
    ratios = {}
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        ratio = float(fields[3]) if len(fields) >= 4 else 0.0
        # scene_info writes -1 where the ratio is undefined
        ratios[(fields[0], fields[1])] = max(ratio, 1 / ratio) if ratio > 0 else None
    return ratios


def load_rgbd_sequence_pairs(
    root: Path, max_side: int, n_pairs: int = 12, gaps: Sequence[int] = (10, 20, 30)
) -> List[PosePair]:
    """Pose pairs (i, i + gap) from an RGB-D sequence in ICL-NUIM/Open3D layout.

    Layout: ``image/{i:05d}.jpg``, ``trajectory.log`` (camera-to-world), ``camera_*.json``
    (Open3D intrinsics, column-major). Pair k uses gap ``gaps[k % len(gaps)]`` and a start frame
    spread evenly over the sequence. T_0to1 = inv(T_j) T_i.
    NOTE: the bundled ICL-NUIM frames are training data; results on them are training-domain.
    """
    import json

    root = Path(root)
    poses = read_trajectory_log(root / "trajectory.log")  # {frame index: camera-to-world}
    cams = sorted(root.glob("camera_*.json"))
    if not cams:
        raise FileNotFoundError(f"no camera_*.json intrinsics in {root}")
    K = np.array(json.loads(cams[0].read_text())["intrinsic_matrix"], np.float64).reshape(3, 3).T
    pairs = []
    for k in range(n_pairs):
        gap = gaps[k % len(gaps)]
        i = int(round(k * (len(poses) - 1 - max(gaps)) / max(n_pairs - 1, 1)))
        j = i + gap
        img0, s0 = resize_max_side(read_rgb(root / "image" / f"{i:05d}.jpg"), max_side)
        img1, s1 = resize_max_side(read_rgb(root / "image" / f"{j:05d}.jpg"), max_side)
        pairs.append(
            PosePair(
                f"{i:05d}-{j:05d}",
                img0,
                img1,
                scale_intrinsics(K, s0),
                scale_intrinsics(K, s1),
                np.linalg.inv(poses[j]) @ poses[i],
            )
        )
    return pairs
