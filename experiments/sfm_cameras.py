"""Cameras of a built multiview scene against provided projection matrices (buddha's), or
against another reconstruction of the same photos (SIFT's against ALIKED + LightGlue's).

``python -m experiments.sfm_cameras --model OUT/buddha/sparse --cameras DATA/multiview/buddha/cameras``
``python -m experiments.sfm_cameras --model OUT/lund/sparse --reference-model OTHER/lund/sparse``
print rotation and centre errors after a similarity alignment of the camera centres.
"""

import argparse
from pathlib import Path

import cv2
import numpy as np

from tasp_hloc.data.multiview.alignment import camera_errors, reconstruction_poses


def read_projections(folder: Path) -> dict:
    """``{image name: cam_from_world}`` from ``<stem>_P.txt`` 3 x 4 matrices ``K [R | t]``."""
    out = {}
    for p in sorted(Path(folder).glob("*_P.txt")):
        P = np.loadtxt(p).reshape(3, 4)
        K, R, C = cv2.decomposeProjectionMatrix(P)[:3]
        C = (C[:3] / C[3]).ravel()
        if np.linalg.det(R) < 0:  # P is defined up to sign
            R = -R
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, -R @ C
        out[p.name[: -len("_P.txt")] + ".jpg"] = T
    return out


def main(argv=None):
    import pycolmap

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    reference = ap.add_mutually_exclusive_group(required=True)
    reference.add_argument("--cameras", type=Path, help="a folder of <stem>_P.txt matrices")
    reference.add_argument("--reference-model", type=Path, help="another COLMAP model")
    args = ap.parse_args(argv)
    est = reconstruction_poses(pycolmap.Reconstruction(str(args.model)))
    if args.cameras:
        ref = read_projections(args.cameras)
    else:
        ref = reconstruction_poses(pycolmap.Reconstruction(str(args.reference_model)))
    e = camera_errors(est, ref)
    r, c = e["rotation_deg"], e["centre_rel"]
    print(f"{len(e['names'])} cameras in common of {len(ref)} provided, {len(est)} recovered")
    print(
        f"rotation error deg: median {np.median(r):.3f}, p90 {np.percentile(r, 90):.3f}, max {r.max():.3f}"
    )
    print(
        f"centre error / camera spread: median {np.median(c):.4f}, p90 {np.percentile(c, 90):.4f}, "
        f"max {c.max():.4f}"
    )


if __name__ == "__main__":
    main()
