"""The worker processes of ``benchmarks.extract_speed``: one per entry, taking turns.

An entry is a method, for TaSP with a mode (``ENTRIES``). Each worker loads its entry once per
size, so its peak memory is its own, and speaks JSON lines: a config line in, then one image path
per line, each answered with the seconds and keypoints of that extraction; an empty line ends it
with the peak memory. ``time_entries`` runs every entry on the same images, the order rotating
image by image, so load from other processes falls on all of them alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from tasp_hloc.model.weights import weights_argument

from .features import METHODS
from .hardware import tasp_gflop

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


def tasp_weights(args) -> Optional[str]:
    """--tasp-weights as TaSP takes it: "auto" is TaSP's default, "none" a random network."""
    from tasp_hloc.model.tasp import TaSP

    name = args.tasp_weights
    return TaSP.default_conf["weights"] if name == "auto" else weights_argument(name)


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
