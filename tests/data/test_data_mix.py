import cv2
import numpy as np
import pytest
import torch

from tasp_hloc.data import SAMPLE_KEYS, MixedDataset, build_dataset, collate, get_dataset


def make_photos(folder, n, value):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(value)
    for i in range(n):
        img = rng.integers(0, 255, (80, 100, 3)).astype(np.uint8)
        img[:, :, 0] = value  # tag the source in the red channel
        cv2.imwrite(str(folder / f"{i}.png"), img[..., ::-1])


@pytest.fixture
def sources(tmp_path):
    make_photos(tmp_path / "a", 2, 10)
    make_photos(tmp_path / "b", 3, 240)
    common = {
        "name": "homographic",
        "size": [32, 32],
        "short_side": [40, 60],
        "photometric": {"enable": False},
    }
    return [
        dict(common, image_dirs=[str(tmp_path / "a")]),
        dict(common, image_dirs=[str(tmp_path / "b")]),
    ]


def source_of(sample):
    return "a" if abs(float(sample["image0"][0].mean()) - 10 / 255) < 0.01 else "b"


def test_mix_weights_seed_and_length(sources):
    mix = build_dataset(
        {
            "name": "mix",
            "seed": 0,
            "length": 40,
            "sources": [dict(sources[0], weight=1.0), dict(sources[1], weight=0.0)],
        }
    )
    assert len(mix) == 40 and {source_of(mix[i]) for i in range(10)} == {"a"}
    mix = get_dataset("mix")(
        {"seed": 0, "sources": [dict(sources[0], weight=1.0), dict(sources[1], weight=3.0)]}
    )
    assert len(mix) == 5  # default: sum of the sources' lengths
    mix.conf["length"] = 60
    names = [source_of(mix[i]) for i in range(60)]
    assert 25 < names.count("b") < 58 and names.count("a") > 2
    assert torch.equal(mix[7]["image1"], mix[7]["image1"])
    mix.set_epoch(1)
    assert [source_of(mix[i]) for i in range(60)] != names


def test_collate(sources):
    ds = build_dataset(dict(sources[0]))
    batch = collate([ds[0], ds[1]])
    assert set(SAMPLE_KEYS) <= set(batch) <= set(SAMPLE_KEYS) | {"source0", "source0_to_image0"}
    assert batch["image0"].shape == (2, 3, 32, 32) and batch["valid1"].dtype == torch.bool
    assert batch["is_homography"].shape == (2,) and batch["name"][1] == ds[1]["name"]
    other = build_dataset(dict(sources[1], size=[32, 48]))
    with pytest.raises(ValueError, match="image0"):
        collate([ds[0], other[0]])
    with pytest.raises(ValueError):
        collate([])


def test_registry_errors():
    with pytest.raises(ValueError, match="available"):
        get_dataset("nope")
    with pytest.raises(KeyError, match="name"):
        build_dataset({"image_dirs": []})
    with pytest.raises(ValueError, match="bad weights"):
        MixedDataset({}, datasets=[[1]], weights=[-1.0])
    try:  # "synthetic" is written separately; either it imports or says why not
        get_dataset("synthetic")
    except ImportError as e:
        assert "synthetic" in str(e)
