"""``python -m tools.photos --output ~/tasp_photos``: the photo gatherer's command (run from the
repository's root; see :mod:`tools.photos`)."""

import sys

from .gather import main

if __name__ == "__main__":
    sys.exit(main())
