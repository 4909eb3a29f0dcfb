"""The GPU path of TaSP, checked and timed: the python part of ``benchmarks/gpu_check.sh``.

    bash benchmarks/gpu_check.sh [--out gpu_check.json]     # a CUDA machine, at most 10 minutes
    python -m benchmarks.gpu_check --device cpu --synthetic --size 96 --n-images 2 --batch 2
                                                            # the CPU dry run (tests/CI)

1. Agreement. TaSP on ``--device`` in each mode (fp32 with TF32 off, fp16 and bf16 autocast)
   against float32 on the CPU with the plain modules (the reference), on the same images at
   ``--size``: dense logits and descriptor maps, and the sparse outputs: the share of reference
   keypoints with a keypoint within 1 px (repeatability) and the cosine of their descriptors.
   Each mode must stay within ``TOLERANCES`` (the half modes' bounds come from bf16 on CPU,
   measured at 1024 px: descriptor-map cosine 0.97 mean, repeatability ~0.9).
2. Speed at ``--size``: images per second of (a) batched forwards (``--batch`` images of one size
   per call) and (b) hloc's loop: ``tasp_hloc.extract.extract``, one image at a time from JPEG
   files (read, resize, network, outputs back to the CPU, the hloc feature file written), plus
   hloc's own ``extract_features.main`` when hloc is installed.
On a CPU the same code runs with the fused CPU network in place of CUDA (``--device cpu``).
Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from tasp_hloc.model.weights import weights_argument

from .features import resize_max_side, to_tensor

MODES = {"fp32": None, "fp16": "fp16", "bf16": "bf16"}
# mode: (max |logits - ref|, mean |logits - ref|, min mean cosine of descriptor maps,
#        min repeatability at 1 px, min mean cosine of repeated keypoints' descriptors)
TOLERANCES = {
    "fp32": (1e-2, 1e-3, 0.9999, 0.98, 0.9999),
    "fp16": (None, 0.1, 0.98, 0.85, 0.98),
    "bf16": (None, 0.25, 0.95, 0.75, 0.95),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (the dry run)")
    p.add_argument("--size", type=int, default=1024, help="longer image side in pixels")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="folder of photos (default: $TASP_DATA/eval/strecha_dev, recursively)",
    )
    p.add_argument("--synthetic", action="store_true", help="generated textures, runs anywhere")
    p.add_argument("--n-images", type=int, default=4, help="images of the agreement check")
    p.add_argument("--batch", type=int, default=8, help="images per batched forward")
    p.add_argument("--speed-images", type=int, default=32, help="images per speed measurement")
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        choices=list(MODES),
        help="default: all on CUDA; fp32 and bf16 on the CPU, where fp16 autocast "
        "runs PyTorch's slow reference convolutions (minutes at 96 px)",
    )
    p.add_argument("--weights", default="tasp_v2", help="released name or path; 'none': random")
    p.add_argument("--max-keypoints", type=int, default=4096)
    p.add_argument("--out", type=Path, default=None, help="save the results as JSON")
    return p.parse_args(argv)


def load_photos(args) -> List[np.ndarray]:
    """H x W x 3 uint8 RGB photos, resized so that the longer side is ``args.size``."""
    from .datasets import IMAGE_SUFFIXES, default_data_root, read_rgb

    n = max(args.n_images, 1)
    if args.synthetic:
        import cv2

        rng = np.random.default_rng(0)
        raw = [
            cv2.resize(
                rng.uniform(0, 255, (24, 36, 3)).astype(np.uint8),
                (600, 400),
                interpolation=cv2.INTER_CUBIC,
            )
            for _ in range(n)
        ]
    else:
        root = args.images or default_data_root() / "eval/strecha_dev"
        files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"No photos under {root}: pass --images DIR or --synthetic.")
        raw = [read_rgb(p) for p in files[:: max(len(files) // n, 1)][:n]]
    return [resize_max_side(im, args.size)[0] for im in raw]


def build(args, device: str, amp, fuse: bool = True):
    from tasp_hloc.model.tasp import TaSP

    weights = weights_argument(args.weights)
    conf = {"weights": weights, "amp": amp, "fuse": fuse, "max_keypoints": args.max_keypoints}
    return TaSP(conf).eval().to(device)


def compare(ref: Dict, out: Dict, ref_sparse: Dict, sparse: Dict) -> Dict[str, float]:
    """Agreement of one image's outputs with the reference's (all on the CPU, float32)."""
    dl = (out["logits"] - ref["logits"]).abs()
    cos_map = (out["descriptors_dense"] * ref["descriptors_dense"]).sum(1)
    k_ref, k_out = ref_sparse["keypoints"][0], sparse["keypoints"][0]
    n_ref = int(ref_sparse["keypoint_mask"][0].sum())
    n_out = int(sparse["keypoint_mask"][0].sum())
    if n_ref == 0 or n_out == 0:
        repeat, cos_kpt = float(n_ref == n_out), 1.0 if n_ref == n_out else 0.0
    else:
        dist, nearest = torch.cdist(k_ref[:n_ref], k_out[:n_out]).min(1)
        hit = dist <= 1.0
        repeat = float(hit.float().mean())
        d_ref = ref_sparse["descriptors"][0][:n_ref][hit]
        d_out = sparse["descriptors"][0][nearest[hit]]
        cos_kpt = float((d_ref * d_out).sum(-1).mean()) if len(d_ref) else 0.0
    return {
        "logits_max": float(dl.max()),
        "logits_mean": float(dl.mean()),
        "desc_map_cos": float(cos_map.mean()),
        "repeatability": repeat,
        "kpt_desc_cos": cos_kpt,
        "keypoints": n_out,
        "keypoints_ref": n_ref,
    }


def check_agreement(args, images: List[np.ndarray]) -> Dict[str, Dict]:
    reference = build(args, "cpu", None, fuse=False)
    refs = []
    with torch.inference_mode():
        for image in images:
            x = to_tensor(image, "cpu")
            refs.append((reference.forward_dense(x), reference({"image": x})))
    results = {}
    for mode in args.modes:
        model = build(args, args.device, MODES[mode])
        rows = []
        with torch.inference_mode():
            for image, (ref, ref_sparse) in zip(images, refs):
                x = to_tensor(image, args.device)
                cpu = lambda d: {k: v.float().cpu() for k, v in d.items()}  # noqa: E731
                rows.append(
                    compare(ref, cpu(model.forward_dense(x)), ref_sparse, cpu(model({"image": x})))
                )
        summary = {
            k: (max if k == "logits_max" else np.mean)([r[k] for r in rows]) for k in rows[0]
        }
        limits = TOLERANCES[mode]
        checks = [
            summary["logits_max"] <= limits[0] if limits[0] is not None else True,
            summary["logits_mean"] <= limits[1],
            summary["desc_map_cos"] >= limits[2],
            summary["repeatability"] >= limits[3],
            summary["kpt_desc_cos"] >= limits[4],
        ]
        results[mode] = {
            **{k: float(v) for k, v in summary.items()},
            "passed": all(checks),
            "tolerances": limits,
        }
        del model
    return results


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def speed_batched(args, images: List[np.ndarray], mode: str) -> float:
    """Images per second of forwards of ``--batch`` same-size images (outputs to the CPU)."""
    model = build(args, args.device, MODES[mode])
    same = [im for im in images if im.shape == images[0].shape]  # one size per batch
    batch = torch.cat([to_tensor(same[k % len(same)], args.device) for k in range(args.batch)])
    calls = max(args.speed_images // len(batch), 1)
    with torch.inference_mode():
        model({"image": batch})  # warm-up (cuDNN autotuning, fused network)
        synchronize(args.device)
        t0 = time.perf_counter()
        for _ in range(calls):
            pred = model({"image": batch})
            {k: v.cpu() for k, v in pred.items()}
        synchronize(args.device)
    return calls * len(batch) / (time.perf_counter() - t0)


def speed_hloc_loop(args, images: List[np.ndarray], mode: str, tmp: Path) -> Dict[str, float]:
    """Images per second of hloc's extraction loop over JPEG files (and of hloc's own)."""
    import cv2

    from tasp_hloc.extract import extract
    from tasp_hloc.hloc.confs import get_preset

    folder = tmp / "images"
    if not folder.exists():
        folder.mkdir()
        for k in range(args.speed_images):
            cv2.imwrite(str(folder / f"{k:04d}.jpg"), images[k % len(images)][:, :, ::-1])
    weights = weights_argument(args.weights)
    conf = get_preset(
        "tasp_aachen", weights=weights, amp=MODES[mode], max_keypoints=args.max_keypoints
    )
    conf["preprocessing"]["resize_max"] = args.size
    out = {}
    model = build(args, args.device, MODES[mode])
    extract(conf, folder, tmp / "warmup.h5", names=["0000.jpg"], device=args.device, model=model)
    t0 = time.perf_counter()
    extract(conf, folder, tmp / f"{mode}.h5", device=args.device, model=model)
    out["tasp_hloc.extract"] = args.speed_images / (time.perf_counter() - t0)
    try:
        from hloc import extract_features

        from tasp_hloc.hloc.plugin import register
    except ImportError:
        return out
    register()
    hconf = {**conf, "output": f"feats-{mode}"}
    t0 = time.perf_counter()
    extract_features.main(hconf, folder, feature_path=tmp / f"hloc-{mode}.h5")
    out["hloc extract_features"] = args.speed_images / (time.perf_counter() - t0)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.modes is None:
        args.modes = list(MODES) if args.device.startswith("cuda") else ["fp32", "bf16"]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run the dry run with --device cpu.")
    if args.device.startswith("cuda"):  # fp32 means fp32: no TF32 in convolutions or matmuls
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    started = time.time()
    images = load_photos(args)
    report = {
        "device": (torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"),
        "torch": torch.__version__,
        "size": args.size,
        "image": list(images[0].shape[:2]),
        "agreement": check_agreement(args, images),
    }
    report["speed"] = {}
    with tempfile.TemporaryDirectory(prefix="tasp-gpu-check-") as tmp:
        for mode in args.modes:
            report["speed"][mode] = {
                f"batch {args.batch}": speed_batched(args, images, mode),
                **speed_hloc_loop(args, images, mode, Path(tmp)),
            }
    report["seconds"] = time.time() - started
    print(
        f"## TaSP on {report['device']} vs CPU fp32, {len(images)} images "
        f"{images[0].shape[1]}x{images[0].shape[0]} (torch {torch.__version__})\n"
    )
    print(
        "| mode | max / mean abs Δlogits | desc. map cos | repeatability @1px | kpt desc cos "
        "| check | " + " | ".join(f"img/s {k}" for k in report["speed"][args.modes[0]]) + " |"
    )
    print("|---" * (6 + len(report["speed"][args.modes[0]])) + "|")
    for mode, a in report["agreement"].items():
        speeds = " | ".join(f"{v:.2f}" for v in report["speed"][mode].values())
        print(
            f"| {mode} | {a['logits_max']:.2e} / {a['logits_mean']:.2e} | "
            f"{a['desc_map_cos']:.4f} | {a['repeatability']:.3f} | {a['kpt_desc_cos']:.4f} | "
            f"{'pass' if a['passed'] else 'FAIL'} | {speeds} |"
        )
    print(
        f"\nTolerances (max |Δlogits|, mean |Δlogits|, cos, repeatability, kpt cos): "
        f"{TOLERANCES}; {report['seconds']:.0f} s in all."
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0 if all(a["passed"] for a in report["agreement"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
