"""The default released weights are real: they load, and they match the bundled image pair."""

import pytest

from tasp_hloc.confs import get_preset
from tasp_hloc.tasp import TaSP
from tasp_hloc.weights import read_manifest

DEFAULT = TaSP.default_conf["weights"]
pytestmark = pytest.mark.skipif(
    DEFAULT not in read_manifest()["weights"],
    reason=f"no released weights named {DEFAULT!r} in weights/manifest.json",
)


def test_default_weights_match_the_demo_pair_geometrically(tmp_path):
    from tasp_hloc.__main__ import DEMO_DIR
    from tasp_hloc.demo import run_demo

    conf = get_preset("tasp_aachen", max_keypoints=1024)
    results = run_demo(conf, DEMO_DIR, tmp_path, device="cpu")
    (stats,) = results.values()
    # An untrained network gets ~1 mutual match here (see the random-weights demo); trained
    # weights must find the box: many matches consistent with one homography.
    assert stats["inliers"] >= 30, stats
    assert stats["inliers"] >= 0.15 * stats["matches"], stats  # tasp_v1: 37 of 206
    assert stats["png"].exists()
