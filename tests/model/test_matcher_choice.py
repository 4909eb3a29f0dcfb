"""Which matcher TaSP's features get: a ratio test is measured to fail with them."""

import logging

from tasp_hloc.hloc.confs import PRESETS, matcher_warning

RATIO = {
    "output": "matches-NN-ratio",
    "model": {"name": "nearest_neighbor", "ratio_threshold": 0.8},
}
MUTUAL = {
    "output": "matches-NN-mutual",
    "model": {"name": "nearest_neighbor", "do_mutual_check": True},
}
SIFT = {"output": "feats-sift", "model": {"name": "dog"}}


def test_a_ratio_test_on_tasp_features_warns_with_the_matcher_to_use():
    assert matcher_warning(PRESETS["tasp_dog"], RATIO) is None  # measured to work at DoG points
    for name, preset in PRESETS.items():
        if name == "tasp_dog":
            continue
        line = matcher_warning(preset, RATIO)
        assert line and "NN-mutual" in line and preset["output"] in line, name
        assert matcher_warning(preset, MUTUAL) is None
    assert matcher_warning(SIFT, RATIO) is None


def test_eth_matches_tasp_with_mutual_nn_and_sift_with_its_ratio_test():
    from pipelines import eth

    assert eth.eth_matcher(PRESETS["tasp"]) == eth.TASP_MATCHER
    assert "ratio_threshold" not in eth.TASP_MATCHER["model"]
    assert eth.eth_matcher(SIFT) == eth.ETH_MATCHER


def test_pipelines_log_the_warning(monkeypatch, tmp_path, caplog):
    from pipelines import hloc_steps

    monkeypatch.setattr(hloc_steps, "require_hloc", lambda: None)
    monkeypatch.setattr(hloc_steps, "repair_h5", lambda *a: None)
    calls = []

    class FakeMatchFeatures:
        @staticmethod
        def main(*args, **kwargs):
            calls.append(args)
            return kwargs["matches"]

    import sys
    import types

    fake = types.ModuleType("hloc")
    fake.match_features = FakeMatchFeatures
    monkeypatch.setitem(sys.modules, "hloc", fake)
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        hloc_steps.match(RATIO, tmp_path / "pairs.txt", PRESETS["tasp"], tmp_path)
    assert calls and "NN-mutual" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        hloc_steps.match(MUTUAL, tmp_path / "pairs.txt", PRESETS["tasp_dog"], tmp_path)
    assert "NN-mutual" not in caplog.text
