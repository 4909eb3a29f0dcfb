"""Extraction speed and peak memory of TaSP in each CPU mode, OpenCV SIFT and ALIKED: one run,
one table, the modes interleaved image by image.

    python -m benchmarks.extract_speed [--sizes 1024 1600] [--entries tasp:fp32 tasp:bf16 ...]
        [--images DIR | --synthetic] [--n-images 4] [--repeats 2]
        [--allocator shipped|glibc|kept|both]
        [--accuracy fp32=FP32.json bf16=BF16.json ...] [--device auto] [--out speed.json]

Every entry (a method, for TaSP with a mode) is a worker process of its own, loaded once per
size, so its peak memory is its own. The workers take turns: for each repeat and each image,
every worker extracts that image in turn (the order rotates), so load from other processes
falls on all of them alike; only one worker runs at a time. Reported per entry and size: median
seconds per image, images per second (1 / median), peak RSS (the process' high-water mark, reset
after loading) and the part extraction adds, CUDA peak memory on a GPU, mean keypoints.
``--accuracy MODE=REPORT.json`` adds the accuracy deltas of each TaSP mode against ``fp32``
from ``benchmarks.compare`` reports of the same harness (MMA@1/3 px, strecha_dev AUC@5/10/20).
See benchmarks/README.md "CPU inference modes".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from tasp_hloc.model.weights import weights_argument

from .compare import environment, markdown_table, num, resolve_device
from .datasets import IMAGE_SUFFIXES, default_data_root, read_rgb
from .features import METHODS, resize_max_side
from .hardware import cpu_description, tasp_gflop

DEFAULT_IMAGES = default_data_root() / "eval/strecha_dev"
# entry name: (method, options). TaSP modes are its "amp" conf values (see tasp_hloc.model.tasp).
ENTRIES = {
    "tasp:eager": ("tasp", {"amp": None, "fuse": False}),  # the plain modules, as before fusing
    "tasp:fp32": ("tasp", {"amp": None}),
    "tasp:bf16": ("tasp", {"amp": "bf16"}),
    "tasp:int8": ("tasp", {"amp": "int8"}),
    "tasp:default": ("tasp", {}),
    **{name: (name, {}) for name in METHODS if name != "tasp"},  # sift, orb, aliked, ...
    "tasp": ("tasp", {}),  # = tasp:default, for --methods
}
DEFAULT_ENTRIES = [
    "tasp:eager",
    "tasp:fp32",
    "tasp:bf16",
    "tasp:int8",
    "tasp:default",
    "sift",
    "aliked",
]
ACCURACY_KEYS = [
    ("MMA@1", ("homography", "all", "mma", "1")),
    ("MMA@3", ("homography", "all", "mma", "3")),
    ("strecha AUC@5", ("pose", "strecha_dev", "auc", "5")),
    ("AUC@10", ("pose", "strecha_dev", "auc", "10")),
    ("AUC@20", ("pose", "strecha_dev", "auc", "20")),
]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.extract_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 1600])
    p.add_argument(
        "--entries", "--methods", nargs="+", default=DEFAULT_ENTRIES, choices=list(ENTRIES)
    )
    p.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help="folder of test images, searched recursively (default: "
        "$TASP_DATA/eval/strecha_dev, the first image of each scene first)",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use generated 4:3 texture images instead of --images (runs anywhere)",
    )
    p.add_argument("--n-images", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="passes over the images")
    p.add_argument("--max-keypoints", type=int, default=4096)
    p.add_argument("--tasp-weights", default="auto", help="as in benchmarks.compare")
    p.add_argument(
        "--allocator",
        choices=["shipped", "glibc", "kept", "both"],
        default="shipped",
        help="shipped (default): nothing set, each as its package ships (TaSP keeps freed "
        "memory from its first CPU forward, tasp_hloc.runtime.allocator; the peers run with the C "
        "library's default); "
        "glibc / kept: every entry so; both: each entry twice, interleaved",
    )
    p.add_argument(
        "--accuracy",
        nargs="*",
        default=[],
        metavar="MODE=REPORT.json",
        help="benchmarks.compare reports of TaSP per mode, e.g. fp32=a.json bf16=b.json",
    )
    p.add_argument(
        "--accuracy-reference",
        default="fp32",
        metavar="MODE",
        help="the --accuracy mode the others are compared with (default fp32)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="also save the records as JSON")
    p.add_argument(
        "--profile",
        default=None,
        choices=[e for e in ENTRIES if e.startswith("tasp")],
        help="instead of timing: torch.profiler on this TaSP entry, first image and "
        "size; prints where the time goes (network vs each post-processing step)",
    )
    p.add_argument(
        "--variants",
        action="store_true",
        help="instead: the network alone in every variant of VARIANTS (precision, "
        "fusion, memory format, threads), in one process, interleaved",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="with --variants: add torch.compile (inductor, frozen weights)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def source_images(args) -> List[np.ndarray]:
    """The test images as H x W x 3 uint8 RGB (before resizing)."""
    if args.synthetic:
        import cv2

        rng = np.random.default_rng(0)
        return [
            cv2.resize(
                rng.uniform(0, 255, (60, 80, 3)).astype(np.uint8),
                (1296, 972),
                interpolation=cv2.INTER_CUBIC,
            )
            for _ in range(args.n_images)
        ]
    if not args.images.is_dir():
        raise SystemExit(f"No image folder {args.images}: pass --images DIR or --synthetic.")
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"No images in {args.images}: pass --images DIR or --synthetic.")
    by_folder: Dict[Path, List[Path]] = {}
    for f in files:
        by_folder.setdefault(f.parent, []).append(f)
    # folders interleaved: the first image of every scene, then the second, ...
    order = [f for group in zip(*[iter(v) for v in by_folder.values()]) for f in group]
    order += [f for f in files if f not in order]
    return [read_rgb(p) for p in order[: args.n_images]]


# ----------------------------------------------------------------------------- worker side
def worker() -> int:
    """One entry: a config line on stdin, then one image path per line; answers JSON lines."""
    import torch
    from .features import MethodUnavailable, load_method
    from .runner import current_rss_mib, peak_rss_mib, reset_peak_rss, set_allocator

    config = json.loads(sys.stdin.readline())
    set_allocator(config["method"], config["allocator"])
    try:
        method = load_method(
            config["method"],
            max_keypoints=config["max_keypoints"],
            device=config["device"],
            **config["options"],
        )
    except MethodUnavailable as err:
        print(json.dumps({"error": str(err)}), flush=True)
        return 3
    info = {"weights": getattr(method, "weights_used", None), "threads": torch.get_num_threads()}
    model = getattr(method, "model", None)
    if hasattr(model, "forward_dense"):  # the FLOPs of the network on these images, counted
        h, w = np.load(config["warmup"], mmap_mode="r").shape[:2]
        info["gflop"] = tasp_gflop(model, h, w)
    if hasattr(model, "cpu_precision"):
        info["precision"] = (
            model.cpu_precision()
            if method.device.type == "cpu" and model.conf["fuse"]
            else "eager " + (model.conf["amp"] or "fp32")
        )
    cuda = method.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(method.device)
    method.extract(np.load(config["warmup"]))  # lazy init, fused network, allocator
    method.synchronize()
    rss_idle = current_rss_mib()
    peak_reset = reset_peak_rss()
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        image = np.load(line.strip())
        method.synchronize()
        t0 = time.perf_counter()
        feats = method.extract(image)
        method.synchronize()
        print(
            json.dumps({"time_s": time.perf_counter() - t0, "keypoints": len(feats["keypoints"])}),
            flush=True,
        )
    peak = peak_rss_mib()
    print(
        json.dumps(
            {
                "peak_rss_mib": peak,
                "extract_peak_mib": (peak - rss_idle)
                if peak_reset and rss_idle is not None
                else None,
                "cuda_peak_allocated_mib": (
                    torch.cuda.max_memory_allocated(method.device) / 2**20 if cuda else None
                ),
            }
        ),
        flush=True,
    )
    return 0


# ----------------------------------------------------------------------------- parent side
class Worker:
    """A running worker process of one entry."""

    def __init__(self, name: str, config: Dict):
        repo_root = Path(__file__).resolve().parent.parent
        self.allocator = config["allocator"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
        self.name, self.times, self.keypoints = name, [], []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.extract_speed", "--worker"],
            cwd=repo_root,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.proc.stdin.write(json.dumps(config) + "\n")
        self.proc.stdin.flush()
        self.info = self._answer()

    def _answer(self) -> Dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"worker exited ({self.proc.wait()}); see its stderr above"}
        return json.loads(line)

    def extract(self, path: Path) -> None:
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if "error" in answer:
            self.info = answer
            return
        self.times.append(answer["time_s"])
        self.keypoints.append(answer["keypoints"])

    def finish(self) -> Dict:
        if "error" not in self.info:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.info.update(self._answer())
        self.proc.stdin.close()
        self.proc.wait()
        return self.info


def time_entries(args, size: int, files: List[Path], device: str) -> List[Dict]:
    """All entries at one size, interleaved; one record per entry."""
    workers = []
    allocators = ["glibc", "kept"] if args.allocator == "both" else [args.allocator]
    for name in args.entries:
        method, options = ENTRIES[name]
        if method == "tasp":
            weights = tasp_weights(args)
            options = {"weights": weights, **options}
        for allocator in allocators:
            config = {
                "method": method,
                "options": options,
                "device": device,
                "max_keypoints": args.max_keypoints,
                "warmup": str(files[0]),
                "allocator": allocator,
            }
            workers.append(Worker(name, config))
    live = [w for w in workers if "error" not in w.info]
    turn = 0
    for _ in range(args.repeats):
        for path in files:
            for w in live[turn % len(live) :] + live[: turn % len(live)]:
                w.extract(path)
            turn += 1
            live = [w for w in live if "error" not in w.info]
    records = []
    for w in workers:
        rec = {
            "entry": w.name,
            "allocator": w.allocator,
            "method": ENTRIES[w.name][0],
            "max_side": size,
            "image_size": list(np.load(files[0], mmap_mode="r").shape[:2]),
            **w.finish(),
        }
        if w.times:
            rec.update(
                time_median_s=statistics.median(w.times),
                times_s=w.times,
                keypoints_mean=float(np.mean(w.keypoints)),
            )
        records.append(rec)
        print(
            f"  {w.name} ({w.allocator} malloc) @ {size}: "
            + (rec.get("error") or f"{rec['time_median_s']:.2f} s/img"),
            file=sys.stderr,
        )
    return records


def accuracy_deltas(specs: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """{mode: {metric: value in points}} from ``MODE=compare_report.json`` specs."""
    out = {}
    for spec in specs:
        mode, _, path = spec.partition("=")
        tasp = json.loads(Path(path).read_text())["methods"]["tasp"]
        values = {}
        for label, keys in ACCURACY_KEYS:
            value = tasp
            for key in keys:
                value = value.get(key, {}) if isinstance(value, dict) else {}
            values[label] = 100 * value if isinstance(value, (int, float)) else None
        out[mode] = values
    return out


def table(
    records: List[Dict], accuracy: Dict[str, Dict[str, float]], reference_mode: str = "fp32"
) -> str:
    reference = accuracy.get(reference_mode, {})
    rows = []
    for rec in records:
        mode = rec["entry"].split(":")[-1]
        label = rec["entry"] + (f" ({rec['precision']})" if "precision" in rec else "")
        if rec.get("allocator", "shipped") != "shipped":  # as each package ships: no note
            label += f", {rec['allocator']} malloc"
        h, w = rec["image_size"]
        if "error" in rec or "time_median_s" not in rec:
            rows.append(
                [label, str(rec["max_side"]), f"{w}x{h}", "not run: " + rec.get("error", "?")]
                + [""] * (6 + len(ACCURACY_KEYS))
            )
            continue
        acc = {}
        if rec["entry"].startswith("tasp"):  # the mode's own report, else that of what it ran as
            acc = accuracy.get(mode) or accuracy.get(rec.get("precision", ""), {})
        deltas = []
        for label_, _ in ACCURACY_KEYS:
            a, r = acc.get(label_), reference.get(label_)
            deltas.append(
                ""
                if a is None or r is None
                else f"{a:.1f}"
                if acc is reference
                else f"{a - r:+.2f}"
            )
        rows.append(
            [
                label,
                str(rec["max_side"]),
                f"{w}x{h}",
                f"{rec['time_median_s']:.2f}",
                f"{1 / rec['time_median_s']:.2f}",
                num(rec["peak_rss_mib"]),
                num(rec["extract_peak_mib"]),
                num(rec["keypoints_mean"]),
                num(rec["gflop"] / rec["time_median_s"]) if rec.get("gflop") else "",
                *deltas,
            ]
        )
    headers = [
        "entry (runs as)",
        "max side",
        "image",
        "s/img",
        "img/s",
        "peak RSS MiB",
        "extract peak MiB",
        "kpts/img",
        "GFLOP/s",
    ] + [f"{k} (Δ)" for k, _ in ACCURACY_KEYS]
    return markdown_table(headers, rows)


def tasp_weights(args) -> Optional[str]:
    """--tasp-weights as TaSP takes it: "auto" is TaSP's default, "none" a random network."""
    from tasp_hloc.model.tasp import TaSP

    name = args.tasp_weights
    return TaSP.default_conf["weights"] if name == "auto" else weights_argument(name)


# --variants: name -> (TaSP conf, torch threads or None for the default)
VARIANTS = {
    "eager fp32 (reference)": ({"amp": None, "fuse": False}, None),
    "eager fp32 NCHW": ({"amp": None, "fuse": False, "channels_last": False}, None),
    "eager bf16 autocast": ({"amp": "bf16", "fuse": False}, None),
    "fused fp32": ({"amp": None}, None),
    "fused fp32 NCHW": ({"amp": None, "channels_last": False}, None),
    "fused bf16": ({"amp": "bf16"}, None),
    "int8": ({"amp": "int8"}, None),
    "fused fp32, 1 thread": ({"amp": None}, 1),
    "fused bf16, 1 thread": ({"amp": "bf16"}, 1),
}


def time_variants(args, image: np.ndarray) -> str:
    """Network-only seconds per image of every variant, interleaved in one process."""
    import torch
    from tasp_hloc.model.tasp import TaSP

    weights = tasp_weights(args)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
    x = torch.nn.functional.pad(x, (0, -x.shape[-1] % 8, 0, -x.shape[-2] % 8))
    threads = torch.get_num_threads()
    calls, notes = {}, {}
    for name, (conf, _) in VARIANTS.items():
        model = TaSP({"weights": weights, **conf}).eval()
        notes[name] = model.cpu_precision() if model.conf["fuse"] else "eager"
        calls[name] = model.forward_dense
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = TaSP({"weights": weights, "amp": None, "fuse": False}).eval()
        calls["compiled fp32 (inductor, frozen)"] = torch.compile(model.forward_dense)
    times = {name: [] for name in calls}
    with torch.inference_mode():
        for name, call in calls.items():  # warm-up: fused networks, compilation
            t0 = time.perf_counter()
            call(x)
            notes.setdefault(name, f"first call {time.perf_counter() - t0:.0f} s")
        for r in range(args.repeats):
            names = list(calls)[r % len(calls) :] + list(calls)[: r % len(calls)]
            for name in names:
                torch.set_num_threads(VARIANTS.get(name, (None, None))[1] or threads)
                t0 = time.perf_counter()
                calls[name](x)
                times[name].append(time.perf_counter() - t0)
                torch.set_num_threads(threads)
    ref = statistics.median(times["eager fp32 (reference)"])
    fused = statistics.median(times["fused fp32"])
    rows = [
        [
            name,
            notes[name],
            f"{statistics.median(t):.2f}",
            f"{ref / statistics.median(t):.2f}",
            f"{fused / statistics.median(t):.2f}",
        ]
        for name, t in times.items()
    ]
    h, w = image.shape[:2]
    return (
        f"### The network alone, {w}x{h}, median of {args.repeats} interleaved passes, "
        f"{threads} threads unless said (load average {os.getloadavg()[0]:.1f})\n\n"
        + markdown_table(["variant", "runs as", "s/img", "x eager fp32", "x fused fp32"], rows)
    )


def profile_stages(args, image: np.ndarray, passes: int = 3) -> str:
    """torch.profiler over ``passes`` extractions: TaSP's labelled stages, then the top ops."""
    from torch.profiler import ProfilerActivity, profile
    from .features import load_method

    weights = tasp_weights(args)
    method = load_method(
        "tasp",
        max_keypoints=args.max_keypoints,
        device="cpu",
        weights=weights,
        **ENTRIES[args.profile][1],
    )
    method.extract(image)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(passes):
            method.extract(image)
    averages = prof.key_averages()
    stages = [e for e in averages if e.key.startswith("tasp: ")]
    total = sum(e.cpu_time_total for e in stages)
    rows = [
        [
            e.key[6:],
            f"{e.cpu_time_total / passes / 1000:.1f}",
            f"{100 * e.cpu_time_total / total:.1f}",
        ]
        for e in stages
    ]
    h, w = image.shape[:2]
    return (
        f"### torch.profiler: {args.profile} ({method.model.cpu_precision()}) on one "
        f"{w}x{h} image, mean of {passes}, {os.getloadavg()[0]:.1f} load\n\n"
        + markdown_table(["stage", "ms/img", "%"], rows)
        + "\n\n"
        + averages.table(sort_by="self_cpu_time_total", row_limit=15)
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker()
    if args.profile or args.variants:
        image = resize_max_side(source_images(args)[0], args.sizes[0])[0]
        print(profile_stages(args, image) if args.profile else time_variants(args, image))
        return 0
    device = resolve_device(args.device)
    images = source_images(args)
    env = environment(device)
    env["cpu_model"] = cpu_description()
    accuracy = accuracy_deltas(args.accuracy)
    records = []
    with tempfile.TemporaryDirectory(prefix="tasp-speed-") as tmp:
        for size in args.sizes:
            files = []
            for k, image in enumerate(images):
                files.append(Path(tmp) / f"{size}_{k:03d}.npy")
                np.save(files[-1], resize_max_side(image, size)[0])
            records += time_entries(args, size, files, device)
    env["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    h, w = resize_max_side(images[0], args.sizes[0])[0].shape[:2]
    print(
        f"## Extraction on {env['device']} ({env['cpu_count']} CPUs, torch {env['torch']}, "
        f"{env['torch_threads']} threads), {len(images)} "
        f"{'synthetic' if args.synthetic else 'real'} images (first: {w}x{h} at "
        f"{args.sizes[0]} px) x {args.repeats} interleaved passes; load average "
        f"{env['load_average_at_start']} at start, {env['load_average_at_end']} at end\n\n"
        f"CPU: {env['cpu_model']['model']}, units: "
        f"{', '.join(env['cpu_model']['units']) or 'none of AVX2/AVX-512/AMX'}; GFLOP/s = "
        f"the network's FLOPs (torch.utils.flop_counter, plain modules) / median s/img\n"
    )
    print(table(records, accuracy, args.accuracy_reference))
    if accuracy:
        print(
            f"\nAccuracy (benchmarks.compare, 1024 px): the {args.accuracy_reference} row in "
            f"points (%), the other TaSP rows as differences from it, each from the report "
            f"of its mode (else of the precision it ran as); the same at every size."
        )
    if args.out:
        args.out.write_text(
            json.dumps({"environment": env, "records": records, "accuracy": accuracy}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
