"""TaSP inside the real hloc: skipped with a reason where hloc is not installed."""

import h5py
import numpy as np
import pytest
import torch

from tasp_hloc.extract import extract
from tasp_hloc.match import match, write_pairs

from conftest import requires_hloc

pytestmark = requires_hloc


@pytest.fixture
def hloc_registered():
    from tasp_hloc.hloc.plugin import register

    register()
    import hloc

    return hloc


def test_register_makes_tasp_loadable(hloc_registered):
    from hloc import extract_features, extractors
    from hloc.utils.base_model import dynamic_load

    Model = dynamic_load(extractors, "tasp")
    assert Model.__module__ == "hloc.extractors.tasp"
    assert {"tasp", "tasp_aachen", "tasp_inloc"} <= set(extract_features.confs)
    scales = {k: extract_features.confs[k]["model"].get("scales") for k in ("tasp", "tasp_aachen")}
    assert scales == {"tasp": None, "tasp_aachen": [1.0, 0.71, 0.5]}
    assert extract_features.confs["tasp_inloc"]["preprocessing"]["resize_max"] == 1600
    model = Model({"weights": None, "max_keypoints": 20}).eval()
    with torch.no_grad():
        pred = model({"image": torch.rand(1, 3, 50, 70)})
    assert pred["keypoints"].shape == (1, 20, 2) and pred["descriptors"].shape == (1, 128, 20)
    assert pred["scores"].shape == (1, 20)
    assert Model.detection_noise == 1.0
    with pytest.raises(ValueError, match="int16"):
        Model({"weights": None, "max_keypoints": 40000})
    with pytest.raises(ValueError, match="strictly inside"):
        Model({"weights": None, "remove_borders": 0})


def test_register_is_idempotent_and_sets_weights(hloc_registered):
    from hloc import extract_features

    from tasp_hloc.hloc.plugin import register

    m1 = register()
    m2 = register(weights="some.pth")
    assert m1 is m2
    assert extract_features.confs["tasp_aachen"]["model"]["weights"] == "some.pth"
    register(weights=None)


def test_standalone_equals_hloc_extraction_and_matching(hloc_registered, image_dir, tmp_path):
    from hloc import extract_features, match_features
    from hloc.utils.io import get_keypoints, get_matches

    conf = {**extract_features.confs["tasp_aachen"]}
    conf = {
        "output": "feats",
        "model": {**conf["model"], "weights": None, "max_keypoints": 64},
        "preprocessing": {**conf["preprocessing"], "resize_max": 100},
    }
    torch.manual_seed(0)
    ours, _ = extract(conf, image_dir, tmp_path / "ours.h5", num_workers=0)
    torch.manual_seed(0)  # same random init for hloc's instance
    theirs = extract_features.main(conf, image_dir, feature_path=tmp_path / "hloc.h5")

    names = ["a.png", "b.jpg", "sub/c.png"]
    with h5py.File(ours, "r") as a, h5py.File(theirs, "r") as b:
        for name in names:
            assert set(a[name]) == set(b[name])
            for key in a[name]:
                ours_v, theirs_v = a[name][key][()], b[name][key][()]
                if key == "keypoints":  # never float16: ours float32, hloc's float64
                    assert ours_v.dtype == np.float32 and theirs_v.dtype == np.float64
                    theirs_v = theirs_v.astype(np.float32)
                assert ours_v.dtype == theirs_v.dtype, key
                assert np.array_equal(ours_v, theirs_v), (name, key)
            assert a[name]["descriptors"].dtype == np.float16  # as_half, hloc's default
            assert (
                a[name]["keypoints"].attrs["uncertainty"]
                == b[name]["keypoints"].attrs["uncertainty"]
            )
    kp, unc = get_keypoints(ours, "sub/c.png", return_uncertainty=True)
    assert kp.shape[1] == 2 and unc > 0

    pairs = write_pairs([("a.png", "b.jpg"), ("a.png", "sub/c.png")], tmp_path / "pairs.txt")
    for preset, max_distance in (("NN-mutual", None), ("NN-tasp", 0.6)):
        our_matches = match(
            pairs, ours, tmp_path / f"o-{preset}.h5", device="cpu", max_distance=max_distance
        )
        their_matches = match_features.main(
            match_features.confs[preset], pairs, features=ours, matches=tmp_path / f"h-{preset}.h5"
        )
        for n0, n1 in [("a.png", "b.jpg"), ("a.png", "sub/c.png")]:
            m_ours, s_ours = get_matches(our_matches, n0, n1)
            m_hloc, s_hloc = get_matches(their_matches, n0, n1)
            assert np.array_equal(m_ours, m_hloc), preset
            assert np.allclose(s_ours.astype(np.float32), s_hloc.astype(np.float32), atol=1e-3)


def test_inloc_scene_float16_storage_is_hlocs_as_half_and_is_undone(
    hloc_registered, image_dir, tmp_path, tiny_conf
):
    """experiments.inloc_scene's float16 arm stores what hloc's as_half made of float32
    keypoints, and the default arm gets the float64 keypoints back afterwards."""
    from hloc import extract_features

    from experiments.inloc_scene import keypoints_stored_as

    conf = {"output": "feats", **tiny_conf}
    files = {}
    for storage in ("float16", "float64"):
        torch.manual_seed(0)
        with keypoints_stored_as(storage):
            files[storage] = extract_features.main(
                conf, image_dir, feature_path=tmp_path / f"{storage}.h5"
            )
    with h5py.File(files["float16"], "r") as a, h5py.File(files["float64"], "r") as b:
        half, full = a["a.png"]["keypoints"][()], b["a.png"]["keypoints"][()]
    assert half.dtype == np.float16 and full.dtype == np.float64
    assert np.array_equal(half, full.astype(np.float32).astype(np.float16))
