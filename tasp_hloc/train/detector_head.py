"""Train TaSP's detector alone on sub-pixel DoG targets, the trunk and descriptors frozen.

    python -m tasp_hloc.train.detector_head --images DIR [DIR ...] --output train_state/detector
        [--weights tasp_v2] [--steps 3000] [--batch 6] [--size 256] [--labels 384] [--lr 5e-4]
    python -m tasp_hloc.train.detector_head --output train_state/detector --export runs/det.pth

The network is ``TaSP(detector_head="pixel")`` on released weights: the paper's head and the
pixel head (``model/pixel_head.py``, which starts as the paper head's exact output) train, the
trunk runs without gradients, so a step costs little more than a forward. Targets: the
strongest ``--labels`` DoG keypoints of each view of a homographic pair (OpenCV's sub-pixel
positions; none within 5 px of a warped view's black border), split bilinearly over their 4
nearest pixels (``losses/soft_targets.py``); each positive cell is weighted by the
task-aligned factor of its keypoint's triplet (the frozen descriptors at the keypoint and at its
warp in the other view, paper Eq. 10). Read out with ``subpixel: "centroid"``, exact for such
targets.

The run folder holds only what resuming needs, small enough to commit (the two heads, Adam's
state, the step, the sampler's state: ~2 MB) as ``checkpoint_last.pth`` (replaced atomically),
and ``curve.csv`` (one row per logged step, steps counted over every run). A rerun with the same
``--output`` goes on from there, on any machine. ``--export FILE`` writes the full network as a
checkpoint that ``python -m tasp_hloc.train.export`` turns into released weights.
"""

from __future__ import annotations

import argparse
import csv
import math
import signal
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.geometry import warp_homography
from ..data.homographic import HomographicDataset
from ..losses.keypoint import alignment_factor, anchors_to_cells
from ..losses.soft_targets import soft_cell_cross_entropy, soft_cell_targets
from ..losses.triplet import HardTripletLoss
from ..model.dog import detect_dog
from ..model.inference import FusedTaSPNet
from ..model.tasp import TaSP
from .checkpoints import CHECKPOINT, atomic_save

CURVE = "curve.csv"
HEADS = ("detector_head.", "pixel_head.")
BORDER = 5  # px of a warped view kept away from its black border


def build_model(weights: str) -> TaSP:
    """TaSP with a pixel head on ``weights``; only the two detector heads train."""
    model = TaSP({"weights": weights, "detector_head": "pixel", "fuse": False, "amp": None})
    model.eval()  # the frozen trunk's batch norm keeps its statistics
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(HEADS)
    return model


def _valid_pixels(valid: torch.Tensor, border: int) -> torch.Tensor:
    """(B, H, W) bool: the pixels at least ``border`` px from any invalid one."""
    invalid = (~valid).float()[:, None]
    grown = F.max_pool2d(invalid, 2 * border + 1, stride=1, padding=border)
    return grown[:, 0] < 0.5


def _alignment(desc_a, desc_b, kpts_a, mask_a, H_ba, triplet) -> torch.Tensor:
    """(B, N) task-aligned factor of each keypoint of view a against its warp in view b
    (1 where it leaves view b)."""
    kpts_b, inside = warp_homography(kpts_a, H_ba, (desc_b.shape[-2] * 4, desc_b.shape[-1] * 4))
    valid = mask_a & inside
    out = triplet(desc_a, desc_b, {"kpts0": kpts_a, "kpts1": kpts_b, "valid": valid})
    delta = alignment_factor(out["loss"])
    return torch.where(out["valid"], delta, torch.ones_like(delta))


def detector_loss(
    model: TaSP, trunk: FusedTaSPNet, batch: Dict, labels: int, triplet: HardTripletLoss
) -> Dict[str, torch.Tensor]:
    """Soft-target cross-entropy of both views' cells, positives task-aligned. ``trunk`` is
    the frozen part of ``model``, folded for speed (``FusedTaSPNet``; its detector is unused)."""
    image0, image1, H = batch["image0"], batch["image1"], batch["H_1from0"]
    images = torch.cat([image0, image1])
    b, _, h, w = image0.shape
    with torch.no_grad():
        before_last, last = trunk.trunk(images)
        desc = F.normalize(trunk.describe(last), p=2, dim=1)
    logits = model.pixel_head(images, model.detector_head(before_last.float()))
    valid = _valid_pixels(torch.cat([batch["valid0"], batch["valid1"]]), BORDER)
    kpts, _, _, mask = detect_dog(images, -1)
    # the strongest `labels` DoG keypoints on valid pixels (detect_dog sorts by response)
    x = kpts[..., 0].round().long().clamp(0, w - 1)
    y = kpts[..., 1].round().long().clamp(0, h - 1)
    mask &= valid[torch.arange(2 * b)[:, None], y, x]
    mask &= mask.long().cumsum(1) <= labels
    hc, wc = h // 8, w // 8
    targets = soft_cell_targets(kpts, mask, hc, wc)
    cell_valid = F.avg_pool2d(valid.float()[:, None], 8)[:, 0] > 0.999
    with torch.no_grad():
        d0, d1 = desc[:b], desc[b:]
        delta = torch.cat(
            [
                _alignment(d0, d1, kpts[:b], mask[:b], H, triplet),
                _alignment(d1, d0, kpts[b:], mask[b:], torch.linalg.inv(H), triplet),
            ]
        )
        weights, _ = anchors_to_cells(delta, kpts, mask, hc, wc)
    loss = soft_cell_cross_entropy(logits, targets, weights, cell_valid)
    positive = (targets[:, 64] < 1) & cell_valid
    return {
        "loss": loss.mean(),
        "labels": mask.sum(1).float().mean(),
        "positive_cells": positive.float().flatten(1).mean(1).mean(),
        "delta": (delta * mask).sum() / mask.sum().clamp(min=1),
    }


def _heads(model: TaSP) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(HEADS)}


def train(
    images: Sequence[Path],
    output: Path,
    weights: str = "tasp_v2",
    steps: int = 3000,
    batch_size: int = 6,
    size: int = 256,
    labels: int = 384,
    lr: float = 5e-4,
    seed: int = 0,
    checkpoint_every: int = 25,
    num_workers: int = 1,
    log=print,
) -> int:
    """Train (or resume) the heads in ``output`` up to ``steps`` steps in all; returns the
    step reached (fewer when stopped by SIGTERM / SIGINT, after a checkpoint)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(weights)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    step, draw = 0, 0
    path = output / CHECKPOINT
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt["weights"] != weights:
            raise ValueError(
                f"{path} continues weights {ckpt['weights']!r}, not {weights!r}: pass "
                f"--weights {ckpt['weights']} or another --output."
            )
        model.load_state_dict({**model.state_dict(), **ckpt["heads"]})
        opt.load_state_dict(ckpt["optimizer"])
        step, draw = ckpt["step"], ckpt["draw"]
        log(f"resumed {path} at step {step}")
    for group in opt.param_groups:
        group["lr"] = lr

    def save():
        atomic_save(
            {
                "weights": weights,
                "heads": _heads(model),
                "optimizer": opt.state_dict(),
                "step": step,
                "draw": draw,
                "conf": {"size": size, "labels": labels, "batch": batch_size},
            },
            path,
        )

    stop = []
    handlers = {
        s: signal.signal(s, lambda *_: stop.append(True)) for s in (signal.SIGTERM, signal.SIGINT)
    }
    triplet = HardTripletLoss({"window": "square"})
    trunk = FusedTaSPNet(model, "fp32", channels_last=True)
    data = HomographicDataset(
        {
            "image_dirs": [str(p) for p in images],
            "seed": seed,
            "size": [size, size],
            "homography": {"scale": [0.7, 1.4]},
        }
    )
    curve = output / CURVE
    new_curve = not curve.exists()
    try:
        with open(curve, "a", newline="") as f:
            writer = csv.writer(f)
            if new_curve:
                writer.writerow(["step", "loss", "labels", "positive_cells", "delta"])
            while step < steps and not stop:
                data.set_epoch(draw)  # a new draw per pass, reproducible from the pass
                draw += 1
                loader = DataLoader(data, batch_size, shuffle=False, num_workers=num_workers)
                for batch in loader:
                    out = detector_loss(model, trunk, batch, labels, triplet)
                    opt.zero_grad(set_to_none=True)
                    out["loss"].backward()
                    opt.step()
                    step += 1
                    if not math.isfinite(out["loss"].item()):
                        raise FloatingPointError(f"loss is {out['loss'].item()} at step {step}")
                    if step % 10 == 0 or step == steps:
                        row = [step] + [round(out[k].item(), 5) for k in out]
                        writer.writerow(row)
                        f.flush()
                        log(" ".join(f"{k} {v}" for k, v in zip(["step", *out], row)))
                    if step % checkpoint_every == 0 or step == steps or stop:
                        save()
                    if step >= steps or stop:
                        break
        save()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    log(f"stopped at step {step}; {path}")
    return step


def export_network(output: Path, target: Path) -> Path:
    """The full network of a run as a checkpoint for ``python -m tasp_hloc.train.export``."""
    ckpt = torch.load(Path(output) / CHECKPOINT, map_location="cpu", weights_only=False)
    model = build_model(ckpt["weights"])
    model.load_state_dict({**model.state_dict(), **ckpt["heads"]})
    config = {"recipe": "detector_head", "weights": ckpt["weights"], **ckpt["conf"]}
    atomic_save({"model": model.state_dict(), "step": ckpt["step"], "config": config}, target)
    return Path(target)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tasp_hloc.train.detector_head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", type=Path, nargs="+", help="folders of photos")
    p.add_argument("--output", type=Path, required=True, help="run folder (resumed if it exists)")
    p.add_argument("--export", type=Path, help="write the run's full network here and stop")
    p.add_argument("--weights", default="tasp_v2", help="released name or path the heads start on")
    p.add_argument("--steps", type=int, default=3000, help="steps in all, over every run")
    p.add_argument("--batch", type=int, default=6, help="pairs per step")
    p.add_argument("--size", type=int, default=256, help="crop side, a multiple of 8")
    p.add_argument("--labels", type=int, default=384, help="DoG keypoints per view")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--num-workers", type=int, default=1)
    args = p.parse_args(argv)
    if args.export:
        if not (args.output / CHECKPOINT).is_file():
            p.error(f"--output: no {CHECKPOINT} in {args.output}; train first")
        print(f"wrote {export_network(args.output, args.export)}")
        return 0
    if not args.images:
        p.error("--images is required to train")
    missing = [str(d) for d in args.images if not d.is_dir()]
    if missing:
        p.error(f"--images: no such folder {', '.join(missing)}")
    if args.size % 8:
        p.error(f"--size must be a multiple of 8, got {args.size}")
    train(
        args.images,
        args.output,
        args.weights,
        args.steps,
        args.batch,
        args.size,
        args.labels,
        args.lr,
        args.seed,
        args.checkpoint_every,
        args.num_workers,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
