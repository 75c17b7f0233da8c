"""Where the lessons' shipped checkpoints are, wherever a notebook is opened from.

    from minillm.lessons import checkpoint
    model = GPT.load(checkpoint("induction/model.safetensors"))

The notebooks used to open "checkpoints/..." relative to the folder they sit in, which breaks when
a notebook is opened from elsewhere (another folder, Colab's /content, a copy). `checkpoint` looks,
in order, in $MINILLM_CHECKPOINTS, in ./checkpoints and ./lessons/checkpoints (below the working
directory), and in lessons/checkpoints of the checkout this minillm was installed from (an
editable install), and says where it looked when it finds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MINILLM_CHECKPOINTS"


def _candidates() -> list[Path]:
    found = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    found += [Path.cwd() / "checkpoints", Path.cwd() / "lessons" / "checkpoints"]
    found.append(Path(__file__).resolve().parents[2] / "lessons" / "checkpoints")  # the checkout
    return found


def checkpoint(relative: str = "") -> str:
    """The path of a shipped checkpoint file or folder, e.g. checkpoint("clock") or
    checkpoint("induction/model.safetensors"); "" gives the checkpoints folder itself."""
    places = _candidates()
    for base in places:
        path = base / relative
        if base.is_dir() and path.exists():
            return str(path)
    looked = "\n  ".join(str(p / relative) for p in places)
    raise FileNotFoundError(
        f"no lesson checkpoint {relative!r}; looked in\n  {looked}\nSet {ENV} to the lessons/checkpoints folder "
        "of a minillm checkout, or retrain it (the lesson's last cell)."
    )
