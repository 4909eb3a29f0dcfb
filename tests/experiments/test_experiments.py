"""The one-question studies of experiments/: their tables read results as stored, their
drivers resume and measure what they should (training and compare stubbed where they are slow)."""

import json

import numpy as np
import pytest
import torch

from benchmarks import compare


def test_ablation_table_reads_results_as_stored():
    from experiments.ablations import ARMS, table

    mma = {"1": 0.2, "3": 0.5, "5": 0.7, "10": 0.75}
    hom = {
        "all": {"mma": mma, "matches": 1000.0},
        "illumination": {"mma": mma},
        "viewpoint": {"mma": {**mma, "3": 0.25}},
    }
    text = table({"reference": {"bench": {"homography": hom}, "train_wall_s": 600.0}})
    row = text.splitlines()[-1]
    assert row.startswith("| reference | " + ARMS["reference"].changes)
    assert "| 20.0 | 50.0 | 70.0 | 75.0 | 50.0 | 25.0 | 1000 | 10 |" in row
    # pose sets: LO-RANSAC AUC@5/10/20, then AUC@5 per scale-ratio bin where the set has them;
    # an arm without a set or a bin gets "-"
    auc = {"5": 0.5, "10": 0.6, "20": 0.7}
    lund = {"auc_lo": auc, "by_scale": {"1-1.25": {"auc_lo": auc}, ">=1.6": {"auc_lo": {"5": 0}}}}
    results = {
        "mv_sfm": {"bench": {"homography": hom, "pose": {"lund": lund}}, "train_wall_s": 60.0},
        "mv_no_sfm": {"bench": {"homography": hom, "pose": {}}, "train_wall_s": 60.0},
    }
    lines = table(results).splitlines()
    heads = "| lund LO AUC@5/10/20 | lund 1-1.25x AUC@5 | lund >=1.6x AUC@5 | train min |"
    assert lines[0].endswith(heads)
    assert lines[2].endswith("| 1000 | 50.0 / 60.0 / 70.0 | 50.0 | 0.0 | 1 |")
    assert lines[3].endswith("| 1000 | - | - | - | 1 |")


def test_ablation_main_resumes_and_measures_the_control_on_homographies(tmp_path, monkeypatch):
    from experiments import ablations

    mma = {"1": 0.2, "3": 0.5, "5": 0.7, "10": 0.75}
    hom = {"all": {"mma": mma, "matches": 10.0}, "illumination": {"mma": mma}}
    hom["viewpoint"] = {"mma": mma}
    calls = []

    def evaluate(arm, root, args, tasp_conf, pose_sets):
        calls.append((arm, tasp_conf["subpixel"], pose_sets))
        return {"homography": hom}

    monkeypatch.setattr(
        ablations, "train", lambda arm, steps, root: {"train_wall_s": 1.0, "steps": steps}
    )
    monkeypatch.setattr(ablations, "evaluate", evaluate)
    argv = ["--group", "multiview", "--root", str(tmp_path), "--steps", "5"]
    argv += ["--arms", "mv_sfm_scale", "mv_sfm_scale_softargmax"]
    ablations.main(argv)
    sets = ablations.POSE_SETS["multiview"]
    assert calls == [
        ("mv_sfm_scale", "auto", sets),  # TaSP's default: the corner snap for this head
        ("mv_sfm_scale_softargmax", "centroid", "none"),
    ]
    ablations.main(argv)  # both finished: nothing is measured again
    assert len(calls) == 2
    ablations.main(argv[:-2] + ["mv_sfm_scale", "--steps", "6"])  # another budget is another run
    assert len(calls) == 3


def test_learning_curve_exports_checkpoints_and_reads_reports(tmp_path):
    from experiments import learning_curve
    from tasp_hloc.model.tasp import TaSP
    from tasp_hloc.model.weights import read_manifest

    model = TaSP({"weights": None}).state_dict()
    torch.save(
        {
            "model": model,
            "step": 400,
            "config": {"name": "run_a"},
            "rng": {"numpy": np.random.get_state()},
        },
        tmp_path / "ckpt.pth",
    )
    out, step, run = learning_curve.export_checkpoint(tmp_path / "ckpt.pth", tmp_path / "lc")
    assert (step, run, out.name) == (400, "run_a", "run_a_step400.pth")
    exported = torch.load(out, weights_only=True)
    assert exported.keys() == model.keys()
    assert all(torch.equal(exported[k], v) for k, v in model.items())
    # train.export's file and manifest entry: TaSP loads it by path.
    assert read_manifest(tmp_path / "lc")["weights"]["run_a_step400"]["recipe"]["steps"] == 400
    loaded = TaSP({"weights": str(out)}).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.items())
    torch.save(model, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        learning_curve.export_checkpoint(tmp_path / "plain.pth", tmp_path / "lc")
    mma = {"1": 0.25, "3": 0.5, "5": 0.625, "10": 0.75}
    report = {
        "pose_sets": ["strecha_dev", "scannet_pairs"],
        "methods": {
            "tasp": {
                "homography": {
                    "all": {"mma": mma},
                    "illumination": {"mma": {"3": 0.6}},
                    "viewpoint": {"mma": {"3": 0.4}},
                },
                "pose": {
                    "scannet_pairs": {"auc": {"5": 0, "10": 0, "20": 0}, "matches": 1},
                    "strecha_dev": {
                        "auc": {"5": 0.1, "10": 0.2, "20": 0.3},
                        "auc_lo": {"5": 0.4, "10": 0.5, "20": 0.6},
                        "matches": 812,
                    },
                },
            }
        },
    }
    assert learning_curve.row("run_a", "400", report) == [
        "run_a",
        "400",
        "25.0",
        "50.0",
        "62.5",
        "75.0",
        "60.0",
        "40.0",
        "10.0",
        "20.0",
        "30.0",
        "40.0",
        "50.0",
        "60.0",
        "812",
    ]
    # A report from before LO-RANSAC (or without pycolmap) leaves those columns blank.
    del report["methods"]["tasp"]["pose"]["strecha_dev"]["auc_lo"]
    assert learning_curve.row("run_a", "400", report)[-4:] == ["-", "-", "-", "812"]


def test_learning_curve_measures_in_process_once_per_weights(tmp_path, monkeypatch):
    from experiments import learning_curve

    calls = []

    def fake_run(args):
        calls.append(args)
        return {"methods": {"tasp": {"speed": {"time_median_s": float("nan")}}}}

    monkeypatch.setattr(compare, "run", fake_run)
    args = learning_curve.parse_args(["--data", str(tmp_path), "--max-side", "320", "--quick"])
    out = tmp_path / "lc" / "w.json"
    first = learning_curve.measure("w.pth", out, args)
    again = learning_curve.measure("w.pth", out, args)
    assert len(calls) == 1 and again == json.loads(out.read_text())
    assert (calls[0].tasp_weights, calls[0].max_side, calls[0].quick) == ("w.pth", 320, True)
    assert calls[0].methods == ["tasp"] and calls[0].data == tmp_path
    # The cache holds valid JSON: NaN written as null.
    assert np.isnan(first["methods"]["tasp"]["speed"]["time_median_s"])
    assert again["methods"]["tasp"]["speed"]["time_median_s"] is None


def test_inloc_scene_counts_localized_queries_per_threshold():
    from experiments.inloc_scene import localized_counts

    stats = {"DUC1": (2, [0.5, 1.0, 1.0], (0.1, 1.0)), "DUC2": (3, [0.0, 1 / 3, 2 / 3], (2.0, 9.0))}
    assert localized_counts(stats) == [1, 3, 4]


def test_train_step_variants_and_depthwise_fp32(capsys):
    from experiments import train_step
    from tasp_hloc.train.precision import keep_depthwise_fp32

    conv_dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    conv_pw = torch.nn.Conv2d(8, 8, 1)
    net = torch.nn.Sequential(conv_dw, conv_pw)
    keep_depthwise_fp32(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.rand(1, 8, 6, 6)
        assert conv_dw(x).dtype == torch.float32 and conv_pw(x).dtype == torch.bfloat16
    # glibc only: keeping freed memory would change this test process for good
    argv = ["--batch", "1", "--size", "64", "--steps", "1", "--device", "cpu"]
    train_step.main([*argv, "--allocator", "glibc"])
    rows = [
        r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "---" not in r
    ]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| fp32, glibc malloc",
        "| bf16 autocast, glibc malloc",
        "| bf16, depthwise fp32, glibc malloc",
    ]
    assert rows[1].split(" | ")[6] == "1.00x"


def test_keypoint_storage_rounds_like_a_float16_file():
    from experiments.keypoint_precision import render, stored

    kp = np.array([[100.3, 200.7], [1000.25, 10.5]])
    # stored 3x larger: 3000.75 as float16 is 3000 or 3002 (steps of 2 above 2048)
    f16 = stored(kp, 3.0, np.float16)
    assert np.abs(f16 - kp).max() * 3 <= 1.0 + 1e-9 and not np.allclose(f16, kp)
    np.testing.assert_allclose(stored(kp, 3.0, np.float32), kp, atol=1e-3)
    auc = {5: 0.5, 10: 0.6, 20: 0.7}
    text = render({"sift": {"float16": {"strecha": {"auc": auc, "auc_lo": None}}}}, 3072)
    assert "| sift | float16 | strecha | 50.0 | 60.0 | 70.0 | - | - | - |" in text
