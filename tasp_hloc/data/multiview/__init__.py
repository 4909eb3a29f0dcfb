"""Real 3D supervision from photo collections: SfM, depth and covisible pairs (MegaDepth-style).

``python -m tasp_hloc.data.multiview build --images DIR --output OUT``; see :mod:`.build`.
"""
