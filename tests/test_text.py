"""Training on text (minillm/training/text.py) and the tokenizers made for it: character and BPE
tokenizers round-trip and save/load through minillm.Tokenizer, windows predict the next token, a few
training steps lower the loss, and a trained model is read back with its tokenizer. On a small
folder of texts (the real corpus is tests/test_corpus.py's and the lesson's)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm import GPT, GPTConfig
from minillm.model.tokenizer import Tokenizer
from minillm.training.loop import train
from minillm.training.optim import TrainConfig
from minillm.training.text import ALPHABET, TextTask

PLAY = """ROMEO.
But soft, what light through yonder window breaks?
It is the east, and Juliet is the sun.

JULIET.
O Romeo, Romeo, wherefore art thou Romeo?
Deny thy father and refuse thy name.
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts")
    for i in range(6):
        (path / f"play{i}.txt").write_text((PLAY.replace("Romeo", f"Romeo{i}") + "\n") * 30)
    return path


def test_character_tokenizer_round_trips_and_refuses_what_it_cannot_spell(tmp_path):
    tok = Tokenizer.characters(ALPHABET)
    assert tok.vocab_size == 97 and tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == 0
    ids = tok.encode(PLAY)
    assert len(ids) == len(PLAY) and tok.decode(ids) == PLAY
    assert tok.str_tokens(tok.encode("Jul")) == ["J", "u", "l"]
    with pytest.raises(ValueError, match="cannot spell"):
        tok.encode("naïve")
    tok.save(str(tmp_path))
    back = Tokenizer.from_directory(str(tmp_path))
    assert back.encode(PLAY) == ids and back.bos_token_id == 0
    tokens, mask = back.encode_batch(["ab", "a"])
    assert tokens.tolist() == [[0, *back.encode("ab")], [0, *back.encode("a"), 0]] and mask[1, 2] == 0


BPE_SCRIPT = """
import hashlib, sys
from minillm.model.tokenizer import Tokenizer
tok = Tokenizer.train_bpe([open(p).read() for p in sys.argv[1:]], 300)
print(hashlib.sha256(tok._tokenizer.to_str().encode()).hexdigest())
"""


@pytest.mark.slow
def test_bpe_is_deterministic_across_processes_and_round_trips(folder, tmp_path):
    files = sorted(str(p) for p in folder.iterdir())
    digests = {
        subprocess.run([sys.executable, "-c", BPE_SCRIPT, *files], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(digests) == 1  # the same vocabulary in two processes (Rust's hash maps are seeded per process)
    tok = Tokenizer.train_bpe([open(f).read() for f in files], 300)
    assert tok.vocab_size == 300 and tok.bos_token_id == 0
    ids = tok.encode(PLAY + "é and ☃")  # byte level: nothing is unknown
    assert tok.decode(ids) == PLAY + "é and ☃" and len(ids) < 0.7 * len(PLAY)
    tok.save(str(tmp_path))
    assert Tokenizer.from_directory(str(tmp_path)).encode(PLAY) == tok.encode(PLAY)
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train_bpe(["x"], 100)


@pytest.mark.parametrize("kind", ["chars", "bpe"])
def test_windows_predict_the_next_token(folder, tmp_path, kind):
    task = TextTask(corpus=str(folder), tokenizer=kind, vocab_size=300, seq_len=16, n_eval=8, cache=str(tmp_path))
    data = task.data
    assert set(data.tokens) == {"train", "validation", "test"} and all(len(t) > 16 for t in data.tokens.values())
    assert task.d_vocab == data.tokenizer.vocab_size == (97 if kind == "chars" else 300)
    tokens = task.training_data()
    batch = task.sample_windows(tokens, jax.random.key(0), 5)
    assert batch.tokens.shape == batch.targets.shape == (5, 16) and (batch.tokens[:, 0] == 0).all()
    np.testing.assert_array_equal(batch.tokens[:, 1:], batch.targets[:, :-1])  # each position predicts the next
    starts = jnp.asarray([0, 7])
    np.testing.assert_array_equal(task.windows(tokens, starts).targets[1], tokens[7:23])
    train_eval, validation = task.split(0)
    assert train_eval.tokens.shape == validation.tokens.shape == (8, 16)
    held_out = np.asarray(data.tokens["validation"], np.int32)
    row = validation.targets[0]
    assert any((held_out[i : i + 16] == row).all() for i in range(len(held_out) - 15))  # from the held-out works
    assert task.bits_per_char(np.log(2), "validation") == pytest.approx(1 / data.chars_per_token("validation"))
    for bad in [dict(tokenizer="words"), dict(seq_len=1), dict(n_eval=0)]:
        with pytest.raises(ValueError):
            TextTask(corpus=str(folder), **bad)


def test_synthetic_repeats_copy_a_random_segment_later_in_the_row_and_mask_the_first_copy(folder, tmp_path):
    task = TextTask(
        corpus=str(folder), tokenizer="chars", seq_len=40, n_eval=4, cache=str(tmp_path), repeat_fraction=0.5,
        repeat_len=(3, 9),
    )  # fmt: skip
    tokens = task.training_data()
    plain = dataclasses.replace(task, repeat_fraction=0.0).sample_windows(tokens, jax.random.key(3), 400)
    batch = jax.tree.map(np.asarray, task.sample_windows(tokens, jax.random.key(3), 400))
    np.testing.assert_array_equal(batch.tokens[:, 1:], batch.targets[:, :-1])  # still next-token prediction
    assert (batch.tokens[:, 0] == 0).all()
    changed = (batch.targets != np.asarray(plain.targets)).any(1)
    masked = batch.mask == 0
    assert 0.4 < masked.any(1).mean() < 0.6 and (changed <= masked.any(1)).all()  # about half the rows
    for row in np.flatnonzero(masked.any(1)):
        first = np.flatnonzero(masked[row])
        assert 3 <= len(first) <= 9 and (np.diff(first) == 1).all()  # one segment, of a length in repeat_len
        segment = batch.targets[row, first]
        later = [
            p
            for p in range(first[-1] + 1, 41 - len(first))
            if (batch.targets[row, p : p + len(first)] == segment).all()
        ]
        assert later and (segment != 0).all()  # copied later in the row; never the special token
    np.testing.assert_array_equal(batch.mask[~masked.any(1)], 1.0)
    held_out, _ = task.split(0)
    assert (np.asarray(held_out.mask) == 1).all()  # evaluation windows are plain text
    for bad in [dict(repeat_fraction=1.5), dict(repeat_len=(0, 4)), dict(repeat_len=(5, 4)), dict(repeat_len=(8, 20))]:
        with pytest.raises(ValueError, match="repeat"):
            dataclasses.replace(task, **bad)


@pytest.mark.slow
def test_a_few_steps_on_text_lower_the_loss_and_the_model_keeps_its_tokenizer(folder, tmp_path):
    task = TextTask(corpus=str(folder), tokenizer="chars", seq_len=32, n_eval=8, cache=str(tmp_path / "cache"))
    cfg = GPTConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=32, d_vocab=task.d_vocab)
    tc = TrainConfig(
        steps=30, lr=1e-2, batch_size=8, warmup_steps=3, steps_per_call=10, eval_every=30, checkpoint_every=30
    )
    result = train(cfg, task, tc, str(tmp_path / "run"), progress=False)
    first, last = result.metrics[0], result.metrics[-1]
    assert last["test_loss"] < first["test_loss"] - 1.0  # from ~log(97) = 4.6 towards the letters' frequencies
    model = GPT.load(str(tmp_path / "run" / "model.safetensors"))
    assert model.tokenizer is not None and model.to_str_tokens("ROMEO") == ["<|endoftext|>", "R", "O", "M", "E", "O"]
    text = model.generate("JULIET.\n", 5, temperature=0)
    assert isinstance(text, str) and text.startswith("JULIET.\n")


@pytest.mark.slow
def test_text_metrics_and_summary_of_a_model_of_text(folder, tmp_path):
    from minillm.training.recipes import Recipe, summarize, text_metrics

    task = TextTask(corpus=str(folder), tokenizer="chars", seq_len=48, n_eval=4, cache=str(tmp_path))
    model = GPT(GPTConfig(n_layers=2, d_model=32, n_heads=2, attn_only=True, n_ctx=48, d_vocab=task.d_vocab))
    row = text_metrics(task)["text"](model)
    want = {"prev_token_score", "induction_score", "repeat_loss_first", "repeat_loss_second", "natural_repeat_first"}
    assert want <= set(row) and all(np.isfinite(v) for v in row.values())
    assert row["bits_per_char"] == pytest.approx(
        row["natural_repeat_first"] / np.log(2), rel=0.3
    )  # untrained: ~log(97)
    recipe = Recipe("t", "t", "t", task, model.cfg, TrainConfig(target=("test_acc", 0.5)), text_metrics)
    text = summarize(recipe, model)
    assert "continuation" in text and len(text.splitlines()) >= 2
