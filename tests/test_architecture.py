"""The layers contract: imports run one way, from the top room down, and no two modules import each
other. Every import counts, including those inside functions and under `if TYPE_CHECKING:`.

The rooms, bottom to top (docs/architecture.md says why):

    minillm.tasks              data: imports nothing else of minillm
    minillm.model.*            the model, itself layered (LAYERS below): the leaves, the network,
                               the services that take the network, and GPT, the facade on top
    the toolkit                minillm.patching, minillm.decompose, ... (flat, TransformerLens' names)
    minillm.training           the loop, the recipes, the command
    minillm.lessons, minillm   what the notebooks use; the package's front door

A module may import modules of its own layer (without a cycle) and of the layers below it, never
above.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "minillm"

# the network, in three files: its layers and the blocks and Transformer built from them
NETWORK = ("minillm.model.components", "minillm.model.attention", "minillm.model.network")

# bottom to top; a module belongs to the first entry that names it or a package above it
LAYERS: list[tuple[str, ...]] = [
    ("minillm.tasks",),
    ("minillm.model.config", "minillm.model.hooks", "minillm.model.checkpoint", "minillm.model.tokenizer"),
    ("minillm.model.inputs", "minillm.model.factored_matrix", "minillm.model.kernels"),
    NETWORK,
    (
        "minillm.model.losses",
        "minillm.model.sampling",
        "minillm.model.compiled",
        "minillm.model.hook_points",
        "minillm.model.params",
        "minillm.model.weight_views",
        "minillm.model.transformer_lens",
        "minillm.model.processing",
        "minillm.model.hugging_face",
    ),
    ("minillm.model.gpt", "minillm.model"),
    ("toolkit",),  # every other module directly in minillm/
    ("minillm.training",),
    ("minillm.lessons", "minillm.__main__", "minillm"),
]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        for name in names:
            if name != "minillm" and (module == name or module.startswith(name + ".")):
                return i
    if module == "minillm":
        return len(LAYERS) - 1
    if module.count(".") == 1:  # minillm.<x>: the flat toolkit
        return next(i for i, names in enumerate(LAYERS) if names == ("toolkit",))
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py")


def imports_of(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The minillm modules a file imports, anywhere in it (top level, functions, TYPE_CHECKING)."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py", modules)


def imports_in(source: str, me: str, is_package: bool, modules: dict[str, pathlib.Path]) -> set[str]:
    found = set()
    package = me if is_package else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from minillm.model import losses` imports the module minillm.model.losses
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != me}


def upward(module: str, targets: set[str]) -> list[str]:
    return [
        f"{module} (layer {layer_of(module)}) imports {other} (layer {layer_of(other)})"
        for other in sorted(targets)
        if layer_of(other) > layer_of(module)
    ]


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_every_module_belongs_to_a_layer():
    for module in all_modules():
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own():
    wrong = [line for module, targets in graph().items() for line in upward(module, targets)]
    assert not wrong, "imports that run upwards:\n  " + "\n  ".join(wrong)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_the_network_is_only_the_network():
    """The network's files import no service and no facade: only the config, the hooks, the input
    checks, the attention kernel and one another."""
    modules = all_modules()
    allowed = {"minillm.model.config", "minillm.model.hooks", "minillm.model.inputs", "minillm.model.kernels"}
    for name in NETWORK:
        assert imports_of(modules[name], modules) <= allowed | set(NETWORK), name


@pytest.mark.parametrize(
    "module, statement",
    [
        ("minillm.model.network", "def f():\n    from minillm.model.gpt import GPT\n"),
        ("minillm.model.attention", "from minillm.model import params\n"),
        ("minillm.model.losses", "if TYPE_CHECKING:\n    from minillm.model import gpt\n"),
        ("minillm.tasks.base", "import minillm.training.loop\n"),
        ("minillm.patching", "from .training import loop\n"),
    ],
)
def test_the_contract_sees_an_upward_import_wherever_it_is(module, statement):
    targets = imports_in(statement, module, False, all_modules())
    assert targets and upward(module, targets)
