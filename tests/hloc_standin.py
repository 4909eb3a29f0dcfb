"""A minimal stand-in for hloc with its module layout, for CI where hloc is not installed.

Only what a plugin meets: ``hloc.extractors`` (a package of extractor modules),
``hloc.utils.base_model`` (``BaseModel``, ``dynamic_load``: import ``<root>.<name>`` and take
its one BaseModel subclass defined there) and ``hloc.extract_features`` (a ``confs`` dict, a
``main(conf, image_dir, export_dir, ...)`` writing one h5 group per image, and a command line
whose ``--conf`` choices come from ``confs``) and ``hloc.match_features`` (its ``confs``).
Written from hloc's documented behaviour, not copied from it.
"""

from pathlib import Path
from textwrap import dedent

FILES = {
    "hloc/__init__.py": '''
        __version__ = "0.0-standin"
    ''',
    "hloc/extractors/__init__.py": "",
    "hloc/utils/__init__.py": "",
    "hloc/utils/base_model.py": '''
        import inspect
        from abc import ABCMeta, abstractmethod

        from torch import nn


        class BaseModel(nn.Module, metaclass=ABCMeta):
            default_conf = {}
            required_inputs = []

            def __init__(self, conf):
                super().__init__()
                self.conf = conf = {**self.default_conf, **conf}
                self._init(conf)

            def forward(self, data):
                missing = [k for k in self.required_inputs if k not in data]
                assert not missing, missing
                return self._forward(data)

            @abstractmethod
            def _init(self, conf):
                ...

            @abstractmethod
            def _forward(self, data):
                ...


        def dynamic_load(root, model):
            path = root.__name__ + "." + model
            module = __import__(path, fromlist=[""])
            found = [c for _, c in inspect.getmembers(module, inspect.isclass)
                     if c.__module__ == path and issubclass(c, BaseModel)]
            assert len(found) == 1, found
            return found[0]
    ''',
    "hloc/extract_features.py": '''
        import argparse
        from pathlib import Path

        import cv2
        import h5py
        import numpy as np
        import torch

        from . import extractors
        from .utils.base_model import dynamic_load

        confs = {
            "superpoint_aachen": {
                "output": "feats-superpoint-n4096-r1024",
                "model": {"name": "superpoint", "max_keypoints": 4096},
                "preprocessing": {"grayscale": True, "resize_max": 1024},
            },
        }


        @torch.no_grad()
        def main(conf, image_dir, export_dir=None, as_half=True, image_list=None,
                 feature_path=None, overwrite=False):
            image_dir = Path(image_dir)
            if feature_path is None:
                feature_path = Path(export_dir, conf["output"] + ".h5")
            Path(feature_path).parent.mkdir(parents=True, exist_ok=True)
            Model = dynamic_load(extractors, conf["model"]["name"])
            model = Model(conf["model"]).eval()
            names = sorted(p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*.png"))
            resize_max = conf["preprocessing"].get("resize_max")
            with h5py.File(str(feature_path), "a") as fd:
                for name in names:
                    image = cv2.imread(str(image_dir / name))[:, :, ::-1]
                    h, w = image.shape[:2]
                    scale = 1.0
                    if resize_max and max(h, w) > resize_max:
                        scale = resize_max / max(h, w)
                        image = cv2.resize(image, (round(w * scale), round(h * scale)),
                                           interpolation=cv2.INTER_AREA)
                    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
                    pred = {k: v[0].cpu().numpy() for k, v in model({"image": x}).items()}
                    pred["image_size"] = original_size = np.array([w, h])
                    size = np.array(x.shape[-2:][::-1])
                    scales = (original_size / size).astype(np.float32)
                    pred["keypoints"] = (pred["keypoints"] + 0.5) * scales[None] - 0.5
                    uncertainty = getattr(model, "detection_noise", 1) * scales.mean()
                    if as_half:  # like hloc: every float32 array, whatever its key
                        for k in pred:
                            if pred[k].dtype == np.float32:
                                pred[k] = pred[k].astype(np.float16)
                    if name in fd:
                        del fd[name]
                    grp = fd.create_group(name)
                    for k, v in pred.items():
                        grp.create_dataset(k, data=v)
                    grp["keypoints"].attrs["uncertainty"] = uncertainty
            return Path(feature_path)


        if __name__ == "__main__":
            parser = argparse.ArgumentParser()
            parser.add_argument("--image_dir", type=Path, required=True)
            parser.add_argument("--export_dir", type=Path, required=True)
            parser.add_argument("--conf", default="superpoint_aachen", choices=list(confs))
            parser.add_argument("--as_half", action="store_true")
            args = parser.parse_args()
            main(confs[args.conf], args.image_dir, args.export_dir, args.as_half)
    ''',
    "hloc/match_features.py": """
        confs = {
            "NN-mutual": {
                "output": "matches-NN-mutual",
                "model": {"name": "nearest_neighbor", "do_mutual_check": True},
            },
        }
    """,
}


def write_hloc_standin(root: Path) -> Path:
    """Write the stand-in package under ``root`` (to put on PYTHONPATH); returns ``root``."""
    root = Path(root)
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text).lstrip())
    return root


if __name__ == "__main__":  # python tests/hloc_standin.py DIR (for .ci/run)
    import sys

    print(write_hloc_standin(Path(sys.argv[1])))
