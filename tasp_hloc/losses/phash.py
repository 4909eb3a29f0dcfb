"""Batched DCT perceptual hash (pHash) of image patches, on the tensor's device.

This is the hash of the ``imagehash`` package (``imagehash.phash`` with hash_size=8,
highfreq_factor=4), written with matrix products so that thousands of patches are hashed
at once without a Python loop:

    1. a 32 x 32 grayscale patch X,
    2. the 2D DCT-II ``C = D8 @ X @ D8.T`` where D8 holds only the 8 lowest-frequency rows
       of the 32-point DCT matrix (the other 24 rows would be thrown away anyway),
    3. bit (k, l) = C[k, l] > median(C), the median over the 64 coefficients (including
       the DC term), taken as numpy does: the mean of the 32nd and 33rd sorted values.

Scaling: ``imagehash`` uses ``scipy.fftpack.dct`` with the default ``norm=None``, i.e. the
*unnormalised* DCT-II ``y[k] = 2 sum_n x[n] cos(pi k (2n + 1) / 2N)``. Its scale is the same
for every k, so the bits do not depend on it; the orthonormal DCT instead divides the DC row by
an extra sqrt(2), which moves the DC coefficient relative to the others and therefore changes
the median and the bits. We use the unnormalised matrix (factor 2 included, so coefficients
equal scipy's).

Precision: the hash is computed in float64 by default. With uint8-valued patches the
coefficients reach ~1e6, and float32 rounding (~0.1) can flip a bit whose coefficient lies
within that distance of the median; float64 reproduces ``imagehash`` bit for bit except on
patches with exact ties (e.g. a constant patch, whose AC coefficients are all 0 up to
rounding noise — there ``imagehash``'s own bits are rounding noise too).
"""

import math

import torch
import torch.nn.functional as F

# ITU-R 601-2 luma, as PIL's convert("L") (used by imagehash for RGB input).
_LUMA = (0.299, 0.587, 0.114)

_DCT_CACHE = {}


def dct_matrix(n: int = 32, rows: int = 8, device=None, dtype=torch.float64) -> torch.Tensor:
    """The first ``rows`` rows of the unnormalised n-point DCT-II matrix (scipy norm=None).

    Returns:
        rows x n tensor ``D[k, i] = 2 cos(pi k (2i + 1) / (2n))``.
    """
    key = (n, rows, str(device), dtype)
    if key not in _DCT_CACHE:
        k = torch.arange(rows, dtype=torch.float64)[:, None]
        i = torch.arange(n, dtype=torch.float64)[None, :]
        d = 2.0 * torch.cos(math.pi * k * (2 * i + 1) / (2 * n))
        _DCT_CACHE[key] = d.to(device=device, dtype=dtype)
    return _DCT_CACHE[key]


def to_grayscale(image: torch.Tensor) -> torch.Tensor:
    """B x C x H x W (C = 1 or 3) -> B x 1 x H x W with the PIL/ITU-R 601 luma weights."""
    if image.dim() != 4 or image.shape[1] not in (1, 3):
        raise ValueError(
            f"Expected an image tensor B x C x H x W with C = 1 or 3, got {tuple(image.shape)}."
        )
    if image.shape[1] == 1:
        return image
    w = image.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def extract_patches(
    image: torch.Tensor,
    points: torch.Tensor,
    size: int = 32,
    extent: float = None,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Grayscale patches centred on pixel positions, by bilinear sampling (one grid_sample).

    Sample (i, j) of the patch around point (x, y) is taken at pixel
    ``(x + (j - (size - 1) / 2) * e, y + (i - (size - 1) / 2) * e)`` with ``e = extent / size``,
    pixel centres at integer coordinates (the top-left pixel centre is (0, 0)). With the
    default ``extent = size`` and a point at a pixel corner (e.g. (15.5, 15.5)) the patch is an
    exact crop of the image. Samples outside the image repeat the border pixels
    (``padding_mode="border"``), which adds no artificial edge to the hash. An extent larger
    than ``size`` subsamples without anti-aliasing (unlike PIL's resize in imagehash).

    Args:
        image: B x C x H x W, C = 1 or 3 (converted to luma).
        points: B x N x 2 pixel coordinates (x, y).
        size: patch side in samples (32 for pHash).
        extent: patch side in pixels (default ``size``).
        padding_mode: grid_sample padding mode.
    Returns:
        B x N x size x size patches, same dtype and range as the image.
    """
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != image.shape[0]:
        raise ValueError(
            f"Expected points B x N x 2 with the image's batch size {image.shape[0]}, "
            f"got {tuple(points.shape)}."
        )
    gray = to_grayscale(image)
    b, _, h, w = gray.shape
    n = points.shape[1]
    if n == 0:
        return gray.new_zeros(b, 0, size, size)
    step = (size if extent is None else extent) / size
    offs = (torch.arange(size, device=image.device, dtype=gray.dtype) - (size - 1) / 2) * step
    pts = points.to(gray.dtype)
    x = pts[..., 0, None, None] + offs[None, None, None, :]  # B x N x 1 x size
    y = pts[..., 1, None, None] + offs[None, None, :, None]  # B x N x size x 1
    x, y = torch.broadcast_tensors(x, y)  # B x N x size x size
    # align_corners=False: pixel x covers [x - 0.5, x + 0.5] of [-0.5, W - 0.5].
    grid = torch.stack([(x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1], -1)
    grid = grid.reshape(b, n * size, size, 2)
    out = F.grid_sample(gray, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.reshape(b, n, size, size)


def phash(patches: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """64-bit DCT perceptual hash, as ``imagehash.phash`` (hash_size=8).

    Args:
        patches: ... x 32 x 32 grayscale patches (any value scale; the hash is scale-free).
        dtype: compute precision (float64 reproduces imagehash; see the module docstring).
    Returns:
        ... x 64 bool, bit 8 * k + l for the DCT coefficient of vertical frequency k and
        horizontal frequency l (row-major, as ``imagehash.ImageHash.hash.flatten()``).
    """
    if patches.dim() < 2 or patches.shape[-2:] != (32, 32):
        raise ValueError(
            f"pHash needs 32 x 32 patches (... x 32 x 32), got {tuple(patches.shape)}; "
            "use extract_patches(..., size=32)."
        )
    if dtype == torch.float64 and patches.device.type == "mps":
        dtype = torch.float32  # MPS has no float64
    lead = patches.shape[:-2]
    x = patches.reshape(-1, 32, 32).to(dtype)
    d8 = dct_matrix(32, 8, x.device, dtype)
    coef = (d8 @ x @ d8.T).reshape(-1, 64)  # M x 64, vertical freq major
    srt = coef.sort(-1).values
    med = 0.5 * (srt[:, 31] + srt[:, 32])  # numpy median of an even count
    bits = coef > med[:, None]
    return bits.reshape(*lead, 64)


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamming distance of two hash tensors ``... x 64`` bool -> ``...`` int64."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"Hash lengths differ: {a.shape[-1]} vs {b.shape[-1]}.")
    return (a != b).sum(-1)
