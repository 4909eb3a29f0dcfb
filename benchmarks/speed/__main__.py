"""``python -m benchmarks.speed <subcommand> [options]``: see ``benchmarks.speed``."""

import sys

from benchmarks.speed import main

if __name__ == "__main__":
    sys.exit(main())
