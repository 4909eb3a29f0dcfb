"""Named extraction presets, in hloc's conf layout (output name, model conf, preprocessing)."""

import copy
from typing import Dict, Optional

PRESETS: Dict[str, Dict] = {
    # Aachen Day-Night: hloc's SuperPoint recipe (max side 1024, 4096 keypoints) at three image
    # scales. On landmark photos, views far apart in scale are where one scale fails; three
    # scales win there, facades hold, and placement pays (docs/results.md "Several scales").
    "tasp_aachen": {
        "output": "feats-tasp-n4096-r1024-s1-0.71-0.5",
        "model": {"name": "tasp", "max_keypoints": 4096, "scales": [1.0, 0.71, 0.5]},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    # One scale at 1024 px: two views of one scale, where placement wins (homographies,
    # HPatches, two-view geometry of facades, SfM of a walk around an object).
    "tasp": {
        "output": "feats-tasp-n4096-r1024",
        "model": {"name": "tasp", "max_keypoints": 4096},
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    # SIFT's DoG keypoints (no absolute contrast threshold: the strongest 4096 by response, so
    # night photos keep theirs) with TaSP's descriptors, each described on the pyramid level
    # that matches its DoG size, as hloc's `sosnet` conf pairs DoG with a learned descriptor.
    # DoG places points more precisely than TaSP's own detector (docs/results.md).
    "tasp_dog": {
        "output": "feats-tasp-dog-n4096-r1024",
        "model": {
            "name": "tasp",
            "detector": "dog",
            "max_keypoints": 4096,
            "scales": [1.0, 0.71, 0.5, 0.35, 0.25],
        },
        "preprocessing": {"grayscale": False, "resize_max": 1024},
    },
    # InLoc: larger images, as in hloc's InLoc notebook; one scale, since InLoc's queries and
    # cutouts at 1600 px are about one scale apart (focal ~1244 vs ~1386 px).
    "tasp_inloc": {
        "output": "feats-tasp-n4096-r1600",
        "model": {"name": "tasp", "max_keypoints": 4096},
        "preprocessing": {"grayscale": False, "resize_max": 1600},
    },
}


# Matcher presets in hloc's layout. TaSP's descriptors are less peaked than SuperPoint's, so
# hloc's SuperPoint cut (distance 0.7) drops few wrong matches; 0.6 is TaSP's (docs/hloc.md).
MATCHER_PRESETS: Dict[str, Dict] = {
    "NN-tasp": {
        "output": "matches-NN-mutual-dist.6",
        "model": {"name": "nearest_neighbor", "do_mutual_check": True, "distance_threshold": 0.6},
    },
}


def matcher_warning(feature_conf: Dict, matcher_conf: Dict) -> Optional[str]:
    """One line when TaSP's own keypoints meet a matcher measured to fail with them (a ratio
    test: their nearest and second-nearest descriptors are close, so it keeps few matches);
    None otherwise."""
    model = feature_conf.get("model", {})
    if model.get("name") != "tasp" or model.get("detector") == "dog":
        return None  # at DoG keypoints a ratio test works (docs/results.md "Matchers")
    if not matcher_conf.get("model", {}).get("ratio_threshold"):
        return None
    return (
        f"TaSP features ({feature_conf.get('output')}) with a ratio test "
        f"({matcher_conf.get('output')}) keep almost no matches: use hloc's 'NN-mutual', or "
        f"'NN-tasp' to match a query against many retrieved images."
    )


def get_preset(name: str, **model_overrides) -> Dict:
    """A deep copy of a preset, with model options overridden (e.g. ``weights=...``)."""
    if name not in PRESETS:
        raise KeyError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    conf = copy.deepcopy(PRESETS[name])
    conf["model"].update(model_overrides)
    return conf
