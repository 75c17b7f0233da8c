"""An interactive view of attention patterns in a notebook, with no torch and no JavaScript library.

circuitsvis (the view TransformerLens users know) needs torch. This is a small self-contained
HTML page instead: the tokens in a row; hover one (or click it, to pin it) and every token is shaded
by how much the hovered one attends to it, in the chosen head; the buttons choose the head.

    from minillm.attention_view import attention_view
    attention_view(cache["pattern", 0][0], task.decode(tokens[0]).split())   # shows in Jupyter/Colab
    attention_view(...).save("attention.html")                                 # or open in a browser
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Sequence

import numpy as np

_TEMPLATE = """
<div id="{uid}" style="font-family: monospace; font-size: 13px; line-height: 2.2;">
  <div style="margin-bottom: 4px;">{title}<span class="heads"></span></div>
  <div class="tokens"></div>
  <div class="info" style="color: #666; font-size: 11px;">hover a token to see where it attends; click to pin</div>
</div>
<script>
(function() {{
  const root = document.getElementById("{uid}");
  const tokens = {tokens};
  const pattern = {pattern};  // [head][query][key]
  const names = {names};
  let head = 0, pinned = null;
  const heads = root.querySelector(".heads"), row = root.querySelector(".tokens");
  const info = root.querySelector(".info");
  names.forEach((name, h) => {{
    const b = document.createElement("button");
    b.textContent = name; b.style.marginLeft = "4px";
    b.onclick = () => {{ head = h; paint(pinned); mark(); }};
    heads.appendChild(b);
  }});
  const spans = tokens.map((t, i) => {{
    const s = document.createElement("span");
    s.textContent = t; s.style.padding = "2px 4px"; s.style.marginRight = "2px";
    s.style.border = "1px solid #ddd"; s.style.borderRadius = "3px"; s.style.cursor = "pointer";
    s.onmouseenter = () => {{ if (pinned === null) paint(i); }};
    s.onmouseleave = () => {{ if (pinned === null) paint(null); }};
    s.onclick = () => {{ pinned = pinned === i ? null : i; paint(pinned === null ? i : pinned); }};
    row.appendChild(s); return s;
  }});
  function mark() {{
    heads.querySelectorAll("button").forEach((b, h) => b.style.fontWeight = h === head ? "bold" : "normal");
  }}
  function paint(q) {{
    spans.forEach((s, k) => {{
      const a = q === null ? 0 : pattern[head][q][k];
      s.style.background = `rgba(220, 60, 40, ${{a}})`;
      s.style.outline = q === k ? "2px solid #333" : "none";
      s.title = q === null ? "" : `attention ${{a.toFixed(3)}}`;
    }});
    if (q !== null) {{
      const top = pattern[head][q].map((a, k) => [a, k]).sort((x, y) => y[0] - x[0]).slice(0, 3);
      info.textContent = `${{names[head]}}, from "${{tokens[q]}}" (position ${{q}}): ` +
        top.map(([a, k]) => `"${{tokens[k]}}"@${{k}} ${{a.toFixed(2)}}`).join(", ");
    }}
  }}
  mark();
}})();
</script>
"""


class AttentionView:
    """The HTML of one view; Jupyter and Colab render it (`_repr_html_`), `save` writes a page."""

    def __init__(self, page: str):
        self.page = page

    def _repr_html_(self) -> str:
        return self.page

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(f"<!doctype html><html><body>{self.page}</body></html>")


def attention_view(
    pattern, tokens: Sequence[str], head_names: Sequence[str] | None = None, title: str = ""
) -> AttentionView:
    """pattern [heads, query, key] (or [query, key]) of one sequence, e.g. cache["pattern", 0][0];
    tokens: one string per position."""
    pattern = np.asarray(pattern, dtype=np.float64)
    if pattern.ndim == 2:
        pattern = pattern[None]
    if pattern.ndim != 3 or pattern.shape[1] != pattern.shape[2]:
        raise ValueError(f"attention_view: pattern must be [heads, query, key] or [query, key], got {pattern.shape}")
    if len(tokens) != pattern.shape[1]:
        raise ValueError(f"attention_view: {len(tokens)} tokens for a pattern over {pattern.shape[1]} positions")
    names = list(head_names) if head_names is not None else [f"H{h}" for h in range(pattern.shape[0])]
    if len(names) != pattern.shape[0]:
        raise ValueError(f"attention_view: {len(names)} head names for {pattern.shape[0]} heads")
    page = _TEMPLATE.format(
        uid=f"attn-{uuid.uuid4().hex[:10]}",
        title=html.escape(title),
        tokens=json.dumps([str(t) for t in tokens]).replace("</", "<\\/"),  # "</script>" cannot end the script
        pattern=json.dumps(np.round(np.clip(pattern, 0.0, 1.0), 4).tolist()),
        names=json.dumps(names),
    )
    return AttentionView(page)
