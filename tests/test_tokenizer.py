"""Text in and out (minillm/model/tokenizer.py and GPT's text calls): a tokenizer trained here by
`tokenizers` round-trips text, BOS and padding follow TransformerLens' rules (and avoid its known
traps), and a model given text computes what it computes on the tokens."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from hf_files import HUB_GPT2_FILES, TEXT, config, train_tokenizer, write_gpt2, write_hub_gpt2

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def hub_snapshot(tmp_path_factory):
    """A directory laid out exactly as a snapshot of the Hub's gpt2 repository (tests/hf_files.py):
    its tokenizer_config.json is {"model_max_length": 1024}, naming no special token."""
    path = str(tmp_path_factory.mktemp("hub_gpt2"))
    write_hub_gpt2(path)
    return path


def test_a_snapshot_of_the_hubs_gpt2_repository_has_every_text_call(hub_snapshot):
    """The issue: GPT-2's tokenizer_config.json names no BOS, EOS or pad, and every text call failed.
    Each falls back to <|endoftext|> (tokenizer.json's special token), as TransformerLens has them."""
    model = GPT.from_pretrained(hub_snapshot)
    tok = model.tokenizer
    eot = tok._tokenizer.token_to_id(EOT)
    assert eot == 299 and (tok.bos_token, tok.eos_token, tok.pad_token) == (EOT, EOT, EOT)
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == eot
    text = "the fox and the dog"
    tokens = model.to_tokens(text)
    assert tokens[0, 0] == eot and model.to_string(tokens[0, 1:]) == text and model.to_string(tokens)[0] == EOT + text
    assert model.to_str_tokens(text)[0] == EOT and "".join(model.to_str_tokens(text)[1:]) == text
    the = model.to_single_token(" the")
    assert model.to_single_token(EOT) == eot and model.to_tokens(EOT + "the")[0, :2].tolist() == [eot, eot]
    assert model.get_token_position(" the", text) == model.to_str_tokens(text).index(" the")
    last = len(model.to_str_tokens(text, prepend_bos=False)) - 1 - model.to_str_tokens(text)[::-1].index(" the")
    assert model.get_token_position(the, text, mode="last", prepend_bos=False) == last
    padded, mask = tok.encode_batch([text, "a"])
    assert padded.shape[0] == 2 and mask[1].tolist() == [1, 1] + [0] * (padded.shape[1] - 2)
    assert (padded[1, 2:] == eot).all() and model.to_tokens([text, "a"]).tolist() == padded.tolist()
    np.testing.assert_allclose(model([text, "a"])[1, :2], model("a")[0], rtol=1e-5, atol=1e-5)
    greedy = model.generate("the fox", 5, temperature=0)
    assert isinstance(greedy, str) and greedy.startswith("the fox") and not greedy.startswith(EOT)


def test_the_hub_snapshot_loads_its_safetensors_and_ignores_the_other_formats(hub_snapshot, tmp_path):
    """pytorch_model.bin, tf_model.h5, flax_model.msgpack, the ONNX and TFLite files sit beside
    model.safetensors in the Hub's snapshot (here as bytes no reader accepts): the loader reads
    model.safetensors and nothing else, and gets the same model as from config.json + model.safetensors
    + tokenizer.json alone."""
    import shutil

    assert {"pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot"} <= set(HUB_GPT2_FILES)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(f"{hub_snapshot}/{name}", tmp_path / name)
    full, alone = GPT.from_pretrained(hub_snapshot), GPT.from_pretrained(str(tmp_path))
    tokens = full.to_tokens(["the fox and the dog", "a drink"])
    assert tokens.tolist() == alone.to_tokens(["the fox and the dog", "a drink"]).tolist()
    np.testing.assert_array_equal(full(tokens), alone(tokens))


def _directory(path, added: list[tuple[str, bool]], **files) -> str:
    """tokenizer.json (the trained BPE with `added` as its added tokens: (content, special), ids from
    299) beside the JSON files given (tokenizer_config_json={...} writes tokenizer_config.json)."""
    tok = json.loads(train_tokenizer(300).to_str())
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    tok["added_tokens"] = [{"id": 299 + i, "content": c, **flags, "special": s} for i, (c, s) in enumerate(added)]
    (path / "tokenizer.json").write_text(json.dumps(tok))
    for name, content in files.items():
        (path / name.replace("_json", ".json")).write_text(json.dumps(content))
    return str(path)


@pytest.mark.parametrize(
    "settings, added, want",
    [
        ({"model_max_length": 1024}, [(EOT, True)], (EOT, EOT, EOT)),  # GPT-2's own files
        ({"bos_token": EOT}, [(EOT, True)], (EOT, EOT, EOT)),  # only BOS named: it is EOS and pad too
        ({"eos_token": {"content": EOT, "special": True}}, [(EOT, True)], (EOT, EOT, EOT)),  # only EOS
        ({"pad_token": "<pad>"}, [(EOT, True), ("<pad>", True)], (EOT, EOT, "<pad>")),  # two special: EOT by name
        ({"model_max_length": 8}, [("<s>", True)], ("<s>", "<s>", "<s>")),  # the one special added token
        ({"model_max_length": 8}, [("<s>", True), ("</s>", True)], (None, None, None)),  # which? none
        ({"model_max_length": 8}, [("<s>", False)], (None, None, None)),  # an added token that is not special
        ({"bos_token": "<s>", "eos_token": "</s>"}, [("<s>", True), ("</s>", True)], ("<s>", "</s>", "</s>")),
    ],
)
def test_each_special_token_falls_back_on_its_own(tmp_path, settings, added, want):
    """BOS, EOS and pad each: named in tokenizer_config.json, else BOS and EOS for each other (pad: EOS),
    else tokenizer.json's one special added token, else <|endoftext|> in the vocabulary."""
    tok = Tokenizer.from_directory(_directory(tmp_path, added, tokenizer_config_json=settings))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == want
    if want[0] is not None:
        assert tok.encode_batch(["a b", "a"])[0][:, 0].tolist() == [tok.bos_token_id] * 2
    # special_tokens_map.json alone (no tokenizer_config.json) is read the same way
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(settings))
    assert (lambda t: (t.bos_token, t.eos_token, t.pad_token))(Tokenizer.from_directory(str(tmp_path))) == want


def test_the_hubs_vocab_and_merges_fall_back_to_endoftext(tmp_path):
    """vocab.json + merges.txt as the Hub's gpt2 has them (no tokenizer.json), beside its tokenizer_config.json:
    <|endoftext|> of the vocabulary is BOS, EOS and pad, and one token in a text."""
    from hf_files import hub_tokenizer_files

    for name, content in hub_tokenizer_files(300).items():
        if name != "tokenizer.json":
            (tmp_path / name).write_text(content)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    tok = Tokenizer.from_directory(str(tmp_path))
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == 299
    assert tok.encode_batch([EOT + "the", "a"])[0][:, :2].tolist() == [[299, 299], [299, tok.encode("a")[0]]]


def test_no_special_token_at_all_fails_only_where_one_is_needed(tmp_path):
    """A tokenizer with no BOS, EOS or pad to be found: the calls that need none work; prepend_bos=True
    and padding raise MissingSpecialToken (a ValueError) naming what is missing."""
    from minillm.model.tokenizer import MissingSpecialToken

    write_gpt2(str(tmp_path / "model"), config(n_layer=1, n_positions=64), tokenizer=False)
    model = GPT.from_pretrained(str(tmp_path / "model"))
    model.tokenizer = tok = Tokenizer.from_directory(_directory(tmp_path, [], tokenizer_config_json={}))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (None, None, None)
    tokens = model.to_tokens("the fox", prepend_bos=False)
    assert model.to_string(tokens[0]) == "the fox" and model.to_single_token(" the") == tok.encode(" the")[0]
    assert model.to_tokens(["ab", "cd"], prepend_bos=False).shape == (2, len(tok.encode("ab")))
    assert model.generate("the fox", 3, temperature=0, prepend_bos=False).startswith("the fox")
    with pytest.raises(MissingSpecialToken, match="no BOS token"):
        model.to_tokens("the fox")
    with pytest.raises(ValueError, match="no pad token"):
        model.to_tokens(["the fox", "a"], prepend_bos=False)
