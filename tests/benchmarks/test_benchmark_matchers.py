"""benchmarks.matchers: hloc's matcher presets, by hand and against hloc itself."""

import numpy as np
import pytest
import torch

from benchmarks.matchers import MATCHERS, NEAREST_NEIGHBOUR, matcher_table

from conftest import requires_hloc


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ratio_and_distance_cuts_by_hand():
    # image 1: the true match of 0, a near-duplicate of it, the match of 1
    d0 = _unit([[1, 0, 0], [0, 1, 0]])
    d1 = _unit([[1, 0.05, 0], [1, -0.06, 0], [0.2, 1, 0]])
    f0, f1 = {"descriptors": d0}, {"descriptors": d1}
    assert MATCHERS["NN-mutual"](f0, f1).tolist() == [[0, 0], [1, 2]]
    # 0's two neighbours are almost equally close: the ratio test drops it, not 1
    assert MATCHERS["NN-ratio"](f0, f1).tolist() == [[1, 2]]
    # cos(1's match) = 0.98: squared distance 0.039 passes 0.6^2 = 0.36 and 0.7^2
    assert MATCHERS["NN-tasp"](f0, f1).tolist() == [[0, 0], [1, 2]]
    far = {"descriptors": _unit([[1, 0, 1], [0, 1, 1.2]])}  # cos 0.71 / 0.64 with d0
    assert MATCHERS["NN-tasp"](f0, far).tolist() == []
    assert MATCHERS["NN-mutual"](f0, far).tolist() == [[0, 0], [1, 1]]


@requires_hloc
@pytest.mark.parametrize("name", list(NEAREST_NEIGHBOUR))
def test_nearest_neighbour_matchers_equal_hlocs(name):
    from hloc import match_features
    from hloc.matchers.nearest_neighbor import NearestNeighbor

    conf = match_features.confs.get(name, {}).get("model")
    ratio, distance = NEAREST_NEIGHBOUR[name]
    if conf is None:  # not an hloc preset: hloc's matcher with the same thresholds
        conf = {
            "name": "nearest_neighbor",
            "ratio_threshold": ratio,
            "distance_threshold": distance,
        }
    assert (conf.get("ratio_threshold"), conf.get("distance_threshold")) == (ratio, distance)
    g = torch.Generator().manual_seed(0)
    d0 = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    d1 = torch.nn.functional.normalize(d0[:250] + 0.15 * torch.randn(250, 16, generator=g), dim=1)
    out = NearestNeighbor(conf)({"descriptors0": d0.T[None], "descriptors1": d1.T[None]})
    m0 = out["matches0"][0]
    expected = [[i, int(j)] for i, j in enumerate(m0) if j > -1]
    got = MATCHERS[name]({"descriptors": d0.numpy()}, {"descriptors": d1.numpy()}).tolist()
    assert got == expected and len(got) > 10


def test_adalam_keeps_a_consistent_motion():
    g = np.random.default_rng(0)
    k0 = g.uniform(20, 300, (400, 2)).astype(np.float32)
    d = _unit(g.normal(size=(400, 32)))
    k1 = k0 + np.float32([13.0, -7.0])
    wrong = g.permutation(400)[:80]  # a fifth of the descriptors of image 1 shuffled
    d1 = d.copy()
    d1[wrong] = d[np.roll(wrong, 1)]
    f0 = {"keypoints": k0, "descriptors": d, "image_size": np.array([320, 320])}
    f1 = {"keypoints": k1, "descriptors": d1, "image_size": np.array([320, 320])}
    matches = MATCHERS["adalam"](f0, f1)
    assert len(matches) > 250
    assert np.mean(matches[:, 0] == matches[:, 1]) > 0.95


def test_matcher_table_lists_each_method_and_matcher():
    pose = {"matches": 10.0, "inliers": 5.0, "auc": {5: 0.1, 10: 0.2, 20: 0.3}, "auc_lo": None}
    hom = {"all": {"matches": 50.0, "mma": {1: 0.5, 3: 0.9}}}
    report = {
        "methods": {
            "tasp": {
                "pose": {"s": pose},
                "matchers": {"NN-ratio": {"homography": hom, "pose": {"s": pose}}},
            }
        }
    }
    text = "\n".join(matcher_table(report))
    assert "| tasp | NN-ratio | 50 | 50.0 / 90.0 | 10 / 5 / 10.0 / 20.0 / 30.0 |" in text
    assert matcher_table({"methods": {"tasp": {"pose": {}}}}) == []


def test_a_degenerate_sample_is_a_failed_pair_not_a_crash(monkeypatch):
    import cv2

    from benchmarks import metrics

    def fail(*args, **kwargs):
        raise cv2.error("solvePoly: degenerate")

    monkeypatch.setattr(metrics.cv2, "findEssentialMat", fail)
    k = np.random.default_rng(0).uniform(0, 300, (8, 2))
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    assert metrics.estimate_relative_pose(k, k + 1, K, K) is None
