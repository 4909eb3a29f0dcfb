"""Training TaSP: ``python -m tasp_hloc.train <config.yaml> [key=value ...]``."""
