"""The attribution-graph view (minillm/graph_view.py): the page holds the pruned graph as data and
nothing else (no external script, hostile strings escaped), the helpers' top logits and top
activating contexts against the model's own neurons, and, in headless Chromium, what the page's
script draws and what a click on a node shows. The browser test skips without Chromium
(`apt-get install -y chromium` on Debian, or CHROMIUM=/path/to/chrome)."""

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from helpers import CONFIGS, random_tokens

from minillm import GPT, GPTConfig
from minillm.attribution import AttributionGraph, attribute
from minillm.graph_view import feature_top_logits, graph_view, top_activating_contexts, view_features
from minillm.transcoders import Transcoder

HOSTILE = '</script><img src=x onerror="alert(1)"><!--'


def hand_graph(token_strings=None) -> AttributionGraph:
    """tests/test_attribution.py's graph worked by hand, as an AttributionGraph of a 2-layer model on a
    2-token prompt. Nodes: 0 feature 7 (layer 0, position 0), 1 feature 3 (layer 1, position 1),
    2 an error (layer 0, position 1), 3 and 4 the embeddings, 5 the logit of output 2."""
    A = np.zeros((6, 6), np.float32)
    A[5, 1], A[5, 2] = 3, -1
    A[1, 0], A[1, 4] = 2, 2
    A[0, 3], A[0, 4] = -4, 1
    cfg = GPTConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=8, n_ctx=4, d_vocab=12, seed=0)
    return AttributionGraph(
        tokens=np.array([4, 9]),
        adjacency=A,
        kind=np.array(["feature", "feature", "error", "embedding", "embedding", "logit"]),
        layer=np.array([0, 1, 0, -1, -1, 2], np.int32),
        position=np.array([0, 1, 1, 0, 1, 1], np.int32),
        index=np.array([7, 3, -1, 4, 9, 2], np.int32),
        activation=np.array([1.5, 0.5, 0.25, 1.0, 1.0, 1.0], np.float32),
        target_value=np.array([-3.0, 4.0, 0, 0, 0, 2.0], np.float32),
        logit_weights=np.array([0, 0, 0, 0, 0, 1.0]),
        cfg=cfg,
        transcoders=(),
        settings={"max_logits": 10, "logit_probability": 0.95},
        token_strings=token_strings,
    )


def embedded(page: str) -> dict:
    """The JSON the page embeds (the one application/json script)."""
    (text,) = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    return json.loads(text)


def test_the_page_holds_the_pruned_graph_and_fetches_nothing(tmp_path):
    graph = hand_graph()
    ids = graph.node_ids()
    # node threshold 0.6 drops feature 0 and then embedding 3 (tests/test_attribution.py works it out)
    for pruned, n_nodes, n_edges in [(graph.prune(1.0, 1.0), 6, 6), (graph.prune(0.6, 1.0), 4, 3)]:
        view = graph_view(graph, ["a", "b"], pruned=pruned)
        data = embedded(view.page)
        assert view.n_nodes == len(data["nodes"]) == pruned.nodes.sum() == n_nodes
        assert view.n_edges == len(data["edges"]) == pruned.edges.sum() == n_edges
        assert [n["id"] for n in data["nodes"]] == [ids[i] for i in np.flatnonzero(pruned.nodes)]
        shown = {(data["nodes"][s]["id"], data["nodes"][t]["id"]): w for s, t, w in data["edges"]}
        want = {(ids[s], ids[t]): float(graph.adjacency[t, s]) for t, s in zip(*np.nonzero(pruned.edges))}
        assert shown == want
        assert data["n_layers"] == 2 and data["tokens"] == ["a", "b"]
    # the default is graph.prune() (0.8, 0.98); a node's fields as AttributionGraph has them
    data = embedded(graph_view(graph, ["a", "b"]).page)
    assert len(data["nodes"]) == graph.prune().nodes.sum()
    (f,) = [n for n in data["nodes"] if n["id"] == "feature:1:1:3"]
    assert (f["kind"], f["layer"], f["position"], f["index"], f["activation"]) == ("feature", 1, 1, 3, 0.5)
    assert f["target_value"] == 4.0 and f["influence"] == pytest.approx(0.75)
    (logit,) = [n for n in data["nodes"] if n["kind"] == "logit"]
    assert logit["text"] == "2" and logit["activation"] == 1.0  # the output id without output_text
    # self-contained: inline scripts only, nothing loaded from anywhere
    page = graph_view(graph, ["a", "b"], path=str(tmp_path / "g.html")).page
    assert page.count("<script") == 2 and "src=" not in page and "<link" not in page and "@import" not in page
    assert "https://" not in page and "url(" not in page
    saved = (tmp_path / "g.html").read_text()
    assert saved.startswith("<!doctype html>") and page in saved
    # without token strings: the graph's, else the token ids
    assert embedded(graph_view(graph).page)["tokens"] == ["4", "9"]
    assert embedded(graph_view(hand_graph(["x", "y"])).page)["tokens"] == ["x", "y"]


def test_hostile_strings_stay_data():
    graph = hand_graph()
    contexts = {(1, 3): [(HOSTILE, 2.0), ("a [b]", 1.0)], (0, 7): [("c [d]", 3.0)], (5, 5): [("absent", 1.0)]}
    logits = {(1, 3): [(HOSTILE, 0.5)]}
    view = graph_view(graph, [HOSTILE, "b&c"], pruned=graph.prune(1.0, 1.0), feature_contexts=contexts,
                      feature_logits=logits, output_text=lambda i: HOSTILE + str(i), title=HOSTILE)  # fmt: skip
    page = view.page
    assert page.count("</script>") == 2  # the page's own two closing tags
    assert "<img" not in page and "<!--" not in page and 'onerror="' not in page
    assert html_escaped(HOSTILE) in page  # the title, as text
    data = embedded(page)
    assert data["tokens"] == [HOSTILE, "b&c"]
    assert data["feature_contexts"] == {"1:3": [[HOSTILE, 2.0], ["a [b]", 1.0]], "0:7": [["c [d]", 3.0]]}
    assert data["feature_logits"] == {"1:3": [[HOSTILE, 0.5]]}  # only features in the view are embedded
    assert [n["text"] for n in data["nodes"] if n["kind"] == "logit"] == [HOSTILE + "2"]
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page


def html_escaped(s: str) -> str:
    import html

    return html.escape(s)


def test_a_saved_graph_and_bad_input():
    graph = hand_graph()
    pruned = graph.prune(0.6, 1.0)
    saved = json.loads(json.dumps(graph.to_json(pruned)))
    assert embedded(graph_view(saved).page)["nodes"] == embedded(graph_view(graph, pruned=pruned).page)["nodes"]
    assert embedded(graph_view(saved).page)["pruned_scores"] == pytest.approx(graph.scores(pruned))
    with pytest.raises(ValueError, match="pruned must be None"):
        graph_view(saved, pruned=pruned)
    with pytest.raises(TypeError, match="AttributionGraph"):
        graph_view({"nodes": []})
    with pytest.raises(ValueError, match="3 token strings for a prompt of 2"):
        graph_view(graph, ["a", "b", "c"])
    with pytest.raises(ValueError, match="keys are \\(layer, feature\\)"):
        graph_view(graph, feature_contexts={"1:3": []})
    with pytest.raises(ValueError, match="\\(text, value\\) pairs"):
        graph_view(graph, feature_logits={(1, 3): [("a", 1.0, 2.0)]})
    assert view_features(graph, graph.prune(1.0, 1.0)) == [(0, 7), (1, 3)]
    assert view_features(graph, pruned) == [(1, 3)]


def test_top_logits_and_top_activating_contexts_are_the_neurons():
    """With each ReLU MLP as its own transcoder, a feature is a neuron: its activations are the
    model's hook_post and its decoder row is W_out."""
    model = GPT(CONFIGS["mlp_noln_relu"])
    tcs = [Transcoder.from_mlp(model, layer) for layer in range(model.cfg.n_layers)]
    tokens = random_tokens(model.cfg, 6, 12, seed=3)
    keys = [(0, 5), (2, 17), (1, 0)]
    contexts = top_activating_contexts(model, tcs, tokens, keys, k=4, window=3)
    _, cache = model.run_with_cache(tokens)
    for layer, f in keys:
        post = np.asarray(cache["post", layer])[:, :, f]  # [b, p]
        order = np.argsort(-post.ravel(), kind="stable")[:4]
        order = order[post.ravel()[order] > 0]
        assert [a for _, a in contexts[(layer, f)]] == pytest.approx(post.ravel()[order].tolist(), rel=1e-5)
        for (text, _), r in zip(contexts[(layer, f)], order):
            b, q = divmod(int(r), tokens.shape[1])
            want = [str(t) for t in tokens[b, max(0, q - 2) : q]] + [f"[{tokens[b, q]}]"]
            assert text == " ".join(want)
    letters = list("abcdefghijklmnopqrstuvw")
    named = top_activating_contexts(model, tcs, tokens, [(0, 5)], k=1, window=2, token_text=letters, sep="")
    assert re.fullmatch(r"[a-w]?\[[a-w]\]", named[(0, 5)][0][0])
    logits = feature_top_logits(tcs, model, keys, k=3, output_text=lambda i: f"<{i}>")
    W_U = np.asarray(model.W_U, np.float64)
    for layer, f in keys:
        values = np.asarray(model.blocks[layer].mlp.W_out[...], np.float64)[f] @ W_U
        top = np.argsort(-values)[:3]
        assert logits[(layer, f)] == [(f"<{v}>", pytest.approx(values[v])) for v in top]
    assert feature_top_logits(tcs, W_U, keys, k=3)[(2, 17)][0][0] == str(np.argmax(
        np.asarray(model.blocks[2].mlp.W_out[...], np.float64)[17] @ W_U))  # fmt: skip
    with pytest.raises(IndexError, match="no feature 40 in a transcoder of layer 0"):
        feature_top_logits(tcs, model, [(0, 40)])
    with pytest.raises(ValueError, match="tokens must be \\[b, p\\]"):
        top_activating_contexts(model, tcs, tokens[0], keys)


# ---------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------
def chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
    return next((path for path in map(shutil.which, names) if path), None)


class Element:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], []

    def all(self):
        yield self
        for child in self.children:
            yield from child.all()

    def find(self, tag=None, cls=None, **attrs):
        return [
            e
            for e in self.all()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.attrs.get("class", "").split())
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def content(self) -> str:
        return "".join(t if isinstance(t, str) else t.content() for t in self.text)

    def own_text(self) -> str:
        return "".join(t for t in self.text if isinstance(t, str))


class DOM(HTMLParser):
    """A tree of the serialised DOM (stdlib only); the text of each element kept in order."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = self.at = Element("#root", {}, None)
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        e = Element(tag, attrs, self.at)
        self.at.children.append(e)
        self.at.text.append(e)
        if tag not in self.VOID:
            self.at = e

    def handle_startendtag(self, tag, attrs):
        e = Element(tag, attrs, self.at)
        self.at.children.append(e)
        self.at.text.append(e)

    def handle_endtag(self, tag):
        e = self.at
        while e is not None and e.tag != tag:
            e = e.parent
        if e is not None and e.parent is not None:
            self.at = e.parent

    def handle_data(self, data):
        self.at.text.append(data)


def rendered(browser, path, tmp_path, select=None) -> Element:
    """The page's DOM after its script ran, in headless Chromium (with #select=<id> when given)."""
    url = path.as_uri() + ("" if select is None else f"#select={select}")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom", url]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<html" in out.stdout, out.stderr[-2000:]
    return DOM(out.stdout).root


def translate(e: Element) -> tuple[float, float]:
    x, y = re.fullmatch(r"translate\(([-\d.e]+),([-\d.e]+)\)", e.attrs["transform"]).groups()
    return float(x), float(y)


@pytest.mark.slow
def test_in_headless_chromium_the_page_draws_the_graph_and_a_click_fills_the_panel(tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium: `apt-get install -y chromium` (Debian), or set CHROMIUM=/path/to/chromium")
    model = GPT(CONFIGS["mlp_noln_relu"])
    tcs = [Transcoder.from_mlp(model, layer) for layer in range(model.cfg.n_layers)]
    prompt = random_tokens(model.cfg, 1, 10, seed=7)[0]
    graph = attribute(model, tcs, prompt)
    pruned = graph.prune(0.8, 0.98)
    keys = view_features(graph, pruned)
    contexts = top_activating_contexts(model, tcs, random_tokens(model.cfg, 8, 12, seed=8), keys, k=3)
    logits = feature_top_logits(tcs, model, keys, k=4, output_text=lambda i: f"out{i}")
    tokens = [f"t{int(t)}" for t in prompt]
    tokens[3] = HOSTILE
    path = tmp_path / "graph.html"
    graph_view(graph, tokens, pruned=pruned, feature_contexts=contexts, feature_logits=logits,
               output_text=lambda i: f"out{i}", title="test", path=str(path))  # fmt: skip
    ids = graph.node_ids()
    kept = [ids[i] for i in np.flatnonzero(pruned.nodes)]
    assert len(kept) > 20 and pruned.edges.sum() > 50

    dom = rendered(browser, path, tmp_path)
    (root,) = dom.find("div", cls="minillm-graph-view")
    assert root.attrs.get("data-ready") == "1"  # the script ran to its end
    assert "data-selected" not in root.attrs
    # every kept node and edge, drawn
    nodes = root.find("g", cls="node")
    assert sorted(e.attrs["data-node-id"] for e in nodes) == sorted(kept)
    edges = root.find("path", cls="edge")
    assert len(edges) == pruned.edges.sum()
    drawn = {(e.attrs["data-source"], e.attrs["data-target"]) for e in edges}
    assert drawn == {(ids[s], ids[t]) for t, s in zip(*np.nonzero(pruned.edges))}
    # the widest edge is the largest |weight|; blue when positive, red when negative
    widest = max(edges, key=lambda e: float(e.attrs["stroke-width"]))
    assert abs(float(widest.attrs["data-weight"])) == pytest.approx(
        np.abs(graph.adjacency[pruned.edges]).max(), rel=1e-4
    )
    for e in edges:
        assert e.attrs["stroke"] == ("#2b6cb0" if float(e.attrs["data-weight"]) >= 0 else "#c53030")
    # layers bottom to top (SVG's y grows downwards), positions left to right; shapes by kind
    where = {e.attrs["data-node-id"]: translate(e) for e in nodes}
    kind_of = {e.attrs["data-node-id"]: e.attrs["data-kind"] for e in nodes}
    index = {name: i for i, name in enumerate(ids)}
    rows = {}
    for name, (_, y) in where.items():
        i = index[name]
        rows.setdefault(int(graph.layer[i]), set()).add(y)
    assert all(len(ys) == 1 for ys in rows.values())  # one row per layer
    ys = [rows[layer].pop() for layer in sorted(rows)]  # embeddings (-1), layers, logits (n_layers)
    assert ys == sorted(ys, reverse=True) and -1 in rows and model.cfg.n_layers in rows
    embeddings = sorted((graph.position[index[n]], where[n][0]) for n in where if kind_of[n] == "embedding")
    assert [x for _, x in embeddings] == sorted(x for _, x in embeddings) and len(embeddings) == len(prompt)
    shapes = {"feature": "circle", "error": "rect", "embedding": "rect", "logit": "polygon"}
    for e in nodes:
        assert e.children[0].tag == shapes[e.attrs["data-kind"]]
    # the hostile token is text: no element made of it
    assert not dom.find("img") and len(dom.find("script")) == 2
    labels = [e.own_text() for e in root.find("text", cls="gv-token")]
    assert labels[3] == HOSTILE[:9] + "\u2026"  # shortened on the drawing, whole in its tooltip
    assert any(e.content() == f"position 3: {HOSTILE}" for e in root.find("title"))

    # a click on a feature (through the address): the panel shows it
    feature = max(np.flatnonzero(pruned.nodes & (graph.kind == "feature")), key=lambda i: pruned.edges[:, i].sum())
    name = ids[feature]
    layer, pos, f = int(graph.layer[feature]), int(graph.position[feature]), int(graph.index[feature])
    dom = rendered(browser, path, tmp_path, select=name)
    (root,) = dom.find("div", cls="minillm-graph-view")
    assert root.attrs["data-selected"] == name
    (panel,) = root.find("div", cls="gv-panel")
    assert panel.attrs["data-node-id"] == name
    assert panel.find("h3")[0].content() == f"feature {f} (layer {layer}, pos {pos})"

    def field(name):
        (row,) = panel.find("tr", data_field=name)
        return row.find("td")[0].content()

    assert field("kind") == "feature" and field("layer") == str(layer) and field("index") == str(f)
    assert field("position") == f'{pos} "{tokens[pos]}"'
    assert float(field("activation")) == pytest.approx(graph.activation[feature], rel=5e-3)
    assert float(field("influence")) == pytest.approx(graph.influence()[feature], rel=5e-3)
    outgoing = np.flatnonzero(pruned.edges[:, feature])  # targets, strongest first
    outgoing = outgoing[np.argsort(-np.abs(graph.adjacency[outgoing, feature]), kind="stable")]
    (listed,) = panel.find("ol", data_field="outgoing")
    items = listed.find("li")
    assert len(items) == min(10, len(outgoing))
    strongest = items[0].find("span", cls="gv-link")[0].content()
    t = outgoing[0]
    want = {
        "feature": f"feature {graph.index[t]} (layer {graph.layer[t]}, pos {graph.position[t]})",
        "logit": f'logit "out{graph.index[t]}"',
    }[str(graph.kind[t])]  # a feature's edges lead to features and logits
    assert strongest == want
    assert float(items[0].content().rsplit(" ", 1)[1]) == pytest.approx(graph.adjacency[t, feature], rel=5e-3)
    (listed,) = panel.find("ol", data_field="contexts")
    shown = [li.find("span")[0].content() for li in listed.find("li")]
    assert shown == [text for text, _ in contexts[(layer, f)]] and len(shown) > 0
    (listed,) = panel.find("ol", data_field="logits")
    assert [li.find("span")[0].content() for li in listed.find("li")] == [text for text, _ in logits[(layer, f)]]
    # the selected node is outlined, its edges lit, the others faded
    (chosen,) = root.find("g", cls="selected")
    assert chosen.attrs["data-node-id"] == name
    lit = {(e.attrs["data-source"], e.attrs["data-target"]) for e in root.find("path", cls="lit")}
    assert lit == {(a, b) for a, b in drawn if name in (a, b)} and len(root.find("path", cls="dim")) == len(
        drawn
    ) - len(lit)

    # a logit: its output text and probability
    logit = graph.nodes_of("logit")[0]
    dom = rendered(browser, path, tmp_path, select=ids[logit])
    (panel,) = dom.find("div", cls="gv-panel")
    assert field("index") == f'{graph.index[logit]} "out{graph.index[logit]}"'
    assert float(field("activation")) == pytest.approx(graph.activation[logit], rel=5e-3)
    assert panel.find("ol", data_field="incoming") and not panel.find("ol", data_field="outgoing")
