"""The speed command, ``python -m benchmarks.speed <subcommand>``: every subcommand run for real
on tiny synthetic images (the ONNX one in tests/model/test_onnx_export.py, where the exporter is), the
tables it prints, and the description of the machine a timing ran on."""

import json

import h5py
import numpy as np
import pytest
import torch

from benchmarks import speed
from benchmarks.speed.network import VARIANTS


def test_speed_lists_its_subcommands_and_refuses_others(capsys):
    assert speed.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("extract", "variants", "profile", "api", "throughput", "onnx"):
        assert f"\n  {name} " in out
    assert speed.main(["extract_speed"]) == 2
    assert "unknown subcommand 'extract_speed'" in capsys.readouterr().err
    assert speed.main([]) == 2
    with pytest.raises(SystemExit):  # a subcommand's own options are checked by its parser
        speed.main(["extract", "--entries", "no_such_entry"])


def test_speed_extract_runs_on_synthetic_images(tmp_path, capsys):
    out = tmp_path / "speed.json"
    speed.main(
        [
            "extract",
            "--synthetic",
            "--n-images",
            "2",
            "--sizes",
            "256",
            "320",
            "--methods",
            "sift",
            "orb",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "img/s" in text and "| sift | 320 | 320x240 |" in text
    records = json.loads(out.read_text())["records"]
    assert [(r["method"], r["max_side"]) for r in records] == [
        ("sift", 256),
        ("orb", 256),
        ("sift", 320),
        ("orb", 320),
    ]
    # --allocator both: each entry in a glibc-default worker and in one keeping freed memory
    speed.main(
        ["extract", "--synthetic", "--n-images", "1", "--sizes", "256", "--methods", "sift"]
        + ["--allocator", "both", "--device", "cpu", "--out", str(out)]
    )
    assert "| sift, glibc malloc | 256 |" in capsys.readouterr().out
    records = json.loads(out.read_text())["records"]
    assert [(r["entry"], r["allocator"]) for r in records] == [("sift", "glibc"), ("sift", "kept")]


def test_speed_extract_table_of_modes_with_accuracy(tmp_path, capsys):
    def report(mma1, auc5):
        tasp = {
            "homography": {"all": {"mma": {"1": mma1, "3": 0.78}}},
            "pose": {"strecha_dev": {"auc": {"5": auc5, "10": 0.85, "20": 0.92}}},
        }
        path = tmp_path / f"{mma1}.json"
        path.write_text(json.dumps({"methods": {"tasp": tasp}}))
        return path

    out = tmp_path / "speed.json"
    speed.main(
        [
            "extract",
            "--synthetic",
            "--n-images",
            "1",
            "--repeats",
            "1",
            "--sizes",
            "64",
            "--entries",
            "tasp:fp32",
            "tasp:default",
            "sift",
            "--device",
            "cpu",
            "--tasp-weights",
            "none",
            "--max-keypoints",
            "64",
            "--accuracy",
            f"fp32={report(0.395, 0.717)}",
            f"bf16={report(0.390, 0.720)}",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    records = json.loads(out.read_text())["records"]
    assert [r["entry"] for r in records] == ["tasp:fp32", "tasp:default", "sift"]
    assert all(r["time_median_s"] > 0 and r["peak_rss_mib"] > 0 for r in records)
    assert records[0]["precision"] == "fp32"
    assert "| tasp:fp32 (fp32) | 64 | 64x48 |" in text
    fp32_row = next(line for line in text.splitlines() if line.startswith("| tasp:fp32"))
    assert "| 39.5 | 78.0 | 71.7 |" in fp32_row
    default_row = next(line for line in text.splitlines() if line.startswith("| tasp:default"))
    if records[1]["precision"] == "bf16":  # the default runs bf16 here: its deltas are shown
        assert "| -0.50 | +0.00 | +0.30 |" in default_row


def test_speed_variants_and_profile_time_the_network_and_its_stages(capsys):
    argv = ["--synthetic", "--size", "64", "--tasp-weights", "none"]
    assert speed.main(["profile", "tasp:fp32", *argv, "--max-keypoints", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### torch.profiler: tasp:fp32 (fp32) on one 64x48 image, mean of 3")
    stages = [line.split(" | ")[0][2:] for line in out.splitlines() if line.startswith("| ")]
    assert stages[0] == "stage" and "network" in stages  # TaSP's labelled stages
    assert speed.main(["variants", *argv, "--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == list(VARIANTS)
    assert rows[1].split(" | ")[3] == "1.00"  # the reference against itself
    with pytest.raises(SystemExit):  # only TaSP entries can be profiled
        speed.main(["profile", "sift", *argv])


def test_speed_api_times_the_api_the_command_line_and_a_peer(tmp_path, capsys):
    out = tmp_path / "api.json"
    args = ["--synthetic", "--n-images", "2", "--size", "160", "--repeats", "1"]
    speed.main(["api", *args, "--entries", "api", "cli", "sift", "--out", str(out)])
    text = capsys.readouterr().out
    assert "| TaSP().extract, plain Python process |" in text and "CPU: " in text
    report = json.loads(out.read_text())
    assert [r["entry"] for r in report["records"]] == ["api", "cli", "sift"]
    assert all(r["error"] is None for r in report["records"])
    # a difference of two walls for the command line (may be noise-negative on 2 tiny images)
    assert report["records"][0]["s_per_image"] > 0 and report["records"][2]["s_per_image"] > 0
    assert len(report["times"]["api"]) == 1  # the first of the 2 images is warm-up
    with pytest.raises(SystemExit):
        speed.main(["api", "--entries", "nothing"])


def test_speed_throughput_times_tasp_hloc_extract_and_checks_the_file(tmp_path, capsys):
    from benchmarks.speed import throughput

    out = tmp_path / "throughput.json"
    argv = ["throughput", "--synthetic", "--n-images", "2", "--size", "64", "--repeats", "1"]
    assert speed.main([*argv, "--max-keypoints", "32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["size"] == 64
    assert len(report["seconds"]["tasp_hloc.extract"]) == 1
    assert report["seconds"]["tasp_hloc.extract"][0] > 0
    text = capsys.readouterr().out
    assert "| tasp_hloc.extract |" in text
    if report["check"] is not None:  # hloc installed: its file holds the same features
        assert report["check"]["same_images"] and report["check"]["same_counts"]
    # the check itself, on two files that differ by one keypoint
    for name, shift in (("a.h5", 0.0), ("b.h5", 0.25)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("img.jpg/keypoints", data=np.array([[1.0, 2.0], [3.0 + shift, 4.0]]))
    assert throughput.compare_files(tmp_path / "a.h5", tmp_path / "b.h5") == {
        "same_images": True,
        "same_counts": True,
        "max_keypoint_diff_px": 0.25,
    }


def test_cpu_description_reads_model_and_units(tmp_path):
    from benchmarks.hardware import cpu_description

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    assert cpu_description(cpuinfo) == {
        "model": "AMD EPYC 9B14",
        "units": ["AVX2", "AVX-512", "AVX-512 BF16"],
    }
    assert cpu_description(tmp_path / "missing")["units"] == []


def test_tasp_gflop_counts_a_convolution_by_hand():
    from benchmarks.hardware import tasp_gflop

    class OneConv(torch.nn.Module):  # 3 -> 8 channels, 3x3, on 16x32: 2*3*9*8*16*32 FLOPs
        conf = {"fuse": True}

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)

        def forward_dense(self, image):
            assert self.conf["fuse"] is False  # counted on the plain modules
            return self.conv(image)

    model = OneConv()
    assert tasp_gflop(model, 16, 32) == pytest.approx(2 * 3 * 9 * 8 * 16 * 32 / 1e9)
    assert model.conf["fuse"] is True  # restored
    assert tasp_gflop(torch.nn.Identity(), 16, 32) is None
