"""The package's layout stays honest: no import cycles, and layers import only downward.

Every ``import`` in ``src/gpt2_dual`` counts, also those inside functions: a deferred import
still makes the importer depend on the imported module, and deferring is how cycles hide.
Only imports under ``if TYPE_CHECKING:`` are left out: they name types for annotations and
never run.

Layers, lowest first (a module may import its own layer and those below):

0. ``errors``, ``_io``, ``outputs``, ``cpu``: leaves;
1. the neutral core: ``config``, ``heads``, ``quantization``, the input and config checks,
   ``tokenizer/``, ``hub/``, ``generation/``;
2. ``checkpoint/``: formats, the weight-name table, reading;
3. ``pt/`` and ``tf/`` (neither imports the other);
4. ``pipelines/``, ``convert/``, ``serve/`` and ``train/``: built on the models;
5. ``cli/``, ``__main__`` and the package's own ``__init__`` (the public facade).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "gpt2_dual"

LAYERS: dict[str, int] = {
    "errors": 0, "_io": 0, "outputs": 0, "cpu": 0,
    "config": 1, "_config_checks": 1, "heads": 1, "quantization": 1, "_input_checks": 1, "_slot_checks": 1,
    "tokenizer": 1, "hub": 1, "generation": 1,
    "checkpoint": 2,
    "pt": 3, "tf": 3,
    "pipelines": 4, "convert": 4, "serve": 4, "train": 4,
    "cli": 5, "__main__": 5, "": 5,
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}


def _resolve(module: str, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports (submodules named by ``from x import y``)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    if first not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add its family to LAYERS in {__file__}")
    return LAYERS[first]


def test_graph_sees_imports(graph: dict[str, set[str]]) -> None:
    # The graph is read right: known edges are there, including a deferred one.
    assert "gpt2_dual.errors" in graph["gpt2_dual._io"]
    assert "gpt2_dual.pt" in graph["gpt2_dual.convert.crosscheck"]  # imported inside a function
    assert "gpt2_dual.checkpoint.names" in graph["gpt2_dual.pt.weights"]


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_only_downward(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{importer} (layer {_layer(importer)}) imports {imported} (layer {_layer(imported)})"
        for importer, targets in graph.items()
        for imported in targets
        if _layer(imported) > _layer(importer)
    )
    assert upward == []


def test_pt_and_tf_do_not_import_each_other(graph: dict[str, set[str]]) -> None:
    def family(module: str) -> str:
        return (module.split(".") + [""])[1]

    crossing = sorted(
        f"{a} imports {b}"
        for a, targets in graph.items()
        for b in targets
        if {family(a), family(b)} == {"pt", "tf"}
    )
    assert crossing == []
