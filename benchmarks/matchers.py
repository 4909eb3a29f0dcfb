"""hloc's matcher presets as functions of two images' features, for ``compare --matchers``.

Each takes the features of two images (``keypoints`` (N, 2), ``descriptors`` (N, D) unit-norm,
``image_size`` optional) and returns (K, 2) indices of matches. The nearest-neighbour ones follow
hloc's ``matchers/nearest_neighbor.py`` exactly: squared distances ``2 (1 - cos)``, the ratio
test on squared distances against ``ratio^2``, the distance cut against ``distance^2``, then the
mutual check. AdaLAM is kornia's ``match_adalam`` on frames built from the keypoints (upright,
one fixed size: the features carry no scale or orientation).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from .report import markdown_table

# name -> (ratio threshold, distance threshold), as hloc's match_features.confs
NEAREST_NEIGHBOUR = {
    "NN-mutual": (None, None),
    "NN-ratio": (0.8, None),
    "NN-ratio-0.9": (0.9, None),  # the ETH benchmark's recipe
    "NN-superpoint": (None, 0.7),
    "NN-tasp": (None, 0.6),
}
ADALAM_SIZE = 12.0  # px: the frames' size, a DoG keypoint's typical diameter


def _find_nn(sim: torch.Tensor, ratio: Optional[float], distance: Optional[float]):
    sim_nn, ind_nn = sim.topk(2 if ratio else 1, dim=-1)
    dist_nn = 2 * (1 - sim_nn)
    mask = torch.ones(ind_nn.shape[:-1], dtype=torch.bool)
    if ratio:
        mask &= dist_nn[..., 0] <= ratio**2 * dist_nn[..., 1]
    if distance:
        mask &= dist_nn[..., 0] <= distance**2
    return torch.where(mask, ind_nn[..., 0], ind_nn.new_tensor(-1))


def nearest_neighbour(ratio: Optional[float], distance: Optional[float]) -> Callable:
    """hloc's ``nearest_neighbor`` with ``do_mutual_check`` and the given thresholds."""

    def match(f0: Dict, f1: Dict) -> np.ndarray:
        d0, d1 = (torch.from_numpy(np.asarray(f["descriptors"], np.float32)) for f in (f0, f1))
        if len(d0) < 2 or len(d1) < 2:
            return np.zeros((0, 2), np.int64)
        sim = d0 @ d1.T
        m0, m1 = _find_nn(sim, ratio, distance), _find_nn(sim.T, ratio, distance)
        ok = (m0 > -1) & (m1[m0.clamp(min=0)] == torch.arange(len(m0)))
        idx = torch.nonzero(ok)[:, 0]
        return torch.stack([idx, m0[idx]], -1).numpy()

    return match


def adalam(f0: Dict, f1: Dict) -> np.ndarray:
    """kornia's AdaLAM on upright frames of size ``ADALAM_SIZE`` at the keypoints."""
    import kornia.feature as KF

    k0, k1 = (torch.from_numpy(np.asarray(f["keypoints"], np.float32)) for f in (f0, f1))
    d0, d1 = (torch.from_numpy(np.asarray(f["descriptors"], np.float32)) for f in (f0, f1))
    if len(k0) < 2 or len(k1) < 2:
        return np.zeros((0, 2), np.int64)

    def frames(k):
        scale = torch.full((1, len(k), 1, 1), ADALAM_SIZE)
        return KF.laf_from_center_scale_ori(k[None], scale, torch.zeros(1, len(k), 1))

    sizes = [
        tuple(int(x) for x in f.get("image_size", k.max(0).values + 1))
        for f, k in ((f0, k0), (f1, k1))
    ]
    _, idx = KF.match_adalam(d0, d1, frames(k0), frames(k1), hw1=sizes[0][::-1], hw2=sizes[1][::-1])
    return idx.numpy().astype(np.int64)


MATCHERS: Dict[str, Callable] = {
    **{name: nearest_neighbour(*t) for name, t in NEAREST_NEIGHBOUR.items()},
    "adalam": adalam,
}


def matcher_table(report: Dict) -> List[str]:
    """Lines of the Markdown table of every method x matcher of a compare report."""
    rows = []
    for method, res in report["methods"].items():
        for matcher, out in res.get("matchers", {}).items():
            row = [method, matcher]
            h = out.get("homography", {}).get("all")
            row += (
                [f"{h['matches']:.0f}", f"{h['mma'][1] * 100:.1f} / {h['mma'][3] * 100:.1f}"]
                if h
                else ["-", "-"]
            )
            for name, pose in out.get("pose", {}).items():
                auc = pose.get("auc_lo") or pose["auc"]
                row.append(
                    f"{pose['matches']:.0f} / {pose.get('inliers_lo', pose['inliers']):.0f} / "
                    + " / ".join(f"{auc[t] * 100:.1f}" for t in auc)
                )
            rows.append(row)
    if not rows:
        return []
    sets = next(iter(report["methods"].values())).get("pose", {})
    header = ["method", "matcher", "homography matches", "MMA@1 / @3"]
    header += [f"{name}: matches / inliers / AUC@5/10/20" for name in sets]
    return ["### Matchers", "", markdown_table(header, rows), ""]
