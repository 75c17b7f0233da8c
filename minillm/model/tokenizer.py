"""Text to tokens and back, as TransformerLens does it, with Hugging Face's `tokenizers` package.

    tok = Tokenizer.from_directory("path/to/gpt2")       # tokenizer.json, or vocab.json + merges.txt
    tokens, mask = tok.encode_batch(["Hello world"], prepend_bos=True)   # int32 [b, p], 1 at real tokens
    tok.decode([15496, 995])                               # "Hello world"

`GPT.from_pretrained` attaches one as `model.tokenizer`, and the model's `to_tokens`, `to_string`,
`to_str_tokens`, `to_single_token`, `get_token_position` and text `generate` call it. The
`tokenizers` package is an extra (`pip install "minillm-jax[text]"`): the core install stays
without it, and the error says how to add it.

The rules, TransformerLens' (`HookedTransformer.to_tokens` and friends), and the traps it hit:
- BOS is prepended by this class, once, and the tokenizer is always run without its own special
  tokens (TransformerLens issue 369: a tokenizer that adds BOS itself got it twice).
- `prepend_bos=False` never removes anything (issue 1628: a tokenizer without BOS lost its first
  real token). `prepend_bos=True` on a tokenizer that has no BOS is refused.
- Padding goes on the right unless asked (`padding_side="left"`), whatever the tokenizer's own
  file says (issue 801: Hugging Face's default side differs per model). The pad token is the
  tokenizer's, or EOS when it has none (GPT-2 has none: pad = EOS = BOS = `<|endoftext|>`), and the
  mask says which positions are padding, so a pad token equal to BOS is never confused with it.
- Decoding keeps special tokens and leaves spaces as they are (`clean_up_tokenization_spaces=False`).

Which tokens are BOS, EOS and pad, each found on its own (GPT-2's tokenizer_config.json on the Hub
holds only `{"model_max_length": 1024}`, naming none of them):
1. the token tokenizer_config.json (or special_tokens_map.json) names;
2. BOS and EOS stand in for each other (a file naming only one gives both), and pad is EOS;
3. the special token of tokenizer.json's added tokens (GPT-2's `<|endoftext|>`), when it has one;
4. `<|endoftext|>` when the vocabulary has it (vocab.json + merges.txt, GPT-2's convention).
A token still missing is an error (`MissingSpecialToken`, a ValueError) only in a call that needs it:
`prepend_bos=True` needs BOS, a list of texts of different lengths needs pad.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILES = ("vocab.json", "merges.txt")
SETTINGS_FILES = ("tokenizer_config.json", "special_tokens_map.json")
PADDING_SIDES = ("right", "left")
_INSTALL_HINT = 'the `tokenizers` package is not installed: pip install "minillm-jax[text]" (or pip install tokenizers)'


def has_tokenizer_files(path: str) -> bool:
    """Whether a directory holds a tokenizer this module reads."""
    return os.path.isfile(os.path.join(path, TOKENIZER_FILE)) or all(
        os.path.isfile(os.path.join(path, f)) for f in VOCAB_FILES
    )


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError(f"Tokenizer: {_INSTALL_HINT}") from e
    return tokenizers


def _token_content(value: Any) -> str | None:
    """A special token in tokenizer_config.json: a string, or {"content": string, ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _has_gap(offsets: Sequence[tuple[int, int]]) -> bool:
    """Whether character offsets skip a part of the text (a model without an unknown token drops it)."""
    end = 0
    for a, b in offsets:
        if a > end:
            return True
        end = max(end, b)
    return False


class MissingSpecialToken(ValueError):
    """A call needs BOS or pad, and the tokenizer has none (none named, none to fall back to)."""


def _special_tokens(settings: dict[str, Any], tokenizer: Any) -> dict[str, str | None]:
    """BOS, EOS and pad, each by the rules of the module docstring: named, else each other, else
    tokenizer.json's one special added token, else the vocabulary's `<|endoftext|>`."""
    named = {k: _token_content(settings.get(f"{k}_token")) for k in ("bos", "eos", "pad")}
    bos = named["bos"] or named["eos"]
    eos = named["eos"] or named["bos"]
    if bos is None:  # nothing named: the tokenizer's own special token, or GPT-2's
        added = tokenizer.get_added_tokens_decoder().values()
        special = sorted({t.content for t in added if t.special})
        if len(special) == 1:
            bos = eos = special[0]
        elif tokenizer.token_to_id("<|endoftext|>") is not None:
            bos = eos = "<|endoftext|>"
    return {"bos": bos, "eos": eos, "pad": named["pad"]}  # pad None: EOS (Tokenizer.__init__)


class Tokenizer:
    """A `tokenizers.Tokenizer` with TransformerLens' text calls (the module docstring gives the rules).

    bos_token / eos_token / pad_token are token strings of the vocabulary, or None.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        padding_side: str = "right",
    ):
        self._tokenizer = tokenizer
        self.bos_token, self.eos_token = bos_token, eos_token
        self.pad_token = pad_token if pad_token is not None else eos_token  # as TransformerLens: pad = EOS
        self.bos_token_id, self.eos_token_id, self.pad_token_id = (
            self._id_of(t, name) for t, name in ((bos_token, "bos"), (eos_token, "eos"), (self.pad_token, "pad"))
        )
        self.padding_side = self._check_side(padding_side)

    def _id_of(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        i = self._tokenizer.token_to_id(token)
        if i is None:
            raise ValueError(f"Tokenizer: the {what} token {token!r} is not in the vocabulary")
        return int(i)

    @staticmethod
    def _check_side(side: str) -> str:
        if side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {side!r}")
        return side

    # --- reading from disk -------------------------------------------------------------------------
    @classmethod
    def from_directory(cls, path: str) -> Tokenizer:
        """tokenizer.json (or vocab.json + merges.txt, GPT-2's byte-level BPE) from a directory, with
        the special tokens tokenizer_config.json / special_tokens_map.json name, each token missing
        there found as the module docstring says (GPT-2's: `<|endoftext|>` for all three)."""
        tokenizers = _import_tokenizers()
        path = os.fspath(path)
        if os.path.isfile(os.path.join(path, TOKENIZER_FILE)):
            tok = tokenizers.Tokenizer.from_file(os.path.join(path, TOKENIZER_FILE))
        elif all(os.path.isfile(os.path.join(path, f)) for f in VOCAB_FILES):
            vocab, merges = (os.path.join(path, f) for f in VOCAB_FILES)
            tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab, merges))
            tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = tokenizers.decoders.ByteLevel()
        else:
            raise FileNotFoundError(
                f"Tokenizer: {path!r} has no {TOKENIZER_FILE} and no {' + '.join(VOCAB_FILES)} "
                f"(it holds {sorted(os.listdir(path)) if os.path.isdir(path) else 'nothing: not a directory'})"
            )
        settings: dict[str, Any] = {}
        for name in SETTINGS_FILES:
            file = os.path.join(path, name)
            if os.path.isfile(file):
                with open(file) as f:
                    settings = {**json.load(f), **settings}  # tokenizer_config.json wins
        special = _special_tokens(settings, tok)
        present = [t for t in special.values() if t is not None]
        tok.add_special_tokens(sorted(set(present)))  # so that "<|endoftext|>" in a text is one token
        return cls(tok, bos_token=special["bos"], eos_token=special["eos"], pad_token=special["pad"])

    # --- made here, for a model trained on text ---------------------------------------------------
    @classmethod
    def characters(cls, chars: Sequence[str], special_token: str = "<|endoftext|>") -> Tokenizer:
        """One token per character: id 0 is `special_token` (BOS = EOS = pad), then `chars` sorted.
        A character outside the vocabulary is refused when encoded (never dropped)."""
        tokenizers = _import_tokenizers()
        alphabet = sorted(set(chars))
        if not alphabet or any(len(c) != 1 for c in alphabet) or special_token in alphabet:
            raise ValueError("Tokenizer.characters: expected single characters (and not the special token)")
        vocab = {special_token: 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
        tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
        tok.decoder = tokenizers.decoders.Fuse()
        tok.add_special_tokens([special_token])
        return cls(tok, bos_token=special_token, eos_token=special_token)

    @classmethod
    def train_bpe(
        cls, texts: Sequence[str], vocab_size: int, special_token: str = "<|endoftext|>", min_frequency: int = 2
    ) -> Tokenizer:
        """A byte-level BPE vocabulary (GPT-2's kind: every byte is a token, so no text is unknown) of
        `vocab_size` tokens trained on `texts`; id 0 is `special_token` (BOS = EOS = pad). The same
        texts give the same vocabulary in every process (tested)."""
        tokenizers = _import_tokenizers()
        if not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(
                f"train_bpe: vocab_size must be an int >= 257 (256 bytes and the special token), got {vocab_size!r}"
            )
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[special_token],
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            min_frequency=min_frequency,
            show_progress=False,
        )
        tok.train_from_iterator(list(texts), trainer)
        return cls(tok, bos_token=special_token, eos_token=special_token)

    def save(self, directory: str) -> None:
        """tokenizer.json and tokenizer_config.json (naming BOS, EOS and pad) in `directory`, which
        from_directory reads back (GPT.from_pretrained and minillm's checkpoints find them there)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        self._tokenizer.save(os.path.join(directory, TOKENIZER_FILE))
        settings = {"bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token}
        with open(os.path.join(directory, SETTINGS_FILES[0]), "w") as f:
            json.dump({k: v for k, v in settings.items() if v is not None}, f, indent=1)

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    # --- text -> tokens ----------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """The ids of a text, no special tokens added. A text the vocabulary cannot spell (a character
        tokenizer meeting a new character) is refused, never shortened."""
        if not isinstance(text, str):
            raise TypeError(f"encode: expected a string, got {type(text).__name__}")
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if encoding.offsets and (encoding.offsets[-1][1] < len(text) or _has_gap(encoding.offsets)):
            missing = sorted(c for c in set(text) if not self._tokenizer.encode(c, add_special_tokens=False).ids)
            raise ValueError(f"encode: the vocabulary cannot spell {missing or 'part of the text'}")
        if not encoding.ids and text:
            raise ValueError(f"encode: the vocabulary cannot spell {sorted(set(text))}")
        return list(encoding.ids)

    def _bos(self, prepend_bos: bool) -> list[int]:
        if not prepend_bos:
            return []
        if self.bos_token_id is None:
            raise MissingSpecialToken(
                "prepend_bos=True, but this tokenizer has no BOS token (its files name none, and it has no special "
                "token nor <|endoftext|> to use): pass prepend_bos=False, or name one in tokenizer_config.json"
            )
        return [self.bos_token_id]

    def encode_batch(
        self,
        texts: str | Sequence[str],
        *,
        prepend_bos: bool = True,
        padding_side: str | None = None,
        max_length: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int32 [b, p], attention mask int32 [b, p]: 1 at real tokens, 0 at padding).

        One string gives a batch of one. Shorter texts are padded to the longest with the pad token,
        on `padding_side` (default: this tokenizer's, "right"); max_length cuts each text's tokens there.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("to_tokens: expected a string or a non-empty list of strings")
        side = self._check_side(padding_side or self.padding_side)
        rows = [self._bos(prepend_bos) + self.encode(t) for t in texts]
        if max_length is not None:
            rows = [r[:max_length] for r in rows]
        width = max(len(r) for r in rows)
        if width == 0:
            raise ValueError("to_tokens: the text is empty and prepend_bos=False: no tokens")
        if any(len(r) < width for r in rows) and self.pad_token_id is None:
            raise MissingSpecialToken(
                "to_tokens: texts of different lengths need padding, and this tokenizer has no pad token (its files "
                "name no pad nor EOS token, and it has no special token nor <|endoftext|> to use)"
            )
        tokens = np.full((len(rows), width), self.pad_token_id or 0, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            at = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
            tokens[i, at], mask[i, at] = r, 1
        return tokens, mask

    # --- tokens -> text ----------------------------------------------------------------------------
    def _ids(self, tokens: Any) -> np.ndarray:
        ids = np.asarray(tokens)
        if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"expected integer token ids, got dtype {ids.dtype}")
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise IndexError(f"token id {int(bad.flat[0])} is out of range for a vocabulary of {self.vocab_size}")
        return ids

    def decode(self, tokens: Any) -> str:
        """The text of a 1-D sequence of ids (special tokens kept, spaces as they are)."""
        return self._tokenizer.decode([int(i) for i in self._ids(tokens).reshape(-1)], skip_special_tokens=False)

    def to_string(self, tokens: Any) -> str | list[str]:
        """An id or [p] ids -> a string; [b, p] -> a list of b strings (TransformerLens' to_string)."""
        ids = self._ids(tokens)
        if ids.ndim > 2:
            raise ValueError(f"to_string: expected an id, [pos] or [batch, pos] ids, got shape {ids.shape}")
        return [self.decode(row) for row in ids] if ids.ndim == 2 else self.decode(ids)

    def str_tokens(self, tokens: Any) -> list[str]:
        """Each id of a 1-D sequence decoded on its own (a character split across tokens shows as '\\ufffd')."""
        return [self.decode([int(i)]) for i in self._ids(tokens).reshape(-1)]

    def single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (TransformerLens' to_single_token)."""
        ids = self.encode(string)
        if len(ids) != 1:
            raise ValueError(f"to_single_token: {string!r} is {len(ids)} tokens, not one: {self.str_tokens(ids)}")
        return ids[0]

    def __repr__(self) -> str:
        special = f"bos={self.bos_token!r}, eos={self.eos_token!r}, pad={self.pad_token!r}"
        return f"Tokenizer(vocab_size={self.vocab_size}, {special})"
