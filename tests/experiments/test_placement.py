"""experiments.placement: crossing detectors and descriptors keeps rows aligned and conventions."""

import json

import numpy as np
import pytest

from benchmarks.features import load_method
from experiments import placement

from harness_data import fabricate_data, texture


def test_root_sift_at_keeps_keypoints_and_descriptors_row_aligned():
    img = texture()
    kpts = np.array([[40.0, 50.0], [160.5, 120.25], [300.0, 30.0]], np.float32)
    both = placement.root_sift_at(img, kpts, 12.0)
    assert both["keypoints"].shape == (3, 2) and both["descriptors"].shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(both["descriptors"], axis=1), 1, atol=1e-5)
    # each row is the descriptor of its own keypoint, whatever else is asked with it
    alone = placement.root_sift_at(img, kpts[1:2], 12.0)
    np.testing.assert_allclose(both["descriptors"][1], alone["descriptors"][0], atol=1e-6)
    assert not np.allclose(both["descriptors"][0], both["descriptors"][1])


def test_tasp_descriptors_at_its_own_keypoints_are_the_ones_it_extracts():
    tasp = load_method("tasp", max_keypoints=200, weights="tasp_v2")  # random init: one vector
    img = texture(seed=1)
    own = tasp.extract(img)
    assert len(own["keypoints"]) > 20
    again = placement.tasp_descriptors_at(tasp.model, img, own["keypoints"])
    np.testing.assert_allclose(again, own["descriptors"], atol=1e-4)
    # half a descriptor cell away the vector changes: the sampling follows the keypoints
    moved = placement.tasp_descriptors_at(tasp.model, img, own["keypoints"] + 2.0)
    assert np.abs(moved - own["descriptors"]).max() > 1e-3


def test_placement_crosses_four_combinations_on_generated_pairs(tmp_path, capsys):
    fabricate_data(tmp_path)  # photos/held_out (2 photos) and a pose pair set eval/pairs
    out = tmp_path / "placement.json"
    placement.main(
        [
            "--data",
            str(tmp_path),
            "--max-side",
            "320",
            "--homography-source",
            "photos/held_out",
            "--homography-images",
            "1",
            "--pose-sets",
            "eval/pairs",
            "--tasp-weights",
            "none",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "| SIFT | TaSP |" in text and "| TaSP | RootSIFT |" in text
    assert "pairs LO AUC@5/10/20" in text
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["sift+sift", "sift+tasp", "tasp+sift", "tasp+tasp"]
    assert all(r["all"]["n_pairs"] == 4 for r in results.values())
    assert all(r["pose"]["pairs"]["n_pairs"] == 1 for r in results.values())
    # RootSIFT on its own keypoints is compare's RootSIFT: easy textures match at 3 px
    assert results["sift+sift"]["all"]["mma"]["3"] > 0.5


def test_placement_without_pairs_says_where_it_looked(tmp_path):
    with pytest.raises(SystemExit, match="photos/missing not found"):
        placement.main(["--data", str(tmp_path), "--homography-source", "photos/missing"])
