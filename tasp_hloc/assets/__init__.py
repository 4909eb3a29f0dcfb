"""Files bundled with the package: the demo images (also int8 calibration's default images)."""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo"
