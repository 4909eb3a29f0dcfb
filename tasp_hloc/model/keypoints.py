"""Keypoint detection from the 65-channel cell logits, and descriptor sampling.

Pixel convention everywhere in this package: x-y order, the centre of the top-left pixel
is (0, 0). A cell (i, j) of a stride-s feature map covers pixels [s*j, s*j + s) x [s*i, s*i + s)
and so has its centre at (s*j + (s-1)/2, s*i + (s-1)/2).
"""

from typing import Dict, Tuple

import torch
import torch.nn.functional as F


def logits_to_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the 65 cell classes, drop the dustbin, depth-to-space.

    Args:
        logits: :math:`(B, 65, H/8, W/8)`; channel ``8*dy + dx`` is pixel (dx, dy) of the cell.

    Returns:
        Keypoint probability :math:`(B, H, W)`.
    """
    if logits.dim() != 4 or logits.shape[1] != 65:
        raise ValueError(f"Expected logits of shape (B, 65, h, w), got {tuple(logits.shape)}.")
    prob = logits.softmax(1)[:, :64]
    return F.pixel_shuffle(prob, 8)[:, 0]


def max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the (2r+1) x (2r+1) window around every pixel, the image edges not padded.

    Separable (rows, then columns) on shifted views: the same values as ``F.max_pool2d`` with
    ``padding=radius``, much cheaper on CPU for one channel.

    Args:
        x: :math:`(B, H, W)`.

    Returns:
        :math:`(B, H, W)`.
    """
    for dim in (-1, -2):
        source, x = x, x.clone()
        n = x.shape[dim]
        for s in range(1, min(radius, n - 1) + 1):
            ahead = x.narrow(dim, s, n - s)
            torch.maximum(ahead, source.narrow(dim, 0, n - s), out=ahead)
            behind = x.narrow(dim, 0, n - s)
            torch.maximum(behind, source.narrow(dim, s, n - s), out=behind)
    return x


def nms(scores: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Keep only scores that are the maximum of their ``window`` x ``window`` neighbourhood.

    Args:
        scores: :math:`(B, H, W)`.

    Returns:
        :math:`(B, H, W)` with non-maxima set to 0. Ties keep every tied pixel, as in SuperPoint.
    """
    if window % 2 != 1:
        raise ValueError(f"The NMS window must be odd, got {window}.")
    return torch.where(scores == max_filter(scores, window // 2), scores, torch.zeros_like(scores))


def remove_borders(scores: torch.Tensor, border: int) -> torch.Tensor:
    """Zero the scores of the ``border`` outermost pixels. Shape :math:`(B, H, W)`."""
    if border <= 0:
        return scores
    out = scores.clone()
    for dim in (-1, -2):
        out.narrow(dim, 0, min(border, out.shape[dim])).zero_()
        out.narrow(dim, max(out.shape[dim] - border, 0), min(border, out.shape[dim])).zero_()
    return out


def select_keypoints(
    scores: torch.Tensor, threshold: float, max_keypoints: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixels above ``threshold``, strongest first, at most ``max_keypoints`` per image.

    Args:
        scores: :math:`(B, H, W)` after NMS and border removal.
        threshold: minimum score.
        max_keypoints: maximum number per image; <= 0 keeps all.

    Returns:
        - keypoints :math:`(B, N, 2)` x-y pixels (float), padded with zeros past each count;
        - scores :math:`(B, N)`, 0 in the padding;
        - mask :math:`(B, N)` bool, True for real keypoints.
        N is the largest count in the batch.
    """
    b, h, w = scores.shape
    flat = scores.reshape(b, -1)
    counts = (flat > threshold).sum(1)
    if max_keypoints > 0:
        counts = counts.clamp(max=max_keypoints)
    n = int(counts.max()) if b > 0 else 0
    top_scores, top_idx = flat.topk(n, dim=1)  # sorted, strongest first
    mask = torch.arange(n, device=scores.device)[None] < counts[:, None]
    x = (top_idx % w).to(scores.dtype)
    y = torch.div(top_idx, w, rounding_mode="floor").to(scores.dtype)
    keypoints = torch.stack([x, y], -1) * mask[..., None]
    return keypoints, top_scores * mask, mask


def refine_keypoints(heatmap: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """Move integer keypoints to the probability-weighted centroid of the 3x3 heatmap around
    them, clamped to half a pixel: exact for a heatmap that splits a point bilinearly over its
    4 nearest pixels (the soft training targets, ``losses.soft_targets``).

    Args:
        heatmap: :math:`(B, H, W)` keypoint probabilities before NMS.
        keypoints: :math:`(B, N, 2)` integer x-y pixels inside the image.

    Returns:
        :math:`(B, N, 2)` refined x-y keypoints.
    """
    if heatmap.dim() != 3 or keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(
            f"Expected heatmap (B, H, W) and keypoints (B, N, 2), got "
            f"{tuple(heatmap.shape)} and {tuple(keypoints.shape)}."
        )
    b, h, w = heatmap.shape
    padded = F.pad(heatmap[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    x = keypoints[..., 0].round().long().clamp(0, w - 1) + 1
    y = keypoints[..., 1].round().long().clamp(0, h - 1) + 1
    flat = padded.reshape(b, -1)
    # patch[..., dy + 1, dx + 1] = heatmap(y + dy, x + dx)
    patch = torch.stack(
        [
            torch.stack([flat.gather(1, (y + dy) * (w + 2) + (x + dx)) for dx in (-1, 0, 1)], -1)
            for dy in (-1, 0, 1)
        ],
        -2,
    )  # B x N x 3 x 3
    grid = torch.tensor([-1.0, 0.0, 1.0], device=heatmap.device, dtype=heatmap.dtype)
    weights = patch / patch.sum((-1, -2), keepdim=True).clamp(min=1e-12)
    offset = torch.stack([(weights.sum(-2) * grid).sum(-1), (weights.sum(-1) * grid).sum(-1)], -1)
    return keypoints + offset.clamp(-0.5, 0.5).to(keypoints.dtype)


def gather_patches(image: torch.Tensor, centres: torch.Tensor, pad: int) -> torch.Tensor:
    """The (2 pad + 1)^2 pixels around whole-pixel centres; the image border is replicated.

    Args:
        image: :math:`(B, C, H, W)`.
        centres: :math:`(B, N, 2)` x-y pixels, whole numbers (rounded here all the same).
        pad: half-size of the patch.

    Returns:
        :math:`(B, N, C, 2 pad + 1, 2 pad + 1)` patches.
    """
    b, c, h, w = image.shape
    steps = torch.arange(-pad, pad + 1, device=image.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    centres = centres.round().long()
    # clamping the pixel indices replicates the border (no padded copy of the image)
    x = (centres[..., 0, None, None] + dx).clamp(0, w - 1)
    y = (centres[..., 1, None, None] + dy).clamp(0, h - 1)
    index = (y * w + x).reshape(b, 1, -1).expand(-1, c, -1)
    size = 2 * pad + 1
    patches = image.reshape(b, c, -1).gather(2, index).reshape(b, c, -1, size, size)
    return patches.transpose(1, 2)


def refine_corners(
    image: torch.Tensor, keypoints: torch.Tensor, radius: int = 3, iterations: int = 2
) -> torch.Tensor:
    """Move keypoints to the sub-pixel corner of the image around them (as cv2.cornerSubPix).

    In a (2r+1)^2 window, every gradient g_i at pixel p_i is orthogonal to (p_i - q) when q
    is the corner, so q solves (sum g g^T) q = sum g g^T p_i. Each iteration re-centres the
    window on the nearest pixel of the estimate; a keypoint whose solution is ill-conditioned
    (an edge or a flat area) or leaves its window stays where it was.

    Args:
        image: :math:`(B, C, H, W)` in [0, 1]; C = 1 or 3 (averaged to gray).
        keypoints: :math:`(B, N, 2)` x-y pixels.
        radius: half-size of the window in pixels.
        iterations: number of re-centred solves.

    Returns:
        :math:`(B, N, 2)` refined x-y keypoints.
    """
    if image.dim() != 4 or keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(
            f"Expected image (B, C, H, W) and keypoints (B, N, 2), got "
            f"{tuple(image.shape)} and {tuple(keypoints.shape)}."
        )
    pad = radius + 1
    steps = torch.arange(-pad, pad + 1, device=image.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")  # (2r+3)^2 offsets
    ox, oy = dx[1:-1, 1:-1].float(), dy[1:-1, 1:-1].float()
    gray = image.float().mean(1, keepdim=True)
    start = keypoints.float()
    current = start
    for _ in range(iterations):
        centre = current.round()
        patch = gather_patches(gray, centre, pad)[:, :, 0]
        gx = (patch[..., 1:-1, 2:] - patch[..., 1:-1, :-2]) / 2
        gy = (patch[..., 2:, 1:-1] - patch[..., :-2, 1:-1]) / 2
        gxx, gxy, gyy = (gx * gx).sum((-1, -2)), (gx * gy).sum((-1, -2)), (gy * gy).sum((-1, -2))
        bx = (gx * gx * ox + gx * gy * oy).sum((-1, -2))
        by = (gx * gy * ox + gy * gy * oy).sum((-1, -2))
        det = gxx * gyy - gxy * gxy
        trace = gxx + gyy
        # well conditioned: both eigenvalues of the structure tensor comparable (a corner)
        ok = det > 1e-3 * trace * trace + 1e-12
        det = torch.where(ok, det, torch.ones_like(det))
        q = centre + torch.stack([(gyy * bx - gxy * by) / det, (gxx * by - gxy * bx) / det], -1)
        inside = ok & ((q - start).abs() <= radius).all(-1)
        current = torch.where(inside[..., None], q, current)
    return current.to(keypoints.dtype)


def sample_descriptors(
    descriptors: torch.Tensor, keypoints: torch.Tensor, stride: int
) -> torch.Tensor:
    """Bilinearly interpolate a descriptor map at pixel keypoints and L2-normalise.

    Args:
        descriptors: :math:`(B, D, h, w)` map at ``stride`` (h = H / stride).
        keypoints: :math:`(B, N, 2)` x-y in image pixels (top-left pixel centre at (0, 0)).
        stride: pixels per descriptor cell.

    Returns:
        :math:`(B, N, D)` unit-norm descriptors. A keypoint at a cell centre gets exactly
        that cell's vector; past the outer cell centres the border value is repeated.
    """
    if descriptors.dim() != 4 or keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(
            f"Expected descriptors (B, D, h, w) and keypoints (B, N, 2), got "
            f"{tuple(descriptors.shape)} and {tuple(keypoints.shape)}."
        )
    b, d, h, w = descriptors.shape
    size = keypoints.new_tensor([w, h]) * stride
    grid = (keypoints + 0.5) / size * 2 - 1  # align_corners=False: -1 is the map's outer edge
    sampled = F.grid_sample(
        descriptors,
        grid[:, None].to(descriptors.dtype),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # B x D x 1 x N
    return F.normalize(sampled[:, :, 0].transpose(1, 2), p=2, dim=-1)


def drop_close_keypoints(
    keypoints: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, min_distance: float = 1.0
) -> torch.Tensor:
    """Drop every keypoint that lies within ``min_distance`` pixels of a stronger one.

    A keypoint goes when any stronger keypoint (ties: the earlier one) is closer than
    ``min_distance``, even one that is itself dropped, so no two kept keypoints are closer.
    Pairs are found along the keypoints sorted by x: only neighbours in that order whose x
    differ by less than ``min_distance`` are compared, O(N k) for k such neighbours.

    Args:
        keypoints: :math:`(B, N, 2)` x-y pixels.
        scores: :math:`(B, N)`.
        mask: :math:`(B, N)` bool, True for real keypoints.

    Returns:
        :math:`(B, N)` bool: ``mask`` with the dropped keypoints False.
    """
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2 or scores.shape != keypoints.shape[:2]:
        raise ValueError(
            f"Expected keypoints (B, N, 2) and scores (B, N), got {tuple(keypoints.shape)} "
            f"and {tuple(scores.shape)}."
        )
    keep = mask.clone()
    for b in range(keypoints.shape[0]):
        index = torch.nonzero(mask[b])[:, 0]
        kp, s = keypoints[b, index].double(), scores[b, index]
        order = kp[:, 0].argsort()
        kp, s, index = kp[order], s[order], index[order]
        beaten = torch.zeros(len(index), dtype=torch.bool, device=keypoints.device)
        for k in range(1, len(index)):
            near = (kp[k:, 0] - kp[:-k, 0]) < min_distance
            if not near.any():
                break
            close = near & ((kp[k:] - kp[:-k]).square().sum(-1) < min_distance**2)
            first, second = torch.nonzero(close)[:, 0], torch.nonzero(close)[:, 0] + k
            # of each close pair the weaker goes (equal scores: the later one in the input)
            second_wins = (s[second] > s[first]) | (
                (s[second] == s[first]) & (index[second] < index[first])
            )
            beaten[torch.where(second_wins, first, second)] = True
        keep[b, index[beaten]] = False
    return keep


def distinct(features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Of two keypoints within 1 px of each other the weaker is masked out: they would carry
    near-identical descriptors (``strongest`` then packs the rest)."""
    mask = drop_close_keypoints(
        features["keypoints"], features["keypoint_scores"], features["keypoint_mask"]
    )
    return {**features, "keypoint_mask": mask}


def strongest(features: Dict[str, torch.Tensor], max_keypoints: int) -> Dict[str, torch.Tensor]:
    """The strongest ``max_keypoints`` (<= 0: all) of padded per-image features, strongest
    first, padding (``keypoint_mask`` False) last and zeroed."""
    mask = features["keypoint_mask"]
    counts = mask.sum(1)
    if max_keypoints > 0:
        counts = counts.clamp(max=max_keypoints)
    n = int(counts.max()) if len(counts) else 0
    order = features["keypoint_scores"].masked_fill(~mask, -1.0).topk(n, dim=1).indices
    keep = torch.arange(n, device=mask.device)[None] < counts[:, None]
    out = {}
    for k, v in features.items():
        idx = order.view(*order.shape, *([1] * (v.dim() - 2))).expand(-1, -1, *v.shape[2:])
        picked = torch.gather(v, 1, idx)
        out[k] = picked * keep.view(*keep.shape, *([1] * (v.dim() - 2))).to(picked.dtype)
    out["keypoint_mask"] = keep
    return out
