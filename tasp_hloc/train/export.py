"""Export a training checkpoint to the released-weights format: a plain state_dict in
``weights/`` and its entry in ``weights/manifest.json`` (sha256, architecture, recipe, results).

    python -m tasp_hloc.train.export runs/my_run --name tasp_v1 [--fp16] [--results results.json]
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, Optional

import torch

from ..io.files import atomic_write, write_text_atomic
from ..model.weights import MANIFEST_NAME, WEIGHTS_DIR, infer_architecture, read_manifest, sha256sum
from .checkpoints import CHECKPOINT


def export(
    run: Path,
    name: str,
    weights_dir: Path = WEIGHTS_DIR,
    fp16: bool = False,
    extra: Optional[Dict] = None,
) -> Path:
    """Write ``<weights_dir>/<name>.pth`` and its manifest entry; returns the .pth path."""
    run = Path(run)
    ckpt_path = run / CHECKPOINT if run.is_dir() else run
    if not ckpt_path.exists():
        raise FileNotFoundError(
            f"No checkpoint at {ckpt_path}; train first (python -m tasp_hloc.train)."
        )
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in ckpt["model"].items()
    }
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    out = atomic_write(weights_dir / f"{name}.pth", lambda f: torch.save(state, f))

    config = ckpt.get("config", {})
    entry = {
        "file": out.name,
        "sha256": sha256sum(out),
        **infer_architecture(state),
        "dtype": "float16" if fp16 else "float32",
        "recipe": {"steps": ckpt.get("step"), "config": config},
        "results": {},
        **(extra or {}),
    }
    manifest = read_manifest(weights_dir)
    manifest.setdefault("format", 1)
    manifest["weights"][name] = entry
    write_text_atomic(weights_dir / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tasp_hloc.train.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, help="run folder (or checkpoint file)")
    p.add_argument("--name", required=True, help="released name, e.g. tasp_v1")
    p.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--fp16", action="store_true", help="store float16 (half the size)")
    p.add_argument(
        "--info", type=Path, help="JSON merged into the manifest entry (data, results...)"
    )
    args = p.parse_args(argv)
    extra = json.loads(args.info.read_text()) if args.info else None
    out = export(args.run, args.name, args.weights_dir, args.fp16, extra)
    print(f"wrote {out} and its entry in {args.weights_dir / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
