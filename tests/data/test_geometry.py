import math

import pytest
import torch

from tasp_hloc.data import geometry as G


def rot(ax, ay, az, dtype=torch.float64):
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=dtype)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=dtype)
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=dtype)
    return Rz @ Ry @ Rx


def plane_depth(K, n, d, h, w):
    """Depth map of the plane n.X = d seen by a camera with intrinsics K at the origin."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=K.dtype), torch.arange(w, dtype=K.dtype), indexing="ij"
    )
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)
    rays = pix @ torch.linalg.inv(K).T
    return d / (rays @ n)


def make_plane_pair(dtype=torch.float64, h=60, w=80):
    K = torch.tensor([[70.0, 0, 39.5], [0, 72.0, 29.5], [0, 0, 1]], dtype=dtype)
    n = torch.tensor([0.1, -0.2, 1.0], dtype=dtype)
    n = n / n.norm()
    d = 3.0
    R = rot(0.05, -0.08, 0.03, dtype)
    t = torch.tensor([0.3, -0.1, 0.2], dtype=dtype)
    T = torch.eye(4, dtype=dtype)
    T[:3, :3], T[:3, 3] = R, t
    n1 = R @ n
    d1 = d + n1 @ t
    depth0 = plane_depth(K, n, d, h, w)
    depth1 = plane_depth(K, n1, d1, h, w)
    H = K @ (R + torch.outer(t, n) / d) @ torch.linalg.inv(K)
    return K, T, H, depth0, depth1


def integer_grid(h, w, step, dtype):
    ys, xs = torch.meshgrid(
        torch.arange(0, h, step, dtype=dtype), torch.arange(0, w, step, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys], -1).reshape(1, -1, 2)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-4), (torch.float32, 2e-3)])
def test_plane_warp_matches_induced_homography(dtype, tol):
    K, T, H, depth0, depth1 = make_plane_pair(dtype)
    kpts0 = integer_grid(60, 80, 3, dtype)
    kpts1, valid, xyz0, xyz1 = G.warp_depth_pose(
        kpts0, depth0[None], depth1[None], K[None], K[None], T[None]
    )
    kpts1_h, valid_h = G.warp_homography(kpts0, H[None], (60, 80))
    assert valid.sum() > 0.5 * valid.numel()
    assert torch.equal(valid, valid_h)  # a plane occludes nothing: same support
    err = (kpts1 - kpts1_h).norm(dim=-1)[valid]
    assert err.max() < tol
    # 3D points lie on the plane, and xyz1 = T xyz0
    assert torch.allclose(xyz1, xyz0 @ T[:3, :3].T + T[:3, 3], atol=1e-5)


def test_subpixel_depth_lookup_on_plane():
    K, T, H, depth0, depth1 = make_plane_pair()
    kpts0 = integer_grid(60, 80, 7, torch.float64)[:, 5:-5] + 0.37
    kpts1, valid, _, _ = G.warp_depth_pose(
        kpts0, depth0[None], depth1[None], K[None], K[None], T[None]
    )
    kpts1_h, _ = G.warp_homography(kpts0, H[None], (60, 80))
    # bilinear depth of a plane is only approximately right (1/z is linear, not z)
    assert (kpts1 - kpts1_h).norm(dim=-1)[valid].max() < 0.05


def test_identity_pose_is_identity_warp():
    K, _, _, depth0, _ = make_plane_pair(torch.float32)
    kpts0 = torch.rand(2, 50, 2) * torch.tensor([79.0, 59.0])
    d = depth0[None].expand(2, -1, -1)
    kpts1, valid, xyz0, xyz1 = G.warp_depth_pose(
        kpts0,
        d,
        d,
        K[None].expand(2, 3, 3),
        K[None].expand(2, 3, 3),
        torch.eye(4)[None].expand(2, 4, 4),
    )
    assert valid.all()
    assert torch.allclose(kpts1, kpts0, atol=1e-3)
    assert torch.allclose(xyz0, xyz1)


def test_occlusion_and_unknown_depth_and_out_of_image():
    h, w = 40, 60
    K = torch.tensor([[50.0, 0, 29.5], [0, 50.0, 19.5], [0, 0, 1]])
    depth0 = torch.full((h, w), 4.0)
    depth0[:, :5] = 0.0  # unknown depth
    T = torch.eye(4)
    T[0, 3] = 0.4  # camera 1 sits 0.4 to the left: points move right by f*0.4/4 = 5 px
    depth1 = torch.full((h, w), 4.0)
    depth1[10:30, 20:40] = 1.0  # a foreground box in view 1 hides the background there
    kpts0 = integer_grid(h, w, 1, torch.float32)
    kpts1, valid, _, _ = G.warp_depth_pose(
        kpts0, depth0[None], depth1[None], K[None], K[None], T[None]
    )
    kpts1, valid, kpts0 = kpts1[0], valid[0], kpts0[0]
    known = kpts0[:, 0] >= 5
    assert torch.allclose(kpts1[known, 0], kpts0[known, 0] + 5.0, atol=1e-4)
    x1, y1 = kpts1[:, 0], kpts1[:, 1]
    hidden = (x1 >= 19.5) & (x1 <= 40.5) & (y1 >= 9.5) & (y1 <= 30.5)
    inner = (x1 >= 20.5) & (x1 <= 38.5) & (y1 >= 10.5) & (y1 <= 28.5)
    assert not valid[inner].any()  # occluded by the box
    assert not valid[kpts0[:, 0] < 5].any()  # unknown depth
    assert not valid[x1 > w - 1].any()  # out of image 1
    rest = ~hidden & (kpts0[:, 0] >= 5) & (x1 <= w - 1)
    assert valid[rest].all()


def test_sample_depth_edge_guard():
    depth = torch.tensor([[[1.0, 1.0, 5.0, 5.0]] * 3])  # 1 x 3 x 4, an edge between x=1 and x=2
    kpts = torch.tensor([[[0.5, 1.0], [1.4, 1.0], [1.6, 1.0], [2.5, 1.0], [-3.0, 1.0]]])
    d = G.sample_depth(depth, kpts, "bilinear")
    assert torch.allclose(d, torch.tensor([[1.0, 1.0, 5.0, 5.0, 0.0]]))
    d0 = depth.clone()
    d0[0, :, 3] = 0.0
    d = G.sample_depth(d0, torch.tensor([[[2.2, 1.0], [2.7, 1.0]]]), "bilinear")
    assert torch.allclose(d, torch.tensor([[5.0, 0.0]]))  # nearest fallback next to unknown


def test_homography_warp_and_dispatch():
    b, h, w = 2, 32, 32
    K, T, Hp, depth0, depth1 = make_plane_pair(torch.float32, h, w)
    Hh = torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])
    Kn = torch.tensor([[32.0, 0, 15.5], [0, 32.0, 15.5], [0, 0, 1]])
    data = {
        "depth0": torch.stack([depth0, torch.ones(h, w)]),
        "depth1": torch.stack([depth1, torch.ones(h, w)]),
        "K0": torch.stack([K, Kn]),
        "K1": torch.stack([K, Kn]),
        "T_1from0": torch.stack([T, torch.eye(4)]),
        "H_1from0": torch.stack([torch.eye(3), Hh]),
        "is_homography": torch.tensor([False, True]),
    }
    kpts0 = integer_grid(h, w, 2, torch.float32).expand(b, -1, -1)
    kpts1, valid, xyz0, xyz1 = G.warp_points(kpts0, data)
    ref_pose = G.warp_depth_pose(
        kpts0[:1], data["depth0"][:1], data["depth1"][:1], K[None], K[None], T[None]
    )
    assert torch.allclose(kpts1[0], ref_pose[0][0]) and torch.equal(valid[0], ref_pose[1][0])
    assert torch.allclose(kpts1[1], kpts0[1] + torch.tensor([3.0, -2.0]))
    inside = (kpts0[1, :, 0] + 3 <= w - 1) & (kpts0[1, :, 1] - 2 >= 0)
    assert torch.equal(valid[1], inside)
    assert torch.allclose(xyz0[1, :, 2], torch.ones(kpts0.shape[1]))
    assert torch.allclose(xyz1[1, :, 2], torch.ones(kpts0.shape[1]))
    assert torch.isfinite(xyz1).all()


def test_dense_xyz_and_grid_points():
    K, _, _, depth0, _ = make_plane_pair(torch.float32, 32, 48)
    depth0[:8, :8] = 0
    xyz = G.dense_xyz(depth0[None], K[None], stride=4)
    assert xyz.shape == (1, 3, 8, 12)
    assert (xyz[0, 2, :2, :2] == 0).all() and (xyz[0, 2, 2:, 2:] > 0).all()
    # cell (i, j) centre at pixel (4j + 1.5, 4i + 1.5): project back
    i, j = 5, 7
    uv = K @ (xyz[0, :, i, j] / xyz[0, 2, i, j])
    assert torch.allclose(uv[:2], torch.tensor([4 * j + 1.5, 4 * i + 1.5]), atol=1e-3)
    g = torch.Generator().manual_seed(0)
    pts = G.grid_points(256, 256, 4, 256, g)
    assert pts.shape == (256, 2)
    assert len({tuple(p) for p in pts.tolist()}) == 256
    assert torch.all(((pts - 1.5) % 4) == 0)
    assert torch.equal(pts, G.grid_points(256, 256, 4, 256, torch.Generator().manual_seed(0)))
    assert G.grid_points(8, 8, 4, 256).shape == (4, 2)
    assert G.grid_points(64, 64, 4, 10, g, batch_size=3).shape == (3, 10, 2)
