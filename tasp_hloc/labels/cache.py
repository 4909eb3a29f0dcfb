"""Disk cache of pseudo-ground-truth keypoints: computed once per image and labelling conf.

Layout: ``root/<conf hash>/conf.json`` (the conf the hash stands for) and one
``root/<conf hash>/<h[:2]>/<h>.npz`` per image, ``h`` = sha1 of the image id (a stable string
such as the image's path relative to the dataset root). Each file holds ``keypoints`` (K, 2)
float32 x-y pixels, ``scores`` (K,) float32, ``image_size`` (2,) int64 (W, H) and ``image_id``.

Why one file per image: every write is atomic (write a uniquely named tmp file in the same folder,
then ``os.replace``), so an interrupted run leaves either the old state or the new file, never a
half-written one; labelling resumes at image granularity; several processes (DataLoader workers, a
labelling job) can read and write concurrently without locks. ``pack_h5`` turns a finished cache
into one HDF5 file (also written atomically) for shipping; ``PackedLabels`` reads it.
"""

import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import numpy as np
import torch

from ..io.files import atomic_path, atomic_write

Labels = Dict[str, torch.Tensor]
_FIELDS = ("keypoints", "scores", "image_size")


def conf_hash(conf: Any) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    return hashlib.sha1(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _id_hash(image_id: str) -> str:
    return hashlib.sha1(image_id.encode()).hexdigest()[:20]


class LabelCache:
    """Per-image keypoint labels on disk, keyed by image id and a hash of the labelling conf.

    Args:
        root: cache folder (created if needed).
        key: JSON-serialisable description of how labels are made (e.g.
            ``Labeler.cache_key()``); None opens the only conf stored under ``root``.
    """

    def __init__(self, root: Union[str, Path], key: Optional[Dict[str, Any]] = None):
        self.root = Path(root)
        if key is None:
            found = sorted(p.parent for p in self.root.glob("*/conf.json"))
            if len(found) != 1:
                raise ValueError(
                    f"{self.root} holds {len(found)} label confs; pass the key of the one you want "
                    f"(e.g. Labeler(conf).cache_key())."
                    if found
                    else f"No labels in {self.root}: run `python -m tasp_hloc.labels --images DIR "
                    f"--output {self.root}` first."
                )
            self.dir = found[0]
            self.key = json.loads((self.dir / "conf.json").read_text())
        else:
            self.key = key
            self.dir = self.root / conf_hash(key)
            self.dir.mkdir(parents=True, exist_ok=True)
            conf_file = self.dir / "conf.json"
            if not conf_file.exists():
                text = json.dumps(key, sort_keys=True, indent=1, default=str).encode()
                atomic_write(conf_file, lambda f: f.write(text))
        self.hash = self.dir.name

    def path(self, image_id: str) -> Path:
        h = _id_hash(image_id)
        return self.dir / h[:2] / f"{h}.npz"

    def __contains__(self, image_id: str) -> bool:
        return self.get(image_id) is not None

    def get(self, image_id: str) -> Optional[Labels]:
        """The stored labels, or None when absent or unreadable (then they are recomputed)."""
        path = self.path(image_id)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["image_id"]) != image_id:
                    return None
                return {k: torch.from_numpy(data[k].copy()) for k in _FIELDS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            warnings.warn(f"Ignoring unreadable label file {path} ({e}); it will be recomputed.")
            return None

    def put(self, image_id: str, labels: Labels) -> None:
        """Store ``keypoints`` (K, 2), ``scores`` (K,), ``image_size`` (2,) = (W, H), atomically."""
        missing = [k for k in _FIELDS if k not in labels]
        if missing:
            raise KeyError(f"Labels to cache lack {missing}; expected {list(_FIELDS)}.")
        arrays = {
            "keypoints": labels["keypoints"].detach().cpu().float().numpy().reshape(-1, 2),
            "scores": labels["scores"].detach().cpu().float().numpy().reshape(-1),
            "image_size": labels["image_size"].detach().cpu().long().numpy().reshape(2),
            "image_id": np.array(image_id),
        }
        path = self.path(image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    def get_or_compute(self, image_id: str, compute: Callable[[], Labels]) -> Labels:
        """Return cached labels, or call ``compute()``, store and return its result."""
        labels = self.get(image_id)
        if labels is None:
            labels = compute()
            self.put(image_id, labels)
            labels = {k: labels[k].detach().cpu() for k in _FIELDS}
        return labels

    def ids(self) -> Iterator[str]:
        """The image ids stored (reads every file: for packing and inspection, not hot loops)."""
        for path in sorted(self.dir.glob("*/*.npz")):
            try:
                with np.load(path, allow_pickle=False) as data:
                    yield str(data["image_id"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                continue

    def clean_tmp(self) -> int:
        """Delete tmp files left by interrupted writers (call when no writer runs). Returns the count."""
        stale = list(self.dir.rglob("*.tmp"))
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def pack_h5(self, path: Union[str, Path]) -> int:
        """Write all labels to one HDF5 file atomically (one group per image id, slashes nest).

        Returns the number of images written.
        """
        import h5py

        n = 0
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["conf"] = json.dumps(self.key, sort_keys=True, default=str)
            f.attrs["conf_hash"] = self.hash
            for image_id in self.ids():
                labels = self.get(image_id)
                if labels is None:
                    continue
                g = f.create_group(image_id)
                for k in _FIELDS:
                    g.create_dataset(k, data=labels[k].numpy())
                n += 1
        return n


class PackedLabels:
    """Read labels from a file written by :meth:`LabelCache.pack_h5`; opens lazily (fork-safe)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(
                f"No packed labels at {self.path}: run `python -m tasp_hloc.labels "
                f"--images DIR --output {self.path}`."
            )
        self._file = None

    def _f(self):
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    @property
    def conf(self) -> Dict[str, Any]:
        return json.loads(self._f().attrs["conf"])

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._f()

    def __getitem__(self, image_id: str) -> Labels:
        g = self._f()[image_id]
        return {k: torch.from_numpy(g[k][()]) for k in _FIELDS}

    def __getstate__(self):  # do not pickle an open HDF5 handle into DataLoader workers
        return {"path": self.path, "_file": None}
