"""Homographic adaptation (SuperPoint, DeTone et al. 2018, §5): pseudo-ground-truth keypoints.

The image is warped by N random homographies, a base detector scores every warp, the score maps
are warped back and averaged with per-pixel validity counts (a pixel only counts for the warps
that saw it), and keypoints are taken from the average by NMS, a threshold and top-k. Points that
a detector finds under many viewpoints survive; detector noise and warp artefacts average out.

Homographies ``H_warped_from_orig`` map original pixel coordinates (x-y, top-left pixel centre at
(0, 0)) to warped ones: the warp shows a random quadrilateral patch of the image (scaled, rotated,
perspective-distorted, translated) stretched onto the full frame. The first one is the identity.
"""

import math
from typing import Any, Dict, Optional, Tuple

import kornia
import torch
import torch.nn.functional as F

from ..options import with_defaults
from .cells import CELL, keypoints_to_label_map
from .detectors import BaseDetector

default_homography_conf = {
    "patch_ratio": 0.85,  # side of the patch, as a fraction of the image side, before jitter
    "perspective": 0.2,  # max corner displacement, fraction of the image side
    "scaling": 0.2,  # patch scale in [1 - s, 1 + s]
    "max_angle": math.pi / 2,  # rotation in [-a, a] (SuperPoint's adaptation uses pi/2)
    "translation": 1.0,  # fraction of the free room the patch may move into
}


def sample_homographies(
    num: int,
    size: Tuple[int, int],
    conf: Optional[Dict[str, Any]] = None,
    generator: Optional[torch.Generator] = None,
    include_identity: bool = True,
) -> torch.Tensor:
    """Random homographies in the style of SuperPoint's ``sample_homography``.

    Args:
        num: how many.
        size: image size ``(H, W)``.
        conf: overrides of ``default_homography_conf``.
        generator: torch RNG for reproducibility.
        include_identity: make the first one the identity.

    Returns:
        :math:`(num, 3, 3)` float32 ``H_warped_from_orig`` in pixels.
    """
    c = {**default_homography_conf, **(conf or {})}
    h, w = size

    def uniform(*shape, amp=1.0):
        return (torch.rand(*shape, generator=generator) * 2 - 1) * amp

    r = c["patch_ratio"] / 2
    corners = torch.tensor([[-r, -r], [r, -r], [r, r], [-r, r]]).expand(num, 4, 2)  # centred
    corners = corners + uniform(num, 4, 2, amp=c["perspective"] / 2)
    corners = corners * (1 + uniform(num, 1, 1, amp=c["scaling"]))
    angle = uniform(num, amp=c["max_angle"])
    rot = torch.stack([angle.cos(), -angle.sin(), angle.sin(), angle.cos()], -1).view(num, 2, 2)
    corners = corners @ rot.transpose(1, 2)
    # Translate within the room left in [0, 1]; a patch larger than the image (artefacts allowed,
    # masked later) gets a reversed range, which still keeps it centred-ish.
    lo, hi = -0.5 - corners.amin(1), 0.5 - corners.amax(1)  # num x 2
    t = (lo + hi) / 2 + (hi - lo) / 2 * uniform(num, 2, amp=c["translation"])
    corners = corners + 0.5 + t[:, None]
    scale = torch.tensor([w, h], dtype=torch.float32)
    src = corners * scale - 0.5  # normalised [0, 1] -> pixels, edges at -0.5 and W - 0.5
    dst = torch.tensor([[0.0, 0.0], [1, 0], [1, 1], [0, 1]]) * scale - 0.5
    H = kornia.geometry.transform.get_perspective_transform(src, dst.expand(num, 4, 2))
    if include_identity and num > 0:
        H[0] = torch.eye(3)
    return H.float()


def nms_keypoints(
    heatmap: torch.Tensor, radius: int, threshold: float, max_keypoints: int = -1, border: int = 0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Local maxima of one score map, strongest first.

    Exact ties (a symmetric X-corner gives four equal pixels) are broken by pixel index so that a
    plateau yields one keypoint, not several adjacent ones.

    Args:
        heatmap: :math:`(H, W)` scores.
        radius: NMS radius, window ``2 * radius + 1``.
        threshold: keep scores strictly above it.
        max_keypoints: keep the strongest; <= 0 keeps all.
        border: drop keypoints closer than this to the image border.

    Returns:
        keypoints :math:`(K, 2)` float32 x-y pixels and scores :math:`(K,)`.
    """
    h, w = heatmap.shape
    # float64 + an index-based nudge below 1e-12 breaks ties without reordering float32 scores
    # above ~1e-4 (their spacing is larger), i.e. anything near a useful threshold.
    idx = torch.arange(h * w, device=heatmap.device, dtype=torch.float64).view(h, w)
    s = heatmap.double() + idx * (1e-12 / (h * w))
    pooled = F.max_pool2d(s[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
    keep = (s == pooled) & (heatmap > threshold)
    if border > 0:
        inner = torch.zeros_like(keep)
        inner[border : h - border, border : w - border] = True
        keep &= inner
    y, x = torch.nonzero(keep, as_tuple=True)
    scores = heatmap[y, x]
    order = torch.argsort(scores, descending=True, stable=True)
    if max_keypoints > 0:
        order = order[:max_keypoints]
    return torch.stack([x, y], -1)[order].float(), scores[order]


def _transform(H: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Apply :math:`(N, 3, 3)` homographies to :math:`(P, 2)` points -> :math:`(N, P, 2)`."""
    p = pts @ H[:, :2, :2].transpose(1, 2) + H[:, None, :2, 2]
    z = pts @ H[:, 2:, :2].transpose(1, 2) + H[:, None, 2:, 2]
    return p / z.clamp(min=1e-8)  # z <= 0 (behind the horizon) lands far away: invalid


def _inside(pts: torch.Tensor, h: int, w: int, margin: float) -> torch.Tensor:
    x, y = pts[..., 0], pts[..., 1]
    return (x >= margin) & (x <= w - 1 - margin) & (y >= margin) & (y <= h - 1 - margin)


class HomographicAdaptation:
    """Pseudo-ground-truth keypoints of one image by homographic adaptation of a base detector.

    Example:
        >>> ha = HomographicAdaptation(get_detector("shi_tomasi"), {"num_homographies": 50})
        >>> out = ha(image)  # image: 3 x H x W in [0, 1]
        >>> out["keypoints"], out["scores"], out["label_map"]
    """

    default_conf = {
        "num_homographies": 100,  # including the identity
        "homographies": default_homography_conf,
        "batch_size": 10,  # warps per detector call (memory vs. speed)
        "valid_border": 3,  # erode each warp's valid area: the warp's own black border is no corner
        "nms_radius": 4,
        "detection_threshold": None,  # None: the detector's default_threshold
        "max_keypoints": -1,  # <= 0: all
        "remove_borders": 4,
        "seed": 0,  # homographies are drawn from this seed, so labels are reproducible
    }

    def __init__(self, detector: BaseDetector, conf: Optional[Dict[str, Any]] = None):
        self.conf = with_defaults(self.default_conf, conf, "homographic adaptation")
        self.conf["homographies"] = {**default_homography_conf, **self.conf["homographies"]}
        self.detector = detector

    @property
    def threshold(self) -> float:
        t = self.conf["detection_threshold"]
        return self.detector.default_threshold if t is None else t

    def cache_key(self) -> Dict[str, Any]:
        """What identifies the labels this produces (for the cache)."""
        c = {k: v for k, v in self.conf.items() if k != "batch_size"}
        return {
            "detector": self.detector.cache_key(),
            "adaptation": {**c, "threshold": self.threshold},
        }

    @torch.no_grad()
    def aggregate(
        self, image: torch.Tensor, homographies: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """The homography-averaged score map.

        Args:
            image: :math:`(1, C, H, W)` in [0, 1].
            homographies: :math:`(N, 3, 3)` ``H_warped_from_orig``; default: sampled from the conf.

        Returns:
            ``heatmap`` :math:`(1, 1, H, W)` mean score over the warps that saw each pixel,
            ``count`` :math:`(1, 1, H, W)` how many warps saw it, ``homographies`` :math:`(N, 3, 3)`.
        """
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError(f"Expected one image (1, C, H, W), got {tuple(image.shape)}.")
        _, _, h, w = image.shape
        dev = image.device
        if homographies is None:
            g = torch.Generator().manual_seed(self.conf["seed"])
            homographies = sample_homographies(
                self.conf["num_homographies"], (h, w), self.conf["homographies"], g
            )
        homographies = homographies.to(dev, torch.float32)
        total = torch.zeros(1, 1, h, w, device=dev)
        count = torch.zeros(1, 1, h, w, device=dev)
        eye = torch.eye(3, device=dev)
        is_id = (homographies - eye).abs().flatten(1).amax(1) < 1e-7
        if is_id.any():  # no resampling for the identity: exact, and free
            total += self.detector(image) * int(is_id.sum())
            count += int(is_id.sum())
        Hs = homographies[~is_id]
        r = self.conf["valid_border"]
        ys, xs = torch.meshgrid(
            torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij"
        )
        pix = torch.stack([xs, ys], -1).view(-1, 2).float()  # HW x 2
        for i in range(0, len(Hs), self.conf["batch_size"]):
            H = Hs[i : i + self.conf["batch_size"]]
            n = len(H)
            Hinv = torch.linalg.inv(H)
            # A warped pixel has content if its source lies in the image shrunk by valid_border,
            # so the black edge of the warp is never taken for a corner.
            valid = _inside(_transform(Hinv, pix), h, w, r).view(n, 1, h, w).float()
            warped = kornia.geometry.transform.warp_perspective(
                image.expand(n, -1, -1, -1), H, (h, w)
            )
            scores = self.detector(warped) * valid
            back = kornia.geometry.transform.warp_perspective(
                torch.cat([scores, valid], 1), Hinv, (h, w)
            )
            # An original pixel counts for a warp only if its whole bilinear footprint was valid:
            # a footprint touching masked pixels would drag the mean towards 0.
            seen = (back[:, 1:] > 0.999).float()
            total += (back[:, :1] * seen).sum(0, keepdim=True)
            count += seen.sum(0, keepdim=True)
        heatmap = total / count.clamp(min=1.0)
        return {"heatmap": heatmap, "count": count, "homographies": homographies}

    def __call__(
        self, image: torch.Tensor, homographies: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """Keypoints of one image.

        Args:
            image: :math:`(C, H, W)` or :math:`(1, C, H, W)` in [0, 1], C = 1 or 3.
            homographies: optional :math:`(N, 3, 3)`, see :meth:`aggregate`.

        Returns:
            ``keypoints`` :math:`(K, 2)` x-y pixels strongest first, ``scores`` :math:`(K,)`,
            ``heatmap`` :math:`(H, W)`, ``count`` :math:`(H, W)`, ``image_size`` :math:`(2,)` (W, H)
            and, when H and W are multiples of 8, ``label_map`` :math:`(H/8, W/8)` int64.
        """
        if image.dim() == 3:
            image = image[None]
        agg = self.aggregate(image, homographies)
        heatmap = agg["heatmap"][0, 0]
        kpts, scores = nms_keypoints(
            heatmap,
            self.conf["nms_radius"],
            self.threshold,
            self.conf["max_keypoints"],
            self.conf["remove_borders"],
        )
        h, w = heatmap.shape
        out = {
            "keypoints": kpts,
            "scores": scores,
            "heatmap": heatmap,
            "count": agg["count"][0, 0],
            "image_size": torch.tensor([w, h]),
        }
        if h % CELL == 0 and w % CELL == 0:
            out["label_map"] = keypoints_to_label_map(kpts, (h, w), scores)
        return out
