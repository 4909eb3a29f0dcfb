"""The main job on the bundled pair: extract, match mutual-NN, draw the matches."""

from pathlib import Path
from typing import Dict, Optional

import cv2
import h5py
import numpy as np

from .extract import extract
from .io.hloc_format import names_to_pair, write_pairs
from .io.images import list_images, read_image
from .match import exhaustive_pairs, match
from .model.tasp import TaSP


def draw_matches(
    image0: np.ndarray,
    image1: np.ndarray,
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    inliers: np.ndarray,
    path: Path,
    title: str,
) -> None:
    """Side-by-side picture: RANSAC inliers in green, other matches in red."""
    h = max(image0.shape[0], image1.shape[0])
    canvas = np.zeros((h + 30, image0.shape[1] + image1.shape[1], 3), np.uint8)
    canvas[30 : 30 + image0.shape[0], : image0.shape[1]] = image0
    canvas[30 : 30 + image1.shape[0], image0.shape[1] :] = image1
    offset = np.array([image0.shape[1], 0])
    for p0, p1, ok in zip(kpts0, kpts1, inliers):
        a = tuple(np.round(p0 + [0, 30]).astype(int))
        b = tuple(np.round(p1 + offset + [0, 30]).astype(int))
        cv2.line(canvas, a, b, (0, 200, 0) if ok else (220, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        canvas, title, (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
    )
    cv2.imwrite(str(path), canvas[:, :, ::-1])


def run_demo(conf: Dict, image_dir: Path, output: Path, device: Optional[str] = None) -> Dict:
    output.mkdir(parents=True, exist_ok=True)
    features, matches = output / "features.h5", output / "matches.h5"
    names = list_images(image_dir)
    extract(conf, image_dir, features, names=names, device=device, num_workers=0)
    pairs = write_pairs(exhaustive_pairs(names), output / "pairs.txt")
    match(pairs, features, matches, device=device)

    results = {}
    with h5py.File(features, "r") as ff, h5py.File(matches, "r") as mf:
        for n0, n1 in exhaustive_pairs(names):
            m = mf[names_to_pair(n0, n1)]["matches0"][()]
            k0, k1 = (
                ff[n0]["keypoints"][()].astype(np.float32),
                ff[n1]["keypoints"][()].astype(np.float32),
            )
            valid = m > -1
            p0, p1 = k0[valid], k1[m[valid]]
            inliers = np.zeros(len(p0), bool)
            if len(p0) >= 4:
                _, mask = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, 3.0)
                inliers = mask.ravel().astype(bool) if mask is not None else inliers
            png = output / f"matches_{Path(n0).stem}_{Path(n1).stem}.png"
            weights = (
                conf["model"].get("weights", TaSP.default_conf["weights"]) or "random (untrained)"
            )
            title = (
                f"TaSP [{weights}]: {len(k0)} / {len(k1)} keypoints, {len(p0)} mutual-NN "
                f"matches, {inliers.sum()} homography inliers"
            )
            draw_matches(
                read_image(image_dir / n0), read_image(image_dir / n1), p0, p1, inliers, png, title
            )
            print(f"{n0} <-> {n1}: {title}\n  picture: {png}")
            results[(n0, n1)] = {
                "keypoints": (len(k0), len(k1)),
                "matches": len(p0),
                "inliers": int(inliers.sum()),
                "png": png,
            }
    print(f"features: {features}\nmatches: {matches}")
    return results
