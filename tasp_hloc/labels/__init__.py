"""Pseudo-ground-truth keypoints by homographic adaptation, cell label maps, and their cache.

Typical use in a dataset::

    labeler = Labeler({"detector": "shi_tomasi"}, cache_dir="outputs/labels")
    labels = labeler.label_file(path, image_id=rel_path)  # keypoints in full-res pixels
    # ... crop / resize the image and transform labels["keypoints"] alike, then:
    label_map = keypoints_to_label_map(kpts, (H, W), labels["scores"])  # H/8 x W/8 int64

Offline, for a folder: ``python -m tasp_hloc.labels --images DIR --output DIR_OR_FILE.h5``.
"""

from ..model.keypoints import logits_to_heatmap
from .cache import LabelCache, PackedLabels, conf_hash
from .cells import DUSTBIN, keypoints_to_label_map, label_map_to_keypoints
from .detectors import BaseDetector, ClassicalCornerDetector, ModelDetector, get_detector
from .homographic_adaptation import HomographicAdaptation, nms_keypoints, sample_homographies
from .labeler import Labeler

__all__ = [
    "LabelCache",
    "PackedLabels",
    "conf_hash",
    "DUSTBIN",
    "keypoints_to_label_map",
    "label_map_to_keypoints",
    "logits_to_heatmap",
    "BaseDetector",
    "ClassicalCornerDetector",
    "ModelDetector",
    "get_detector",
    "HomographicAdaptation",
    "nms_keypoints",
    "sample_homographies",
    "Labeler",
]
