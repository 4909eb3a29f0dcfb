"""Ray casting of the synthetic scenes (:mod:`tasp_hloc.data.synthetic`): a scene is a set of
textured rectangles ("quads": ``origin``, orthonormal ``u``, ``v`` and ``extent``), a ray hits a
quad where it crosses its plane inside its extent and the nearest hit wins, vectorised over
pixels and quads. :func:`render_depth` casts depth at the exact pixel centres;
:func:`render_color` averages ``supersample``^2 rays per pixel through each quad's texture map
and shading, casting against the whole scene only near silhouettes and quad edges."""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F


def cast_rays(
    scene: Dict[str, torch.Tensor],
    origin: torch.Tensor,
    dirs: torch.Tensor,
    near: float = 1e-4,
    chunk: int = 1 << 16,
) -> Dict[str, torch.Tensor]:
    """Nearest hit of rays ``origin + t * dirs`` (t > near) with the scene's quads.

    Args:
        scene: quads ``origin``, ``u``, ``v`` :math:`(Q, 3)` (u, v orthonormal), ``extent`` :math:`(Q, 2)`.
        origin: :math:`(3,)` common ray origin.
        dirs: :math:`(P, 3)` directions, not necessarily unit (t is in their units).

    Returns:
        ``t`` :math:`(P,)` (inf on a miss), ``quad`` :math:`(P,)` int64 (-1 on a miss) and the
        hit's quad coordinates ``s``, ``r`` :math:`(P,)` along u and v.
    """
    o, u, v, ext = scene["origin"], scene["u"], scene["v"], scene["extent"]
    n = torch.cross(u, v, dim=-1)
    dist = ((o - origin) * n).sum(-1)  # Q: plane offset seen from the ray origin
    cu, cv = ((origin - o) * u).sum(-1), ((origin - o) * v).sum(-1)
    out = {k: [] for k in ("t", "quad", "s", "r")}
    for d in dirs.split(chunk):
        dn = d @ n.T  # P x Q
        ok = dn.abs() > 1e-12
        t = dist / torch.where(ok, dn, torch.ones_like(dn))
        s = t * (d @ u.T) + cu
        r = t * (d @ v.T) + cv
        hit = ok & (t > near) & (s >= 0) & (s <= ext[:, 0]) & (r >= 0) & (r <= ext[:, 1])
        tmin, q = torch.where(hit, t, torch.full_like(t, math.inf)).min(1)
        miss = torch.isinf(tmin)
        out["t"].append(tmin)
        out["quad"].append(torch.where(miss, -1, q))
        out["s"].append(s.gather(1, q[:, None])[:, 0])
        out["r"].append(r.gather(1, q[:, None])[:, 0])
    return {k: torch.cat(x) for k, x in out.items()}


def pixel_rays(K: torch.Tensor, size: Tuple[int, int], supersample: int = 1) -> torch.Tensor:
    """Camera-frame ray directions with z = 1 through pixel centres (or an s x s sub-grid).

    Returns:
        :math:`(H * s, W * s, 3)`; entry (y*s + j, x*s + i) is sub-sample (i, j) of pixel (x, y).
    """
    h, w = size
    off = (torch.arange(supersample, dtype=K.dtype) + 0.5) / supersample - 0.5
    ys = (torch.arange(h, dtype=K.dtype)[:, None] + off).reshape(-1)
    xs = (torch.arange(w, dtype=K.dtype)[:, None] + off).reshape(-1)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([(x - K[0, 2]) / K[0, 0], (y - K[1, 2]) / K[1, 1], torch.ones_like(x)], -1)


def render_depth(scene, K, T_cam_from_world, size) -> Dict[str, torch.Tensor]:
    """z-depth at pixel centres :math:`(H, W)` (0 on a miss) and the hit quad :math:`(H, W)`."""
    R, t = T_cam_from_world[:3, :3], T_cam_from_world[:3, 3]
    centre = -R.T @ t
    dirs = (
        pixel_rays(K, size).view(-1, 3) @ R
    )  # R^T d for each row: world directions with z_cam = 1
    hit = cast_rays(scene, centre, dirs)
    depth = torch.where(hit["quad"] >= 0, hit["t"], torch.zeros_like(hit["t"]))  # t is z: d_z = 1
    return {"depth": depth.view(size), "quad": hit["quad"].view(size)}


def _hit_known(
    scene, origin: torch.Tensor, dirs: torch.Tensor, quad: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """Intersect each ray with one given quad's plane (no extent test): O(P), for interiors."""
    o, u, v = scene["origin"][quad], scene["u"][quad], scene["v"][quad]
    n = torch.cross(u, v, dim=-1)
    t = ((o - origin) * n).sum(-1) / (dirs * n).sum(-1)
    p = origin + t[:, None] * dirs - o
    return {"t": t, "quad": quad, "s": (p * u).sum(-1), "r": (p * v).sum(-1)}


def render_color(
    scene,
    textures,
    K,
    T_cam_from_world,
    size,
    supersample=2,
    quad_map: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """RGB :math:`(3, H, W)` in [0, 1], the mean of ``supersample``^2 rays per pixel.

    ``textures``: :math:`(T, 3, S, S)`; quad q shows texture ``scene["texture"][q]`` through the
    affine map ``scene["tex_affine"][q]`` (2 x 3, quad coordinates -> texels), mirrored beyond
    its edges, times the quad's ``shade`` :math:`(Q, 3)`. ``quad_map`` :math:`(H, W)`, the quad
    hit at each pixel centre (from :func:`render_depth`), saves most of the work: sub-rays of a
    pixel whose 3 x 3 neighbourhood shows one quad only need that quad's plane; only pixels near
    silhouettes and quad edges are cast against the whole scene.
    """
    h, w = size
    s = supersample
    if quad_map is None:
        quad_map = render_depth(scene, K, T_cam_from_world, size)["quad"]
    # Colour needs no float64 (depth does): float32 halves the memory traffic of 4x more rays.
    scene = {
        k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in scene.items()
    }
    K, T_cam_from_world = K.float(), T_cam_from_world.float()
    R, t = T_cam_from_world[:3, :3], T_cam_from_world[:3, 3]
    centre = -R.T @ t
    dirs = pixel_rays(K, size, s).view(h, s, w, s, 3).permute(0, 2, 1, 3, 4).reshape(-1, 3) @ R
    qf = quad_map[None, None].double()
    edge = (F.max_pool2d(qf, 3, 1, 1) != -F.max_pool2d(-qf, 3, 1, 1))[0, 0] | (quad_map < 0)
    edge = edge[:, :, None].expand(h, w, s * s).reshape(-1)
    qsub = quad_map[:, :, None].expand(h, w, s * s).reshape(-1)
    hit = {
        k: torch.empty(len(dirs), dtype=torch.long if k == "quad" else dirs.dtype)
        for k in ("t", "quad", "s", "r")
    }
    for mask, res in (
        (edge, cast_rays(scene, centre, dirs[edge])),
        (~edge, _hit_known(scene, centre, dirs[~edge], qsub[~edge])),
    ):
        for k in hit:
            hit[k][mask] = res[k]
    q = hit["quad"].clamp(min=0)
    A = scene["tex_affine"][q]  # P x 2 x 3
    sr1 = torch.stack([hit["s"], hit["r"], torch.ones_like(hit["s"])], -1)
    texel = (A @ sr1[..., None])[..., 0]  # P x 2
    n_tex, _, S, _ = textures.shape
    # One trilinear lookup in the stacked textures: z picks the slice exactly (integer z with
    # align_corners=True puts all weight on that slice), x-y mirror beyond the texture.
    z = scene["texture"][q].to(texel.dtype) / max(n_tex - 1, 1) * 2 - 1
    grid = torch.cat([texel / (S - 1) * 2 - 1, z[:, None]], -1).view(1, 1, 1, -1, 3)
    rgb = F.grid_sample(
        textures.permute(1, 0, 2, 3)[None],
        grid.to(textures.dtype),
        mode="bilinear",
        padding_mode="reflection",
        align_corners=True,
    )[0, :, 0, 0]  # 3 x P
    rgb = rgb * scene["shade"][q].T.to(rgb.dtype)
    rgb = torch.where(hit["quad"] >= 0, rgb, torch.zeros_like(rgb))
    return rgb.view(3, h, w, s * s).mean(-1).clamp(0, 1)
