"""Benchmark harness: TaSP beside classical and learned peers (issue 5).

Peers (OpenCV SIFT/ORB, ALIKED, DISK, XFeat) are optional benchmark dependencies, never runtime
dependencies of ``tasp_hloc``; see ``benchmarks/README.md``.
"""
