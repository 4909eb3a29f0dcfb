"""NetVLAD (VGG16 conv5_3 + NetVLAD + whitening) in plain torch, loading hloc's checkpoints.

hloc's own `extractors/netvlad.py` builds the trunk with torchvision, which is not installable with
a CPU torch here. This module reads the same MATLAB struct file (`Pitts30K_struct.mat`, exported
with netvlad_tf_open's net_class2struct.m) and applies the same conversion:
- `net.layers[0..28]`: the VGG16 `features` sequence up to conv5_3 (conv/relu/pool, no final ReLU);
  conv weights stored S x S x IN x OUT -> OUT x IN x S x S.
- `net.layers[30]`: NetVLAD, weights {assignment D x K, centres D x K (stored negated)}.
- `net.layers[33]`: whitening, weights {1 x 1 x D*K x OUT, OUT}.
- `net.meta.normalization.averageImage[0, 0]`: RGB mean subtracted from 0-255 input.
Layer sizes are read from the file, so a small random checkpoint in the same layout (tests) works.

Global descriptors go to an hloc-format .h5 (`<name>/global_descriptor`), which
`hloc.pairs_from_retrieval` reads; `extract()` runs through hloc's `extract_features` by
registering this model as an hloc extractor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipelines import hloc_steps
from pipelines.common import require_hloc
from pipelines.h5_repair import repair_h5

CHECKPOINT_URL = "https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat"
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
NETVLAD_LAYER, WHITEN_LAYER = 30, 33
EXTRACTOR_NAME = "netvlad_mat"  # registered as hloc.extractors.netvlad_mat
OUTPUT_NAME = "global-feats-netvlad"  # hloc's own output name: files are interchangeable


def default_checkpoint() -> Path:
    """Where hloc caches the Pitts30K checkpoint (so both find the same file)."""
    return Path(torch.hub.get_dir(), "netvlad", "VGG16-NetVLAD-Pitts30K.mat")


def missing_weights_message(path: Path) -> str:
    return (
        f"NetVLAD weights not found at {path}.\nDownload {CHECKPOINT_URL} and either save it "
        f"as {default_checkpoint()} (hloc's cache path) or pass its location with "
        "--netvlad-weights /path/to/Pitts30K_struct.mat. For small datasets, "
        "--retrieval exhaustive skips NetVLAD altogether."
    )


class NetVLADNet(nn.Module):
    """image (B, 3, H, W) RGB in [0, 1] -> global descriptor (B, OUT), L2-normalised."""

    def __init__(self, convs, score_w, centers, whiten_w=None, whiten_b=None, mean=None):
        super().__init__()
        layers, it = [], iter(convs)
        for i, v in enumerate(VGG16_CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            w, b = next(it)  # OUT x IN x S x S, OUT
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
            conv.weight.data.copy_(w)
            conv.bias.data.copy_(b)
            layers.append(conv)
            if i < len(VGG16_CFG) - 1:  # conv5_3 is used before its ReLU
                layers.append(nn.ReLU(inplace=True))
        self.backbone = nn.Sequential(*layers)
        self.score_w = nn.Parameter(score_w)  # K x D
        self.centers = nn.Parameter(centers)  # D x K
        self.whiten = None
        if whiten_w is not None:
            self.whiten = nn.Linear(whiten_w.shape[1], whiten_w.shape[0])
            self.whiten.weight.data.copy_(whiten_w)
            self.whiten.bias.data.copy_(whiten_b)
        self.register_buffer(
            "mean",
            torch.as_tensor(np.zeros(3) if mean is None else mean, dtype=torch.float32).view(
                1, -1, 1, 1
            ),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.clamp(0, 1) * 255.0 - self.mean
        x = self.backbone(x)  # B x D x h x w
        x = F.normalize(x.flatten(2), dim=1)  # B x D x N, pre-normalisation
        a = torch.softmax(torch.einsum("kd,bdn->bkn", self.score_w, x), dim=1)  # B x K x N
        # sum_n a_kn (x_n - c_k) without materialising the B x D x K x N residuals.
        desc = torch.einsum("bkn,bdn->bdk", a, x) - self.centers[None] * a.sum(-1)[:, None]
        desc = F.normalize(desc, dim=1)  # intra-normalisation, B x D x K
        desc = F.normalize(desc.reshape(desc.shape[0], -1), dim=1)  # D-major flattening
        if self.whiten is not None:
            desc = F.normalize(self.whiten(desc), dim=1)
        return desc


def check_weights(checkpoint: Optional[Path], export_dir: Path):
    """Fail before any long work when retrieval will need weights that are not there."""
    checkpoint = Path(checkpoint or default_checkpoint())
    if not checkpoint.exists() and not Path(export_dir, OUTPUT_NAME + ".h5").exists():
        raise FileNotFoundError(missing_weights_message(checkpoint))


def load_checkpoint(path: Path, whiten: bool = True) -> NetVLADNet:
    """Build the network from a MATLAB struct checkpoint in hloc's layout."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(missing_weights_message(path))
    try:
        mat = loadmat(str(path), struct_as_record=False, squeeze_me=True)
        layers = mat["net"].layers
        convs = []
        for i, v in enumerate(_layer_sequence()):
            if v == "conv":
                w, b = layers[i].weights[0], layers[i].weights[1]
                convs.append(
                    (
                        torch.tensor(np.asarray(w), dtype=torch.float32).permute(3, 2, 0, 1),
                        torch.tensor(np.asarray(b), dtype=torch.float32).reshape(-1),
                    )
                )
        score_w = torch.tensor(
            np.asarray(layers[NETVLAD_LAYER].weights[0]), dtype=torch.float32
        ).T.contiguous()  # K x D
        centers = -torch.tensor(np.asarray(layers[NETVLAD_LAYER].weights[1]), dtype=torch.float32)
        ww = wb = None
        if whiten:
            w = np.asarray(layers[WHITEN_LAYER].weights[0])
            ww = torch.tensor(w.reshape(w.shape[-2], w.shape[-1]), dtype=torch.float32).T
            wb = torch.tensor(
                np.asarray(layers[WHITEN_LAYER].weights[1]), dtype=torch.float32
            ).reshape(-1)
        avg = mat["net"].meta.normalization.averageImage
        mean = np.asarray(avg)[0, 0] if np.ndim(avg) >= 2 else np.asarray(avg)
        mean = np.asarray(mean, np.float32).reshape(-1)
    except (KeyError, AttributeError, IndexError, ValueError, TypeError) as e:
        raise ValueError(
            f"{path} is not a NetVLAD checkpoint in hloc's layout "
            f"(Pitts30K_struct.mat from {CHECKPOINT_URL}): {e!r}"
        ) from e
    return NetVLADNet(convs, score_w, centers, ww, wb, mean).eval()


def _layer_sequence():
    """The MATLAB layer kinds, index-aligned with torchvision's VGG16 `features` up to conv5_3."""
    seq = []
    for i, v in enumerate(VGG16_CFG):
        seq += ["pool"] if v == "M" else (["conv", "relu"] if i < len(VGG16_CFG) - 1 else ["conv"])
    return seq


def make_random_checkpoint(
    path: Path, widths=(4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8), K=8, dim_out=32, seed=0
):
    """A randomly initialised checkpoint in hloc's MATLAB layout (tests: no download).

    `widths` are the 13 conv output channels (VGG16: 64, 64, 128, 128, 256 x3, 512 x6).
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    seq = _layer_sequence()
    layers = np.empty(34, dtype=object)
    cin, it = 3, iter(widths)

    def cell(*arrays):
        c = np.empty(len(arrays), dtype=object)
        for i, a in enumerate(arrays):
            c[i] = a
        return c

    for i in range(34):
        layer = {"name": f"layer{i}", "type": seq[i] if i < len(seq) else "other"}
        if i < len(seq) and seq[i] == "conv":
            cout = next(it)
            w = rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)).astype(np.float32)
            layer["weights"] = cell(w, rng.normal(0, 0.01, cout).astype(np.float32))
            cin = cout
        layers[i] = layer
    D = cin
    layers[NETVLAD_LAYER]["weights"] = cell(
        rng.normal(0, 1, (D, K)).astype(np.float32), rng.normal(0, 0.1, (D, K)).astype(np.float32)
    )
    layers[WHITEN_LAYER]["weights"] = cell(
        rng.normal(0, 1 / np.sqrt(D * K), (1, 1, D * K, dim_out)).astype(np.float32),
        np.zeros(dim_out, np.float32),
    )
    avg = np.tile(np.array([122.7, 114.9, 101.6], np.float32), (2, 2, 1))  # indexed [0, 0]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    savemat(
        str(path), {"net": {"layers": layers, "meta": {"normalization": {"averageImage": avg}}}}
    )
    return Path(path)


# --------------------------------------------------------------------------- hloc integration


def register_hloc_extractor():
    """Make `hloc.extractors.netvlad_mat` loadable by hloc's dynamic_load (idempotent)."""
    require_hloc()
    from tasp_hloc.hloc.plugin import add_extractor

    def make_class(BaseModel):
        class NetVLADMat(BaseModel):
            default_conf = {"checkpoint": None, "whiten": True}
            required_inputs = ["image"]

            def _init(self, conf):
                self.net = load_checkpoint(
                    conf["checkpoint"] or default_checkpoint(), conf["whiten"]
                )

            def _forward(self, data):
                return {"global_descriptor": self.net(data["image"])}

        return NetVLADMat

    return add_extractor(EXTRACTOR_NAME, make_class).__name__


def retrieval_conf(checkpoint: Optional[Path] = None, resize_max: int = 1024) -> dict:
    return {
        "output": OUTPUT_NAME,
        "model": {"name": EXTRACTOR_NAME, "checkpoint": str(checkpoint or default_checkpoint())},
        "preprocessing": {"resize_max": resize_max, "grayscale": False},
    }


def extract(image_dir: Path, export_dir: Path, names, checkpoint: Optional[Path] = None) -> Path:
    """Global descriptors for `names` (relative to image_dir) into <export_dir>/global-feats-netvlad.h5.

    Names already in the file are skipped (resume); a missing checkpoint fails before any work.
    """
    names = list(names)
    out = Path(export_dir, OUTPUT_NAME + ".h5")
    if out.exists():
        from hloc.utils.io import list_h5_names

        repair_h5(out, ("global_descriptor",))
        if not set(names) - set(list_h5_names(out)):
            return out  # all done: a resumed run needs no weights
    checkpoint = Path(checkpoint or default_checkpoint())
    if not checkpoint.exists():
        raise FileNotFoundError(missing_weights_message(checkpoint))
    register_hloc_extractor()
    return hloc_steps.extract(retrieval_conf(checkpoint), image_dir, export_dir, names)
