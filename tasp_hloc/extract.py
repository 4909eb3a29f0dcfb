"""Extract TaSP features from a folder of images into an hloc feature file, without hloc.

Three stages overlap: worker processes decode and resize images (a DataLoader), the main
thread runs the network (several images per call where they have one size, ``batch_size``),
and one writer thread puts the results into the HDF5 file, so writing never holds up the
network.
"""

import ctypes
import functools
import logging
import os
import signal
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .io.h5_journal import open_append
from .io.hloc_format import (
    DETECTION_NOISE,
    rescale_prediction,
    stored_names,
    to_hloc_prediction,
    write_features,
)
from .io.images import ImageDataset, ImageReadError
from .model.tasp import TaSP
from .runtime.device import resolve_device

logger = logging.getLogger(__name__)

# Results waiting for the writer thread at most: bounds memory if the disk is slower.
MAX_PENDING_WRITES = 8


def build_model(model_conf: Dict, device: str) -> TaSP:
    conf = {k: v for k, v in model_conf.items() if k != "name"}
    return TaSP(conf).eval().to(device)


def _die_with_parent(parent_pid: int, worker_id: int = 0) -> None:
    """DataLoader worker initializer: on Linux the kernel SIGKILLs this worker when the
    process that started it dies, by any signal (kill -9 included), so no decoding worker is
    left orphaned. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl (e.g. an unusual libc): best effort
        return
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def _first(batch: List[Dict]) -> Dict:
    return batch[0]  # the loader yields single images; same-size runs are batched afterwards


def same_size_runs(items: Iterable[Dict], batch_size: int) -> Iterator[List[Dict]]:
    """Consecutive items grouped into lists of at most ``batch_size`` images of one size, in
    order; an item without an image (a read error) comes alone."""
    run: List[Dict] = []
    for item in items:
        shape = item["image"].shape if "image" in item else None
        if run and (shape is None or len(run) == batch_size or run[0]["image"].shape != shape):
            yield run
            run = []
        if shape is None:
            yield [item]
        else:
            run.append(item)
    if run:
        yield run


def split_batch(pred: Dict[str, torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
    """TaSP's padded batch output as one dict per image (B = 1 each, padding dropped)."""
    counts = pred["keypoint_mask"].sum(1).tolist()
    return [{k: v[j : j + 1, :n] for k, v in pred.items()} for j, n in enumerate(counts)]


class _Writer:
    """Writes results into the feature file from one background thread, in order.

    An error in the writer stops extraction at the next image; Ctrl-C in the main thread
    lets the writes already queued finish (then the file is committed, see ``open_append``).
    """

    def __init__(self, out, as_half: bool):
        self.out, self.as_half = out, as_half
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tasp-h5-writer")
        self.pending: "deque[Future]" = deque()

    def _write(self, name: str, pred: Dict[str, np.ndarray], resized_size, original_size):
        pred, uncertainty = rescale_prediction(
            pred, resized_size, original_size, DETECTION_NOISE, self.as_half
        )
        with self.out.item(name) as fd:
            write_features(fd, name, pred, uncertainty)

    def submit(self, *args) -> None:
        while self.pending and (self.pending[0].done() or len(self.pending) >= MAX_PENDING_WRITES):
            self.pending.popleft().result()  # re-raises the writer's error here
        self.pending.append(self.pool.submit(self._write, *args))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        while self.pending:
            self.pending.popleft().result()


@torch.no_grad()
def extract(
    conf: Dict,
    image_dir: Path,
    feature_path: Path,
    names: Optional[Sequence[str]] = None,
    as_half: bool = True,
    overwrite: bool = False,
    device: Optional[str] = None,
    num_workers: int = 2,
    fail_fast: bool = False,
    model: Optional[TaSP] = None,
    commit_every: float = 1.0,
    batch_size: int = 1,
) -> Tuple[Path, List[Tuple[str, str]]]:
    """Write features of every image of ``image_dir`` (or ``names``) to ``feature_path``.

    Args:
        conf: a preset (``tasp_hloc.hloc.confs``): ``model`` and ``preprocessing`` dicts.
        names: image names relative to ``image_dir``; default: all images found there.
        overwrite: re-extract images already in the file (else they are skipped, so an
            interrupted run resumes where it stopped).
        num_workers: processes decoding and resizing images (0: in the main thread).
        fail_fast: raise on the first unreadable image instead of skipping it.
        commit_every: seconds between commits of the file (0: after every image); a SIGKILL
            loses at most the images finished since the last commit (see ``open_append``).
        batch_size: images per network call, taken from consecutive images of one size after
            resizing (a GPU gains from it; on a CPU 1 is as fast). The features are those of
            one image at a time, up to floating-point rounding.

    Returns:
        ``(feature_path, failures)``: failures lists ``(name, reason)`` of skipped images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    feature_path = Path(feature_path)
    dataset = ImageDataset(image_dir, conf.get("preprocessing", {}), names)
    done = set() if overwrite else stored_names(feature_path, dataset.names)
    dataset.names = [n for n in dataset.names if n not in done]
    if not dataset.names:
        logger.info("All images are already in %s; nothing to extract.", feature_path)
        return feature_path, []
    logger.info(
        "Extracting %d images into %s (%d already there).",
        len(dataset.names),
        feature_path,
        len(done),
    )

    device = resolve_device(device)
    model = model if model is not None else build_model(conf["model"], device)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_first,
        worker_init_fn=functools.partial(_die_with_parent, os.getpid()),
        pin_memory=device.startswith("cuda"),
    )
    failures = []
    items = iter(loader)  # forks the decoding workers before the output is opened (locked)
    progress = tqdm(total=len(dataset), desc="extract", unit="img")
    with progress, open_append(feature_path, commit_every) as out:
        writer = _Writer(out, as_half)
        try:
            for run in same_size_runs(items, batch_size):
                if "error" in run[0]:
                    item = run[0]
                    if fail_fast:
                        raise ImageReadError(item["error"])
                    logger.warning("%s", item["error"])
                    failures.append((item["name"], item["error"]))
                    progress.update(1)
                    continue
                images = torch.stack([torch.from_numpy(i["image"]) for i in run])
                images = images.to(device, non_blocking=True)
                preds = split_batch(model({"image": images}))
                resized_size = np.array(images.shape[-2:][::-1])
                for item, pred in zip(run, preds):
                    pred = {k: v[0].cpu().numpy() for k, v in to_hloc_prediction(pred).items()}
                    writer.submit(item["name"], pred, resized_size, item["original_size"])
                progress.update(len(run))
        finally:
            writer.close()  # the queued writes finish, also on an error or Ctrl-C
    if failures:
        logger.warning(
            "Skipped %d unreadable images (fix or remove them and run again to add them):\n%s",
            len(failures),
            "\n".join(f"  {n}" for n, _ in failures),
        )
    return feature_path, failures
