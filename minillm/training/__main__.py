"""python -m minillm.training <recipe> --out DIR: the same command as `minillm-train` (cli.py)."""

import sys

from minillm.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
