"""The recipes (minillm/training/recipes.py): every one fits its task and names its target once (in its
TrainConfig), its progress measures read the split the run trains on, and its summary shows what a
model learned."""

import dataclasses
import os

import numpy as np
import pytest

from minillm import GPT
from minillm.training import TrainConfig
from minillm.training.recipes import RECIPES, Recipe, bracket_depth_metrics, induction_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_a_model_that_fits_its_task(name):
    r = RECIPES[name]
    assert r.model.n_ctx >= r.task.seq_len and r.model.d_vocab == r.task.d_vocab
    assert r.model.d_vocab_out == r.task.d_vocab_out
    assert r.about and r.target_metric


@pytest.mark.slow
def test_induction_summary_shows_the_copies_and_scores_them():
    """The repeated-tokens recipes summarise what is predictable (the copy), against the random rest:
    the shipped induction model copies, an untrained one does not."""
    import re

    from minillm.training.recipes import summarize

    def copied_and_random(model):
        text = summarize(RECIPES["induction"], model, n=3)
        assert text.count("the model predicts:") == 3
        copied, random_ = re.search(r"([\d.]+)% of the copied tokens predicted, ([\d.]+)% of the random", text).groups()
        return float(copied), float(random_)

    trained = copied_and_random(GPT.load(os.path.join(ROOT, "lessons/checkpoints/induction/model.safetensors")))
    untrained = copied_and_random(GPT(RECIPES["induction"].model))
    assert trained[0] > 90 and trained[1] < 10
    assert untrained[0] < 10


@pytest.mark.slow
def test_bracket_depth_metrics_and_summary_tell_a_trained_model_from_an_untrained_one():
    """prob_r2 (the match to the exact P(")")) is near 1 for the shipped model and near 0 or below
    for an untrained one; excess loss the other way round; the summary prints both rows."""
    from minillm.training.recipes import summarize

    recipe = RECIPES["bracket_depth"]
    (measure,) = recipe.metrics().values()
    trained = GPT.load(os.path.join(ROOT, "lessons/checkpoints/bracket_depth/model.safetensors"))
    good, bad = measure(trained), measure(GPT(recipe.model))
    assert good["prob_r2"] > 0.98 and good["excess_loss"] < 0.005
    assert bad["prob_r2"] < 0.2 and bad["excess_loss"] > 0.1
    text = summarize(recipe, trained, n=2)
    assert text.count("exact P())") == 2 and text.count("model P())") == 2


def test_a_recipe_names_its_target_once_in_its_train_config():
    """Recipe.target_metric / target_value are read from TrainConfig.target, not kept beside it."""
    assert not {"target_metric", "target_value"} & {f.name for f in dataclasses.fields(Recipe)}
    for r in RECIPES.values():
        assert (r.target_metric, r.target_value) == r.train.target
    moved = dataclasses.replace(RECIPES["reversal"], train=TrainConfig(target=("test_acc", 0.5)))
    assert moved.target_value == 0.5 and moved.reached({"test_acc": 0.6}) and not moved.reached({"test_acc": 0.4})
    with pytest.raises(ValueError, match="needs a target"):
        dataclasses.replace(RECIPES["reversal"], train=TrainConfig())


def test_only_the_early_stopping_recipes_stop_at_their_target():
    stopping = {name for name, r in RECIPES.items() if r.train.target_margin is not None}
    assert stopping == {"modular_addition", "ioi", "ioi_shortcut"}


@pytest.mark.slow
def test_progress_measures_read_the_split_the_run_trains_on():
    """A run with data_seed 1 must be measured on split(1)'s test set, not on split(0)'s."""
    recipe = RECIPES["bracket_depth"]
    model = GPT.load(os.path.join(ROOT, "lessons/checkpoints/bracket_depth/model.safetensors"))
    (on_0,) = bracket_depth_metrics(recipe.task, 0).values()
    (on_1,) = bracket_depth_metrics(recipe.task, 1).values()
    assert on_0(model)["excess_loss"] != on_1(model)["excess_loss"]
    seed_1 = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, data_seed=1))
    (measure,) = seed_1.metrics().values()
    assert measure(model) == on_1(model)

    induction = RECIPES["induction"]
    model = GPT.load(os.path.join(ROOT, "lessons/checkpoints/induction/model.safetensors"))
    (on_0,) = induction_metrics(induction.task, 0).values()
    (on_1,) = induction_metrics(induction.task, 1).values()
    assert not np.isclose(float(on_0(model)["repeat_loss"]), float(on_1(model)["repeat_loss"]), rtol=1e-7, atol=0)
