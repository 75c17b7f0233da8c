"""The attention view (minillm/attention_view.py) is one self-contained HTML page with the tokens and
the pattern in it."""

import json
import re

import numpy as np
import pytest

from minillm.attention_view import attention_view


def test_the_page_holds_the_tokens_and_patterns_and_no_external_script(tmp_path):
    rng = np.random.default_rng(0)
    pattern = np.tril(rng.random((2, 4, 4)))
    pattern /= pattern.sum(-1, keepdims=True)
    view = attention_view(pattern, ["<bos>", "a", "</b>", "c"], title="layer 0")
    page = view._repr_html_()
    assert "<script>" in page and "src=" not in page  # nothing fetched from the network
    tokens = json.loads(re.search(r"const tokens = (\[.*?\]);", page).group(1))
    assert tokens == ["<bos>", "a", "</b>", "c"]  # as data (JSON), never parsed as HTML
    shown = np.array(json.loads(re.search(r"const pattern = (\[.*?\]);  //", page).group(1)))
    np.testing.assert_allclose(shown, pattern, atol=1e-4)
    view.save(str(tmp_path / "a.html"))
    assert (tmp_path / "a.html").read_text().startswith("<!doctype html>")
    assert attention_view(pattern[0], list("wxyz")).page.count("H0") == 1
    tricky = attention_view(pattern[0], ["</script>", "x", "y", "z"]).page
    assert tricky.count("</script>") == 1  # only the page's own closing tag


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="tokens"):
        attention_view(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="query, key"):
        attention_view(np.ones((2, 3, 4)), list("abc"))
