import cv2
import numpy as np
import pytest
import torch

from tasp_hloc.model.keypoints import (
    logits_to_heatmap,
    nms,
    refine_corners,
    refine_keypoints,
    remove_borders,
    sample_descriptors,
    select_keypoints,
)


def test_heatmap_depth_to_space_places_cell_channels():
    logits = torch.full((1, 65, 2, 3), -20.0)
    logits[0, 64] = 20.0  # dustbin everywhere ...
    logits[0, 64, 1, 2] = -20.0
    logits[0, 8 * 5 + 3, 1, 2] = 20.0  # ... except cell (1, 2) whose pixel dx=3, dy=5 wins
    heat = logits_to_heatmap(logits)
    assert heat.shape == (1, 16, 24)
    y, x = divmod(int(heat[0].argmax()), 24)
    assert (x, y) == (2 * 8 + 3, 1 * 8 + 5)
    assert heat[0, y, x] == pytest.approx(1.0, abs=1e-6)
    assert heat.sum() == pytest.approx(1.0, abs=1e-4)


def test_heatmap_rejects_wrong_channels():
    with pytest.raises(ValueError, match="65"):
        logits_to_heatmap(torch.zeros(1, 64, 2, 2))


def test_nms_window_3_keeps_local_maxima_only():
    s = torch.zeros(1, 5, 6)
    s[0, 1, 1], s[0, 1, 2] = 0.5, 0.9  # adjacent: only 0.9 survives
    s[0, 3, 4] = 0.7  # two pixels away from 0.9 diagonally: survives
    s[0, 3, 0] = 0.2
    kept = nms(s, 3)
    assert kept[0, 1, 1] == 0 and kept[0, 1, 2] == pytest.approx(0.9)
    assert kept[0, 3, 4] == pytest.approx(0.7) and kept[0, 3, 0] == pytest.approx(0.2)
    assert int((kept > 0).sum()) == 3
    with pytest.raises(ValueError):
        nms(s, 4)


def test_remove_borders_and_top_k_order():
    s = torch.rand(2, 10, 12) + 0.1
    s = remove_borders(s, 2)
    assert (
        s[:, :2].abs().sum() == 0 and s[:, :, -2:].abs().sum() == 0 and s[:, 2:-2, 2:-2].min() > 0
    )
    kpts, scores, mask = select_keypoints(s, 0.0, 5)
    assert kpts.shape == (2, 5, 2) and mask.all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # strongest first
    x, y = kpts[..., 0].long(), kpts[..., 1].long()
    assert torch.allclose(s[torch.arange(2)[:, None], y, x], scores)


def test_select_keypoints_pads_unequal_counts():
    s = torch.zeros(2, 8, 8)
    s[0, 2, 3], s[0, 4, 5], s[1, 6, 1] = 0.5, 0.4, 0.3
    kpts, scores, mask = select_keypoints(s, 0.1, -1)
    assert kpts.shape == (2, 2, 2)
    assert mask.tolist() == [[True, True], [True, False]]
    assert kpts[0].tolist() == [[3, 2], [5, 4]] and kpts[1, 0].tolist() == [1, 6]
    assert scores[1, 1] == 0


@pytest.mark.parametrize("stride", [4, 8])
def test_sample_descriptors_recovers_analytic_ramp(stride):
    """Channels hold the pixel x and y of each cell centre plus a constant: bilinear sampling
    of this linear ramp must return the keypoint's own coordinates, wherever it lies between
    the outer cell centres, and the border value past them."""
    h, w, big = 6, 9, 1000.0
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centre = lambda k: stride * k + (stride - 1) / 2  # noqa: E731
    dmap = torch.stack([centre(j).float(), centre(i).float(), torch.full((h, w), big)])[None]
    lo, hi_x, hi_y = centre(0), centre(w - 1), centre(h - 1)
    pts = torch.rand(1, 50, 2) * torch.tensor([hi_x - lo, hi_y - lo]) + lo
    desc = sample_descriptors(dmap, pts, stride)
    assert desc.shape == (1, 50, 3)
    assert torch.allclose(desc.norm(dim=-1), torch.ones(1, 50))
    recovered = desc[..., :2] / desc[..., 2:] * big
    assert torch.allclose(recovered, pts, atol=1e-3)
    # Outside the outer cell centres: clamped to the border cell.
    corner = sample_descriptors(dmap, torch.tensor([[[0.0, 0.0]]]), stride)
    assert torch.allclose(
        corner[..., :2] / corner[..., 2:] * big, torch.tensor([[[lo, lo]]]), atol=1e-3
    )


def _gaussian_peak(cx: float, cy: float, h: int = 40, w: int = 30, sigma: float = 1.2):
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return 0.5 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))[None]


def test_refine_centroid_moves_towards_peak_within_half_pixel():
    heatmap = _gaussian_peak(10.3, 20.7)
    refined = refine_keypoints(heatmap, torch.tensor([[[10.0, 21.0]]]))
    dx, dy = (refined - torch.tensor([[[10.0, 21.0]]]))[0, 0]
    assert 0 < dx <= 0.3 and -0.3 <= dy < 0  # biased towards the pixel, but the right way


def test_refine_centroid_by_hand_and_clamped_to_half_pixel():
    flat = torch.full((1, 10, 10), 0.1)
    kp = torch.tensor([[[4.0, 5.0]]])
    assert torch.equal(refine_keypoints(flat, kp), kp)  # a flat patch: its centroid is the pixel
    two = torch.zeros(1, 10, 10)
    two[0, 5, 4], two[0, 5, 5] = 0.3, 0.1  # centroid x = 4 + 0.1 / 0.4
    assert torch.allclose(refine_keypoints(two, kp), torch.tensor([[[4.25, 5.0]]]))
    one_sided = torch.zeros(1, 10, 10)
    one_sided[0, 5, 5] = 1.0  # all the mass one pixel right: clamped to half a pixel
    assert torch.allclose(refine_keypoints(one_sided, kp), torch.tensor([[[4.5, 5.0]]]))


def test_refine_at_image_border_and_bad_shapes():
    heatmap = _gaussian_peak(0.2, 0.0, 8, 8)
    refined = refine_keypoints(heatmap, torch.tensor([[[0.0, 0.0]]]))
    assert refined.shape == (1, 1, 2) and torch.isfinite(refined).all()
    with pytest.raises(ValueError, match="heatmap"):
        refine_keypoints(heatmap[0], torch.tensor([[[0.0, 0.0]]]))


def _corner_image(cx: float, cy: float, size: int = 40, blur: float = 0.8) -> torch.Tensor:
    """A bright quadrant x > cx, y > cy, area-sampled (8x8 per pixel) and blurred: (1, 1, H, W)."""
    s = 8
    yy, xx = np.mgrid[0 : size * s, 0 : size * s]
    xx, yy = (xx + 0.5) / s - 0.5, (yy + 0.5) / s - 0.5
    image = ((xx > cx) & (yy > cy)).astype(np.float32).reshape(size, s, size, s).mean((1, 3))
    return torch.from_numpy(cv2.GaussianBlur(image, (0, 0), blur))[None, None]


def test_refine_corners_agrees_with_opencv_and_follows_subpixel_shifts():
    image = _corner_image(20.3, 15.6)
    kp = torch.tensor([[[21.0, 17.0], [19.0, 15.0]]])
    refined = refine_corners(image, kp, radius=2)
    ref = cv2.cornerSubPix(
        image[0, 0].numpy().copy(),
        kp[0].numpy().reshape(-1, 1, 2),
        (2, 2),
        (-1, -1),
        (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01),
    )
    assert torch.allclose(refined[0], torch.from_numpy(ref.reshape(-1, 2)), atol=0.15)
    # both starting points converge to one corner, and it moves with the image
    assert torch.allclose(refined[0], torch.tensor([20.3, 15.6]), atol=0.3)  # blur biases both
    moved = refine_corners(_corner_image(20.8, 16.1), kp, radius=2)
    assert torch.allclose(moved - refined, torch.full_like(refined, 0.5), atol=0.1)


def test_refine_corners_leaves_edges_and_flat_areas():
    edge = _corner_image(20.3, -5.0)  # a vertical edge: no corner to move to
    flat = torch.full((1, 3, 30, 30), 0.5)
    kp = torch.tensor([[[20.0, 12.0]]])
    assert torch.equal(refine_corners(edge, kp), kp)
    assert torch.equal(refine_corners(flat, kp), kp)
    with pytest.raises(ValueError, match="Expected image"):
        refine_corners(flat[0], kp)
