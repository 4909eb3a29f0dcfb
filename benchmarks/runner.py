"""The one worker protocol of the benchmarks: a method in a process of its own, fed images.

A fresh process per method keeps the memory figures honest (no other model, no allocator caches
from another method) and isolates a peer that fails to import. ``Worker`` starts one and speaks
JSON lines with it: a config line in (answered with the method's details once it is loaded and
warmed up), then one request per image (``{"image": path.npy, "save": path.npz or null}``),
each answered with the seconds and keypoints of that extraction; an empty line ends it with the
peak memory. ``benchmarks.compare`` runs one worker per method over all images (``run_method``);
``benchmarks.speed extract`` runs one per entry and lets them take turns image by image.

What is measured (see benchmarks/README.md):
* time per image: wall clock of ``Method.extract`` on an already decoded and resized image
  (numpy -> tensor, network, keypoint selection, back to numpy), after one warm-up call;
  on CUDA the device is synchronised around each call.
* peak RSS: the process' resident-set high-water mark (Linux VmHWM), reset after the model is
  loaded (``"reset_peak": "after_load"``, the warm-up counts) or after the warm-up
  (``"after_warmup"``, the steady state); it includes the interpreter, torch and the model.
  ``extract_peak`` = that peak minus the RSS at the reset (the working memory that extraction
  adds). On CUDA the peak of allocated device memory is reported as well.

Usage (internal): ``python -m benchmarks.runner``, the config on stdin.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
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


def _method_details(method, config: Dict, load_s: float) -> Dict:
    import torch

    from .hardware import tasp_gflop

    info = {
        "device": str(method.device),
        "threads": torch.get_num_threads(),
        "weights": getattr(method, "weights_used", None),
        "descriptor_note": method.descriptor_note,
        "load_s": load_s,
    }
    model = getattr(method, "model", None)
    if config.get("count_flops") and hasattr(model, "forward_dense"):
        h, w = np.load(config["warmup"], mmap_mode="r").shape[:2]
        info["gflop"] = tasp_gflop(model, h, w)
    if hasattr(model, "cpu_precision"):
        info["precision"] = (
            model.cpu_precision()
            if method.device.type == "cpu" and model.conf["fuse"]
            else "eager " + (model.conf["amp"] or "fp32")
        )
    return info


def serve(config: Dict, requests, answers) -> int:
    """The worker: load ``config["method"]``, warm up, then answer one line per request line."""
    import torch

    from .features import MethodUnavailable, load_method

    def answer(record: Dict) -> None:
        answers.write(json.dumps(record) + "\n")
        answers.flush()

    set_allocator(config["method"], config.get("allocator", "shipped"))
    t_load = time.perf_counter()
    try:
        method = load_method(
            config["method"],
            max_keypoints=config["max_keypoints"],
            device=config["device"],
            **config.get("options", {}),
        )
    except MethodUnavailable as err:
        answer({"error": str(err)})
        return 3
    info = _method_details(method, config, time.perf_counter() - t_load)
    cuda = method.device.type == "cuda"
    after_load = config.get("reset_peak", "after_load") == "after_load"
    if cuda:
        torch.cuda.reset_peak_memory_stats(method.device)
    if after_load:
        rss_idle, peak_reset = current_rss_mib(), reset_peak_rss()
    method.extract(np.load(config["warmup"]))  # lazy init, fused network, allocator, caches
    method.synchronize()
    if not after_load:
        rss_idle, peak_reset = current_rss_mib(), reset_peak_rss()
    answer({"ready": True, **info})
    for line in requests:
        if not line.strip():
            break
        request = json.loads(line)
        image = np.load(request["image"])
        method.synchronize()
        t0 = time.perf_counter()
        feats = method.extract(image)
        method.synchronize()
        seconds = time.perf_counter() - t0
        if request.get("save"):
            np.savez(request["save"], **feats)
        answer(
            {
                "time_s": seconds,
                "keypoints": len(feats["keypoints"]),
                "descriptor_dim": int(feats["descriptors"].shape[1]),
                "image_size": list(image.shape[:2]),
            }
        )
    peak = peak_rss_mib()
    answer(
        {
            "peak_rss_mib": peak,
            "extract_peak_mib": (peak - rss_idle) if peak_reset and rss_idle is not None else None,
            "cuda_peak_allocated_mib": (
                torch.cuda.max_memory_allocated(method.device) / 2**20 if cuda else None
            ),
        }
    )
    return 0


def main() -> int:
    # The protocol keeps the real stdout; anything a method prints goes to stderr instead.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    config = json.loads(sys.stdin.readline())
    return serve(config, sys.stdin, answers)


# ----------------------------------------------------------------------------- parent side
class Worker:
    """A running worker process of one method; ``info`` holds its details or an ``error``."""

    def __init__(self, config: Dict, timeout_s: float = 1800):
        repo_root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
        self.timeout_s = timeout_s
        self.times: List[float] = []
        self.answers: List[Dict] = []
        self.stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: it never fills up
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.runner"],
            cwd=repo_root,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.info = self._ask(json.dumps(config))

    def _ask(self, line: str) -> Dict:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._failed()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        if not ready:
            self.proc.kill()
            return {"error": f"no answer within {self.timeout_s:.0f} s"}
        answer = self.proc.stdout.readline()
        return json.loads(answer) if answer else self._failed()

    def _failed(self) -> Dict:
        code = self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read().strip().splitlines()[-5:]
        return {"error": f"worker failed (exit {code}): " + " | ".join(tail)}

    def extract(self, image: Path, save: Optional[Path] = None) -> None:
        """Time one image (features saved to ``save`` as .npz if given)."""
        if "error" in self.info:
            return
        answer = self._ask(json.dumps({"image": str(image), "save": save and str(save)}))
        if "error" in answer:
            self.info = answer
            return
        self.times.append(answer["time_s"])
        self.answers.append(answer)

    def finish(self) -> Dict:
        """Stop the worker; its details, the memory record and the time statistics."""
        if "error" not in self.info:
            self.info.update(self._ask(""))
        self.proc.stdin.close()
        self.proc.wait()
        self.stderr.close()
        if self.times and "error" not in self.info:
            self.info.update(
                time_median_s=statistics.median(self.times),
                time_mean_s=statistics.fmean(self.times),
                times_s=self.times,
                keypoints_mean=float(np.mean([a["keypoints"] for a in self.answers])),
            )
        return self.info


def run_method(
    method: str,
    image_files: List[Path],
    out_dir: Path,
    device: str = "cpu",
    max_keypoints: int = 4096,
    options: Optional[Dict] = None,
    save_features: bool = True,
) -> Dict:
    """Run ``method`` over ``image_files`` in a worker process; returns its record.

    On failure the record has an ``error`` message instead of numbers. Features, if saved,
    are at ``out_dir/<k>.npz`` in the order of ``image_files`` (see ``load_features``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "method": method,
        "device": device,
        "max_keypoints": max_keypoints,
        "options": options or {},
        "warmup": str(image_files[0]),
    }
    worker = Worker(config)
    for k, path in enumerate(image_files):
        worker.extract(path, out_dir / f"{k}.npz" if save_features else None)
    record = {"method": method, **worker.finish()}
    if "error" not in record:
        record.update(
            torch_threads=record.pop("threads"),
            descriptor_dim=worker.answers[-1]["descriptor_dim"],
            n_images=len(image_files),
            image_sizes=sorted({tuple(a["image_size"]) for a in worker.answers}),
        )
    (out_dir / "result.json").write_text(json.dumps(record, indent=1))
    return record


def load_features(out_dir: Path, k: int) -> Dict[str, np.ndarray]:
    """Features of the k-th image saved by ``run_method``."""
    with np.load(Path(out_dir) / f"{k}.npz") as data:
        return {name: data[name] for name in data.files}


if __name__ == "__main__":
    sys.exit(main())
