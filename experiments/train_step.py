"""Seconds per TaSP training step (batch of pairs, forward + loss + backward + Adam), by part.

    python -m experiments.train_step [--set precision|layout] [--batch 4] [--size 256] [--steps 3]
                                    [--compile] [--allocator both|glibc|kept] [--profile]
                                    [--device cpu]

Runs on a fixed synthetic batch (homographic pairs of a rendered picture, labels on a grid),
so it needs no data. ``--set precision`` (default) times the release recipe (Lite0,
channels-last, stem + 3 blocks frozen) in float32, under bfloat16 autocast, and under bfloat16
autocast with the depthwise convolutions kept in float32 (plus ``torch.compile`` of the network
with ``--compile``); ``--set layout`` compares backbones, memory formats and frozen blocks in
float32. Variants take their steps in turn, so a load that changes during the run affects them
alike. ``--allocator both`` (default) runs them all with glibc's default allocator, then all again
with freed memory kept in the process (``tasp_hloc.runtime.allocator``). ``--profile`` prints each
variant's top operators by self CPU time over one step.
"""

import argparse
import contextlib
import time

import numpy as np
import torch

from tasp_hloc.data.geometry import grid_points
from tasp_hloc.labels import keypoints_to_label_map
from tasp_hloc.losses import TaSPLoss
from tasp_hloc.model.tasp import TaSP
from tasp_hloc.runtime.allocator import keep_freed_memory
from tasp_hloc.runtime.device import resolve_device
from tasp_hloc.train.anchors import build_anchors
from tasp_hloc.train.precision import keep_depthwise_fp32


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


class Variant:
    """One training setup: model, loss and optimiser, stepped on the shared batch."""

    def __init__(
        self,
        name,
        device,
        backbone="efficientnet_lite0",
        channels_last=True,
        freeze=3,
        precision="fp32",
        compile=False,
    ):
        self.name, self.device, self.precision = name, device, precision
        self.model = (
            TaSP(
                {"weights": None, "backbone": backbone, "channels_last": channels_last, "amp": None}
            )
            .to(device)
            .train()
        )
        for m in [self.model.backbone.stem, *self.model.backbone.blocks[:freeze]] if freeze else []:
            m.requires_grad_(False)
            m.eval()  # as the trainer: frozen BatchNorm uses its running statistics
        if precision == "bf16-dw-fp32":
            keep_depthwise_fp32(self.model)
        self.forward = (
            torch.compile(self.model.forward_dense) if compile else self.model.forward_dense
        )
        self.loss_fn = TaSPLoss({"window": "3d"}).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, 1e-3)
        self.parts = {"anchors": [], "forward": [], "loss": [], "backward+adam": []}
        self.losses = []

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step(self, batch, record: bool) -> None:
        def sync():
            if self.device.type == "cuda":
                torch.cuda.synchronize()

        b = batch["image0"].shape[0]
        t = [time.perf_counter()]
        data = {**batch, **build_anchors(batch)}
        sync()
        t.append(time.perf_counter())
        with self._autocast():
            dense = self.forward(torch.cat([batch["image0"], batch["image1"]]))
        dense = {k: v.float() for k, v in dense.items()}
        sync()
        t.append(time.perf_counter())
        out = self.loss_fn(
            {k: v[:b] for k, v in dense.items()}, {k: v[b:] for k, v in dense.items()}, data
        )
        loss = out["total"].mean()
        sync()
        t.append(time.perf_counter())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        sync()
        t.append(time.perf_counter())
        self.losses.append(float(loss.detach()))
        if record:
            for k, (a, c) in zip(self.parts, zip(t[:-1], t[1:])):
                self.parts[k].append(c - a)

    def result(self) -> dict:
        res = {k: float(np.median(v)) for k, v in self.parts.items()}
        res["step"] = sum(res.values())
        return res


def profile_step(variant: Variant, batch, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        variant.step(batch, record=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


VARIANT_SETS = {
    "precision": [
        ("fp32", {}),
        ("bf16 autocast", {"precision": "bf16"}),
        ("bf16, depthwise fp32", {"precision": "bf16-dw-fp32"}),
    ],
    "layout": [
        ("b0 channels_last", {"backbone": "efficientnet_b0", "freeze": 0}),
        ("b0 contiguous", {"backbone": "efficientnet_b0", "channels_last": False, "freeze": 0}),
        ("lite0 channels_last", {"freeze": 0}),
        ("lite0 channels_last, 5 frozen", {"freeze": 5}),
    ],
}


def run_variants(specs, batch, device, steps: int, warmup: int) -> list:
    variants = []
    for name, kw in specs:
        torch.manual_seed(0)  # same initial weights for every variant
        variants.append(Variant(name, device, **kw))
    for i in range(warmup + steps):  # in turn, so that load changes hit all alike
        for v in variants:
            v.step(batch, record=i >= warmup)
    return variants


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--set", choices=sorted(VARIANT_SETS), default="precision")
    p.add_argument("--batch", type=int, default=4, help="pairs per batch")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also each variant under torch.compile")
    p.add_argument(
        "--allocator",
        choices=["both", "glibc", "kept"],
        default="both",
        help="glibc's default (freed activations go back to the kernel), kept "
        "(tasp_hloc.runtime.allocator.keep_freed_memory, as the train CLI), or both: glibc's first, "
        "since keeping cannot be undone in a process",
    )
    p.add_argument("--profile", action="store_true", help="per-operator profile of one step each")
    p.add_argument("--device", default=resolve_device())
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch = synthetic_batch(args.batch, args.size, device)
    specs = list(VARIANT_SETS[args.set])
    if args.compile:
        specs += [(f"{name}, compiled", {**kw, "compile": True}) for name, kw in specs]
    warmup = 2 if args.compile else 1
    variants = []
    for allocator in ["glibc", "kept"] if args.allocator == "both" else [args.allocator]:
        if allocator == "kept" and not keep_freed_memory():
            print("(not glibc: the allocator cannot be told to keep freed memory; skipped)")
            continue
        named = [(f"{name}, {allocator} malloc", kw) for name, kw in specs]
        variants += run_variants(named, batch, device, args.steps, warmup)
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch} pairs of "
        f"{args.size}^2, median of {args.steps} steps after {warmup} warm-up (s)"
    )
    print("| variant | anchors | forward | loss | backward+adam | step | vs first | loss after |")
    print("|---|---|---|---|---|---|---|---|")
    first = variants[0].result()["step"]
    for v in variants:
        r = v.result()
        print(
            f"| {v.name} | {r['anchors']:.2f} | {r['forward']:.2f} | {r['loss']:.2f} | "
            f"{r['backward+adam']:.2f} | {r['step']:.2f} | {r['step'] / first:.2f}x | "
            f"{v.losses[-1]:.4f} |",
            flush=True,
        )
    if args.profile:
        for v in variants:
            print(f"\n### {v.name}: top operators by self CPU time, one step\n")
            print(profile_step(v, batch))


if __name__ == "__main__":
    main()
