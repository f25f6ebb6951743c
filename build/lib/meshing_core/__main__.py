"""Entry point of `python -m meshing_core`."""

import sys

from meshing_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
