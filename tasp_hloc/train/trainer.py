"""The TaSP training loop: Adam, linear decay to 0, checkpoints that resume, CSV + PNG logs."""

import csv
import logging
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..data import build_dataset, collate
from ..losses import TaSPLoss
from ..tasp import TaSP
from .anchors import build_anchors
from .labeled import LabeledPairs

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_last.pth"
LOGGED = ["total", "desc", "kpt", "d_pos", "d_neg", "triplet", "w", "s", "active", "n_valid",
          "delta", "aligned"]


class EpochSampler(Sampler):
    """A seeded permutation per epoch that can start mid-epoch (for resuming)."""

    def __init__(self, n: int, seed: int, epoch: int = 0, start: int = 0):
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.start:].tolist())

    def __len__(self):
        return self.n - self.start


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Trains TaSP from a resolved config (see ``tasp_hloc/train/configs/paper.yaml``)."""

    def __init__(self, conf: DictConfig):
        self.conf = conf
        self.out = Path(conf.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(conf, self.out / "config.yaml", resolve=True)
        seed_everything(conf.seed)
        self.device = resolve_device(conf.train.device)
        tc = conf.train

        model_conf = OmegaConf.to_container(conf.model, resolve=True)
        model_conf.setdefault("weights", None)
        if self.device.type == "cuda" and tc.amp:
            model_conf["amp"] = tc.amp
        self.model = TaSP(model_conf).to(self.device).train()
        self.loss_fn = TaSPLoss(OmegaConf.to_container(conf.loss, resolve=True)).to(self.device)
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=tc.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, 1.0 - step / tc.steps)
        )
        pairs = build_dataset(OmegaConf.to_container(conf.data, resolve=True))
        labels_conf = OmegaConf.to_container(conf.labels, resolve=True)
        cache_dir = labels_conf.pop("cache_dir", None)
        self.dataset = LabeledPairs(pairs, labels_conf, cache_dir)
        self.steps_per_epoch = len(self.dataset) // tc.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"The dataset has {len(self.dataset)} pairs, fewer than one batch of "
                f"{tc.batch_size}: add data or lower train.batch_size."
            )
        self.step = 0
        self.anchor_generator = torch.Generator().manual_seed(conf.seed)
        if tc.resume and (self.out / CHECKPOINT).exists():
            self._load(self.out / CHECKPOINT)

    def _param_groups(self):
        """Frozen early blocks (budget) and a separate learning rate for the backbone."""
        tc = self.conf.train
        frozen = [self.model.backbone.stem] + list(self.model.backbone.blocks[: tc.freeze_blocks])
        for module in frozen if tc.freeze_blocks > 0 else []:
            module.requires_grad_(False)
        self._frozen = frozen if tc.freeze_blocks > 0 else []
        backbone = [p for p in self.model.backbone.parameters() if p.requires_grad]
        heads = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.")]
        return [{"params": backbone, "lr": tc.lr * tc.backbone_lr_scale}, {"params": heads}]

    def _set_train_mode(self):
        self.model.train()
        for module in self._frozen:  # frozen blocks keep their ImageNet BN statistics
            module.eval()

    def _state(self) -> Dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "loss": self.loss_fn.state_dict(),
            "step": self.step, "anchor_generator": self.anchor_generator.get_state(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate()},
            "config": OmegaConf.to_container(self.conf, resolve=True),
        }

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state["loss"])
        self.step = state["step"]
        self.anchor_generator.set_state(state["anchor_generator"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        logger.info("Resumed from %s at step %d.", path, self.step)

    def save(self) -> Path:
        path = self.out / CHECKPOINT
        _atomic_save(self._state(), path)
        return path

    def _loader(self) -> DataLoader:
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        self.dataset.set_epoch(epoch)
        sampler = EpochSampler(len(self.dataset), self.conf.seed, epoch,
                               offset * self.conf.train.batch_size)
        workers = self.conf.train.num_workers
        return DataLoader(self.dataset, batch_size=self.conf.train.batch_size, sampler=sampler,
                          num_workers=workers, collate_fn=collate, drop_last=True,
                          persistent_workers=False, pin_memory=self.device.type == "cuda",
                          prefetch_factor=2 if workers > 0 else None)

    def train_step(self, batch: Dict) -> Dict[str, float]:
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        b = batch["image0"].shape[0]
        batch.update(build_anchors(batch, self.conf.train.grid_anchors,
                                   generator=self.anchor_generator))
        dense = self.model.forward_dense(torch.cat([batch["image0"], batch["image1"]]))
        pred0 = {k: v[:b] for k, v in dense.items()}
        pred1 = {k: v[b:] for k, v in dense.items()}
        losses = self.loss_fn(pred0, pred1, batch)
        loss = losses["total"].mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"Non-finite loss at step {self.step}: {losses}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.conf.train.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.conf.train.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        return {k: float(losses[k].detach().float().mean()) for k in LOGGED if k in losses}

    def _log(self, row: Dict) -> None:
        path = self.out / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", "epoch", "lr", "sec_per_step", *LOGGED])
            if new:
                writer.writeheader()
            writer.writerow(row)

    def fit(self) -> Path:
        tc = self.conf.train
        stop = {"now": False}

        def on_sigterm(signum, frame):  # finish the step, save, exit cleanly
            stop["now"] = True

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        bar = tqdm(total=tc.steps, initial=self.step, desc=f"train {self.conf.name}", unit="step")
        try:
            while self.step < tc.steps and not stop["now"]:
                self._set_train_mode()
                t0 = time.time()
                for batch in self._loader():
                    stats = self.train_step(batch)
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['total']:.4f}", desc=f"{stats['desc']:.4f}")
                    if self.step % tc.log_every == 0 or self.step == tc.steps:
                        self._log({"step": self.step, "epoch": self.step // self.steps_per_epoch,
                                   "lr": self.scheduler.get_last_lr()[-1],
                                   "sec_per_step": (time.time() - t0) / tc.log_every, **stats})
                        t0 = time.time()
                    if self.step % tc.checkpoint_every == 0:
                        self.save()
                    if self.step >= tc.steps or stop["now"]:
                        break
        except KeyboardInterrupt:
            logger.warning("Interrupted: saving a checkpoint at step %d.", self.step)
            raise
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
            self.save()
            plot_curves(self.out / "metrics.csv", self.out / "curves.png")
        return self.out / CHECKPOINT


def plot_curves(csv_path: Path, png_path: Path) -> Optional[Path]:
    """Loss terms and weight statistics against steps, one panel each."""
    if not Path(csv_path).exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    keys = [k for k in ["total", "desc", "kpt", "triplet", "d_pos", "d_neg", "w", "s", "delta", "active"]
            if rows[0].get(k) not in (None, "")]
    steps = [int(r["step"]) for r in rows]
    cols = 5
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols, figsize=(3.2 * cols, 2.6 * math.ceil(len(keys) / cols)),
                             squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [float(r[key]) for r in rows])
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
    return png_path
