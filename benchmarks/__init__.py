"""Benchmark harness: TaSP beside classical and learned peers (issue 5).

Two commands, ``python -m benchmarks.compare`` (accuracy) and ``python -m benchmarks.speed
<subcommand>`` (speed and memory), and the GPU check (``benchmarks/gpu_check.sh``). The
one-question studies built on the harness are in ``experiments/``; nothing here imports them.

Peers (OpenCV SIFT/ORB, ALIKED, DISK, XFeat) are optional benchmark dependencies, never runtime
dependencies of ``tasp_hloc``; see ``benchmarks/README.md``.
"""
