"""Training recipes for minillm toy models: `python -m train --help`."""
