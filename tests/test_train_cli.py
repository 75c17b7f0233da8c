"""`python -m train`: every recipe fits its task, and the command line trains, resumes and plots."""

import json
import os
import subprocess
import sys

import pytest

from minillm import GPT
from minillm.recipes import RECIPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_a_model_that_fits_its_task(name):
    r = RECIPES[name]
    assert r.model.n_ctx >= r.task.seq_len and r.model.d_vocab == r.task.d_vocab
    assert r.model.d_vocab_out == r.task.d_vocab_out
    assert r.about and r.target_metric


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_help_lists_the_recipes():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in RECIPES:
        assert name in out.stdout


def test_cli_trains_resumes_and_writes_the_run_directory(tmp_path):
    out = str(tmp_path / "run")
    first = run_cli("reversal", "--out", out, "--steps", "40", "--no-progress")
    assert first.returncode == 0, first.stderr
    for f in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "curves.png", "run.json"):
        assert os.path.exists(os.path.join(out, f)), f
    assert "some test examples" in first.stdout and "->" in first.stdout
    again = run_cli("reversal", "--out", out, "--steps", "40", "--no-progress")
    assert again.returncode != 0 and "resume" in again.stderr
    longer = run_cli("reversal", "--out", out, "--steps", "60", "--resume", "--no-progress")
    assert longer.returncode == 0, longer.stderr
    steps = [json.loads(l)["step"] for l in open(os.path.join(out, "metrics.jsonl"))]
    assert steps == sorted(set(steps)) and steps[-1] == 60
    GPT.load(os.path.join(out, "model.safetensors"))


def test_unknown_recipe_is_refused():
    out = run_cli("nope")
    assert out.returncode != 0 and "invalid choice" in out.stderr


def test_a_run_killed_with_sigkill_resumes_to_bit_identical_weights(tmp_path):
    """A real kill, at whatever moment it lands after the first checkpoint: the resumed run must end
    with exactly the weights of a run that was never interrupted."""
    import signal
    import time

    import numpy as np

    args = ["reversal", "--steps", "1000", "--no-progress"]
    straight = run_cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", *args, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in the next chunks
    was_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.safetensors").exists()
    resumed = run_cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = GPT.load(str(tmp_path / "straight" / "model.safetensors")).state_dict()
    b = GPT.load(str(out / "model.safetensors")).state_dict()
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)
    steps = [json.loads(l)["step"] for l in open(out / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 1000
    assert was_running, "the run finished before it could be killed: make it longer"


def test_induction_summary_shows_the_copies_and_scores_them():
    """The repeated-tokens recipes summarise what is predictable (the copy), against the random rest:
    the shipped induction model copies, an untrained one does not."""
    import re

    from minillm.recipes import summarize

    def copied_and_random(model):
        text = summarize(RECIPES["induction"], model, n=3)
        assert text.count("the model predicts:") == 3
        copied, random_ = re.search(r"([\d.]+)% of the copied tokens predicted, ([\d.]+)% of the random", text).groups()
        return float(copied), float(random_)

    trained = copied_and_random(GPT.load(os.path.join(ROOT, "lessons/checkpoints/induction/model.safetensors")))
    untrained = copied_and_random(GPT(RECIPES["induction"].model))
    assert trained[0] > 90 and trained[1] < 10
    assert untrained[0] < 10


def test_bracket_depth_metrics_and_summary_tell_a_trained_model_from_an_untrained_one():
    """prob_r2 (the match to the exact P(")")) is near 1 for the shipped model and near 0 or below
    for an untrained one; excess loss the other way round; the summary prints both rows."""
    from minillm.recipes import summarize

    recipe = RECIPES["bracket_depth"]
    (measure,) = recipe.make_metrics(recipe.task).values()
    trained = GPT.load(os.path.join(ROOT, "lessons/checkpoints/bracket_depth/model.safetensors"))
    good, bad = measure(trained), measure(GPT(recipe.model))
    assert good["prob_r2"] > 0.98 and good["excess_loss"] < 0.005
    assert bad["prob_r2"] < 0.2 and bad["excess_loss"] > 0.1
    text = summarize(recipe, trained, n=2)
    assert text.count("exact P())") == 2 and text.count("model P())") == 2
