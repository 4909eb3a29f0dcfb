"""torch.hub entry point of TaSP (not part of the installed package).

    import torch

    model = torch.hub.load("path/to/tasp-hloc", "tasp", source="local", max_keypoints=2048)
    features = model.extract(image)  # image: (3, H, W) float in [0, 1], e.g. tasp_hloc.load_image

The released weights are read from ``weights/`` next to this file (nothing is downloaded).
"""

dependencies = ["torch"]


def tasp(weights: str = "tasp_v2", pretrained: bool = True, **conf):
    """TaSP (Task-aligned SuperPoint) in eval mode: ``extract(image)`` gives ``keypoints``,
    ``keypoint_scores`` and ``descriptors``.

    Args:
        weights: a released name (``weights/manifest.json``) or a path to a state_dict.
        pretrained: False for a randomly initialised network (``weights`` ignored).
        **conf: any other option of ``TaSP.default_conf`` (``max_keypoints``,
            ``detection_threshold``, ``subpixel``, ``amp``, ``scales``, ...).
    """
    from tasp_hloc.model.tasp import TaSP
    from tasp_hloc.runtime.allocator import keep_freed_memory_once

    keep_freed_memory_once()  # an entry point: freed activations stay for the next image
    return TaSP({**conf, "weights": weights if pretrained else None}).eval()
