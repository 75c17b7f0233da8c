"""An attribution graph in the browser: one self-contained HTML page, no server, no torch, no
JavaScript library, nothing fetched (minillm.attribution makes the graph).

    from minillm.graph_view import graph_view, feature_top_logits, top_activating_contexts, view_features

    graph = attribute(model, tcs, prompt)
    pruned = graph.prune(0.8, 0.98)
    keys = view_features(graph, pruned)                               # [(layer, feature)] shown
    contexts = top_activating_contexts(model, tcs, tokens, keys)     # tokens [b, p]: a corpus batch
    logits = feature_top_logits(tcs, model, keys)                     # W_dec[f] @ W_U
    graph_view(graph, pruned=pruned, feature_contexts=contexts, feature_logits=logits, path="graph.html")

**What the page shows.** An SVG drawing of the pruned graph: one row per layer, the embeddings at
the bottom, then layer 0, 1, ... (each with its features and its error nodes), the logits on top;
one column per position, the prompt's tokens written under the columns (the logits sit in the last
column, most likely first, their output tokens written above them). Features are orange circles,
errors grey squares, embeddings green rectangles, logits purple diamonds. An edge is a curve from
its source up to its target, its width proportional to |weight| (the widest is the largest
|weight| shown), blue when the weight is positive and red when it is negative. Hovering a node
shows its name; clicking one selects it: its edges stay bright and the rest fade, and the panel on
the right shows its kind, layer, position (and token), feature index (token id, output id),
activation (for an error or an embedding the norm of its vector, for a logit its probability),
influence and target value; its strongest incoming and outgoing edges (each a link to the node
at its other end); and, for a feature, its top logits and top activating contexts when the caller
supplied them. Clicking the background clears the selection. The page also selects a node named in
its address, `page.html#select=feature:1:3:5` (node ids as in `AttributionGraph.node_ids`): the
page dispatches a click on that node, which is how the browser test drives it.

**Arguments.** `graph`: an AttributionGraph, or the dict its `to_json` / `save` wrote (then the
file's nodes and links are shown as they are, and `pruned` must be None). `pruned`: a Pruned of
`graph.prune(...)`; by default `graph.prune()` (thresholds 0.8 and 0.98; `graph.prune(1.0, 1.0)`
keeps every node with a path to a logit). `tokens`: one string per position (default: the graph's
token strings, else the token ids). `output_text`: the logits' text, a sequence indexed by output
id or a function of the id (default: the id). `feature_contexts` and `feature_logits`: each a
mapping {(layer, feature): [(text, value), ...]}, shown in the given order; only the features in
the view are embedded. The two helpers compute them:

- `feature_top_logits(transcoders, unembed, features, k=8)`: the logits a feature's decoder
  direction writes directly, W_dec[f] @ W_U (LayerNorm's scale ignored, as Neuronpedia's "top
  logits"; fold ln_final into W_U first, e.g. with minillm.weight_processing, to include its
  weights). `unembed` is a GPT (its W_U, and its tokenizer for the text) or a [d_model, d_vocab_out]
  array.
- `top_activating_contexts(model, transcoders, tokens, features, k=5, window=8)`: over a batch of
  token sequences [b, p], each feature's k largest activations, each as the `window` tokens ending
  at the firing token, that token in brackets: "... the cat [sat]". One compiled pass gathers the
  MLP inputs (minillm.transcoders.gather_mlp_io); the features are encoded in chunks of rows. For a
  large corpus, compute them once and keep them (they depend on the transcoders, not the prompt).

**Safety.** The data is embedded as JSON in a `<script type="application/json">` element with
`<`, `>` and `&` written as \\u escapes, so no token string can end the script or open a tag, and
the page's script writes every string with `textContent` (never as HTML).

**The browser check.** tests/test_graph_view.py renders a page in headless Chromium (Debian:
`apt-get install -y chromium`) and reads the DOM after the page's script ran: the number of node and
edge elements equals the pruned graph's, embeddings are drawn below the logits and positions left to
right, the widest edge is the largest |weight|, a hostile token string shows as text (no element is
made of it), and `#select=<node id>` fills the panel with the node's details, edges, top logits and
contexts. It skips when no Chromium is installed (CI does not install it); to run it:

    apt-get install -y chromium       # or set CHROMIUM=/path/to/chromium (or chrome)
    .venv/bin/python -m pytest -q tests/test_graph_view.py

By hand: `chromium --headless --no-sandbox --disable-gpu --dump-dom 'file:///tmp/graph.html#select=logit:3'`
prints the DOM after the script ran, or open the file in any browser.
"""

from __future__ import annotations

import html
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

FeatureKey = tuple[int, int]  # (layer, feature)

_TEMPLATE = """
<style>
#__UID__ { font-family: sans-serif; font-size: 12px; color: #222; }
#__UID__ .gv-body { display: flex; align-items: flex-start; gap: 8px; }
#__UID__ .gv-canvas { flex: 1 1 auto; overflow: auto; max-height: 85vh; border: 1px solid #ddd; }
#__UID__ .gv-panel { flex: 0 0 320px; max-height: 85vh; overflow: auto; border: 1px solid #ddd; padding: 6px 8px; }
#__UID__ .gv-panel h3 { font-size: 13px; margin: 2px 0 6px 0; }
#__UID__ .gv-panel h4 { font-size: 12px; margin: 10px 0 3px 0; }
#__UID__ .gv-panel table { border-collapse: collapse; }
#__UID__ .gv-panel th { text-align: left; font-weight: normal; color: #666; padding-right: 8px; }
#__UID__ .gv-panel ol { margin: 0; padding-left: 20px; }
#__UID__ .gv-panel .gv-link { cursor: pointer; text-decoration: underline dotted; }
#__UID__ .gv-panel .gv-none { color: #888; }
#__UID__ .gv-mono { font-family: monospace; white-space: pre-wrap; word-break: break-all; }
#__UID__ .node { cursor: pointer; }
#__UID__ .node.dim { opacity: 0.2; }
#__UID__ .node.selected > :first-child { stroke: #000; stroke-width: 2.5; }
#__UID__ .edge { fill: none; opacity: 0.55; }
#__UID__ .edge.dim { opacity: 0.06; }
#__UID__ .edge.lit { opacity: 0.95; }
#__UID__ .gv-legend { color: #555; margin: 4px 0; }
</style>
<div id="__UID__" class="minillm-graph-view">
  <div class="gv-title" style="font-weight: bold;">__TITLE__</div>
  <div class="gv-legend">rows: embeddings (bottom), layers, logits (top); columns: positions.
    <span style="color: #dd6b20;">&#9679;</span> feature <span style="color: #718096;">&#9632;</span> error
    <span style="color: #38a169;">&#9644;</span> embedding <span style="color: #805ad5;">&#9670;</span> logit;
    edges: width &#8733; |weight|, <span style="color: #2b6cb0;">positive</span>,
    <span style="color: #c53030;">negative</span>. Click a node. <span class="gv-scores"></span></div>
  <div class="gv-body">
    <div class="gv-canvas"></div>
    <div class="gv-panel"><span class="gv-none">Click a node to see its details.</span></div>
  </div>
</div>
<script type="application/json" id="__UID__-data">__DATA__</script>
<script>
(function() {
  const root = document.getElementById("__UID__");
  const data = JSON.parse(document.getElementById("__UID__-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const nodes = data.nodes, edges = data.edges;  // edges: [source, target, weight], indices into nodes
  const L = data.n_layers, P = data.tokens.length;
  const incoming = nodes.map(() => []), outgoing = nodes.map(() => []);
  edges.forEach((e, k) => { outgoing[e[0]].push(k); incoming[e[1]].push(k); });

  // --- layout: row 0 the embeddings, row l + 1 layer l, row L + 1 the logits; a column per position
  const rowOf = n => n.kind === "embedding" ? 0 : n.kind === "logit" ? L + 1 : n.layer + 1;
  const cells = new Map();
  nodes.forEach((n, i) => {
    const key = rowOf(n) + ":" + n.position;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(i);
  });
  const rank = {feature: 0, error: 1, embedding: 2, logit: 3};
  cells.forEach(list => list.sort((a, b) => rank[nodes[a].kind] - rank[nodes[b].kind] ||
    (nodes[a].kind === "logit" ? a - b : nodes[a].index - nodes[b].index)));
  const GAP = 18, ROW = 72, LEFT = 76, TOP = 80, BOTTOM = 56, MINCOL = 64;
  const colW = new Array(P).fill(MINCOL);
  cells.forEach((list, key) => {
    const p = Number(key.split(":")[1]);
    colW[p] = Math.max(colW[p], list.length * GAP + 14);
  });
  const colX = [];
  let right = LEFT;
  for (let p = 0; p < P; p++) { colX.push(right + colW[p] / 2); right += colW[p]; }
  const W = right + 16, H = TOP + (L + 1) * ROW + BOTTOM;
  const rowY = r => TOP + (L + 1 - r) * ROW;
  const xy = new Array(nodes.length);
  cells.forEach((list, key) => {
    const [r, p] = key.split(":").map(Number);
    list.forEach((i, j) => { xy[i] = [colX[p] + (j - (list.length - 1) / 2) * GAP, rowY(r)]; });
  });

  function svgEl(tag, attrs, parent) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function short(s, n) { return s.length > n ? s.slice(0, n - 1) + "\\u2026" : s; }
  const fmt = v => v === null || v === undefined ? "\\u2013" : Number(v).toPrecision(3);
  const signed = v => (v > 0 ? "+" : "") + fmt(v);
  const key = n => n.layer + ":" + n.index;
  function label(n) {
    if (n.kind === "feature") return "feature " + n.index + " (layer " + n.layer + ", pos " + n.position + ")";
    if (n.kind === "error") return "error (layer " + n.layer + ", pos " + n.position + ")";
    if (n.kind === "embedding") return "embedding \\"" + n.text + "\\" (pos " + n.position + ")";
    return "logit \\"" + n.text + "\\"";
  }

  const sc = data.scores, ps = data.pruned_scores;
  if (sc.replacement !== undefined)
    root.querySelector(".gv-scores").textContent = "Replacement score " + fmt(sc.replacement) +
      (ps ? " (pruned " + fmt(ps.replacement) + ")" : "") + ", completeness " + fmt(sc.completeness) +
      (ps ? " (pruned " + fmt(ps.completeness) + ")" : "") + "; " + nodes.length + " nodes, " +
      edges.length + " edges.";

  const svg = svgEl("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H});
  root.querySelector(".gv-canvas").appendChild(svg);
  const names = ["embeddings"].concat(Array.from({length: L}, (_, l) => "layer " + l), ["logits"]);
  names.forEach((name, r) => {
    svgEl("line", {x1: LEFT, x2: right, y1: rowY(r), y2: rowY(r), stroke: "#eee"}, svg);
    svgEl("text", {x: 6, y: rowY(r) + 4, fill: "#666", "font-size": 11}, svg).textContent = name;
  });
  data.tokens.forEach((t, p) => {
    const e = svgEl("text", {x: colX[p], y: rowY(0) + 28, "text-anchor": "middle", "font-family": "monospace",
                             "font-size": 11, class: "gv-token"}, svg);
    e.textContent = short(t, 10);
    svgEl("title", {}, e).textContent = "position " + p + ": " + t;
    svgEl("text", {x: colX[p], y: rowY(0) + 42, "text-anchor": "middle", fill: "#999", "font-size": 9}, svg)
      .textContent = String(p);
  });

  const edgeGroup = svgEl("g", {}, svg), nodeGroup = svgEl("g", {}, svg);
  const maxW = edges.reduce((m, e) => Math.max(m, Math.abs(e[2])), 1e-30);
  const edgeEls = edges.map(([s, t, w]) => {
    const [sx, sy] = xy[s], [tx, ty] = xy[t], my = (sy + ty) / 2;
    return svgEl("path", {class: "edge", d: `M${sx},${sy} C${sx},${my} ${tx},${my} ${tx},${ty}`,
                          stroke: w >= 0 ? "#2b6cb0" : "#c53030",
                          "stroke-width": (0.5 + 5.5 * Math.abs(w) / maxW).toFixed(3),
                          "data-source": nodes[s].id, "data-target": nodes[t].id, "data-weight": w}, edgeGroup);
  });
  const nodeEls = nodes.map((n, i) => {
    const g = svgEl("g", {class: "node", "data-node-id": n.id, "data-kind": n.kind,
                          transform: `translate(${xy[i][0]},${xy[i][1]})`}, nodeGroup);
    if (n.kind === "feature") svgEl("circle", {r: 6, fill: "#f6ad55", stroke: "#9c4221"}, g);
    else if (n.kind === "error")
      svgEl("rect", {x: -5, y: -5, width: 10, height: 10, fill: "#cbd5e0", stroke: "#4a5568"}, g);
    else if (n.kind === "embedding")
      svgEl("rect", {x: -8, y: -5, width: 16, height: 10, rx: 2, fill: "#68d391", stroke: "#276749"}, g);
    else svgEl("polygon", {points: "0,-8 7,0 0,8 -7,0", fill: "#b794f4", stroke: "#553c9a"}, g);
    svgEl("title", {}, g).textContent = label(n) + ", " + n.what + " " + fmt(n.activation);
    if (n.kind === "logit") {
      const t = svgEl("text", {x: 0, y: -12, transform: "rotate(-50)", "font-family": "monospace", "font-size": 10,
                               class: "gv-output"}, g);
      t.textContent = short(n.text, 12);
    }
    g.addEventListener("click", ev => { ev.stopPropagation(); select(i); });
    return g;
  });
  svg.addEventListener("click", () => select(null));

  // --- the panel
  const panel = root.querySelector(".gv-panel");
  function el(tag, text, parent, cls) {
    const e = document.createElement(tag);
    if (text !== null && text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    if (parent) parent.appendChild(e);
    return e;
  }
  function edgeList(title, list, other, field) {
    el("h4", title + " (" + list.length + " shown)", panel);
    if (!list.length) { el("div", "none", panel, "gv-none"); return; }
    const ol = el("ol", null, panel);
    ol.dataset.field = field;
    list.slice().sort((a, b) => Math.abs(edges[b][2]) - Math.abs(edges[a][2])).slice(0, 10).forEach(k => {
      const li = el("li", null, ol);
      const j = edges[k][other];
      const a = el("span", label(nodes[j]), li, "gv-link");
      a.addEventListener("click", () => select(j));
      el("span", " " + signed(edges[k][2]), li);
    });
  }
  function pairs(title, list, field, missing) {
    el("h4", title, panel);
    if (!list) { el("div", missing, panel, "gv-none"); return; }
    const ol = el("ol", null, panel);
    ol.dataset.field = field;
    list.forEach(([text, v]) => {
      const li = el("li", null, ol);
      el("span", text, li, "gv-mono");
      el("span", " " + fmt(v), li);
    });
  }
  function details(i) {
    panel.replaceChildren();
    if (i === null) { el("span", "Click a node to see its details.", panel, "gv-none"); return; }
    const n = nodes[i];
    panel.dataset.nodeId = n.id;
    el("h3", label(n), panel);
    const table = el("table", null, panel);
    const row = (name, value, field) => {
      const tr = el("tr", null, table);
      tr.dataset.field = field;
      el("th", name, tr);
      el("td", value, tr, "gv-mono");
    };
    row("kind", n.kind, "kind");
    row("layer", n.kind === "embedding" ? "embeddings" : n.kind === "logit" ? "logits" : String(n.layer), "layer");
    row("position", n.position + " \\"" + data.tokens[n.position] + "\\"", "position");
    if (n.kind === "feature") row("feature", String(n.index), "index");
    if (n.kind === "embedding") row("token id", String(n.index), "index");
    if (n.kind === "logit") row("output", n.index + " \\"" + n.text + "\\"", "index");
    row(n.what, fmt(n.activation), "activation");
    row("influence", fmt(n.influence), "influence");
    if (n.kind === "feature" || n.kind === "logit")
      row(n.kind === "logit" ? "logit - mean" : "pre-activation - b_enc", fmt(n.target_value), "target_value");
    edgeList("Incoming edges", incoming[i], 0, "incoming");
    edgeList("Outgoing edges", outgoing[i], 1, "outgoing");
    if (n.kind === "feature") {
      pairs("Top logits (W_dec @ W_U)", data.feature_logits[key(n)], "logits",
            "not supplied: graph_view(..., feature_logits=feature_top_logits(...))");
      pairs("Top activating contexts", data.feature_contexts[key(n)], "contexts",
            "not supplied: graph_view(..., feature_contexts=top_activating_contexts(...))");
    }
  }
  function select(i) {
    const near = new Set(i === null ? [] : [i]);
    if (i !== null) {
      incoming[i].forEach(k => near.add(edges[k][0]));
      outgoing[i].forEach(k => near.add(edges[k][1]));
    }
    nodeEls.forEach((g, j) => {
      g.classList.toggle("selected", j === i);
      g.classList.toggle("dim", i !== null && !near.has(j));
    });
    edgeEls.forEach((e, k) => {
      const on = i !== null && (edges[k][0] === i || edges[k][1] === i);
      e.classList.toggle("lit", on);
      e.classList.toggle("dim", i !== null && !on);
    });
    if (i === null) { delete root.dataset.selected; delete panel.dataset.nodeId; }
    else root.dataset.selected = nodes[i].id;
    details(i);
  }
  function fromAddress() {  // #select=<node id>: a click on that node, as a user's
    const m = location.hash.match(/^#select=(.+)$/);
    if (!m) return;
    const id = decodeURIComponent(m[1]);
    const j = nodes.findIndex(n => n.id === id);
    if (j >= 0) nodeEls[j].dispatchEvent(new MouseEvent("click", {bubbles: true}));
  }
  window.addEventListener("hashchange", fromAddress);
  fromAddress();
  root.dataset.ready = "1";
})();
</script>
"""

_WHAT = {"feature": "activation", "error": "error norm", "embedding": "embedding norm", "logit": "probability"}


class GraphView:
    """The HTML of one graph view; Jupyter and Colab render it (`_repr_html_`), `save` writes a page."""

    def __init__(self, page: str, n_nodes: int, n_edges: int):
        self.page = page
        self.n_nodes = n_nodes  # the nodes and edges drawn
        self.n_edges = n_edges

    def _repr_html_(self) -> str:
        return self.page

    def document(self) -> str:
        """The whole page: a complete HTML document."""
        return f'<!doctype html>\n<html><head><meta charset="utf-8"><title>attribution graph</title></head><body>{self.page}</body></html>\n'  # noqa: E501

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.document())


def _number(v: Any) -> float | None:
    """A float for JSON, 6 significant digits; None for NaN and infinities."""
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else None


def _text_of(output_text) -> Callable[[int], str]:
    if output_text is None:
        return str
    if callable(output_text):
        return lambda i: str(output_text(i))
    return lambda i: str(output_text[i])


def _script_json(value: Any) -> str:
    """JSON that can sit inside a <script> element: no "<", ">" or "&" left to end it or open a tag
    (valid JSON still: they only occur inside strings, written as \\u escapes); ASCII only."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _graph_json(graph, pruned) -> dict:
    from minillm.attribution import AttributionGraph  # JAX: imported only for a graph object

    if isinstance(graph, AttributionGraph):
        return graph.to_json(graph.prune() if pruned is None else pruned)
    if isinstance(graph, Mapping) and {"metadata", "nodes", "links"} <= set(graph):
        if pruned is not None:
            raise ValueError("graph_view: a saved graph (a to_json dict) is shown as it is; pruned must be None")
        return dict(graph)
    raise TypeError(f"graph_view: expects an AttributionGraph or the dict of its to_json, got {type(graph).__name__}")


def _pairs(mapping, keys: set, what: str) -> dict[str, list]:
    """{"layer:feature": [[text, value], ...]} for the features in the view."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise TypeError(f"graph_view: {what} must be a mapping {{(layer, feature): [(text, value), ...]}}")
    out = {}
    for k, items in mapping.items():
        try:
            layer, feature = (int(x) for x in k)
        except (TypeError, ValueError):
            raise ValueError(f"graph_view: {what}'s keys are (layer, feature), got {k!r}") from None
        if (layer, feature) not in keys:
            continue
        rows = []
        for item in items:
            if len(item) != 2:
                raise ValueError(f"graph_view: {what}[{k!r}] holds (text, value) pairs, got {item!r}")
            rows.append([str(item[0]), _number(item[1])])
        out[f"{layer}:{feature}"] = rows
    return out


def graph_view(
    graph,
    tokens: Sequence[str] | None = None,
    *,
    pruned=None,
    feature_contexts: Mapping[FeatureKey, Sequence[tuple[str, float]]] | None = None,
    feature_logits: Mapping[FeatureKey, Sequence[tuple[str, float]]] | None = None,
    output_text: Sequence[str] | Callable[[int], str] | None = None,
    title: str = "",
    path: str | None = None,
) -> GraphView:
    """The pruned attribution graph as one self-contained HTML view (module docstring).

    graph: an AttributionGraph, or the dict of its to_json / save; pruned: graph.prune(...) (default
    graph.prune()); tokens: the prompt's tokens as text, one per position; feature_contexts /
    feature_logits: {(layer, feature): [(text, value), ...]} shown for a clicked feature;
    output_text: the logits' text (a sequence indexed by output id, or a function of it);
    path: also write the page there."""
    data = _graph_json(graph, pruned)
    meta = data["metadata"]
    prompt = list(meta["prompt_tokens"])
    if tokens is None:
        tokens = meta.get("prompt_strings") or [str(t) for t in prompt]
    tokens = [str(t) for t in tokens]
    if len(tokens) != len(prompt):
        raise ValueError(f"graph_view: {len(tokens)} token strings for a prompt of {len(prompt)} positions")
    to_text = _text_of(output_text)
    where = {}
    nodes = []
    for node in data["nodes"]:
        kind = node["kind"]
        shown = {
            "id": node["id"],
            "kind": kind,
            "layer": int(node["layer"]),
            "position": int(node["position"]),
            "index": int(node["index"]),
            "activation": _number(node["activation"]),
            "influence": _number(node["influence"]),
            "target_value": _number(node["target_value"]),
            "what": _WHAT[kind],
        }
        if kind == "embedding":
            shown["text"] = tokens[shown["position"]]
        elif kind == "logit":
            shown["text"] = to_text(shown["index"])
        where[node["id"]] = len(nodes)
        nodes.append(shown)
    edges = [[where[link["source"]], where[link["target"]], _number(link["weight"])] for link in data["links"]]
    keys = {(n["layer"], n["index"]) for n in nodes if n["kind"] == "feature"}
    payload = {
        "n_layers": int(meta["model_config"]["n_layers"]),
        "tokens": tokens,
        "nodes": nodes,
        "edges": edges,
        "feature_contexts": _pairs(feature_contexts, keys, "feature_contexts"),
        "feature_logits": _pairs(feature_logits, keys, "feature_logits"),
        "scores": {k: _number(v) for k, v in meta.get("scores", {}).items()},
        "pruned_scores": {k: _number(v) for k, v in meta.get("pruned", {}).get("scores", {}).items()} or None,
    }
    values = {"UID": f"graph-{uuid.uuid4().hex[:10]}", "TITLE": html.escape(title), "DATA": _script_json(payload)}
    page = re.sub(r"__(UID|TITLE|DATA)__", lambda m: values[m.group(1)], _TEMPLATE)  # one pass: data is not rescanned
    view = GraphView(page, len(nodes), len(edges))
    if path is not None:
        view.save(path)
    return view


# ---------------------------------------------------------------------------------------------
# What a clicked feature shows: its top logits and its top activating contexts
# ---------------------------------------------------------------------------------------------
def view_features(graph, pruned=None) -> list[FeatureKey]:
    """The (layer, feature) pairs of the features a view of `graph` shows (kept by `pruned`,
    default graph.prune()), sorted: what to compute contexts and logits for."""
    keep = (graph.prune() if pruned is None else pruned).nodes & (graph.kind == "feature")
    return sorted({(int(graph.layer[i]), int(graph.index[i])) for i in np.flatnonzero(keep)})


def _by_layer(transcoders) -> dict:
    return {int(tc.layer): tc for tc in transcoders if tc is not None}


def _check_features(features, tcs: dict, what: str) -> list[FeatureKey]:
    keys = []
    for f in features:
        layer, feature = (int(x) for x in f)
        if layer not in tcs or not 0 <= feature < tcs[layer].d_transcoder:
            raise IndexError(f"{what}: no feature {feature} in a transcoder of layer {layer}")
        keys.append((layer, feature))
    return keys


def feature_top_logits(
    transcoders, unembed, features, *, k: int = 8, output_text: Sequence[str] | Callable[[int], str] | None = None
) -> dict[FeatureKey, list[tuple[str, float]]]:
    """{(layer, feature): [(output text, value), ...]}: the k largest entries of W_dec[f] @ W_U,
    largest first. unembed: a GPT (W_U; its tokenizer gives the text unless output_text does) or
    W_U [d_model, d_vocab_out]."""
    from minillm.model import GPT

    if isinstance(unembed, GPT):
        if output_text is None and unembed.tokenizer is not None:
            model = unembed
            output_text = lambda i: model.to_string(np.asarray([i]))
        W_U = np.asarray(unembed.W_U, np.float64)
    else:
        W_U = np.asarray(unembed, np.float64)
    tcs = _by_layer(transcoders)
    keys = _check_features(features, tcs, "feature_top_logits")
    if W_U.ndim != 2 or any(W_U.shape[0] != tcs[layer].d_model for layer, _ in keys):
        raise ValueError(f"feature_top_logits: W_U must be [d_model, d_vocab_out], got {W_U.shape}")
    to_text = _text_of(output_text)
    out = {}
    for layer, feature in keys:
        values = np.asarray(tcs[layer].W_dec[feature], np.float64) @ W_U
        top = np.argsort(-values, kind="stable")[:k]
        out[(layer, feature)] = [(to_text(int(v)), float(values[v])) for v in top]
    return out


def top_activating_contexts(
    model,
    transcoders,
    tokens,
    features,
    *,
    k: int = 5,
    window: int = 8,
    token_text: Sequence[str] | Callable[[int], str] | None = None,
    sep: str | None = None,
    chunk_rows: int = 8192,
) -> dict[FeatureKey, list[tuple[str, float]]]:
    """{(layer, feature): [(context, activation), ...]}: over tokens [b, p], each feature's k largest
    positive activations, largest first, each context the `window` tokens ending at the firing one,
    written "... [tok]" (joined by `sep`: "" with the model's tokenizer, else " "; token_text, a
    sequence or function of the id, overrides the text of a token). A feature that never fires gets []."""
    from minillm.transcoders import gather_mlp_io

    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"top_activating_contexts: tokens must be [b, p], got shape {tokens.shape}")
    tcs = _by_layer(transcoders)
    keys = _check_features(features, tcs, "top_activating_contexts")
    if token_text is None and model.tokenizer is not None:
        token_text = lambda t: model.to_string(np.asarray([t]))
        sep = "" if sep is None else sep
    to_text = _text_of(token_text)
    sep = " " if sep is None else sep
    layers = sorted({layer for layer, _ in keys})
    inputs = gather_mlp_io(model, tokens, layers) if layers else []
    p = tokens.shape[1]
    out = {}
    for layer, (x, _) in zip(layers, inputs):
        cols = np.array([f for l, f in keys if l == layer])
        acts = np.concatenate([np.asarray(tcs[layer].encode(x[i : i + chunk_rows]))[:, cols]
                               for i in range(0, len(x), chunk_rows)])  # fmt: skip
        for j, feature in enumerate(cols):
            column = acts[:, j]
            top = np.argsort(-column, kind="stable")[:k]
            rows = []
            for r in top[column[top] > 0]:
                seq, pos = divmod(int(r), p)
                before = [to_text(int(t)) for t in tokens[seq, max(0, pos - window + 1) : pos]]
                rows.append((sep.join(before + [f"[{to_text(int(tokens[seq, pos]))}]"]), float(column[r])))
            out[(layer, int(feature))] = rows
    return out
