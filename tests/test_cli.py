"""The command, `minillm-train` (python -m minillm.training, minillm/training/cli.py): it lists,
trains, resumes and plots, in a subprocess as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from minillm import GPT
from minillm.training.recipes import RECIPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "minillm.training", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_help_lists_the_recipes():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in RECIPES:
        assert name in out.stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_bit_identical_weights(tmp_path):
    """A real kill, at whatever moment it lands after the first checkpoint: the resumed run must end
    with exactly the weights of a run that was never interrupted."""
    import signal
    import time

    import numpy as np

    # reversal checkpoints every 500 steps: the kill lands between step 500 and the end, 700
    args = ["reversal", "--steps", "700", "--no-progress"]
    command = [sys.executable, "-m", "minillm.training", *args]
    # the uninterrupted run, beside the one to kill (two processes: the two cores both work)
    log = open(tmp_path / "straight.log", "w")
    straight = subprocess.Popen([*command, "--out", str(tmp_path / "straight")], cwd=ROOT, stdout=log, stderr=log)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*command, "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in the next chunks
    was_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint.safetensors").exists()
    assert straight.wait() == 0, (tmp_path / "straight.log").read_text()
    resumed = run_cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = GPT.load(str(tmp_path / "straight" / "model.safetensors")).state_dict()
    b = GPT.load(str(out / "model.safetensors")).state_dict()
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)
    steps = [json.loads(l)["step"] for l in open(out / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 700
    assert was_running, "the run finished before it could be killed: make it longer"


def test_the_train_folder_lists_every_recipe_and_the_command():
    """train/ is where a reader looks for how the models are trained: it must name every recipe."""
    text = open(os.path.join(ROOT, "train", "README.md")).read()
    assert "minillm-train <recipe>" in text
    for name in RECIPES:
        assert f"| `{name}` |" in text, f"train/README.md does not list the recipe {name}"
