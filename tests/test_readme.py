"""The README's code blocks: each is marked on the line above it, and the marked ones run as written.

Every fenced block in README.md is preceded by one of two HTML comments (invisible on GitHub):

    <!-- tested: tests/test_readme.py::test_ten_line_example -->   the named test below executes it
    <!-- not tested: why not -->                                    an install command, a TPU command, ...

So the prose around the blocks can be edited freely: a test finds its block by the marker, never by
its place in the file. A block without a marker, a marker that names no test here, a test named by
two markers, or a named test that never reads its block fails `test_every_block_is_marked`.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
TESTED = re.compile(r"<!-- tested: tests/test_readme\.py::(\w+) -->")
NOT_TESTED = re.compile(r"<!-- not tested: \S.*-->")


def readme_blocks() -> list[tuple[int, str, str, str]]:
    """(line number, the line above the fence, language, code) of every fenced block in the README."""
    text = README.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        above = text[: max(match.start() - 1, 0)].rpartition("\n")[2]  # the whole line above the fence
        blocks.append((text.count("\n", 0, match.start()) + 1, above.strip(), match.group(1), match.group(2)))
    return blocks


def readme_block(test_name: str) -> str:
    """The code of the block marked `<!-- tested: tests/test_readme.py::<test_name> -->`."""
    found = [code for _, above, _, code in readme_blocks() if (m := TESTED.fullmatch(above)) and m[1] == test_name]
    assert len(found) == 1, f"README.md has {len(found)} blocks marked for {test_name}, expected 1"
    return found[0]


def run_block(test_name: str) -> dict:
    namespace: dict = {"__name__": "readme"}
    exec(compile(readme_block(test_name), f"README.md ({test_name})", "exec"), namespace)
    return namespace


def test_every_block_is_marked():
    blocks = readme_blocks()
    assert blocks, "README.md has no code blocks"
    tests_here = {name: fn for name, fn in inspect.getmembers(sys.modules[__name__], inspect.isfunction)}
    named = []
    for line, above, _, _ in blocks:
        tested = TESTED.fullmatch(above)
        assert tested or NOT_TESTED.fullmatch(above), (
            f"README.md line {line}: a code block without a marker on the line above it; write "
            "'<!-- tested: tests/test_readme.py::<test> -->' or '<!-- not tested: <why> -->'"
        )
        if tested:
            name = tested[1]
            assert name.startswith("test_") and name in tests_here, (
                f"README.md line {line}: the marker names {name}, which is not a test in tests/test_readme.py"
            )
            source = inspect.getsource(tests_here[name])
            assert f'_block("{name}")' in source, f"README.md line {line}: {name} does not read the block marked for it"
            named.append(name)
    assert len(named) == len(set(named)), f"a test is named by two markers: {named}"
    # and no marker floats away from its block: every marker line sits right above one
    lines = [line.strip() for line in README.read_text().splitlines()]
    markers = [line for line in lines if TESTED.fullmatch(line) or NOT_TESTED.fullmatch(line)]
    assert len(markers) == len(blocks), "a marker in README.md is not on the line just above a code block"


def test_the_marker_rule_catches_what_it_should(monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    monkeypatch.setattr(sys.modules[__name__], "README", readme)
    for bad in (
        "text\n\n```python\nx = 1\n```\n",  # no marker
        "<!-- tested: tests/test_readme.py::test_nothing_of_that_name -->\n```python\nx = 1\n```\n",
        "<!-- not tested: why -->\n\n```python\nx = 1\n```\n",  # a blank line between marker and block
    ):
        readme.write_text(bad)
        with pytest.raises(AssertionError):
            test_every_block_is_marked()


@pytest.mark.slow  # a vmapped sweep of 32 patches: ~12 s
def test_ten_line_example():
    namespace = run_block("test_ten_line_example")
    assert namespace["sweep"].shape == (32, 50)
    assert namespace["patched"].shape == (1, 32, 50)


@pytest.mark.slow
def test_transformer_lens_example():
    namespace = run_block("test_transformer_lens_example")
    assert namespace["final"].shape == (32, 64)
    assert namespace["W_Q"].shape == (2, 4, 64, 16)
    assert namespace["labels"][-1] == "final_post"
    assert namespace["tl_cfg"]["n_layers"] == 2


@pytest.mark.slow
def test_circuit_discovery_example(capsys):
    namespace = run_block("test_circuit_discovery_example")
    assert capsys.readouterr().out.split() == ["True", "1.0"]
    assert len(namespace["exact"].scores) == len(namespace["found"].graph.edges)


@pytest.mark.slow  # trains a model for a few steps
def test_training_example(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    namespace = run_block("test_training_example")
    assert (tmp_path / "runs" / "sort" / "model_seed1.safetensors").exists()
    assert len(namespace["result"].models()) == 2


def test_train_steps_example():
    import numpy as np

    namespace = run_block("test_train_steps_example")
    losses = namespace["losses"]
    assert losses.shape == (20,) and np.isfinite(losses).all()
    assert float(losses[-1]) < 1.0  # the counting sequences are learnt: from about ln(97) = 4.6


def test_ci_runs_the_readme_test_command():
    command = readme_block("test_ci_runs_the_readme_test_command").strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()


@pytest.mark.slow
def test_gpt2_example(monkeypatch, tmp_path):
    """The block runs as written against a directory named gpt2 (a small random GPT-2 with a trained
    tokenizer, tests/hf_files.py): the calls, not GPT-2's answers."""
    from hf_files import config, write_gpt2

    monkeypatch.chdir(tmp_path)
    write_gpt2("gpt2", config(n_layer=1, n_positions=32))
    namespace = run_block("test_gpt2_example")
    assert isinstance(namespace["answer"], str) and namespace["text"].startswith("The quick brown fox")
    assert namespace["logits"].shape[:2] == (
        1,
        len(namespace["model"].to_tokens("When Mary and John went to the store, John gave a drink to")[0]),
    )


@pytest.mark.slow
def test_gpt2_download_command(monkeypatch, tmp_path):
    """The download command names exactly the files from_pretrained reads in a snapshot of the Hub's
    gpt2 repository (every file it holds, written by tests/hf_files.py), into the directory the example
    loads; those files alone give the model and the text calls of the whole snapshot."""
    import builtins
    import shlex
    import shutil

    import numpy as np
    import tokenizers
    from hf_files import write_hub_gpt2

    from minillm import GPT

    words = shlex.split(readme_block("test_gpt2_download_command").strip())
    assert words[:3] == ["hf", "download", "openai-community/gpt2"] and words[-2:] == ["--local-dir", "gpt2"]
    named = words[3:-2]
    snapshot = tmp_path / "snapshot"
    write_hub_gpt2(str(snapshot))
    read, real_open, real_tokenizer = set(), builtins.open, tokenizers.Tokenizer

    def record(file):  # the snapshot's files only (JAX may open files of its own)
        if isinstance(file, (str, os.PathLike)) and not (name := os.path.relpath(file, snapshot)).startswith(".."):
            read.add(name)

    def recording_open(file, *args, **kwargs):
        record(file)
        return real_open(file, *args, **kwargs)

    class RecordingTokenizer:  # tokenizer.json is read by the tokenizers package, not by open()
        @staticmethod
        def from_file(file):
            record(file)
            return real_tokenizer.from_file(file)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", recording_open)
        patch.setattr(tokenizers, "Tokenizer", RecordingTokenizer)
        full = GPT.from_pretrained(str(snapshot))
    assert sorted(read) == sorted(named)
    (tmp_path / "gpt2").mkdir()
    for name in named:
        shutil.copy(snapshot / name, tmp_path / "gpt2" / name)
    monkeypatch.chdir(tmp_path)
    model = GPT.from_pretrained("gpt2")  # as the example below the command loads it
    texts = ["When Mary and John went to the store", "a drink"]
    assert model.to_tokens(texts).tolist() == full.to_tokens(texts).tolist()
    np.testing.assert_array_equal(model(texts), full(texts))
    assert model.generate("The quick", 4, temperature=0) == full.generate("The quick", 4, temperature=0)


@pytest.mark.slow
def test_gpt2_example_script(capsys, tmp_path):
    """docs/examples/gpt2_small.py runs end to end on a small random GPT-2 (its numbers mean nothing)."""
    import runpy

    from hf_files import config, write_gpt2

    write_gpt2(str(tmp_path), config(n_layer=2, n_positions=32))
    patched = runpy.run_path(str(ROOT / "docs" / "examples" / "gpt2_small.py"))["main"](str(tmp_path))
    out = capsys.readouterr().out
    assert "logit lens" in out and "direct logit attribution" in out and "activation patching" in out
    assert patched.shape == (2, 4)
