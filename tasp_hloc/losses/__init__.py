"""Training losses of TaSP: hard triplet loss with safe windows, dynamic importance weighting
(pHash-based), task-aligned keypoint loss, and their combination ``TaSPLoss``."""

from .importance import (  # noqa: F401
    DynamicImportanceWeighting,
    MovingHistogram,
    intrinsic_importance,
)
from .keypoint import (  # noqa: F401
    TaskAlignedKeypointLoss,
    alignment_factor,
    weighted_cell_cross_entropy,
)
from .phash import extract_patches, hamming, phash  # noqa: F401
from .safe_window import negative_mask, square_window_mask, window_3d_mask  # noqa: F401
from .subpixel import SubpixelReprojectionLoss  # noqa: F401
from .tasp_loss import TaSPLoss  # noqa: F401
from .triplet import HardTripletLoss  # noqa: F401
