"""Run one method over a list of images in a fresh subprocess: features, time and peak memory.

A fresh process per method keeps the memory figures honest (no other model, no allocator caches
from another method) and isolates a peer that fails to import.

What is measured (see benchmarks/README.md):
* time per image: wall clock of ``Method.extract`` on an already decoded and resized image
  (numpy -> tensor, network, keypoint selection, back to numpy), after one warm-up call;
  on CUDA the device is synchronised around each call.
* peak RSS: the process' resident-set high-water mark (Linux VmHWM) over the warm-up and all
  extractions, reset after the model is loaded; it includes the interpreter, torch and the model.
  ``extract_peak`` = that peak minus the RSS just before the first extraction (the working memory
  that extraction adds). On CUDA the peak of allocated device memory is reported as well.

Usage (internal): ``python -m benchmarks.runner CONFIG.json``.
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

_STATUS = Path("/proc/self/status")


def current_rss_mib() -> Optional[float]:
    """Resident set size of this process now (MiB), or None where /proc is missing."""
    return _status_field("VmRSS")


def peak_rss_mib() -> Optional[float]:
    """High-water mark of the resident set size (MiB) since start or the last reset."""
    value = _status_field("VmHWM")
    if value is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS) since start
        import resource

        scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return value


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_field(key: str) -> Optional[float]:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------- worker side
def set_allocator(method: str, allocator: str = "shipped") -> None:
    """Set this process' allocator for ``method`` before it allocates: ``"kept"`` keeps freed
    memory (``tasp_hloc.runtime.allocator``), ``"glibc"`` keeps the C library's default (TaSP told to
    leave it), ``"shipped"`` changes nothing: each method does as its package does (TaSP keeps
    freed memory at its first CPU forward; the peers run with glibc's default).
    """
    from tasp_hloc.runtime import allocator as process_allocator

    if allocator == "kept":
        process_allocator.keep_freed_memory()
    elif allocator == "glibc":
        process_allocator.leave_default()


def worker(config: Dict) -> Dict:
    """Extract features of every image in ``config["images"]`` (.npy files, H x W x 3 uint8).

    Saves ``<out_dir>/<k>.npz`` (keypoints, descriptors, scores) when ``save_features`` and
    returns the timing/memory record (also written to ``<out_dir>/result.json``).
    """
    import torch
    from .features import MethodUnavailable, load_method

    set_allocator(config["method"])
    out_dir = Path(config["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    t_load = time.perf_counter()
    try:
        method = load_method(
            config["method"],
            max_keypoints=config["max_keypoints"],
            device=config["device"],
            **config.get("options", {}),
        )
    except MethodUnavailable as err:
        return {"method": config["method"], "error": str(err)}
    load_s = time.perf_counter() - t_load

    cuda = method.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(method.device)
    rss_idle = current_rss_mib()
    peak_reset = reset_peak_rss()

    files: List[str] = config["images"]
    method.extract(np.load(files[0]))  # warm-up: lazy init, allocator, caches
    method.synchronize()
    times, n_kpts = [], []
    for k, path in enumerate(files):
        image = np.load(path)
        method.synchronize()
        t0 = time.perf_counter()
        feats = method.extract(image)
        method.synchronize()
        times.append(time.perf_counter() - t0)
        n_kpts.append(len(feats["keypoints"]))
        if config.get("save_features", True):
            np.savez(out_dir / f"{k}.npz", **feats)
    peak = peak_rss_mib()
    record = {
        "method": config["method"],
        "device": str(method.device),
        "torch_threads": torch.get_num_threads(),
        "descriptor_note": method.descriptor_note,
        "weights": getattr(method, "weights_used", None),
        "descriptor_dim": int(feats["descriptors"].shape[1]),
        "n_images": len(files),
        "image_sizes": sorted({tuple(np.load(f, mmap_mode="r").shape[:2]) for f in files}),
        "load_s": load_s,
        "time_median_s": statistics.median(times),
        "time_mean_s": statistics.fmean(times),
        "times_s": times,
        "keypoints_mean": float(np.mean(n_kpts)),
        "peak_rss_mib": peak,
        "extract_peak_mib": (peak - rss_idle) if (peak_reset and rss_idle is not None) else None,
        "cuda_peak_allocated_mib": (
            torch.cuda.max_memory_allocated(method.device) / 2**20 if cuda else None
        ),
    }
    return record


def main(argv: List[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    record = worker(config)
    Path(config["out_dir"], "result.json").write_text(json.dumps(record, indent=1))
    return 3 if "error" in record else 0


# ----------------------------------------------------------------------------- parent side
def run_method(
    method: str,
    image_files: List[Path],
    out_dir: Path,
    device: str = "cpu",
    max_keypoints: int = 4096,
    options: Optional[Dict] = None,
    save_features: bool = True,
    timeout_s: float = 3600,
) -> Dict:
    """Run ``method`` over ``image_files`` in a subprocess; returns its record.

    On failure the record has an ``error`` message instead of numbers. Features, if saved,
    are at ``out_dir/<k>.npz`` in the order of ``image_files`` (see ``load_features``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "method": method,
        "images": [str(p) for p in image_files],
        "out_dir": str(out_dir),
        "device": device,
        "max_keypoints": max_keypoints,
        "options": options or {},
        "save_features": save_features,
    }
    cfg_path = out_dir / "config.json"
    cfg_path.write_text(json.dumps(config))
    repo_root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.runner", str(cfg_path)],
            cwd=repo_root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {timeout_s:.0f} s"}
    result = out_dir / "result.json"
    if proc.returncode not in (0, 3) or not result.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {
            "method": method,
            "error": f"worker failed (exit {proc.returncode}): " + " | ".join(tail),
        }
    return json.loads(result.read_text())


def load_features(out_dir: Path, k: int) -> Dict[str, np.ndarray]:
    """Features of the k-th image saved by ``run_method``."""
    with np.load(Path(out_dir) / f"{k}.npz") as data:
        return {name: data[name] for name in data.files}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
