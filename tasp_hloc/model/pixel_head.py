"""A detector head that sees the image's pixels (``TaSP(detector_head="pixel")``).

The paper's head is one 3x3 stride-2 convolution on trunk features at 1/4, so the 65-way cell
classifier never sees pixel-level evidence: every detector that is precise at 1 px gives its
detector the image itself (XFeat's 65-class head reads the raw 8x8 cell). This head adds a
correction to the paper's cell logits computed from the contrast-normalised gray 8x8 cells
(space-to-depth) in a 3x3 neighbourhood of cells (a 24x24-pixel window at stride 8), next to
the paper's logits. Its last convolution starts at zero, so a freshly added head reproduces the
paper head's output exactly and training starts from released weights.
"""

import torch
import torch.nn.functional as F
from torch import nn

CELL = 8


def normalised_cells(image: torch.Tensor, eps: float = 0.02) -> torch.Tensor:
    """Gray 8x8 cells as channels, each cell shifted to mean 0 and scaled by its spread.

    Args:
        image: :math:`(B, C, H, W)` in [0, 1], C = 1 or 3, H and W multiples of 8.

    Returns:
        :math:`(B, 65, H/8, W/8)`: the 64 normalised pixels (channel ``8*dy + dx``, as the
        logits) and the log of the cell's standard deviation (how much texture it has).
    """
    gray = image.float().mean(1, keepdim=True)
    cells = F.pixel_unshuffle(gray, CELL)
    mean = cells.mean(1, keepdim=True)
    std = cells.std(1, keepdim=True)
    return torch.cat([(cells - mean) / (std + eps), (std + eps).log()], 1)


class PixelDetectorHead(nn.Module):
    """Residual cell logits from the image's pixels and the paper head's logits.

    Args:
        hidden: channels of the hidden layers.

    Call: ``(image (B, C, H, W), logits (B, 65, H/8, W/8)) -> logits (B, 65, H/8, W/8)``.
    """

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.cells = nn.Sequential(
            nn.Conv2d(65, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
        )
        self.mix = nn.Sequential(
            nn.Conv2d(hidden + 65, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 65, 1),
        )
        nn.init.zeros_(self.mix[-1].weight)
        nn.init.zeros_(self.mix[-1].bias)

    def forward(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[-2] % CELL or image.shape[-1] % CELL:
            raise ValueError(
                f"Expected an image (B, C, H, W) with H, W multiples of {CELL}, "
                f"got {tuple(image.shape)}."
            )
        expected = (image.shape[0], 65, image.shape[-2] // CELL, image.shape[-1] // CELL)
        if tuple(logits.shape) != expected:
            raise ValueError(f"Expected logits of shape {expected}, got {tuple(logits.shape)}.")
        logits = logits.float()
        hidden = self.cells(normalised_cells(image))
        return logits + self.mix(torch.cat([hidden, logits], 1))
