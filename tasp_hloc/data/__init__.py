"""Training pair datasets.

Every source returns the same pair-sample dict (torch tensors, before collation):

- ``image0``, ``image1``: 3 x H x W float32 in [0, 1], RGB (grayscale repeated);
- ``depth0``, ``depth1``: H x W float32, 0 = unknown, arbitrary unit per scene;
- ``K0``, ``K1``: 3 x 3 float32, for the images exactly as returned;
- ``T_1from0``: 4 x 4 float32, cam1_from_cam0 (identity for homographic pairs);
- ``H_1from0``: 3 x 3 float32, image-0 pixels -> image-1 pixels (identity for pose pairs);
- ``is_homography``: bool scalar tensor;
- ``valid0``, ``valid1``: H x W bool, pixels holding real image content;
- ``name``: str.

Homographic pairs carry a constant plane depth (1.0) and a nominal K (f = max(H, W), centred)
so that 3D quantities are defined. Correspondences of any batch: :func:`tasp_hloc.data.geometry.warp_points`.

Build a dataset from a conf with :func:`build_dataset`; ``{"name": "mix", "sources": [...]}``
mixes several with per-source weights.
"""

from __future__ import annotations

import importlib
from typing import List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..options import with_defaults
from .utils import make_rng

_REGISTRY = {
    "homographic": ("tasp_hloc.data.homographic", "HomographicDataset"),
    "rgbd": ("tasp_hloc.data.rgbd", "RGBDDataset"),
    "megadepth": ("tasp_hloc.data.megadepth", "MegaDepthDataset"),
    # rendered scenes of textured planes, written separately with the same sample format
    "synthetic": ("tasp_hloc.data.synthetic", ("SyntheticScenes", "SyntheticDataset")),
}

SAMPLE_KEYS = (
    "image0",
    "image1",
    "depth0",
    "depth1",
    "K0",
    "K1",
    "T_1from0",
    "H_1from0",
    "is_homography",
    "valid0",
    "valid1",
    "name",
)


def get_dataset(name: str):
    """The dataset class registered under ``name`` ("homographic", "rgbd", "megadepth", "synthetic", "mix")."""
    if name == "mix":
        return MixedDataset
    if name not in _REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}; available: {sorted(_REGISTRY) + ['mix']}.")
    module, classes = _REGISTRY[name]
    classes = (classes,) if isinstance(classes, str) else classes
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"Dataset {name!r} (module {module}) is not available: {e}") from e
    for cls in classes:
        if hasattr(mod, cls):
            return getattr(mod, cls)
    raise ImportError(f"Dataset {name!r}: {module} defines none of {list(classes)}.")


def build_dataset(conf: dict) -> Dataset:
    """Instantiate from ``{"name": ..., **conf}`` (or a "mix" conf)."""
    conf = dict(conf)
    name = conf.pop("name", None)
    if name is None:
        raise KeyError(
            "Dataset conf needs a 'name' (e.g. 'homographic', 'rgbd', 'megadepth', 'mix')."
        )
    return get_dataset(name)(conf)


class MixedDataset(Dataset):
    """Mix of sources drawn with per-source weights.

    Item ``k`` of an epoch draws its source with probability proportional to the weights and a
    random item of that source, both from a generator seeded by (seed, epoch, k).

    Conf: ``sources``: list of ``{"name": ..., "weight": w, **source_conf}``; ``length``: items
    per epoch (default: the sum of the sources' lengths); ``seed`` (also seeds the sources
    that have none).
    """

    default_conf = {"sources": [], "length": None, "seed": None}

    def __init__(
        self,
        conf: Optional[dict] = None,
        datasets: Optional[List[Dataset]] = None,
        weights: Optional[List[float]] = None,
    ):
        self.conf = with_defaults(self.default_conf, conf, "MixedDataset")
        if datasets is None:
            datasets, weights = [], []
            for k, src in enumerate(self.conf["sources"]):
                src = dict(src)
                weights.append(float(src.pop("weight", 1.0)))
                if src.get("seed") is None and self.conf["seed"] is not None:
                    src["seed"] = int(self.conf["seed"]) * 1000 + k  # a seeded mix is reproducible
                datasets.append(build_dataset(src))
        if not datasets:
            raise ValueError("MixedDataset: 'sources' is empty.")
        weights = np.asarray(weights if weights is not None else [1.0] * len(datasets), float)
        if weights.shape != (len(datasets),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"MixedDataset: bad weights {weights.tolist()} for {len(datasets)} sources."
            )
        for d in datasets:
            if len(d) == 0:
                raise ValueError(f"MixedDataset: source {type(d).__name__} is empty.")
        self.datasets = datasets
        self.probs = weights / weights.sum()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        n = self.conf["length"]
        return int(n) if n is not None else sum(len(d) for d in self.datasets)

    def __getitem__(self, index: int) -> dict:
        rng = make_rng(self.conf["seed"], self.epoch, index)
        s = int(rng.choice(len(self.datasets), p=self.probs))
        return self.datasets[s][int(rng.integers(len(self.datasets[s])))]


def collate(samples: List[dict]) -> dict:
    """Stack a list of pair samples into a batch (``name`` becomes a list of str)."""
    if not samples:
        raise ValueError("collate: empty list of samples.")
    out = {}
    shared = set.intersection(*(set(s) for s in samples))  # optional keys (source0) may differ
    for key in (k for k in samples[0] if k in shared):
        vals = [s[key] for s in samples]
        if isinstance(vals[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in vals}
            if len(shapes) > 1:
                raise ValueError(
                    f"collate: '{key}' has different shapes {sorted(shapes)}; give all sources "
                    "the same crop 'size'."
                )
            out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out


__all__ = ["get_dataset", "build_dataset", "MixedDataset", "collate", "SAMPLE_KEYS"]
