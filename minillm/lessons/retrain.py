"""Retrain a lesson's model from its recipe, in the notebook, as `minillm-train` would.

    from minillm.lessons import retrain
    run = retrain("induction")            # -> "/.../checkpoints_retrained/induction"
    model = GPT.load(os.path.join(run, "model.safetensors"))

This is the command itself (`minillm.training.cli.main`), run in-process: the same recipe, the
same run directory (model, checkpoint, metrics.jsonl, run.json, curves.png) and the same report.
"""

from __future__ import annotations

import os

from minillm.lessons.checkpoints import ENV

RETRAINED = "checkpoints_retrained"  # below the working folder, beside the lessons' own ./checkpoints


def retrain(
    recipe: str,
    out: str | os.PathLike | None = None,
    *,
    steps: int | None = None,
    seeds: int | None = None,
    progress: bool = True,
) -> str:
    """Train `recipe` (one of minillm.training.recipes.RECIPES) into `out`, by default
    ./checkpoints_retrained/<recipe>, exactly as `minillm-train <recipe> --out <out>` does, and
    return the run directory (an absolute path). steps overrides the recipe's number of steps;
    seeds trains that many seeds together (default: the recipe's); progress shows a progress bar.

    A directory that already holds a run is refused: delete it, or pass another `out`."""
    from minillm.training import cli
    from minillm.training.recipes import RECIPES

    if recipe not in RECIPES:
        raise ValueError(f"no recipe {recipe!r}; the recipes are: {', '.join(RECIPES)}")
    out = os.path.abspath(os.fspath(out) if out is not None else os.path.join(RETRAINED, recipe))
    if os.path.exists(os.path.join(out, "checkpoint.safetensors")):
        raise FileExistsError(
            f"{out} already holds a run of {recipe}: load it (see below), or delete the folder or pass another "
            f"out= to train again.\n{_how_to_load(recipe, out)}"
        )
    argv = [recipe, "--out", out]
    if steps is not None:
        argv += ["--steps", str(steps)]
    if seeds is not None:
        argv += ["--seeds", str(seeds)]
    if not progress:
        argv.append("--no-progress")
    cli.main(argv)
    print(_how_to_load(recipe, out))
    return out


def _how_to_load(recipe: str, out: str) -> str:
    if os.path.exists(os.path.join(out, "model.safetensors")):
        where = os.path.join(out, "model.safetensors")
        load = f"model = GPT.load({where!r})"
    else:  # a multi-seed run: model_seed{s}.safetensors
        where = os.path.join(out, "model_seed*.safetensors")
        load = f"models = GPT.load_seeds({out!r})  # {{seed: GPT}}"
    text = f"\nyour model: {where}\nload it with:  {load}"
    if os.path.basename(out) == recipe:  # the layout of the shipped checkpoints: checkpoint() can find it
        text += (
            f"\nor run the lesson on it: put  os.environ[{ENV!r}] = {os.path.dirname(out)!r}  in its first cell "
            "(checkpoint(...) looks there first)"
        )
    return text
