"""`python -m train ...` in a checkout: the same as `python -m minillm.train ...` (minillm/train.py)."""

import sys

from minillm.train import main

if __name__ == "__main__":
    sys.exit(main())
