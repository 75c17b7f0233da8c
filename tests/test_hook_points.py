"""The catalogue of hook points (hook_names, hook_shape) and the weights against the tables in
docs/conventions.md, parsed from the doc itself: the library derives its lists from the model, the
test from the doc, so neither can drift from the other."""

from __future__ import annotations

import pathlib
import re

import pytest

from minillm import GPT, GPTConfig, hook_names, hook_shape, hook_shapes

CONVENTIONS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "conventions.md"

# The "exists when" words of the tables, as predicates on a config.
CONDITIONS = {
    "always": lambda cfg: True,
    "LayerNorm": lambda cfg: cfg.normalization_type is not None,  # "LN" or "LNPre"
    "MLP": lambda cfg: not cfg.attn_only,
    "on request": lambda cfg: True,  # a hook point, but reached only when a call names it
}
# A config of every kind the tables tell apart: normalization x attention-only
KINDS = {
    f"{norm}_{'attn_only' if attn_only else 'mlp'}": GPTConfig(
        n_layers=2,
        d_model=16,
        n_ctx=6,
        d_vocab=7,
        n_heads=2,
        d_mlp=24,
        d_vocab_out=5,
        normalization_type=norm,
        attn_only=attn_only,
    )
    for norm in ("LN", "LNPre", None)
    for attn_only in (False, True)
}


def table_after(heading: str) -> list[list[str]]:
    """The rows of the first Markdown table under `## heading` in docs/conventions.md, header dropped."""
    text = CONVENTIONS.read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/conventions.md has no section '## {heading}'"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"no table under '## {heading}' in docs/conventions.md"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def documented_hooks() -> list[tuple[str, str, str]]:
    """(name with {l}, shape letters, exists-when) for each row of the hook table, in its order."""
    rows = []
    for name, shape, when, _what in table_after("Hook points"):
        name = name.strip("`")
        letters = "".join(re.fullmatch(r"\[(.*)\]", shape).group(1).split(", "))
        rows.append((name, letters, when))
    return rows


def exists(when: str, cfg: GPTConfig) -> bool:
    words = when.split(" and ")
    unknown = [w for w in words if w not in CONDITIONS]
    assert not unknown, f"docs/conventions.md: unknown 'exists when' {unknown}; known: {sorted(CONDITIONS)}"
    return all(CONDITIONS[w](cfg) for w in words)


def documented_shapes(cfg: GPTConfig, b: int, p: int) -> dict[str, tuple[int, ...]]:
    """{hook name: shape} that the doc promises for this config and tokens [b, p], in forward order:
    rows before the first `blocks.{l}` row, then the block rows for each layer, then the rest."""
    size = {"b": b, "p": p, "q": p, "k": p, "d": cfg.d_model, "h": cfg.n_heads, "e": cfg.d_head, "1": 1}
    size |= {"m": cfg.d_mlp, "v": cfg.d_vocab_out}
    rows = [(name, letters) for name, letters, when in documented_hooks() if exists(when, cfg)]
    in_block = [i for i, (name, _) in enumerate(rows) if name.startswith("blocks.{l}.")]
    assert in_block == list(range(in_block[0], in_block[-1] + 1)), "the block rows must be together"
    before, block, after = rows[: in_block[0]], rows[in_block[0] : in_block[-1] + 1], rows[in_block[-1] + 1 :]
    names = before + [(name.format(l=l), s) for l in range(cfg.n_layers) for name, s in block] + after
    return {name: tuple(size[c] for c in letters) for name, letters in names}


def test_the_doc_has_the_hook_table_this_test_reads():
    rows = documented_hooks()
    assert len(rows) == len({name for name, _, _ in rows}), "a hook point is listed twice"
    assert {"blocks.{l}.attn.hook_pattern", "blocks.{l}.attn.hook_result", "unembed.hook_out"} <= {
        name for name, _, _ in rows
    }
    assert {when for _, _, when in rows} >= {"always", "LayerNorm", "MLP", "LayerNorm and MLP"}


def on_request_rows() -> set[str]:
    return {name for name, _, when in documented_hooks() if "on request" in when}


def test_full_cache_has_every_documented_hook_with_its_shape(model, cfg, tokens):
    logits, cache = model.run_with_cache(tokens)
    expected = documented_shapes(cfg, *tokens.shape)
    extra = {n for n in expected if any(n == r.format(l=l) for r in on_request_rows() for l in range(cfg.n_layers))}
    assert extra and set(expected) == set(hook_names(cfg))
    # "cache everything" leaves out the hook points reached only on request
    assert set(cache.keys()) == set(expected) - extra
    for name, shape in expected.items():
        assert name in extra or cache[name].shape == shape, name
        assert hook_shape(cfg, name, *tokens.shape) == shape, name
    assert logits.shape == (*tokens.shape, cfg.d_vocab_out)
    # the forward pass reaches the hooks in the documented order
    assert hook_names(cfg) == list(expected)
    assert list(cache.keys()) == [n for n in expected if n not in extra]


def test_on_request_hook_points_are_reached_when_named(model, cfg, tokens):
    names = [n for n in hook_names(cfg) if n.rsplit(".", 1)[-1] in ("hook_q_input", "hook_mlp_in", "hook_attn_in")]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    assert list(cache.keys()) == names
    for name in names:
        assert cache[name].shape == hook_shape(cfg, name, *tokens.shape)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_config_has_the_documented_hooks_in_order(kind):
    cfg = KINDS[kind]
    assert hook_shapes(cfg, 2, 5) == documented_shapes(cfg, 2, 5)
    assert list(hook_shapes(cfg, 2, 5)) == list(documented_shapes(cfg, 2, 5))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_state_dict_has_the_documented_weights(kind):
    cfg = KINDS[kind]
    size = {f: getattr(cfg, f) for f in ("d_vocab", "n_ctx", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab_out")}
    conditions = {
        "always": True,
        '`normalization_type="LN"`': cfg.normalization_type == "LN",
        "not `attn_only`": not cfg.attn_only,
    }
    expected = {}
    for names, shapes, when in table_after("Weights"):
        assert all(w in conditions for w in when.split(" and ")), f"docs/conventions.md: unknown {when!r}"
        if not all(conditions[w] for w in when.split(" and ")):
            continue
        names = [n.strip().strip("`") for n in names.split(",")]
        shapes = [tuple(size[f] for f in s.split(", ")) for s in re.findall(r"\[([^\]]*)\]", shapes)]
        prefix = names[0].rsplit(".", 1)[0]  # `blocks.{l}.attn.W_Q`, `W_K`: the rest share its prefix
        for i, name in enumerate(names):
            full = name if "." in name else f"{prefix}.{name}"
            for l in range(cfg.n_layers):
                expected[full.format(l=l)] = shapes[min(i, len(shapes) - 1)]
    got = {name: tuple(w.shape) for name, w in GPT(cfg).state_dict().items()}
    assert got == expected


def test_hook_names_follow_the_config_not_a_fixed_list():
    base = dict(n_layers=3, d_model=16, n_ctx=4, d_vocab=5, n_heads=2)
    full = hook_names(GPTConfig(**base))
    assert len(hook_names(GPTConfig(**{**base, "n_layers": 1}))) < len(full)
    assert not any("mlp" in n or "resid_mid" in n for n in hook_names(GPTConfig(**base, attn_only=True)))
    assert not any(
        ".ln" in n or n.startswith("ln_final") for n in hook_names(GPTConfig(**base, normalization_type=None))
    )
    assert hook_shapes(GPTConfig(**base), 2, 3)["blocks.2.mlp.hook_post"] == (2, 3, 64)


def test_hook_shape_of_an_unknown_name_names_the_nearest():
    with pytest.raises(KeyError, match="blocks.0.hook_resid_pre"):
        hook_shape(GPTConfig(n_layers=1, d_model=16, n_ctx=4, d_vocab=5, n_heads=2), "blocks.0.hook_resid_pr", 1, 2)
