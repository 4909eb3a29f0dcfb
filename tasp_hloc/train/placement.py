"""Train the learned sub-pixel placement (``model/placement.py``) on homographic pairs.

    python -m tasp_hloc.train.placement --images DIR [DIR ...] --output runs/placement_v1
        [--steps 2000] [--batch 8] [--points 128] [--lr 1e-3] [--repeats 1] [--seed 0]

Points to refine: the strongest Shi-Tomasi corners of image 0 (7 x 7 NMS), each started from
a pixel up to ``--jitter`` px away in image 0 and, independently, from a pixel up to that far
from its warp in image 1 (the detector's peaks sit ~1.5 px from the structure they fire on).
The loss asks the two refined points to agree under the pair's homography,
``rho(|p1 - H p0|)`` with rho the Charbonnier function (sqrt(d^2 + 0.1^2)), so nothing tells
the net where to go but that the point it picks must be the same one in both views: it learns
a point of the window that moves with the image. ``--repeats N`` takes N steps on each batch,
with fresh start points each time: loading the pairs costs far more than a step of the tiny
net. Only the refiner trains (TaSP's network is not used). ``checkpoint_last.pth`` is
replaced atomically every ``--checkpoint-every`` steps and a rerun resumes from it;
``placement.pth`` (conf + state_dict, what ``subpixel: "learned"`` loads) is written at the end.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from ..data.geometry import warp_homography
from ..data.homographic import HomographicDataset
from ..labels.detectors import get_detector
from ..model.keypoints import nms, remove_borders
from ..model.placement import RECEPTIVE, PlacementNet
from .checkpoints import atomic_save

CHECKPOINT = "checkpoint_last.pth"
WEIGHTS = "placement.pth"


def corners(image: torch.Tensor, n: int, border: int) -> torch.Tensor:
    """(B, n, 2) x-y of the n strongest Shi-Tomasi corners (7 x 7 NMS) of (B, 3, H, W) images,
    by the labels' own detector."""
    response = get_detector("shi_tomasi")(image)[:, 0]
    response = remove_borders(nms(response, 7), border)
    b, h, w = response.shape
    idx = response.reshape(b, -1).topk(n, dim=1).indices
    return torch.stack([idx % w, idx // w], -1).float()


def placement_loss(
    net: PlacementNet, batch: Dict, points: int, jitter: int, generator: torch.Generator
) -> Dict[str, torch.Tensor]:
    """Charbonnier distance between the refined point of image 1 and the warp of image 0's."""
    image0, image1, H = batch["image0"], batch["image1"], batch["H_1from0"]
    border = int(net.conf["radius"]) + RECEPTIVE + jitter
    k0 = corners(image0, points, border)
    size1 = tuple(image1.shape[-2:])
    k1, valid = warp_homography(k0, H, size1)
    lo, hi = k0.new_tensor(border), k0.new_tensor(size1[::-1]) - 1 - border
    valid &= ((k1 >= lo) & (k1 <= hi)).all(-1)
    x, y = k1.round().long().unbind(-1)
    x, y = x.clamp(0, size1[1] - 1), y.clamp(0, size1[0] - 1)
    valid &= batch["valid1"][torch.arange(len(k1))[:, None], y, x]  # the photo, not the border
    shake = [torch.randint(-jitter, jitter + 1, k0.shape, generator=generator) for _ in "01"]
    p0 = net(image0, k0 + shake[0])
    p1 = net(image1, k1.round() + shake[1])
    target, _ = warp_homography(p0, H, size1)
    sq = ((p1 - target) ** 2).sum(-1)
    n = valid.sum().clamp(min=1)
    return {
        "loss": sq.add(0.01).sqrt().masked_fill(~valid, 0).sum() / n,
        "error": sq.detach().sqrt().masked_fill(~valid, 0).sum() / n,
        "moved": (p0 - k0).norm(dim=-1).detach().masked_fill(~valid, 0).sum() / n,
    }


def train(
    images: Sequence[Path],
    output: Path,
    steps: int = 2000,
    batch_size: int = 8,
    points: int = 128,
    lr: float = 1e-3,
    jitter: int = 2,
    seed: int = 0,
    checkpoint_every: int = 100,
    num_workers: int = 1,
    repeats: int = 1,
    log=print,
) -> Path:
    """Train (or resume) a run in ``output``; returns the path of ``placement.pth``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = PlacementNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    step = 0
    if (output / CHECKPOINT).is_file():
        ckpt = torch.load(output / CHECKPOINT, weights_only=False)
        net.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        step = ckpt["step"]
        log(f"resumed {output / CHECKPOINT} at step {step}")

    def save():
        state = {"state_dict": net.state_dict(), "optimizer": opt.state_dict(), "step": step}
        atomic_save(
            {**state, "scheduler": sched.state_dict(), "generator": generator.get_state()},
            output / CHECKPOINT,
        )

    data = HomographicDataset(
        {"image_dirs": [str(p) for p in images], "seed": seed, "homography": {"scale": [0.5, 2.0]}}
    )
    net.train()
    while step < steps:
        data.set_epoch(step)  # a new draw per pass, reproducible from the step
        loader = DataLoader(data, batch_size, shuffle=False, num_workers=num_workers)
        for batch in loader:
            before = step
            for _ in range(min(repeats, steps - step)):
                out = placement_loss(net, batch, points, jitter, generator)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                sched.step()
                step += 1
            if before // 20 != step // 20 or step == steps:
                log(
                    f"step {step}/{steps} loss {out['loss'].item():.3f} "
                    f"error {out['error'].item():.3f} px moved {out['moved'].item():.2f} px"
                )
            if before // checkpoint_every != step // checkpoint_every or step == steps:
                save()
            if step >= steps:
                break
    weights = output / WEIGHTS
    atomic_save({"conf": dict(net.conf), "state_dict": net.state_dict(), "steps": step}, weights)
    log(f"wrote {weights}")
    return weights


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tasp_hloc.train.placement",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", type=Path, nargs="+", required=True, help="folders of photos")
    p.add_argument("--output", type=Path, required=True, help="run folder (resumed if it exists)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--points", type=int, default=128, help="corners refined per image")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--jitter", type=int, default=2, help="start up to this many px off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="steps taken on each batch")
    args = p.parse_args(argv)
    missing = [str(d) for d in args.images if not d.is_dir()]
    if missing:
        p.error(f"--images: no such folder {', '.join(missing)}")
    train(
        args.images,
        args.output,
        args.steps,
        args.batch,
        args.points,
        args.lr,
        args.jitter,
        args.seed,
        args.checkpoint_every,
        args.num_workers,
        args.repeats,
    )


if __name__ == "__main__":
    main()
