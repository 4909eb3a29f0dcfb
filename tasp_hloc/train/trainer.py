"""The TaSP training loop: Adam, linear decay to 0, checkpoints that resume, CSV + PNG logs.

One process, or several under ``torchrun`` (DistributedDataParallel, see ``distributed.py``):
the config's batch size is the global one, split evenly across the processes; rank r takes
rows ``r*b:(r+1)*b`` (b = batch / processes) of every global batch, draws the anchors of the
whole global batch (and keeps its rows), synchronises batch norm and the DIW histogram, so a
step is the step one process would take with the whole batch (up to float rounding). Only
rank 0 writes (config, metrics, curves, checkpoints).
"""

import csv
import logging
import signal
import time
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import build_dataset, collate
from ..losses import TaSPLoss
from ..model.tasp import TaSP
from ..runtime.device import resolve_device
from . import distributed
from .anchors import build_anchors
from .checkpoints import CHECKPOINT, atomic_save, keep_copy, state_digest
from .curves import plot_curves
from .labeled import LabeledPairs
from .precision import CPU_PRECISIONS, keep_depthwise_fp32, resolve_cpu_precision
from .reproducibility import EpochSampler, rank_seed, rng_state, seed_everything, set_rng_state

logger = logging.getLogger(__name__)

LOGGED = [
    "total",
    "desc",
    "kpt",
    "d_pos",
    "d_neg",
    "triplet",
    "w",
    "s",
    "active",
    "n_valid",
    "delta",
    "aligned",
    "subpx",
]


class _Dense(torch.nn.Module):
    """``model.forward_dense`` as ``forward``, for DistributedDataParallel (which hooks forward)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.model.forward_dense(image)


class Trainer:
    """Trains TaSP from a resolved config (see ``tasp_hloc/train/configs/paper.yaml``)."""

    def __init__(self, conf: DictConfig):
        self.conf = conf
        tc = conf.train
        # Several processes: torchrun's WORLD_SIZE > 1 (or a process group already joined).
        self.rank, self.world_size, self.device, self._owns_group = distributed.setup(
            torch.device(resolve_device(tc.device))
        )
        self.distributed = self.world_size > 1
        self.is_main = self.rank == 0
        if self.distributed and tc.batch_size % self.world_size:
            raise ValueError(
                f"train.batch_size={tc.batch_size} is the global batch and must split evenly "
                f"over the {self.world_size} processes."
            )
        self.local_batch_size = tc.batch_size // self.world_size
        self.out = Path(conf.output_dir)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(conf, self.out / "config.yaml", resolve=True)
        seed_everything(conf.seed)  # the same initial network on every process

        model_conf = OmegaConf.to_container(conf.model, resolve=True)
        model_conf.setdefault("weights", None)
        cpu_precision = tc.get("cpu_precision")
        if cpu_precision not in CPU_PRECISIONS:
            raise ValueError(
                f"train.cpu_precision must be one of {list(CPU_PRECISIONS)}, got {cpu_precision!r}."
            )
        cpu_precision = resolve_cpu_precision(cpu_precision)
        if self.device.type == "cuda" and tc.amp:
            model_conf["amp"] = tc.amp
        elif self.device.type == "cpu" and cpu_precision:
            model_conf["amp"] = "bf16"
        self.model = TaSP(model_conf).to(self.device).train()
        if self.device.type == "cpu" and cpu_precision == "bf16-dw-fp32":
            keep_depthwise_fp32(self.model)
        self.loss_fn = TaSPLoss(OmegaConf.to_container(conf.loss, resolve=True)).to(self.device)
        self.net = _Dense(self.model)  # what train_step calls: itself, or its DDP wrapper
        if tc.get("compile"):  # fuses the elementwise passes (and the casts) around the convs
            self.net = torch.compile(self.net)
        if self.distributed:
            # Batch norm with the statistics of the global batch, like one process. On CPU the
            # statistics travel on a group of their own, away from DDP's gradient buckets.
            bn_group = dist.new_group(backend="gloo") if self.device.type == "cpu" else None
            distributed.convert_sync_batchnorm(self.model, self.device, bn_group)
            self.loss_fn.importance.histogram.sync_group = dist.group.WORLD
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=tc.lr)
        if self.distributed:
            # After _param_groups: frozen blocks (requires_grad False) are left out of DDP.
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.net,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(tc.get("find_unused_parameters", False)),
            )
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
        self.anchor_generator = torch.Generator().manual_seed(conf.seed)  # the same on all ranks
        if self.rank > 0:  # the global random streams differ between processes
            seed_everything(rank_seed(conf.seed, self.rank))
        self._resume()

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

    def _state(self, rng_ranks=None) -> Dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "step": self.step,
            "anchor_generator": self.anchor_generator.get_state(),
            "rng": rng_state(),  # this process's (rank 0's)
            "config": OmegaConf.to_container(self.conf, resolve=True),
        }
        if rng_ranks is not None:  # several processes: every rank's random streams
            state["world_size"], state["rng_ranks"] = len(rng_ranks), rng_ranks
        return state

    def _resume(self) -> None:
        """Load the checkpoint if resuming. Several processes: rank 0 reads it and sends it to
        the others (so output_dir need not be shared between machines)."""
        path = self.out / CHECKPOINT
        state = None
        if self.is_main and self.conf.train.resume and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=False)
        if self.distributed:
            box = [state]
            dist.broadcast_object_list(box, src=0, device=self._collective_device())
            state = box[0]
        if state is not None:
            self._load_state(state)
            logger.info("Resumed from %s at step %d.", path, self.step)

    def _load(self, path: Path) -> None:
        self._load_state(torch.load(path, map_location="cpu", weights_only=False))
        logger.info("Resumed from %s at step %d.", path, self.step)

    def _load_state(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loss_fn.load_state_dict(state["loss"])
        self.step = state["step"]
        self.anchor_generator.set_state(state["anchor_generator"])
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.world_size:
            set_rng_state(ranks[self.rank])
        elif self.rank == 0:
            set_rng_state(state["rng"])
        else:  # a checkpoint of another number of processes: fresh streams for this rank
            seed_everything(rank_seed(self.conf.seed, self.rank, self.step))

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _check_ranks_agree(self) -> str:
        """Raise if the processes hold different networks or DIW histograms (they must not);
        returns the digest they share (see :func:`state_digest`)."""
        mine = state_digest(self.model.state_dict(), self.loss_fn.importance.histogram.pdf)
        digests = [None] * self.world_size
        dist.all_gather_object(digests, mine)
        if len(set(digests)) > 1:
            raise RuntimeError(
                f"The {self.world_size} processes hold different networks or DIW "
                f"histograms at step {self.step}: {digests}."
            )
        return mine

    def save(self, collective: bool = True) -> Optional[Path]:
        """Write the checkpoint (rank 0). Several processes: a collective call (every rank's
        random states are gathered and the ranks are checked to agree), unless ``collective``
        is False (after an error: rank 0 writes what it holds, without the other ranks' states)."""
        path = self.out / CHECKPOINT
        rng_ranks = digest = None
        if self.distributed and collective:
            digest = self._check_ranks_agree()
            rng_ranks = [None] * self.world_size
            dist.all_gather_object(rng_ranks, rng_state())
        if self.is_main:
            state = self._state(rng_ranks)
            if digest is not None:  # every process held exactly this network and histogram
                state["ranks_digest"] = digest
            atomic_save(state, path)
        if self.distributed and collective:
            dist.barrier()
        return path if self.is_main else None

    def close(self) -> None:
        """Leave the process group if this trainer joined it."""
        if self._owns_group:
            distributed.cleanup()
            self._owns_group = False

    def _loader(self) -> DataLoader:
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        self.dataset.set_epoch(epoch)
        sampler = EpochSampler(
            len(self.dataset),
            self.conf.seed,
            epoch,
            offset * self.conf.train.batch_size,
            self.conf.train.batch_size,
            self.rank,
            self.world_size,
        )
        workers = self.conf.train.num_workers
        return DataLoader(
            self.dataset,
            batch_size=self.local_batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            drop_last=True,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if workers > 0 else None,
        )

    def train_step(self, batch: Dict) -> Dict[str, float]:
        batch = {
            k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }
        b = batch["image0"].shape[0]
        batch.update(
            build_anchors(
                batch,
                self.conf.train.grid_anchors,
                generator=self.anchor_generator,
                global_batch=b * self.world_size,
                offset=b * self.rank,
            )
        )
        dense = self.net(torch.cat([batch["image0"], batch["image1"]]))
        pred0 = {k: v[:b] for k, v in dense.items()}
        pred1 = {k: v[b:] for k, v in dense.items()}
        losses = self.loss_fn(pred0, pred1, batch)
        loss = losses["total"].mean()  # several processes: DDP averages the ranks' gradients
        if not torch.isfinite(loss):  # the global batch mean, as the samples are equally many
            raise FloatingPointError(f"Non-finite loss at step {self.step}: {losses}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.conf.train.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.conf.train.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        return {k: float(losses[k].detach().float().mean()) for k in LOGGED if k in losses}

    def _reduce(self, stats: Dict[str, float], stop: bool):
        """Several processes: the global batch's means of the logged statistics (every rank has
        as many samples), and whether any process was asked to stop (so all stop together)."""
        if not self.distributed:
            return stats, stop
        keys = list(stats)
        t = torch.tensor(
            [stats[k] for k in keys] + [float(stop)],
            dtype=torch.float64,
            device=self._collective_device(),
        )
        dist.all_reduce(t)
        means = (t[:-1] / self.world_size).tolist()
        return dict(zip(keys, means)), bool(t[-1] > 0)

    def _log(self, row: Dict) -> None:
        path = self.out / "metrics.csv"
        fields = ["step", "epoch", "lr", "sec_per_step", *LOGGED]
        new = not path.exists()
        if not new:  # a resumed run keeps its file's columns, whatever this version logs
            with open(path, newline="") as f:
                fields = next(csv.reader(f), None) or fields
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def fit(self, stop_at: Optional[int] = None) -> Path:
        """Train to ``train.steps``, or stop cleanly at step ``stop_at`` (checkpoint saved, the
        schedule unchanged: a later ``fit`` continues as if never stopped)."""
        tc = self.conf.train
        end = tc.steps if stop_at is None else min(tc.steps, stop_at)
        stop = {"now": False, "agreed": False}

        def on_sigterm(signum, frame):  # finish the step, save, exit cleanly
            stop["now"] = True

        def halt() -> bool:  # several processes: only when all know (so all stop together)
            return stop["agreed"] if self.distributed else stop["now"]

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        bar = tqdm(
            total=tc.steps,
            initial=self.step,
            desc=f"train {self.conf.name}",
            unit="step",
            disable=not self.is_main,
        )
        clean = False
        try:
            while self.step < end and not halt():
                self._set_train_mode()
                t0 = time.time()
                for batch in self._loader():
                    stats = self.train_step(batch)
                    self.step += 1
                    # Several processes: a SIGTERM seen by any stops all, at the same step.
                    stats, stop["agreed"] = self._reduce(stats, stop["now"])
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['total']:.4f}", desc=f"{stats['desc']:.4f}")
                    if self.is_main and (self.step % tc.log_every == 0 or self.step == tc.steps):
                        self._log(
                            {
                                "step": self.step,
                                "epoch": self.step // self.steps_per_epoch,
                                "lr": self.scheduler.get_last_lr()[-1],
                                "sec_per_step": (time.time() - t0) / tc.log_every,
                                **stats,
                            }
                        )
                        t0 = time.time()
                    keep = bool(tc.get("keep_every")) and self.step % tc.keep_every == 0
                    if self.step % tc.checkpoint_every == 0 or keep:
                        self.save()
                    if keep and self.is_main:
                        keep_copy(self.out / CHECKPOINT, self.step)
                    if self.step >= end or halt():
                        break
            clean = True
        except KeyboardInterrupt:
            logger.warning("Interrupted: saving a checkpoint at step %d.", self.step)
            raise
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
            # After an error the other processes may be gone: no collective call then.
            self.save(collective=clean)
            if self.is_main:
                plot_curves(self.out / "metrics.csv", self.out / "curves.png")
        return self.out / CHECKPOINT
