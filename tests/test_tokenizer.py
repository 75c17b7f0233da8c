"""Text in and out (minillm/model/tokenizer.py and GPT's text calls): a tokenizer trained here by
`tokenizers` round-trips text, BOS and padding follow TransformerLens' rules (and avoid its known
traps), and a model given text computes what it computes on the tokens."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from hf_files import TEXT, config, train_tokenizer, write_gpt2

from minillm import GPT, Tokenizer

pytest.importorskip("tokenizers")

SENTENCES = ["When Mary and John went to the store, John gave a drink to Mary.", "crème brûlée 🦊", "  two  spaces\n"]
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("gpt2_text"))
    write_gpt2(path, config(n_layer=1, n_positions=64))
    return path


@pytest.fixture(scope="module")
def model(directory):
    return GPT.from_pretrained(directory)


@pytest.fixture(scope="module")
def tok(directory):
    return Tokenizer.from_directory(directory)


def test_round_trip_and_one_bos(model, tok):
    for text in [*SENTENCES, TEXT]:
        tokens = model.to_tokens(text, truncate=False)
        assert tokens.shape[0] == 1 and tokens.dtype == np.int32
        assert int(tokens[0, 0]) == tok.bos_token_id and int(tokens[0, 1]) != tok.bos_token_id  # BOS once (TL #369)
        assert model.to_string(tokens[0, 1:]) == text  # decoding keeps every byte and space
        assert model.to_string(tokens)[0] == EOT + text  # [b, p] -> a list; special tokens kept
        no_bos = model.to_tokens(text, prepend_bos=False, truncate=False)
        np.testing.assert_array_equal(no_bos, tokens[:, 1:])  # prepend_bos=False removes nothing else (TL #1628)
    assert (
        model.to_tokens(EOT + "the")[0, :2].tolist() == [tok.bos_token_id] * 2
    )  # a special token in text is one token


def test_str_tokens_single_token_and_positions(model):
    str_tokens = model.to_str_tokens("the fox and the dog")
    assert str_tokens[0] == EOT and "".join(str_tokens[1:]) == "the fox and the dog"
    assert model.to_str_tokens(model.to_tokens("the fox")) == model.to_str_tokens("the fox")  # [1, p] ids
    assert model.to_str_tokens(["a b", "the fox"]) == [model.to_str_tokens("a b"), model.to_str_tokens("the fox")]
    assert model.to_str_tokens("🦊", prepend_bos=False)[0] == "\ufffd"  # a character split over byte tokens
    the = model.to_single_token(" the")
    assert model.to_string(the) == " the"
    with pytest.raises(ValueError, match="is 3 tokens, not one"):
        model.to_single_token("xyz")
    text = "the fox and the dog"
    at = [i for i, s in enumerate(model.to_str_tokens(text)) if s == " the"]
    assert (
        len(at) == 1
        and model.get_token_position(" the", text) == model.get_token_position(the, text, mode="last") == at[0]
    )
    first = int(model.to_tokens(text, prepend_bos=False)[0, 0])
    assert model.get_token_position(first, text) == 1 and model.get_token_position(first, text, prepend_bos=False) == 0
    with pytest.raises(ValueError, match="does not occur"):
        model.get_token_position(" the", "a fox")
    with pytest.raises(ValueError, match="pass one sequence"):
        model.to_str_tokens(model.to_tokens(["a", "b"]))


def test_padding_sides_and_mask(tok):
    tokens, mask = tok.encode_batch(["the fox and the dog", "a"], prepend_bos=True)
    n = len(tok.encode("the fox and the dog")) + 1
    assert tokens.shape == (2, n) and mask.sum(1).tolist() == [n, 2]
    assert mask[1].tolist() == [1, 1] + [0] * (n - 2) and (tokens[1, 2:] == tok.pad_token_id).all()  # right
    left, left_mask = tok.encode_batch(["the fox and the dog", "a"], padding_side="left")
    assert left_mask[1].tolist() == [0] * (n - 2) + [1, 1]
    assert left[1, -2:].tolist() == tokens[1, :2].tolist()  # BOS after the padding, next to its text
    assert tok.pad_token == tok.eos_token == EOT  # GPT-2 has no pad token: EOS, as TransformerLens
    with pytest.raises(ValueError, match="padding_side"):
        tok.encode_batch(["a"], padding_side="middle")
    short, _ = tok.encode_batch([TEXT], max_length=10)
    assert short.shape == (1, 10)


def test_text_input_is_the_tokens_input(model):
    texts = ["the fox and the dog", "a"]
    tokens = model.to_tokens(texts)
    mask = (np.arange(tokens.shape[1]) < np.array([[tokens.shape[1]], [2]])).astype(np.int32)
    # padding is masked: the short text's logits are those of its own run, and the loss skips padding
    np.testing.assert_allclose(model(texts), model(tokens, attention_mask=mask), rtol=1e-6)
    np.testing.assert_allclose(model(texts)[1, :2], model("a")[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model("a dog", return_type="loss"), model(model.to_tokens("a dog"), return_type="loss"))
    logits, cache = model.run_with_cache("the fox")
    np.testing.assert_array_equal(cache["embed"][0, 0], model.W_E[model.tokenizer.bos_token_id])
    left = model.to_tokens(texts, padding_side="left")
    _, left_mask = model.tokenizer.encode_batch(texts, padding_side="left")  # pad = BOS: the mask tells them apart
    # left padding with its mask: positions count real tokens, so the last logits are the text's own
    np.testing.assert_allclose(model(left, attention_mask=left_mask)[1, -1], model("a")[0, -1], atol=1e-5)


def test_generate_on_text(model):
    greedy = model.generate("the fox", 6, temperature=0)
    assert isinstance(greedy, str) and greedy.startswith("the fox") and not greedy.startswith(EOT)
    tokens = model.generate(model.to_tokens("the fox"), 6, temperature=0)  # the same run on tokens
    new = model.to_string(tokens[0, model.to_tokens("the fox").shape[1] :])
    assert greedy == "the fox" + (new[: new.index(EOT) + len(EOT)] if EOT in new else new)
    sampled = model.generate("the fox", 6, key=jax.random.key(1))
    assert sampled.startswith("the fox") and sampled == model.generate("the fox", 6, key=jax.random.key(1))
    with pytest.raises(TypeError, match="one string"):
        model.generate(["a", "b"], 3, temperature=0)


def test_vocab_and_merges_read_as_tokenizer_json(tmp_path, tok):
    train_tokenizer(300).model.save(str(tmp_path))  # vocab.json + merges.txt, GPT-2's older files
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    (tmp_path / "vocab.json").write_text(json.dumps({**vocab, EOT: 299}))  # GPT-2's vocab.json lists it last
    old = Tokenizer.from_directory(str(tmp_path))
    for text in SENTENCES:
        assert old.encode(text) == tok.encode(text) and old.decode(old.encode(text)) == text
    assert old.bos_token_id == tok.bos_token_id == 299


def test_errors_name_the_problem(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        Tokenizer.from_directory(str(tmp_path))
    with pytest.raises(IndexError, match="token id 300 is out of range"):
        tok.to_string([1, 300])
    with pytest.raises(TypeError, match="integer token ids"):
        tok.to_string([1.5])
    with pytest.raises(TypeError, match="a string or a non-empty list of strings"):
        tok.encode_batch([])
    no_bos = Tokenizer(tok._tokenizer, eos_token=EOT)
    with pytest.raises(ValueError, match="no BOS token"):
        no_bos.encode_batch("a", prepend_bos=True)
    assert no_bos.encode_batch("a", prepend_bos=False)[0].tolist() == [tok.encode("a")]
