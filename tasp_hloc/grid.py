"""The cell grid of the dense maps: cell (i, j) of a stride-s map covers pixels
``s*j .. s*j + s - 1`` (x) and ``s*i .. s*i + s - 1`` (y), so its centre is at
``(s*j + (s-1)/2, s*i + (s-1)/2)`` (top-left pixel centre at (0, 0))."""

import torch


def cell_centers(
    hc: int, wc: int, stride: int = 4, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Pixel centres (x, y) of the cells of an ``hc x wc`` map (in cells) at ``stride``.

    Returns:
        (hc * wc) x 2, row-major (index i * wc + j). For an H x W image: ``H // s, W // s``.
    """
    off = (stride - 1) / 2.0
    ys = torch.arange(hc, device=device, dtype=dtype) * stride + off
    xs = torch.arange(wc, device=device, dtype=dtype) * stride + off
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def rescale_keypoints(keypoints, scale):
    """Keypoints (..., 2) of an image resized by ``scale`` (a number or per-axis (sx, sy)),
    with pixel centres at integers: ``(kp + 0.5) * scale - 0.5``. Works on arrays and tensors.
    """
    return (keypoints + 0.5) * scale - 0.5
