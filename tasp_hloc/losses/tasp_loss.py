"""The TaSP training loss ``L = L_desc + lambda * L_kpt`` (paper Eq. 1), with ablation switches.

Contract of ``TaSPLoss.forward(pred0, pred1, data, update_histogram=None) -> dict``:

pred0, pred1 (network outputs for image 0 and image 1):
    "descriptors_dense": B x D x H/4 x W/4, unit-norm along D.
    "logits":            B x 65 x H/8 x W/8 (only pred0's is used: labels are on view 0).
data:
    "kpts0", "kpts1": B x N x 2 anchor pixels in image 0 and their warps in image 1 (x, y;
        top-left pixel centre (0, 0)).
    "valid":     B x N bool, the anchor has a correspondence (optional, default all True).
    "is_label":  B x N bool, the anchor is a labelled keypoint (the keypoint pixel of a positive
        cell of labels0); the others are extra grid anchors used by L_desc only. Optional:
        without it no triplet feeds the task alignment (all deltas 1).
    "labels0":   B x H/8 x W/8 int64 in [0, 64] (64 = dustbin), keypoint labels of image 0.
    "label_mask0": B x H/8 x W/8 bool valid cells (optional).
    "image0", "image1": B x C x H x W in [0, 1], C = 1 or 3 (needed when importance_weighting).
    "xyz_kpts0", "xyz_kpts1": B x N x 3 and "xyz0", "xyz1": B x 3 x H/4 x W/4, 3D points in each
        camera frame, z = depth, z <= 0 or non-finite = unknown (needed when window == "3d").
update_histogram: whether this batch enters the DIW histogram (default: in training mode only;
    never in eval mode).
Descriptors and logits are cast to float32 inside (safe under autocast).

Returns a dict of B-shaped tensors (per sample; the trainer averages ``total`` over B):
    total = desc + lambda_kpt * kpt; desc = L_desc; kpt = L_kpt (with gradients);
    statistics, detached, averaged over the sample's valid triplets (0 if none): d_pos, d_neg,
    triplet (M), w, s (1 when importance weighting is off), active (fraction with M > 0),
    n_valid (number of valid triplets); over positive cells: delta (mean alignment factor, 1
    when off), aligned (fraction of positive cells whose delta came from a triplet); subpx:
    the sub-pixel term's mean placement error in pixels (0 when ``lambda_subpixel`` is 0, its
    default; then ``pred1["logits"]`` is needed too and ``total`` adds ``lambda_subpixel`` times
    its loss, see losses/subpixel.py).

Per-sample means: the batch mean of ``desc`` equals the mean over all valid triplets of the
batch only when samples have equal numbers of valid triplets; this weights pairs equally,
whatever their overlap.

Switches (the 8 rows of the paper's Table III): ``task_aligned`` (TA), ``importance_weighting``
(DIW; off: L_desc = mean(M), the base model's hard triplet loss) and ``window`` "square" | "3d"
(3D SW).
"""

import torch
from torch import nn

from ..model.keypoints import logits_to_heatmap
from ..options import with_defaults
from .importance import DynamicImportanceWeighting
from .keypoint import TaskAlignedKeypointLoss
from .subpixel import SubpixelReprojectionLoss
from .triplet import HardTripletLoss


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, empty: float = 0.0) -> torch.Tensor:
    """B x N -> B mean over mask (``empty`` where the mask is all False), detached."""
    x = x.detach().to(torch.float32)
    n = mask.sum(-1)
    mean = x.masked_fill(~mask, 0).sum(-1) / n.clamp(min=1)
    return torch.where(n > 0, mean, torch.full_like(mean, empty))


class TaSPLoss(nn.Module):
    default_conf = {
        "task_aligned": True,  # TA: delta-weighted positives in L_kpt
        "importance_weighting": True,  # DIW: L_desc = mean(w * s * M), else mean(M)
        "window": "square",  # "square" | "3d" safe window
        "margin": 1.0,
        "lambda_kpt": 1e-3,
        "temperature": 0.5,  # t of the alignment factor
        "stride": 4,  # descriptor map stride
        "cell": 8,  # detector cell size
        "safe_radius": 16.0,  # square window half-side (pixels)
        "safe_radius_3d_rel": 0.04,  # 3D window radius / anchor depth
        "patch_size": 32,  # pHash patch samples per side
        "patch_extent": None,  # pHash patch side in pixels (None = patch_size)
        "v_pos_min": 1.0,  # guard of s = v_neg / v_pos
        "hist_bins": 8192,
        "hist_max": None,  # None = 64 * (margin + 2)
        "hist_momentum": 0.1,
        # not in the paper: weight of the trained sub-pixel placement (losses/subpixel.py), off
        "lambda_subpixel": 0.0,
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = c = with_defaults(self.default_conf, conf, "TaSPLoss")
        self.triplet = HardTripletLoss(
            {
                "margin": c["margin"],
                "stride": c["stride"],
                "window": c["window"],
                "safe_radius": c["safe_radius"],
                "safe_radius_3d_rel": c["safe_radius_3d_rel"],
            }
        )
        # Always built, so that checkpoints have the same keys whatever the switches.
        self.importance = DynamicImportanceWeighting(
            {
                "margin": c["margin"],
                "patch_size": c["patch_size"],
                "patch_extent": c["patch_extent"],
                "v_pos_min": c["v_pos_min"],
                "hist_bins": c["hist_bins"],
                "hist_max": c["hist_max"],
                "hist_momentum": c["hist_momentum"],
            }
        )
        self.keypoint = TaskAlignedKeypointLoss(
            {
                "task_aligned": c["task_aligned"],
                "margin": c["margin"],
                "temperature": c["temperature"],
                "cell": c["cell"],
            }
        )
        self.subpixel = SubpixelReprojectionLoss()

    def _check(self, pred0, pred1, data):
        c = self.conf
        need = ["kpts0", "kpts1", "labels0"]
        if c["importance_weighting"]:
            need += ["image0", "image1"]
        if c["window"] == "3d":
            need += ["xyz_kpts0", "xyz_kpts1", "xyz0", "xyz1"]
        missing = [k for k in need if k not in data]
        for i, p in enumerate((pred0, pred1)):
            uses_logits = i == 0 or c["lambda_subpixel"] > 0  # pred1's: the sub-pixel term only
            keys = ("descriptors_dense", "logits") if uses_logits else ("descriptors_dense",)
            missing += [f"pred{i}['{k}']" for k in keys if k not in p]
        if missing:
            raise KeyError(
                f"TaSPLoss is missing inputs {missing} for conf window={c['window']!r}, "
                f"importance_weighting={c['importance_weighting']} (see the module docstring)."
            )

    def forward(self, pred0: dict, pred1: dict, data: dict, update_histogram: bool = None) -> dict:
        self._check(pred0, pred1, data)
        c = self.conf
        # float32 whatever the network's autocast dtype: sqrt(2 - 2 cos) near cos = 1 and the
        # hardest-negative ranking are too coarse in bf16/fp16.
        desc0 = pred0["descriptors_dense"].float()
        desc1 = pred1["descriptors_dense"].float()
        trip = self.triplet(desc0, desc1, data)
        M, valid = trip["loss"], trip["valid"]  # B x N

        if c["importance_weighting"]:
            diw = self.importance(
                M,
                valid,
                data["image0"],
                data["image1"],
                data["kpts0"],
                data["kpts1"],
                trip["neg1"],
                update_histogram,
            )
            desc, w, s = diw["loss"], diw["w"], diw["s"]
        else:
            n = valid.sum(-1).clamp(min=1).to(M.dtype)
            desc = M.masked_fill(~valid, 0).sum(-1) / n
            w = s = torch.ones_like(M)

        is_label = data.get("is_label")
        kp_valid = valid & is_label.bool() if is_label is not None else torch.zeros_like(valid)
        kpt = self.keypoint(
            pred0["logits"].float(),
            data["labels0"],
            data.get("label_mask0"),
            triplet_loss=M,
            keypoints=data["kpts0"],
            keypoint_valid=kp_valid,
        )
        total = desc + c["lambda_kpt"] * kpt["loss"]
        subpx = torch.zeros_like(desc)
        if c["lambda_subpixel"] > 0:
            has_warp = data.get("valid", torch.ones_like(valid)).bool()
            labelled = is_label.bool() if is_label is not None else torch.zeros_like(valid)
            sub = self.subpixel(
                logits_to_heatmap(pred1["logits"].float()), data["kpts1"], has_warp & labelled
            )
            total = total + c["lambda_subpixel"] * sub["loss"]
            subpx = sub["error"]
        return {
            "total": total,
            "desc": desc,
            "kpt": kpt["loss"],
            "d_pos": _masked_mean(trip["d_pos"], valid),
            "d_neg": _masked_mean(trip["d_neg"], valid),
            "triplet": _masked_mean(M, valid),
            "w": _masked_mean(w, valid),
            "s": _masked_mean(s, valid),
            "active": _masked_mean((M > 0).float(), valid),
            "n_valid": valid.sum(-1).float(),
            "delta": kpt["delta_mean"].detach(),
            "aligned": kpt["aligned_fraction"].detach(),
            "subpx": subpx,
        }
