"""Seconds per TaSP training step (batch of pairs, forward + loss + backward + Adam), by part.

    python -m benchmarks.train_step [--batch 4] [--size 256] [--steps 3] [--device cpu]

Runs on a fixed synthetic batch (homographic pairs of a rendered picture, labels on a grid),
so it needs no data. Prints one row per variant: backbone, memory format, frozen blocks.
"""

import argparse
import time

import numpy as np
import torch

from tasp_hloc.device import resolve_device
from tasp_hloc.geometry import grid_points
from tasp_hloc.labels import keypoints_to_label_map
from tasp_hloc.losses import TaSPLoss
from tasp_hloc.tasp import TaSP
from tasp_hloc.train.anchors import build_anchors


def synthetic_batch(b: int, size: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 3, size, size, generator=g)
    image = torch.nn.functional.avg_pool2d(image, 5, 1, 2)  # some spatial structure
    H = torch.eye(3).repeat(b, 1, 1)
    H[:, 0, 2], H[:, 1, 2] = 3.0, -2.0  # a small translation: valid correspondences
    f = float(size)
    K = torch.tensor([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]]).repeat(b, 1, 1)
    kpts = grid_points(size, size, 8, 400, generator=g) + 2  # ~400 labelled keypoints
    labels = keypoints_to_label_map(kpts, (size, size))
    return {
        k: v.to(device)
        for k, v in {
            "image0": image,
            "image1": torch.roll(image, (-2, 3), (2, 3)),
            "depth0": torch.ones(b, size, size),
            "depth1": torch.ones(b, size, size),
            "K0": K,
            "K1": K,
            "T_1from0": torch.eye(4).repeat(b, 1, 1),
            "H_1from0": H,
            "is_homography": torch.ones(b, dtype=torch.bool),
            "valid0": torch.ones(b, size, size, dtype=torch.bool),
            "valid1": torch.ones(b, size, size, dtype=torch.bool),
            "labels0": labels.repeat(b, 1, 1),
        }.items()
    }


def time_variant(backbone, channels_last, freeze, batch, steps, device) -> dict:
    model = (
        TaSP({"weights": None, "backbone": backbone, "channels_last": channels_last})
        .to(device)
        .train()
    )
    if freeze:
        for m in [model.backbone.stem, *model.backbone.blocks[:freeze]]:
            m.requires_grad_(False)
    loss_fn = TaSPLoss({"window": "3d"}).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    b = batch["image0"].shape[0]
    parts = {"anchors": [], "forward": [], "loss": [], "backward+adam": []}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(steps + 1):  # the first step warms up and is not counted
        t = [time.perf_counter()]
        data = {**batch, **build_anchors(batch)}
        sync()
        t.append(time.perf_counter())
        dense = model.forward_dense(torch.cat([batch["image0"], batch["image1"]]))
        sync()
        t.append(time.perf_counter())
        out = loss_fn(
            {k: v[:b] for k, v in dense.items()}, {k: v[b:] for k, v in dense.items()}, data
        )
        loss = out["total"].mean()
        sync()
        t.append(time.perf_counter())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        t.append(time.perf_counter())
        if i > 0:
            for k, (a, c) in zip(parts, zip(t[:-1], t[1:])):
                parts[k].append(c - a)
    res = {k: float(np.median(v)) for k, v in parts.items()}
    res["step"] = sum(res.values())
    return res


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=4, help="pairs per batch")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default=resolve_device())
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch = synthetic_batch(args.batch, args.size, device)
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch} pairs of "
        f"{args.size}^2, median of {args.steps} steps (s)"
    )
    print("| backbone | memory | frozen blocks | anchors | forward | loss | backward+adam | step |")
    print("|---|---|---|---|---|---|---|---|")
    variants = [
        ("efficientnet_b0", True, 0),
        ("efficientnet_b0", False, 0),
        ("efficientnet_lite0", True, 0),
        ("efficientnet_lite0", True, 5),
    ]
    for backbone, cl, freeze in variants:
        r = time_variant(backbone, cl, freeze, batch, args.steps, device)
        print(
            f"| {backbone} | {'channels_last' if cl else 'contiguous'} | {freeze} | "
            f"{r['anchors']:.2f} | {r['forward']:.2f} | {r['loss']:.2f} | {r['backward+adam']:.2f} | "
            f"{r['step']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
