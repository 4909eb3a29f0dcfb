"""The CPU dry run of benchmarks/gpu_check.sh (its python part, tiny inputs), the tolerance
logic it applies, and extract_speed's table of TaSP modes with accuracy deltas."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(tmp_path, capsys):
    out = tmp_path / "check.json"
    rc = gpu_check.main(
        [
            "--device",
            "cpu",
            "--synthetic",
            "--size",
            "96",
            "--n-images",
            "2",
            "--batch",
            "2",
            "--speed-images",
            "2",
            "--max-keypoints",
            "256",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert rc == 0, text
    assert set(report["agreement"]) == {"fp32", "bf16"}  # CPU fp16 convolutions: too slow
    fp32 = report["agreement"]["fp32"]
    # on the CPU "the device" is the fused network: it equals the plain modules
    assert fp32["passed"] and fp32["logits_max"] < 1e-3 and fp32["repeatability"] > 0.98
    for mode in ("fp32", "bf16"):
        assert report["agreement"][mode]["passed"], report["agreement"][mode]
        speed = report["speed"][mode]
        assert speed["batch 2"] > 0 and speed["tasp_hloc.extract"] > 0
    assert "| fp32 |" in text and "pass" in text


def test_gpu_check_compare_flags_disagreement():
    ref_dense = {
        "logits": torch.zeros(1, 65, 2, 2),
        "descriptors_dense": torch.ones(1, 4, 4, 4) / 2,
    }
    kpts = torch.tensor([[[1.0, 1.0], [5.0, 5.0]]])
    ref = {
        "keypoints": kpts,
        "keypoint_mask": torch.ones(1, 2, dtype=torch.bool),
        "descriptors": torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
    }
    moved = {**ref, "keypoints": kpts + torch.tensor([[[0.5, 0.0], [2.0, 0.0]]])}
    row = gpu_check.compare(
        ref_dense, {**ref_dense, "logits": ref_dense["logits"] + 0.1}, ref, moved
    )
    assert row["logits_max"] == pytest.approx(0.1) and row["desc_map_cos"] == pytest.approx(1.0)
    assert row["repeatability"] == 0.5 and row["kpt_desc_cos"] == pytest.approx(1.0)


@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None,
    reason="needs bash and coreutils' timeout",
)
def test_gpu_check_script_refuses_cuda_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would run the full check")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode != 0 and "No CUDA device" in proc.stderr


def test_extract_speed_table_of_modes_with_accuracy(tmp_path, capsys):
    from benchmarks import extract_speed

    def report(mma1, auc5):
        tasp = {
            "homography": {"all": {"mma": {"1": mma1, "3": 0.78}}},
            "pose": {"strecha_dev": {"auc": {"5": auc5, "10": 0.85, "20": 0.92}}},
        }
        path = tmp_path / f"{mma1}.json"
        path.write_text(json.dumps({"methods": {"tasp": tasp}}))
        return path

    out = tmp_path / "speed.json"
    extract_speed.main(
        [
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
