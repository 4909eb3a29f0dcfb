"""The CPU dry run of benchmarks/gpu_check.sh (its python part, tiny inputs) and the tolerance
logic it applies."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]


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
