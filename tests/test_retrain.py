"""minillm.lessons.retrain: the lessons' one-line retrain, the `minillm-train` command run in-process."""

import json
import os

import pytest

from minillm import GPT
from minillm.lessons import ENV, checkpoint, retrain


@pytest.mark.slow  # trains a recipe for 20 steps
def test_retrain_writes_the_run_where_the_lessons_find_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV, raising=False)
    run = retrain("reversal", steps=20, progress=False)
    assert run == str(tmp_path / "checkpoints_retrained" / "reversal")  # the default: ./checkpoints_retrained/<recipe>
    for name in ("model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "run.json", "curves.png"):
        assert os.path.isfile(os.path.join(run, name)), name
    assert json.loads(open(os.path.join(run, "metrics.jsonl")).readlines()[-1])["step"] == 20
    printed = capsys.readouterr().out
    assert "some test examples" in printed  # the command's own report
    assert os.path.join(run, "model.safetensors") in printed and "GPT.load(" in printed
    GPT.load(os.path.join(run, "model.safetensors"))

    monkeypatch.setenv(ENV, str(tmp_path / "checkpoints_retrained"))  # as the printed hint says
    assert checkpoint("reversal/model.safetensors") == os.path.join(run, "model.safetensors")

    with pytest.raises(FileExistsError, match="already holds a run"):  # never over a finished run
        retrain("reversal", steps=20, progress=False)


def test_retrain_refuses_an_unknown_recipe():
    with pytest.raises(ValueError, match="the recipes are: .*induction"):
        retrain("no_such_recipe")
