"""``python -m tasp_hloc.train <config> [key=value ...]``: train, resuming if a checkpoint exists.

Examples::

    python -m tasp_hloc.train table3/ta_diw_sw3d data.root=/data/megadepth
    python -m tasp_hloc.train local_v1 train.steps=2000 name=my_run
"""

import argparse
import logging
import sys

from .config import load_config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasp_hloc.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a YAML file, or a name under tasp_hloc/train/configs")
    parser.add_argument("overrides", nargs="*", help="key=value (OmegaConf dotlist)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    conf = load_config(args.config, args.overrides)

    from .trainer import Trainer

    trainer = Trainer(conf)
    switches = conf.loss
    print(f"run {conf.name} -> {trainer.out} | TA={switches.get('task_aligned', True)} "
          f"DIW={switches.get('importance_weighting', True)} window={switches.get('window', 'square')}")
    path = trainer.fit()
    print(f"checkpoint: {path}\nexport with: python -m tasp_hloc.train.export {trainer.out} --name NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())
