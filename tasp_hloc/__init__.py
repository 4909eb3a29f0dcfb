"""TaSP (Task-aligned SuperPoint) local features for hloc."""

__version__ = "0.1.0"
