"""The exported ONNX file (onnxruntime, OpenVINO) against torch on the CPU: one process, the
entries taking turns.

    python -m benchmarks.speed onnx [--sizes 640x480 1024x768] [--threads 1 2] [--runs 7]
        [--max-keypoints -1] [--weights NAME|PATH] [--onnx FILE] [--no-openvino]
        [--out onnx.json]

Entries, each at every thread count:

* ``onnxruntime``: the file of ``python -m tasp_hloc export-onnx`` (exported here unless
  ``--onnx`` is given), CPUExecutionProvider, float32, intra-op spinning off (its idle threads
  would otherwise spin into the next entry's turn);
* ``openvino``: the same file compiled by OpenVINO for the CPU, its default precision (when
  ``openvino`` is installed);
* ``torch fused``: TaSP's default CPU path (``fuse`` True, ``amp`` "auto", channels_last);
* ``torch plain``: ``fuse`` False, the modules as exported.

All run with ``subpixel`` None, the post-processing the ONNX side ships
(``tasp_hloc.onnx_export.postprocess``). "network": the dense outputs alone (``forward_dense``,
``session.run``); "features": RGB uint8 array -> keypoints, scores and descriptors. Medians of
``--runs`` after one warm-up; each round runs every entry once, so load from other processes
spreads over all of them. The image is the demo scene resized to each size.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..features import to_tensor
from ..hardware import cpu_description, load_average
from ..report import markdown_table

NO_SPINNING = {"session.intra_op.allow_spinning": "0"}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed onnx",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sizes", nargs="+", default=["640x480", "1024x768"], help="WxH, multiples of 8"
    )
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=7, help="timed runs per entry (median)")
    p.add_argument(
        "--max-keypoints", dest="max_keypoints", type=int, default=-1, help="default: all (TaSP's)"
    )
    p.add_argument("--weights", help="released name or .pth path (default: TaSP's)")
    p.add_argument("--onnx", type=Path, help="an exported file (default: export one now)")
    p.add_argument("--no-openvino", dest="openvino", action="store_false")
    p.add_argument("--out", type=Path, help="save every timing as JSON")
    return p.parse_args(argv)


def parse_size(text: str) -> Tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    if w % 8 or h % 8:
        raise SystemExit(f"error: size {text} is not a multiple of 8 on both sides")
    return w, h


def demo_image(width: int, height: int) -> np.ndarray:
    from tasp_hloc.assets import DEMO_DIR

    bgr = cv2.imread(str(DEMO_DIR / "box_in_scene.png"), cv2.IMREAD_COLOR)
    interpolation = cv2.INTER_AREA if width < bgr.shape[1] else cv2.INTER_LINEAR
    return np.ascontiguousarray(
        cv2.resize(bgr, (width, height), interpolation=interpolation)[..., ::-1]
    )


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


# Entry: name -> {threads: (network(rgb) -> None, features(rgb) -> number of keypoints)}
Runner = Tuple[Callable[[np.ndarray], None], Callable[[np.ndarray], int]]


def torch_entries(
    weights: Optional[str], threads: List[int], max_keypoints: int
) -> Dict[str, Dict[int, Runner]]:
    import torch

    from tasp_hloc import TaSP

    conf = {"subpixel": None, "max_keypoints": max_keypoints}
    conf.update({"weights": weights} if weights else {})
    entries = {}
    for fuse in (True, False):
        model = TaSP({**conf, "fuse": fuse}).eval()
        precision = model.cpu_precision() if fuse else "fp32"
        name = f"torch fused ({precision})" if fuse else "torch plain (fuse False, fp32)"

        def make(t, model=model):
            def network(rgb):
                torch.set_num_threads(t)
                with torch.no_grad():
                    model.forward_dense(to_tensor(rgb, "cpu"))

            def features(rgb):
                torch.set_num_threads(t)
                with torch.no_grad():
                    return int(model({"image": to_tensor(rgb, "cpu")})["keypoints"].shape[1])

            return network, features

        entries[name] = {t: make(t) for t in threads}
    return entries


def onnxruntime_entry(path: Path, threads: List[int], max_keypoints: int) -> Dict[int, Runner]:
    from tasp_hloc.onnx_export import INPUT_NAME, OUTPUT_NAMES, OnnxTaSP, network_input

    def make(t):
        model = OnnxTaSP(path, max_keypoints, num_threads=t, session_config=NO_SPINNING)

        def network(rgb):
            model.session.run(list(OUTPUT_NAMES), {INPUT_NAME: network_input(rgb)[0]})

        return network, lambda rgb: len(model(rgb)["keypoints"])

    return {t: make(t) for t in threads}


def openvino_entry(
    path: Path, threads: List[int], max_keypoints: int
) -> Tuple[str, Dict[int, Runner]]:
    import openvino as ov

    from tasp_hloc.onnx_export import network_input, postprocess

    core = ov.Core()
    model = core.read_model(str(path))
    compiled = {t: core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": t}) for t in threads}
    hint = next(iter(compiled.values())).get_property("INFERENCE_PRECISION_HINT")
    precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(str(hint.get_type_name()), hint)

    def make(t):
        net = compiled[t]

        def network(rgb):
            net(network_input(rgb)[0])

        def features(rgb):
            array, size = network_input(rgb)
            out = net(array)
            logits, descriptors = out[net.outputs[0]], out[net.outputs[1]]
            out = postprocess(logits, descriptors, max_keypoints, image_size=size)
            return len(out["keypoints"])

        return network, features

    return f"openvino ({precision})", {t: make(t) for t in threads}


def measure(entries: Dict[str, Dict[int, Runner]], rgb: np.ndarray, runs: int) -> List[Dict]:
    """Median milliseconds of every (entry, threads), network and features, taking turns."""
    combos = [(name, t) for name, per in entries.items() for t in per]
    times = {c: {"network": [], "features": []} for c in combos}
    keypoints = {}
    for name, t in combos:  # warm-up: fused networks built, buffers sized
        network, features = entries[name][t]
        network(rgb)
        keypoints[(name, t)] = features(rgb)
    for _ in range(runs):
        for name, t in combos:
            for kind, fn in zip(("network", "features"), entries[name][t]):
                start = time.perf_counter()
                fn(rgb)
                times[(name, t)][kind].append(1e3 * (time.perf_counter() - start))
    return [
        {
            "entry": name,
            "threads": t,
            "network_ms": statistics.median(times[(name, t)]["network"]),
            "features_ms": statistics.median(times[(name, t)]["features"]),
            "keypoints": keypoints[(name, t)],
            "times_ms": times[(name, t)],
        }
        for name, t in combos
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes]
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx
        if path is None:
            from tasp_hloc.onnx_export import build_model, export_onnx

            path = Path(tmp) / "tasp.onnx"
            conf = {"weights": args.weights} if args.weights else {}
            print("Exporting the network to ONNX (about 30 s)...", file=sys.stderr)
            export_onnx(path, build_model(**conf))
        entries = {"onnxruntime (fp32)": onnxruntime_entry(path, args.threads, args.max_keypoints)}
        if args.openvino:
            try:
                name, runners = openvino_entry(path, args.threads, args.max_keypoints)
                entries[name] = runners
            except ImportError:
                print("openvino is not installed: its entry is skipped", file=sys.stderr)
        entries.update(torch_entries(args.weights, args.threads, args.max_keypoints))
        results = []
        for w, h in sizes:
            for rec in measure(entries, demo_image(w, h), args.runs):
                results.append({"size": f"{w}x{h}", **rec})
    cpu = cpu_description()
    report = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.speed onnx "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu,
        "versions": {p: version(p) for p in ("torch", "onnxruntime", "openvino", "onnx", "numpy")},
        "runs": args.runs,
        "load_average": {"start": load_start, "end": load_average()},
        "results": results,
    }
    print(render(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


def render(report: Dict) -> str:
    rows = [
        [
            r["size"],
            str(r["threads"]),
            r["entry"],
            f"{r['network_ms']:.0f}",
            f"{r['features_ms']:.0f}",
            str(r["keypoints"]),
        ]
        for r in report["results"]
    ]
    cpu = report["cpu"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v != "-")
    lines = [
        f"{report['date']}, `{report['command']}`",
        f"CPU: {cpu['model']} ({', '.join(cpu['units']) or 'no AVX2'}); {versions}",
        f"median of {report['runs']} runs; load average (1/5/15 min) at start "
        f"{report['load_average']['start']}, at end {report['load_average']['end']}",
        "",
        markdown_table(
            ["image (WxH)", "threads", "entry", "network ms", "features ms", "keypoints"], rows
        ),
    ]
    return "\n".join(lines)
