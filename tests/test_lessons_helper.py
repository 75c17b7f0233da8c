"""minillm.lessons.checkpoint finds the shipped checkpoints from any working folder, and says where
it looked when it cannot."""

import os

import pytest

from minillm.lessons import ENV, checkpoint


def test_checkpoints_are_found_from_any_folder_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV, raising=False)
    found = checkpoint("induction/model.safetensors")  # from the checkout minillm is installed from
    assert os.path.isfile(found) and found.endswith(
        os.path.join("lessons", "checkpoints", "induction", "model.safetensors")
    )
    own = tmp_path / "mine" / "induction"
    own.mkdir(parents=True)
    (own / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv(ENV, str(tmp_path / "mine"))
    assert checkpoint("induction/model.safetensors") == str(own / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="looked in"):
        checkpoint("no_such_model/model.safetensors")
