"""The cache the pixel detector head trains from: everything of a homographic pair that does
not change while only that head learns.

Per view of each pair: the gray image (uint8), the paper head's cell logits of the frozen
network (float16), the strongest DoG keypoints at OpenCV's sub-pixel positions (none within 5 px
of a warped view's black border), the task-aligned factor of each (paper Eq. 10: the frozen
descriptors at the keypoint and at its warp in the other view) and which cells lie on the photo.
Shards of ``SHARD`` pairs are written atomically, so a killed build goes on where it stopped;
``cache.json`` records what the cache was built from, and a cache built otherwise is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data.geometry import warp_homography
from ..data.homographic import HomographicDataset
from ..io.files import write_text_atomic
from ..losses.keypoint import alignment_factor
from ..losses.triplet import HardTripletLoss
from ..model.dog import detect_dog
from ..model.inference import FusedTaSPNet
from ..model.tasp import TaSP
from .checkpoints import atomic_save

SHARD = 50  # pairs per file
BORDER = 5  # px of a warped view kept away from its black border
META = "cache.json"


def valid_pixels(valid: torch.Tensor, border: int) -> torch.Tensor:
    """(B, H, W) bool: the pixels at least ``border`` px from any invalid one."""
    invalid = (~valid).float()[:, None]
    grown = F.max_pool2d(invalid, 2 * border + 1, stride=1, padding=border)
    return grown[:, 0] < 0.5


def _alignment(desc_a, desc_b, kpts_a, mask_a, H_ba, triplet) -> torch.Tensor:
    """(B, N) task-aligned factor of each keypoint of view a against its warp in view b
    (1 where it leaves view b)."""
    size_b = (desc_b.shape[-2] * 4, desc_b.shape[-1] * 4)
    kpts_b, inside = warp_homography(kpts_a, H_ba, size_b)
    valid = mask_a & inside
    out = triplet(desc_a, desc_b, {"kpts0": kpts_a, "kpts1": kpts_b, "valid": valid})
    delta = alignment_factor(out["loss"])
    return torch.where(out["valid"], delta, torch.ones_like(delta))


@torch.no_grad()
def cache_batch(net: FusedTaSPNet, batch: Dict, labels: int, triplet) -> Dict[str, torch.Tensor]:
    """The cached views of a batch of pairs: views 0 of every pair, then views 1."""
    image0, image1, H = batch["image0"], batch["image1"], batch["H_1from0"]
    images = torch.cat([image0, image1])
    b, _, h, w = image0.shape
    dense = net(images)
    desc = F.normalize(dense["descriptors_dense"], p=2, dim=1)
    valid = valid_pixels(torch.cat([batch["valid0"], batch["valid1"]]), BORDER)
    kpts, _, _, mask = detect_dog(images, -1)
    x = kpts[..., 0].round().long().clamp(0, w - 1)
    y = kpts[..., 1].round().long().clamp(0, h - 1)
    mask &= valid[torch.arange(2 * b)[:, None], y, x]
    mask &= mask.long().cumsum(1) <= labels  # the strongest on the photo (sorted by response)
    n = int(mask.sum(1).max())
    kpts, mask = kpts[:, :n], mask[:, :n]
    delta = torch.cat(
        [
            _alignment(desc[:b], desc[b:], kpts[:b], mask[:b], H, triplet),
            _alignment(desc[b:], desc[:b], kpts[b:], mask[b:], torch.linalg.inv(H), triplet),
        ]
    )
    gray = (images.mean(1, keepdim=True) * 255).round().to(torch.uint8)
    return {
        "gray": gray,
        "logits": dense["logits"].half(),
        "keypoints": kpts,
        "mask": mask,
        "delta": delta,
        "cell_valid": F.avg_pool2d(valid.float()[:, None], 8)[:, 0] > 0.999,
    }


def _pad_cat(parts: List[torch.Tensor]) -> torch.Tensor:
    """Concatenate (B, N, ...) tensors along B, zero-padding N to the largest."""
    n = max(p.shape[1] for p in parts)
    return torch.cat([F.pad(p, (0, 0) * (p.dim() - 2) + (0, n - p.shape[1])) for p in parts])


def pair_dataset(images: Sequence[Path], pairs: int, size: int, seed: int) -> HomographicDataset:
    """The homographic pairs a cache is built from (the same ones for the same arguments)."""
    return HomographicDataset(
        {
            "image_dirs": [str(p) for p in images],
            "seed": seed,
            "size": [size, size],
            "epoch_size": pairs,
            "homography": {"scale": [0.7, 1.4]},
        }
    )


def _concat_views(parts: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Cached views of several batches or shards as one dict (keypoint lists zero-padded)."""
    out = {k: torch.cat([p[k] for p in parts]) for k in ("gray", "logits", "cell_valid")}
    out.update({k: _pad_cat([p[k] for p in parts]) for k in ("keypoints", "mask", "delta")})
    return out


def build_cache(
    images: Sequence[Path],
    cache: Path,
    weights: str = "tasp_v2",
    pairs: int = 2000,
    size: int = 256,
    labels: int = 384,
    seed: int = 0,
    log=print,
) -> Path:
    """Build (or finish) the cache of ``pairs`` pairs in ``cache``; returns its folder."""
    cache = Path(cache)
    meta = {
        "weights": str(weights),
        "images": sorted(str(Path(p).resolve()) for p in images),
        "size": size,
        "labels": labels,
        "seed": seed,
        "shard": SHARD,
    }
    if (cache / META).is_file():
        found = json.loads((cache / META).read_text())
        if {k: v for k, v in found.items() if k != "pairs"} != meta:
            raise ValueError(
                f"{cache} holds a cache built from other inputs ({cache / META}); pass another "
                f"--cache folder or delete this one."
            )
    cache.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cache / META, json.dumps({**meta, "pairs": pairs}, indent=1) + "\n")
    data = pair_dataset(images, pairs, size, seed)
    model = TaSP({"weights": weights, "fuse": False, "amp": None}).eval()
    net = FusedTaSPNet(model, "fp32")
    triplet = HardTripletLoss({"window": "square"})
    for start in range(0, pairs, SHARD):
        path = cache / f"shard{start // SHARD:05d}.pt"
        if path.is_file():
            continue
        subset = Subset(data, range(start, min(start + SHARD, pairs)))
        parts = [cache_batch(net, b, labels, triplet) for b in DataLoader(subset, 10)]
        atomic_save(_concat_views(parts), path)
        log(f"cache: {path.name} ({min(start + SHARD, pairs)}/{pairs} pairs)")
    return cache


def load_cache(cache: Path) -> Dict[str, torch.Tensor]:
    """Every view of a finished cache, in one dict of tensors."""
    cache = Path(cache)
    if not (cache / META).is_file():
        raise FileNotFoundError(f"No {META} in {cache}: build the cache first (pass --images).")
    meta = json.loads((cache / META).read_text())
    shards = [cache / f"shard{i:05d}.pt" for i in range((meta["pairs"] + SHARD - 1) // SHARD)]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{cache} is unfinished ({len(missing)} shards missing, e.g. {missing[0]}): rerun "
            f"with --images to finish it."
        )
    return _concat_views([torch.load(p, weights_only=True) for p in shards])
