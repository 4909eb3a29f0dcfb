"""``python -m benchmarks.speed <subcommand>``: how fast TaSP extracts, beside its peers and its
other runtimes; one subcommand per measurement (``python -m benchmarks.speed --help``).

- ``extract.py``: ``extract``, TaSP in each CPU mode and the peers, one ``benchmarks.runner``
  worker per entry, taking turns image by image (s/img, img/s, peak memory); the test images
  every subcommand shares.
- ``network.py``: ``variants`` (the network alone in each precision, fusion, layout and thread
  count) and ``profile`` (torch.profiler: where one extraction's time goes).
- ``api.py``: ``api``, seconds per image as users run it (the Python API, the command line).
- ``throughput.py``: ``throughput``, ``tasp_hloc.extract`` against hloc's
  ``extract_features.main``, end to end.
- ``onnx.py``: ``onnx``, the exported ONNX file (onnxruntime, OpenVINO) against torch.

``main`` below dispatches to them (``__main__.py`` runs it). The machine a timing ran on (CPU
units, versions, load, the network's FLOPs) is ``benchmarks.hardware``'s; the worker protocol is
``benchmarks.runner``'s, shared with ``benchmarks.compare``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# subcommand: (module of benchmarks.speed, its function taking the options, what it measures);
# a module is imported only when its subcommand runs.
SUBCOMMANDS = {
    "extract": ("extract", "main", "TaSP in each CPU mode and the peers: s/img, peak memory"),
    "variants": ("network", "variants", "the network alone: precision, fusion, layout, threads"),
    "profile": ("network", "profile", "torch.profiler on one TaSP entry: where the time goes"),
    "api": ("api", "main", "seconds per image as users run it: the Python API, the command line"),
    "throughput": ("throughput", "main", "tasp_hloc.extract against hloc's, end to end"),
    "onnx": ("onnx", "main", "the exported ONNX file (onnxruntime, OpenVINO) against torch"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: python -m benchmarks.speed <subcommand> [options]",
        "",
        "subcommands (options: python -m benchmarks.speed <subcommand> --help):",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``argv[0]``'s subcommand with the rest of ``argv``; its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"{usage()}\n\nerror: unknown subcommand {name!r}", file=sys.stderr)
        return 2
    module, function, _ = SUBCOMMANDS[name]
    return getattr(importlib.import_module(f"benchmarks.speed.{module}"), function)(rest)
