"""Safe windows: exact excluded cells on tiny maps, square vs 3D at a depth discontinuity."""

import math

import pytest
import torch

from tasp_hloc.grid import cell_centers
from tasp_hloc.losses.safe_window import (
    negative_mask,
    square_window_mask,
    window_3d_mask,
)


def test_cell_centers_stride4():
    c = cell_centers(2, 3, 4)
    assert c.shape == (6, 2)
    # cell (i, j) at (4j + 1.5, 4i + 1.5), row-major
    assert c[0].tolist() == [1.5, 1.5]
    assert c[5].tolist() == [9.5, 5.5]  # (i, j) = (1, 2)


def test_square_window_excludes_known_cells():
    h = w = 8
    anchors = torch.tensor([[[9.5, 9.5], [10.0, 3.0]]])
    m = square_window_mask(anchors, h, w, stride=4, radius=4.0).view(2, h, w)
    # Anchor at the centre of cell (2, 2): cells with centre within 4 px (inclusive: the
    # rule is strict "> K") are (1..3, 1..3).
    excl = torch.zeros(h, w, dtype=torch.bool)
    excl[1:4, 1:4] = True
    assert torch.equal(~m[0], excl)
    # Anchor (10, 3): |cx - 10| <= 4 -> cx in {9.5, 13.5} (j = 2, 3; 5.5 is 4.5 away);
    # |cy - 3| <= 4 -> cy in {1.5, 5.5} (i = 0, 1).
    excl = torch.zeros(h, w, dtype=torch.bool)
    excl[0:2, 2:4] = True
    assert torch.equal(~m[1], excl)
    # Default K = 16 px: from (9.5, 9.5) only column/row 7 (centre 29.5, 20 px away) is out.
    m16 = negative_mask(anchors[:, :1], h, w).view(h, w)
    allowed = torch.zeros(h, w, dtype=torch.bool)
    allowed[7, :] = True
    allowed[:, 7] = True
    assert torch.equal(m16, allowed)


def _scene():
    """One row of 8 cells (stride 4, centres x = 1.5 ... 29.5, y = 1.5).

    Cells 0-3: a foreground surface at depth 1; cell 4: background at depth 10, right next
    to the anchor; cell 5: unknown depth (z = 0); cell 6: non-finite; cell 7: unknown depth.
    The anchor is cell 3's centre on the foreground.
    """
    xyz = torch.tensor(
        [
            [-0.10, 0.0, 1.0],  # 0: foreground, 0.12 from the anchor
            [-0.05, 0.0, 1.0],  # 1: 0.07
            [0.00, 0.0, 1.0],  # 2: 0.02
            [0.02, 0.0, 1.0],  # 3: the anchor's own cell
            [0.30, 0.0, 10.0],  # 4: background, ~9 away
            [0.40, 0.0, 0.0],  # 5: no depth
            [float("nan")] * 3,  # 6: no depth
            [0.50, 0.0, -1.0],  # 7: no depth
        ]
    ).T.reshape(1, 3, 1, 8)
    anchors = torch.tensor([[[13.5, 1.5]]])
    anchors_xyz = torch.tensor([[[0.02, 0.0, 1.0]]])
    return anchors, anchors_xyz, xyz


def test_3d_window_depth_discontinuity():
    anchors, axyz, xyz = _scene()
    # rel = 0.04 at depth 1: the 3D window has radius 0.04.
    m3 = window_3d_mask(anchors, axyz, xyz, stride=4, rel=0.04, radius=16.0)[0, 0]
    # 0, 1: same surface but beyond 0.04 -> negatives; 2, 3: inside -> excluded;
    # 4: background next to the anchor -> negative; 5, 6: no depth, square window
    # (|21.5 - 13.5| = 8, |25.5 - 13.5| = 12 <= 16) -> excluded; 7: 16 px, not > 16 -> excluded.
    assert m3.tolist() == [True, True, False, False, True, False, False, False]
    # The square window (K = 16) excludes every cell of this row, the background included.
    ms = square_window_mask(anchors, 1, 8, stride=4, radius=16.0)[0, 0]
    assert not ms.any()
    # With K = 15 the fallback lets the unknown cell 7 through (16 > 15) but not 5 and 6.
    m3b = window_3d_mask(anchors, axyz, xyz, stride=4, rel=0.04, radius=15.0)[0, 0]
    assert m3b.tolist() == [True, True, False, False, True, False, False, True]
    # A larger relative radius (0.1) also swallows cell 1 (0.07 away) but not cell 0 (0.12).
    m3c = window_3d_mask(anchors, axyz, xyz, stride=4, rel=0.1, radius=16.0)[0, 0]
    assert m3c.tolist()[:5] == [True, False, False, False, True]


def test_3d_window_is_scale_free_and_anchor_fallback():
    anchors, axyz, xyz = _scene()
    base = window_3d_mask(anchors, axyz, xyz, rel=0.04)
    # SfM scale is arbitrary: scaling the scene changes nothing.
    scaled = window_3d_mask(anchors, axyz * 37.0, xyz * 37.0, rel=0.04)
    assert torch.equal(base, scaled)
    # An anchor with no depth uses the square window for every cell.
    bad = torch.tensor([[[0.02, 0.0, 0.0]]])
    anchors2 = torch.tensor([[[13.5, 1.5]]])
    m = window_3d_mask(anchors2, bad, xyz, rel=0.04, radius=4.0)
    assert torch.equal(m, square_window_mask(anchors2, 1, 8, 4, 4.0))


def test_default_rel_matches_square_window_on_fronto_parallel_plane():
    # Plane at depth z, pinhole f = 400 px: 16 px <-> 0.04 z. Along a row, cells beyond
    # 16 px are negatives for both windows.
    f, z, w = 400.0, 3.0, 16
    c = cell_centers(1, w, 4)
    xyz = torch.stack([(c[:, 0] - 31.5) / f * z, (c[:, 1] - 1.5) / f * z, torch.full((w,), z)], 0)
    anchors = torch.tensor([[[31.5, 1.5]]])
    axyz = torch.tensor([[[0.0, 0.0, z]]])
    m3 = window_3d_mask(anchors, axyz, xyz.reshape(1, 3, 1, w))
    ms = square_window_mask(anchors, 1, w)
    assert torch.equal(m3, ms)
    assert math.isclose(0.04, 16 / f)


def test_negative_mask_errors():
    anchors = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="3D safe window needs"):
        negative_mask(anchors, 4, 4, window="3d")
    with pytest.raises(ValueError, match="Unknown safe window"):
        negative_mask(anchors, 4, 4, window="round")
    with pytest.raises(ValueError, match="B x N x 2"):
        square_window_mask(torch.zeros(2, 2), 4, 4)
