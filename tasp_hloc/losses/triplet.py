"""Margin-based hard triplet loss with safe windows (paper Eq. 2-4, §III-C).

For each anchor correspondence (p0 in image 0, p1 in image 1):

    d_pos = ||D0(p0) - D1(p1)||
    n1    = argmin_{c in N1(p1)} ||D0(p0) - D1(c)||     (cells of image 1 outside p1's window)
    n0    = argmin_{c in N0(p0)} ||D1(p1) - D0(c)||     (cells of image 0 outside p0's window)
    d_neg = min(||D0(p0) - D1(n1)||, ||D1(p1) - D0(n0)||)
    M     = max(0, m + d_pos - d_neg)

Descriptors are unit vectors, so distances come from one matmul per image:
``||a - b|| = sqrt(2 - 2 a.b)`` (clamped away from 0 so the sqrt has a finite gradient).
The hardest negative is the allowed cell with the largest cosine; only its distance is formed.
Negatives are the descriptor cells themselves (not interpolated points), the usual choice of
D2-Net/ASLFeat, so a negative's position is a cell centre.

Paper notation vs ours: the paper's (I1, I2, p1, p2, n2, n1) are our (image 0, image 1, p0, p1,
n1, n0).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..grid import cell_centers
from ..model.keypoints import sample_descriptors
from ..options import with_defaults
from .safe_window import negative_mask

# Distance given to "no negative available" before the min; any value > 2 (the largest
# distance between unit vectors) works and keeps everything finite.
_NO_NEGATIVE = 4.0


def unit_distance(cos: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Euclidean distance between unit vectors from their cosine: sqrt(max(2 - 2 cos, eps))."""
    return (2 - 2 * cos).clamp(min=eps).sqrt()


class HardTripletLoss(nn.Module):
    """Hard triplet margin loss over anchor correspondences, vectorised over B and N.

    Inputs to ``forward(desc0, desc1, data)``:
        desc0, desc1: B x D x h x w dense unit-norm descriptor maps (stride ``conf.stride``).
        data["kpts0"], data["kpts1"]: B x N x 2 anchor pixels in image 0 and their warps.
        data["valid"]: B x N bool (optional, default all True).
        data["xyz_kpts0"], data["xyz_kpts1"]: B x N x 3, and data["xyz0"], data["xyz1"]:
            B x 3 x h x w, 3D points in each camera frame; needed only for window="3d".
    Returns a dict:
        loss: B x N, M per triplet (0 where not valid).
        d_pos, d_neg: B x N distances (d_neg = 4 where no negative exists; see ``valid``).
        neg1: B x N x 2 pixel position (cell centre) of the hardest negative in image 1.
        neg0: B x N x 2 pixel position of the hardest negative in image 0.
        neg_in_1: B x N bool, True where d_neg came from image 1's negative.
        valid: B x N bool, input validity and at least one allowed negative.
    """

    default_conf = {
        "margin": 1.0,
        "stride": 4,  # pixels per descriptor cell
        "window": "square",  # "square" | "3d"
        "safe_radius": 16.0,  # square window half-side K in pixels
        "safe_radius_3d_rel": 0.04,  # 3D window radius / anchor depth (see safe_window.py)
        "eps": 1e-6,  # clamp of 2 - 2 cos before the sqrt
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = with_defaults(self.default_conf, conf, "HardTripletLoss")
        if self.conf["window"] not in ("square", "3d"):
            raise ValueError(f"Unknown safe window {self.conf['window']!r}: use 'square' or '3d'.")

    def _hardest(self, anchor_desc, desc_map, anchors, anchors_xyz, xyz_map):
        """Hardest allowed negative in desc_map for each anchor descriptor.

        Returns B x N distance, B x N x 2 pixel position, B x N bool (a negative exists).
        """
        c = self.conf
        b, d, h, w = desc_map.shape
        cells = desc_map.flatten(2).transpose(1, 2)  # B x hw x D
        allowed = negative_mask(
            anchors,
            h,
            w,
            c["stride"],
            c["window"],
            c["safe_radius"],
            c["safe_radius_3d_rel"],
            anchors_xyz,
            xyz_map,
        )
        # Mining needs no gradient: find the hardest cell without autograd (no B x N x hw
        # gradient buffer), then recompute its cosine with gradient. Same gradient as max().
        with torch.no_grad():
            cos = anchor_desc @ cells.transpose(1, 2)  # B x N x hw
            cos = torch.where(allowed, cos, cos.new_tensor(-2.0))  # below any cosine
            idx = cos.argmax(-1)  # B x N
        neg = cells.gather(1, idx[..., None].expand(-1, -1, d))  # B x N x D
        best = (anchor_desc * neg).sum(-1)
        exists = allowed.any(-1)
        dist = unit_distance(best, c["eps"])
        dist = torch.where(exists, dist, torch.full_like(dist, _NO_NEGATIVE))
        pos = cell_centers(h, w, c["stride"], desc_map.device, anchors.dtype)[idx]  # B x N x 2
        return dist, pos, exists

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, data: dict) -> dict:
        c = self.conf
        for name, d in (("desc0", desc0), ("desc1", desc1)):
            if d.dim() != 4:
                raise ValueError(f"Expected {name} of shape B x D x h x w, got {tuple(d.shape)}.")
        kpts0, kpts1 = data["kpts0"], data["kpts1"]
        if kpts0.shape != kpts1.shape or kpts0.dim() != 3 or kpts0.shape[-1] != 2:
            raise ValueError(
                f"kpts0 and kpts1 must both be B x N x 2, got {tuple(kpts0.shape)} and "
                f"{tuple(kpts1.shape)}."
            )
        b, n, _ = kpts0.shape
        valid = data.get("valid")
        valid = torch.ones(b, n, dtype=torch.bool, device=kpts0.device) if valid is None else valid
        valid = valid.bool()
        if valid.shape != (b, n):
            raise ValueError(f"valid must be B x N = {(b, n)}, got {tuple(valid.shape)}.")
        # Invalid anchors may carry NaN/garbage positions: zero them so that no NaN reaches
        # the gradient through the (masked-out) branch.
        kpts0 = torch.where(valid[..., None], kpts0, torch.zeros_like(kpts0))
        kpts1 = torch.where(valid[..., None], kpts1, torch.zeros_like(kpts1))
        xyz_k0 = data.get("xyz_kpts0") if c["window"] == "3d" else None
        xyz_k1 = data.get("xyz_kpts1") if c["window"] == "3d" else None

        d0 = sample_descriptors(desc0, kpts0, c["stride"])  # B x N x D
        d1 = sample_descriptors(desc1, kpts1, c["stride"])  # B x N x D
        d_pos = unit_distance((d0 * d1).sum(-1), c["eps"])

        dist1, neg1, has1 = self._hardest(d0, desc1, kpts1, xyz_k1, data.get("xyz1"))
        dist0, neg0, has0 = self._hardest(d1, desc0, kpts0, xyz_k0, data.get("xyz0"))
        d_neg = torch.minimum(dist1, dist0)
        valid = valid & (has1 | has0)
        loss = torch.where(valid, F.relu(c["margin"] + d_pos - d_neg), torch.zeros_like(d_pos))
        return {
            "loss": loss,
            "d_pos": d_pos,
            "d_neg": d_neg,
            "neg1": neg1,
            "neg0": neg0,
            "neg_in_1": dist1 <= dist0,
            "valid": valid,
        }
