"""Synthetic 3D rooms of textured planes and boxes, ray cast on the fly into training pairs with
exact depth and pose: the scenes and the dataset (``scenes.py``), the ray casting
(``render.py``) and the textures (``textures.py``)."""

from .render import cast_rays, pixel_rays, render_color, render_depth
from .scenes import SyntheticDataset, SyntheticScenes
from .textures import procedural_textures

__all__ = [
    "SyntheticScenes",
    "SyntheticDataset",
    "cast_rays",
    "pixel_rays",
    "render_depth",
    "render_color",
    "procedural_textures",
]
