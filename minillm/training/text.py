"""Training on text: a corpus, a tokenizer and random windows of its tokens, as a Task.

    task = TextTask(corpus="shakespeare", tokenizer="bpe", vocab_size=4096, seq_len=128)
    train(GPTConfig(n_ctx=128, d_vocab=task.d_vocab, ...), task, TrainConfig(batch_size=32, ...))

The first use fetches the corpus (minillm.tasks.corpus), makes the tokenizer and encodes each
split once into a cache folder (`<cache>/text/<corpus>-<tokenizer>/`: tokenizer.json and
train/validation/test token arrays, uint16 .npy), read back memory-mapped. Training puts the train
tokens on the device once and every step draws its batch inside the compiled chunk of steps: random
windows (`lax.dynamic_slice` at offsets from the step's key), so no step copies the corpus or waits
for the host.

Tokens:
- "chars": one token per character of printable ASCII plus "\\n" (96 characters; Shakespeare's 84
  are among them), id 0 the special token. A fixed alphabet, so a model's vocabulary does not
  depend on which texts it saw; another character is refused when encoded.
- "bpe": a byte-level BPE vocabulary of `vocab_size` tokens (GPT-2's kind) trained on the *training*
  works only, with `tokenizers`, deterministically.
Both are minillm.Tokenizer objects, saved beside a trained model (`tokenizer.json`), so that
`to_tokens`, `to_str_tokens` and `generate` on a string work on it as on GPT-2.

Each window is `[BOS] + seq_len - 1 tokens` of one split, and every position predicts the next
token (BOS predicts the window's first): a model trained so takes `to_tokens(text)`, which
prepends BOS, as it saw in training. Evaluation uses `n_eval` fixed windows of the training works
and of the held-out (validation) works, drawn from `split(seed)`; `bits_per_char(loss, split)`
turns a loss in nats per token into bits per character of that split's text, so that character
and BPE models compare.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import string
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from minillm.model.tokenizer import Tokenizer
from minillm.tasks import Batch, Task
from minillm.tasks import corpus as corpora

TOKENIZERS = ("chars", "bpe")
SPECIAL = "<|endoftext|>"
ALPHABET = tuple(sorted(set(string.printable) - set("\t\r\x0b\x0c") | {"\n"}))  # 96 characters
FORMAT = 1  # bump when the cached arrays' meaning changes


@dataclasses.dataclass(frozen=True)
class TextData:
    """A tokenizer and each split's tokens (uint16 arrays, memory-mapped) and characters."""

    tokenizer: Tokenizer
    tokens: dict[str, np.ndarray]
    characters: dict[str, int]
    directory: Path

    def chars_per_token(self, split: str) -> float:
        return self.characters[split] / len(self.tokens[split])


def _digest(corpus: corpora.Corpus) -> str:
    return hashlib.sha256(json.dumps([corpus.works, corpus.split], sort_keys=True).encode()).hexdigest()


def _build(directory: Path, corpus: corpora.Corpus, kind: str, vocab_size: int) -> None:
    if kind == "chars":
        tokenizer = Tokenizer.characters(ALPHABET, SPECIAL)
    else:
        tokenizer = Tokenizer.train_bpe([corpus.works[w] for w in corpus.split["train"]], vocab_size, SPECIAL)
    tmp = directory.with_name(directory.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(tmp))
    characters = {}
    for split in corpora.SPLITS:
        text = corpus.text(split)
        ids = np.asarray(tokenizer.encode(text), np.int64)
        if ids.size and ids.max() >= 2**16:
            raise ValueError(f"a vocabulary of {tokenizer.vocab_size} does not fit uint16 token arrays")
        np.save(tmp / f"{split}.npy", ids.astype(np.uint16))
        characters[split] = len(text)
    manifest = {
        "format": FORMAT,
        "corpus": corpus.name,
        "works": {s: list(corpus.split[s]) for s in corpora.SPLITS},
        "sha256": _digest(corpus),
        "tokenizer": kind,
        "vocab_size": tokenizer.vocab_size,
        "characters": characters,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if directory.exists():
        for f in directory.iterdir():
            f.unlink()
        directory.rmdir()
    os.replace(tmp, directory)


@functools.lru_cache(maxsize=8)
def load_text_data(
    corpus: str = "shakespeare", tokenizer: str = "chars", vocab_size: int = 4096, cache: str | None = None
) -> TextData:
    """The tokenizer and token arrays of a corpus (made once, then read from the cache)."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    folder = os.path.isdir(corpus)  # a folder of .txt files, or a corpus by name
    label = (
        f"{Path(corpus).name}-{hashlib.sha256(os.path.abspath(corpus).encode()).hexdigest()[:8]}" if folder else corpus
    )
    name = f"{label}-chars" if tokenizer == "chars" else f"{label}-bpe{vocab_size}"
    directory = corpora.cache_dir(cache) / "text" / name
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    text = corpora.load_corpus(folder=corpus) if folder else None  # a folder is read each time: it may change
    if text is not None and manifest.get("sha256") != _digest(text):
        manifest = {}
    if manifest.get("format") != FORMAT:
        _build(directory, text or corpora.load_corpus(corpus, cache=cache), tokenizer, vocab_size)
        manifest = json.loads(manifest_path.read_text())
    tokens = {s: np.load(directory / f"{s}.npy", mmap_mode="r") for s in corpora.SPLITS}
    return TextData(Tokenizer.from_directory(str(directory)), tokens, manifest["characters"], directory)


@dataclasses.dataclass(frozen=True, eq=False)
class TextTask(Task):
    """Next-token prediction on random windows of a corpus; see the module docstring.

    The fields say what the task is (they go into a run's spec, so a checkpoint resumes only into
    the same corpus, tokenizer and window); the data is loaded on first use."""

    name: ClassVar[str] = "text"
    has_generator: ClassVar[bool] = False
    streams: ClassVar[bool] = True  # the trainer passes training_data() and draws windows in the step

    corpus: str = "shakespeare"  # a corpus by name (minillm.tasks.corpus), or a folder of .txt files
    tokenizer: str = "chars"
    vocab_size: int = 4096  # BPE only
    seq_len: int = 128
    n_eval: int = 64  # windows of each split that evaluation uses
    cache: str | None = None
    # Synthetic repeats (training windows only): this share of the rows gets a segment of uniformly
    # random tokens, of a length in repeat_len, written over the text at a random offset and again at
    # a later random offset. Only a model that copies from context predicts the second copy; the
    # first copy's loss is masked (nothing can predict it).
    repeat_fraction: float = 0.0
    repeat_len: tuple[int, int] = (8, 32)

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"TextTask: tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        for field, minimum in (("seq_len", 2), ("n_eval", 1), ("vocab_size", 257)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"TextTask: {field} must be an int >= {minimum}, got {value!r}")
        if not isinstance(self.repeat_fraction, (int, float)) or not 0.0 <= self.repeat_fraction <= 1.0:
            raise ValueError(f"TextTask: repeat_fraction must be in [0, 1], got {self.repeat_fraction!r}")
        lo, hi = self.repeat_len
        fits = 2 * hi + 1 <= self.seq_len or self.repeat_fraction == 0  # checked only when repeats are on
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi and fits):
            raise ValueError(
                f"TextTask: repeat_len must be (lo, hi) ints with 1 <= lo <= hi and 2 * hi + 1 <= seq_len "
                f"({self.seq_len}), got {self.repeat_len!r}"
            )

    def __hash__(self) -> int:
        return hash(dataclasses.astuple(self))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TextTask)
            and hash(self) == hash(other)
            and dataclasses.astuple(self) == dataclasses.astuple(other)
        )

    @property
    def data(self) -> TextData:
        return load_text_data(self.corpus, self.tokenizer, self.vocab_size, self.cache)

    @property
    def d_vocab(self) -> int:  # known without loading: the model's size is part of a recipe
        return len(ALPHABET) + 1 if self.tokenizer == "chars" else self.vocab_size

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def vocab(self) -> tuple[str, ...]:
        tok = self.data.tokenizer
        return tuple(tok.decode([i]) for i in range(tok.vocab_size))

    @property
    def n_train(self) -> int:
        return self.n_eval

    @property
    def n_test(self) -> int:
        return self.n_eval

    def decode(self, tokens: Any) -> str:
        return self.data.tokenizer.decode(tokens)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.data.tokenizer.encode(text), np.int32)

    # --- data ------------------------------------------------------------------------------------
    def training_data(self) -> jax.Array:
        """The training works' tokens, int32 [n] on the device (one copy, made once per run)."""
        return jnp.asarray(np.asarray(self.data.tokens["train"], np.int32))

    def windows(self, tokens: jax.Array, starts: jax.Array) -> Batch:
        """The Batch of windows beginning at `starts` [b] in `tokens` [n]: BOS then seq_len - 1 tokens."""
        bos = jnp.int32(self.data.tokenizer.bos_token_id)
        span = jax.vmap(lambda s: jax.lax.dynamic_slice(tokens, (s,), (self.seq_len,)))(starts)  # [b, seq_len]
        inputs = jnp.concatenate([jnp.full((starts.shape[0], 1), bos, jnp.int32), span[:, :-1]], axis=1)
        return Batch(inputs, span.astype(jnp.int32), jnp.ones(span.shape, jnp.float32))

    def sample_windows(self, tokens: jax.Array, key: jax.Array, batch_size: int) -> Batch:
        """`batch_size` windows at uniformly random offsets (pure JAX: runs inside the step)."""
        k_start, k_rep = jax.random.split(key)
        starts = jax.random.randint(k_start, (batch_size,), 0, tokens.shape[0] - self.seq_len + 1)
        batch = self.windows(tokens, starts)
        if self.repeat_fraction > 0:
            batch = self.with_repeats(batch, k_rep)
        return batch

    def with_repeats(self, batch: Batch, key: jax.Array) -> Batch:
        """`batch` with `repeat_fraction` of its rows given a random segment and its later copy
        (see the field's comment); the first copy's targets are masked. Pure JAX."""
        b, n = batch.targets.shape
        lo, hi = self.repeat_len
        k_row, k_len, k_a, k_b, k_tok = jax.random.split(key, 5)
        rows = jax.random.uniform(k_row, (b,)) < self.repeat_fraction
        length = jax.random.randint(k_len, (b,), lo, hi + 1)
        # the window's targets are positions 1..n of [BOS] + text; the copies sit in those positions
        a = jax.random.randint(k_a, (b,), 0, n - 2 * length + 1)  # first copy at targets[a : a + length]
        b_off = jax.random.randint(k_b, (b,), 0, n - (a + 2 * length) + 1)
        second = a + length + b_off
        segment = jax.random.randint(k_tok, (b, hi), 1, self.d_vocab)  # never id 0, the special token
        pos = jnp.arange(n)[None, :]
        in_first = (pos >= a[:, None]) & (pos < (a + length)[:, None]) & rows[:, None]
        in_second = (pos >= second[:, None]) & (pos < (second + length)[:, None]) & rows[:, None]
        idx_first = jnp.clip(pos - a[:, None], 0, hi - 1)
        idx_second = jnp.clip(pos - second[:, None], 0, hi - 1)
        targets = jnp.where(
            in_first,
            jnp.take_along_axis(segment, idx_first, axis=1),
            jnp.where(in_second, jnp.take_along_axis(segment, idx_second, axis=1), batch.targets),
        )
        inputs = jnp.concatenate([batch.tokens[:, :1], targets[:, :-1]], axis=1)
        mask = jnp.where(in_first, 0.0, batch.mask)
        return Batch(inputs, targets, mask)

    def split(self, seed: int) -> tuple[Batch, Batch]:
        """(n_eval windows of the training works, n_eval of the validation works), fixed by `seed`,
        as numpy arrays."""
        out = []
        for i, split in enumerate(("train", "validation")):
            tokens = np.asarray(self.data.tokens[split], np.int32)
            if tokens.shape[0] < self.seq_len:
                raise ValueError(f"TextTask: the {split} split has {tokens.shape[0]} tokens, fewer than seq_len")
            rng = np.random.default_rng([seed, i])
            starts = np.sort(rng.integers(0, tokens.shape[0] - self.seq_len + 1, self.n_eval))
            out.append(jax.tree.map(np.asarray, self.windows(jnp.asarray(tokens), jnp.asarray(starts))))
        return out[0], out[1]

    def bits_per_char(self, loss: float, split: str = "validation") -> float:
        """A loss in nats per token as bits per character of `split`'s text."""
        return float(loss) / self.data.chars_per_token(split) / math.log(2)
