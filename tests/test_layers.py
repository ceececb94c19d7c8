"""The package's layers run one way (docs/architecture.md); this test reads every import.

A module may import modules of lower layers, or of its own layer as long as the modules do
not form a cycle. ``config`` imports only schema/errors; the store imports no stage.
Imports inside functions count too: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "linkage"

# Top-level module or package of linkage -> layer (docs/architecture.md draws the same order).
LAYERS: dict[str, int] = {
    "_version": 1,
    "schema": 1,
    "errors": 1,
    "_files": 1,
    "tables": 1,
    "spreadsheet": 1,
    "progress": 1,
    "apart": 1,
    "config": 2,
    "zh": 3,
    "standardize": 4,
    "blocking": 4,
    "compare": 4,
    "model": 4,
    "training": 4,
    "cluster": 4,
    "identity": 4,
    "merge": 4,
    "evaluate": 4,
    "indicators": 4,
    "profile": 4,
    "synth": 4,
    "io": 5,
    "review": 5,
    "viz": 5,
    "share": 5,
    "pprl": 5,
    "store": 5,
    "checkpoint": 5,
    "pipeline": 6,
    "store_check": 6,
    "paths": 6,
    "incremental": 7,
    "spark": 7,
    "linker": 8,
    "cli": 9,
    "serve": 9,
    "__main__": 9,
}
# Stricter rules than the layer order: what these modules may import, at most.
ONLY: dict[str, set[str]] = {
    "config": {"schema", "errors"},
    "store": {"schema", "errors", "config", "_version", "_files", "tables"},
}
# Known upward imports left for another change; each names why. Keep it empty.
KNOWN: set[tuple[str, str]] = set()


def _top(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "linkage":
        return None
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """Top-level linkage modules a file imports (absolute or relative), anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "linkage":
                names = [f"linkage.{a.name}" for a in node.names]
            else:
                names = [module]
        for name in names:
            top = _top(name)
            if top is not None:
                found.add(top)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        top = rel.parts[0].removesuffix(".py")
        if top == "__init__":
            continue  # the package root re-exports lazily, by name, from every layer
        graph.setdefault(top, set()).update(_imports(path) - {top})
    return graph


GRAPH = _graph()


def test_every_module_has_a_layer():
    missing = sorted(set(GRAPH) - set(LAYERS))
    assert not missing, f"add {missing} to LAYERS here and to docs/architecture.md"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_goes_up(module):
    up = []
    for target in sorted(GRAPH[module]):
        if target == "":
            up.append("linkage (the package root: import the defining module instead)")
        elif target in LAYERS and LAYERS[target] > LAYERS.get(module, 0):
            if (module, target) not in KNOWN:
                up.append(f"{target} (layer {LAYERS[target]})")
    assert not up, f"{module} (layer {LAYERS.get(module)}) imports upward: {up}"


@pytest.mark.parametrize("module", sorted(ONLY))
def test_restricted_modules(module):
    extra = GRAPH.get(module, set()) - ONLY[module]
    assert not extra, f"{module} may import only {sorted(ONLY[module])}, imports {sorted(extra)}"


def test_no_import_cycle():
    # depth-first search over the module graph; a back edge is a cycle
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_deferred_and_relative_imports(tmp_path):
    # the checks above are only as good as _imports: it must see every form of import
    pkg = tmp_path / "linkage" / "sub"
    pkg.mkdir(parents=True)
    src = pkg / "mod.py"
    src.write_text(
        "from linkage import schema\n"
        "import linkage.config\n"
        "from . import other\n"
        "from .. import store\n"
        "def f():\n"
        "    from linkage.incremental import search\n",
        encoding="utf-8",
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "linkage"
    try:
        assert _imports(src) == {"schema", "config", "sub", "store", "incremental"}
    finally:
        PACKAGE = saved
