"""minillm-train <recipe> --out DIR [--seed N] [--steps N] [--seeds N] [--resume]

(the same command as `python -m minillm.training ...`)

Trains one toy model from a recipe (minillm/training/recipes.py) and writes to DIR: model.safetensors (or one
model_seed{s}.safetensors per seed), checkpoint.safetensors (to resume), metrics.jsonl, run.json
and curves.png. Then prints the time per step, the step at which the recipe's target was reached,
and a few test examples with the model's answers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time


def main(argv=None) -> int:
    from minillm.training.recipes import RECIPES

    listing = "\n".join(f"  {name:<24}{r.title}" for name, r in RECIPES.items())
    parser = argparse.ArgumentParser(
        prog="minillm-train",
        description=__doc__ + "\nrecipes:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", choices=list(RECIPES), metavar="recipe", help="one of: " + ", ".join(RECIPES))
    parser.add_argument("--out", help="run directory (default: runs/<recipe>)")
    parser.add_argument("--seed", type=int, default=None, help="model init and batch order seed")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="train N seeds (seed, seed+1, ...) together in one vmapped program (default: the recipe's, often 1)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.safetensors")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from minillm.plots import plot_training_curves
    from minillm.training.loop import train
    from minillm.training.recipes import get_recipe, summarize

    recipe = get_recipe(args.recipe)
    tc = recipe.train
    if args.seed is not None:
        tc = dataclasses.replace(tc, seed=args.seed)
    if args.steps is not None:
        tc = dataclasses.replace(tc, steps=args.steps)
    n_seeds = args.seeds if args.seeds is not None else recipe.n_seeds
    seeds = None if n_seeds is None else [tc.seed + i for i in range(n_seeds)]
    out = args.out or os.path.join("runs", recipe.name)
    print(f"recipe {recipe.name}: {recipe.about}\n")
    print(f"model: {recipe.model}\ntrain: {tc}\nout: {out}\n")
    t0 = time.perf_counter()
    result = train(
        recipe.model,
        recipe.task,
        tc,
        out,
        metric_fns=recipe.metrics(),
        seeds=seeds,
        resume=args.resume,
        progress=not args.no_progress,
    )
    wall = time.perf_counter() - t0

    extra = [k for k in (recipe.target_metric,) if k not in ("test_acc", "train_acc")]
    fig = plot_training_curves(
        result.metrics, log_x=recipe.name.startswith("modular"), extra=extra, title=f"{recipe.name}"
    )
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)

    print(
        f"\ntrained {result.step} steps: {result.elapsed:.1f} s of training "
        f"({1000 * result.elapsed / max(result.step, 1):.1f} ms a step), {wall:.1f} s wall with compilation and "
        "evaluation"
    )
    for i, model in enumerate(result.models()):
        seed = tc.seed if seeds is None else seeds[i]
        rows = [r for r in result.metrics if r["seed"] == seed]
        hit = next((r for r in rows if recipe.reached(r)), None)
        last = rows[-1]
        status = (
            f"reached {recipe.target_metric} >= {recipe.target_value} at step {hit['step']} ({hit['time']:.1f} s)"
            if hit
            else f"did NOT reach {recipe.target_metric} >= {recipe.target_value}"
        )
        print(
            f"seed {seed}: {status}; final train_acc {last['train_acc']:.4f}, test_acc {last['test_acc']:.4f}, "
            f"test_loss {last['test_loss']:.4f}"
            + (
                f", {recipe.target_metric} {last[recipe.target_metric]:.3f}"
                if recipe.target_metric not in ("train_acc", "test_acc")
                else ""
            )
        )
        if i == 0:
            print("\nsome test examples and the model's answers:\n" + summarize(recipe, model))
    print(f"\nwrote {out}/: model, checkpoint.safetensors, metrics.jsonl, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
