"""``python -m tasp_hloc.train <config> [key=value ...]``: train, resuming if a checkpoint exists.

Examples::

    python -m tasp_hloc.train table3/ta_diw_sw3d data.root=/data/megadepth
    python -m tasp_hloc.train local_v1 train.steps=2000 name=my_run
    torchrun --nproc_per_node=4 -m tasp_hloc.train release_v2   # 4 processes, DDP

Under torchrun the config's train.batch_size is the global batch, split across the processes.
"""

import argparse
import logging
import os
import sys

from ..runtime.allocator import keep_freed_memory_once
from .config import load_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasp_hloc.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="a YAML file, or a name under tasp_hloc/train/configs")
    parser.add_argument("overrides", nargs="*", help="key=value (OmegaConf dotlist)")
    parser.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="stop cleanly at this step (checkpoint saved, schedule unchanged); "
        "run again without it to continue",
    )
    args = parser.parse_args(argv)
    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun: only rank 0 talks
    logging.basicConfig(
        level=logging.INFO if main_process else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    conf = load_config(args.config, args.overrides)
    # before the first tensor and the loader's workers, which inherit it (runtime/allocator.py)
    keep_freed_memory_once()

    from .trainer import Trainer

    trainer = Trainer(conf)
    try:
        switches = conf.loss
        if trainer.is_main:
            print(
                f"run {conf.name} -> {trainer.out} | TA={switches.get('task_aligned', True)} "
                f"DIW={switches.get('importance_weighting', True)} "
                f"window={switches.get('window', 'square')} | {trainer.world_size} process(es), "
                f"batch {conf.train.batch_size} = {trainer.world_size} x {trainer.local_batch_size}"
            )
        path = trainer.fit(stop_at=args.stop_at)
        if trainer.is_main:
            print(
                f"checkpoint: {path}\nexport with: python -m tasp_hloc.train.export {trainer.out} --name NAME"
            )
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
