"""Train TaSP's pixel detector head alone on sub-pixel DoG targets, from a cache.

    python -m tasp_hloc.train.detector_head --images DIR [DIR ...] --cache CACHE_DIR
        --output train_state/detector_v4 [--weights tasp_v2] [--pairs 2000] [--steps 20000]
        [--batch 16] [--lr 1e-3] [--targets soft|integer]
    python -m tasp_hloc.train.detector_head --output train_state/detector_v4 --export FILE

The network is ``TaSP(detector_head="pixel")`` on released weights. Everything but the pixel
head (``model/pixel_head.py``, which starts as the paper head's exact output) is frozen, so what
the head reads of each training view never changes: ``detector_cache.py`` computes it once (the
first run builds the cache; a rerun finishes an unfinished one), and a step is the head's
forward and backward on cached views. Targets: each view's DoG keypoints split bilinearly over
their 4 nearest pixels (``--targets soft``; ``integer`` rounds them to the pixel grid, the
ablation), positive cells weighted by the keypoint's task-aligned factor. Read out with
``subpixel: "centroid"``, exact for soft targets. The last shard's views are held out and their
loss is logged as ``val_loss``.

The run folder holds only what resuming needs, small enough to commit: ``checkpoint_last.pth``
(the head, Adam's state, the step, the sampler's state; replaced atomically) and ``curve.csv``
(steps counted over every run). A rerun with the same ``--output`` goes on from there, on any
machine (the cache is rebuilt from the same inputs: the same pairs and labels). SIGTERM or SIGINT stops after
a checkpoint. ``--export FILE`` writes the full network as a checkpoint that
``python -m tasp_hloc.train.export`` turns into released weights.
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

from ..losses.keypoint import anchors_to_cells
from ..losses.soft_targets import soft_cell_cross_entropy, soft_cell_targets
from ..model.tasp import TaSP
from ..runtime.allocator import keep_freed_memory_once
from .checkpoints import CHECKPOINT, atomic_save
from .detector_cache import SHARD, build_cache, load_cache

CURVE = "curve.csv"
TARGETS = ("soft", "integer")


def build_model(weights: str) -> TaSP:
    """TaSP with a pixel head on ``weights``; only the pixel head trains."""
    model = TaSP({"weights": weights, "detector_head": "pixel", "fuse": False, "amp": None})
    model.eval()  # the frozen trunk's batch norm keeps its statistics
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("pixel_head.")
    return model


def head_loss(head, views: Dict[str, torch.Tensor], targets: str = "soft") -> torch.Tensor:
    """Mean soft-target cross-entropy of cached views, positives task-aligned."""
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}.")
    logits = head(views["gray"].float() / 255, views["logits"].float())
    hc, wc = logits.shape[-2:]
    kpts = views["keypoints"] if targets == "soft" else views["keypoints"].round()
    target = soft_cell_targets(kpts, views["mask"], hc, wc)
    weights, _ = anchors_to_cells(views["delta"], kpts, views["mask"], hc, wc)
    return soft_cell_cross_entropy(logits, target, weights, views["cell_valid"]).mean()


def _take(cache: Dict[str, torch.Tensor], index: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {k: v[index] for k, v in cache.items()}


def train(
    cache: Dict[str, torch.Tensor],
    output: Path,
    weights: str = "tasp_v2",
    steps: int = 20000,
    batch_size: int = 16,
    lr: float = 1e-3,
    targets: str = "soft",
    seed: int = 0,
    checkpoint_every: int = 200,
    log=print,
) -> int:
    """Train (or resume) the head in ``output`` up to ``steps`` steps in all, on the views of
    ``cache`` (``detector_cache.load_cache``) but the held-out last ``2 * SHARD``; returns the
    step reached (fewer when stopped by SIGTERM / SIGINT, after a checkpoint)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    head = build_model(weights).pixel_head.train()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    step, path = 0, output / CHECKPOINT
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if (ckpt["weights"], ckpt["targets"]) != (weights, targets):
            raise ValueError(
                f"{path} continues weights {ckpt['weights']!r} with {ckpt['targets']} targets: "
                f"pass those or another --output."
            )
        head.load_state_dict(ckpt["head"])
        opt.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        step = ckpt["step"]
        log(f"resumed {path} at step {step}")
    n_views = len(cache["gray"])
    held_out = min(2 * SHARD, n_views // 2)
    train_views, val = n_views - held_out, _take(cache, torch.arange(n_views - held_out, n_views))

    def save():
        state = {"head": head.state_dict(), "optimizer": opt.state_dict(), "step": step}
        extra = {"generator": generator.get_state(), "weights": weights, "targets": targets}
        atomic_save({**state, **extra}, path)

    stop = []
    handlers = {
        s: signal.signal(s, lambda *_: stop.append(True)) for s in (signal.SIGTERM, signal.SIGINT)
    }
    curve = output / CURVE
    new_curve = not curve.exists()
    try:
        with open(curve, "a", newline="") as f:
            writer = csv.writer(f)
            if new_curve:
                writer.writerow(["step", "loss", "val_loss"])
            while step < steps and not stop:
                index = torch.randint(train_views, (batch_size,), generator=generator)
                loss = head_loss(head, _take(cache, index), targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step}")
                if step % 100 == 0 or step == steps or stop:
                    with torch.no_grad():
                        val_loss = head_loss(head.eval(), val, targets).item()
                    head.train()
                    writer.writerow([step, round(loss.item(), 5), round(val_loss, 5)])
                    f.flush()
                    log(f"step {step} loss {loss.item():.4f} val_loss {val_loss:.4f}")
                if step % checkpoint_every == 0 or step == steps or stop:
                    save()
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
    model.pixel_head.load_state_dict(ckpt["head"])
    config = {"recipe": "detector_head", "weights": ckpt["weights"], "targets": ckpt["targets"]}
    atomic_save({"model": model.state_dict(), "step": ckpt["step"], "config": config}, target)
    return Path(target)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tasp_hloc.train.detector_head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", type=Path, nargs="+", help="folders of photos (builds the cache)")
    p.add_argument("--cache", type=Path, help="cache folder (built on first use)")
    p.add_argument("--output", type=Path, required=True, help="run folder (resumed if it exists)")
    p.add_argument("--export", type=Path, help="write the run's full network here and stop")
    p.add_argument("--weights", default="tasp_v2", help="released name or path the head is on")
    p.add_argument("--pairs", type=int, default=2000, help="homographic pairs in the cache")
    p.add_argument("--size", type=int, default=256, help="crop side, a multiple of 8")
    p.add_argument("--labels", type=int, default=384, help="DoG keypoints per view")
    p.add_argument("--steps", type=int, default=20000, help="steps in all, over every run")
    p.add_argument("--batch", type=int, default=16, help="views per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--targets", choices=TARGETS, default="soft")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.export:
        if not (args.output / CHECKPOINT).is_file():
            p.error(f"--output: no {CHECKPOINT} in {args.output}; train first")
        print(f"wrote {export_network(args.output, args.export)}")
        return 0
    if args.cache is None:
        p.error("--cache is required to train")
    keep_freed_memory_once()  # a training command: process-wide, so set here
    if args.size % 8:
        p.error(f"--size must be a multiple of 8, got {args.size}")
    if args.images:
        missing = [str(d) for d in args.images if not d.is_dir()]
        if missing:
            p.error(f"--images: no such folder {', '.join(missing)}")
        build_cache(
            args.images, args.cache, args.weights, args.pairs, args.size, args.labels, args.seed
        )
    try:
        cache = load_cache(args.cache)
    except FileNotFoundError as e:
        p.error(str(e))
    train(
        cache, args.output, args.weights, args.steps, args.batch, args.lr, args.targets, args.seed
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
