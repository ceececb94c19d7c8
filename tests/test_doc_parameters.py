"""Keyword arguments the notebooks and guides name (`kind_column=`) exist: a notebook's
markdown may name only parameters of the functions its code cells call, a guide those of
any function of the package."""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `name=` or `name=value` in inline code, or a call written there: `f(..., name=...)`; not a
# dotted config key (`--set blocking.refine_block_size=15`)
_NAMED = re.compile(r"`[^`\n]*?(?<![\w.-])([a-z_][a-z0-9_]*)=(?!=)[^`\n]*`")


@functools.cache
def _parameters() -> dict[str, frozenset[str]]:
    """Function or method name -> its parameter names, over the package (read, not imported)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "linkage").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]}
                found.setdefault(node.name, set()).update(names)
    return {name: frozenset(params) for name, params in found.items()}


def _called(code: str) -> set[str]:
    """Names of the functions and methods a notebook's code calls."""
    out = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call):
            func = node.func
            out.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return out


def _texts() -> list[tuple[str, str, frozenset[str]]]:
    """(where, markdown, the parameter names it may use)."""
    everything = frozenset().union(*_parameters().values())
    out = []
    for book in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(book.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        known = frozenset().union(*(_parameters().get(name, frozenset()) for name in _called(code)))
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                out.append((f"{book.name} cell {i}", "".join(cell["source"]), known))
    for doc in ("README.md", "docs/analyst.md", "docs/integrator.md"):
        out.append((doc, (ROOT / doc).read_text(encoding="utf-8"), everything))
    return out


@pytest.mark.parametrize(
    ("where", "text", "known"), _texts(), ids=[where for where, _, _ in _texts()]
)
def test_named_keyword_arguments_exist(where, text, known):
    # the code blocks run in other tests; here the prose and the inline code
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    # a function the text names in inline code (`review.fit_from_labels`) lends its parameters
    for code in re.findall(r"`([^`\n]+)`", prose):
        for name in re.findall(r"[A-Za-z_]\w*", code):
            known |= _parameters().get(name, frozenset()) if "_" in name else frozenset()
    unknown = sorted({m for m in _NAMED.findall(prose) if m not in known})
    assert not unknown, f"{where} names keyword arguments none of its functions has: {unknown}"
