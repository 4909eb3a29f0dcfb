"""Learned sub-pixel placement: each keypoint moves to the soft-argmax of a small CNN's scores.

Why: at SIFT's DoG keypoints TaSP's descriptors match to 1 px as often as RootSIFT's
(``experiments.placement``), so its 1 px gap is placement. The cell detector picks one pixel per
8 x 8 cell from stride-8 features and lands ~1.5 px from the image structure it fires on; the
corner refinement (``keypoints.refine_corners``) snaps to a structure-tensor corner. This
refiner also looks at the image itself at full resolution, but learns which point of the
window around a keypoint stays put under viewpoint and light: it is trained for exactly that
(``tasp_hloc.train.placement``, homographic pairs), not by the paper's loss.

Per keypoint: the gray patch around its nearest pixel, normalised to zero mean and unit
contrast (light changes drop out), is scored by three valid 3 x 3 convolutions; the keypoint
moves to the soft-argmax of the scores over the (2r+1)^2 pixels around it, so it moves at most
``radius`` px in x and y and the result does not depend on where in the window it started
as long as the scores peak inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..options import with_defaults
from .keypoints import gather_patches

RECEPTIVE = 3  # half-size of the three 3 x 3 convolutions' receptive field


class PlacementNet(nn.Module):
    default_conf = {"radius": 3, "channels": 16}

    def __init__(self, conf: Optional[dict] = None):
        super().__init__()
        self.conf = with_defaults(self.default_conf, conf, "PlacementNet")
        ch = int(self.conf["channels"])
        self.net = nn.Sequential(
            nn.Conv2d(1, ch, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, 1, 3),
        )

    def forward(self, image: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """Refine keypoints.

        Args:
            image: :math:`(B, C, H, W)` in [0, 1], C = 1 or 3 (averaged to gray).
            keypoints: :math:`(B, N, 2)` x-y pixels.

        Returns:
            :math:`(B, N, 2)` refined keypoints, within ``radius`` px of the nearest pixel of
            each input keypoint in x and y.
        """
        if image.dim() != 4 or image.shape[1] not in (1, 3):
            raise ValueError(f"Expected an image (B, 1 or 3, H, W), got {tuple(image.shape)}.")
        if keypoints.dim() != 3 or keypoints.shape[-1] != 2 or len(keypoints) != len(image):
            raise ValueError(
                f"Expected keypoints (B, N, 2) for {len(image)} images, got "
                f"{tuple(keypoints.shape)}."
            )
        r = int(self.conf["radius"])
        b, n = keypoints.shape[:2]
        centre = keypoints.detach().round()
        gray = image.float().mean(1, keepdim=True)
        patches = gather_patches(gray, centre, r + RECEPTIVE).reshape(b * n, 1, *([2 * r + 7] * 2))
        mean = patches.mean((-1, -2), keepdim=True)
        std = patches.std((-1, -2), keepdim=True)
        scores = self.net((patches - mean) / (std + 1e-2))  # (B N) x 1 x (2r+1) x (2r+1)
        prob = scores.reshape(b, n, -1).softmax(-1)
        steps = torch.arange(-r, r + 1, device=image.device, dtype=prob.dtype)
        dy, dx = torch.meshgrid(steps, steps, indexing="ij")
        offset = torch.stack([(prob * dx.reshape(-1)).sum(-1), (prob * dy.reshape(-1)).sum(-1)], -1)
        return (centre + offset).to(keypoints.dtype)


def load_placement(path: Union[str, Path], device="cpu") -> PlacementNet:
    """A trained ``PlacementNet`` from the file ``tasp_hloc.train.placement`` writes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Placement weights {path} not found: train them with "
            f"`python -m tasp_hloc.train.placement --output DIR` (DIR/placement.pth)."
        )
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or "conf" not in state or "state_dict" not in state:
        raise ValueError(f"{path} is not a placement file (keys 'conf' and 'state_dict').")
    net = PlacementNet(state["conf"])
    net.load_state_dict(state["state_dict"])
    return net.eval().to(device)
