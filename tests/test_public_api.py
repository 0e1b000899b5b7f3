"""Every public name resolves: each ``__all__`` in the package, and every import that the README
and the docstring examples show users.

A rename or move that forgets a re-export fails here, not in a user's code.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "gpt2_dual"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _declared_all(path: Path) -> list[str] | None:
    """The names of a literal ``__all__``, read without importing the module."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                return list(ast.literal_eval(node.value))
    return None


MODULES_WITH_ALL = sorted(
    (_module_name(p), names)
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py" and (names := _declared_all(p)) is not None
)


def _import_statements(text: str) -> list[str]:
    """``from gpt2_dual... import ...`` and ``import gpt2_dual...`` statements in ``text``,
    parenthesised ones joined onto one line; doctest prompts and comments removed."""
    text = re.sub(r"^\s*(>>>|\.\.\.) ?", "", text, flags=re.M)
    found = []
    pattern = r"^\s*(from gpt2_dual[\w.]* import (?:\([^)]*\)|[^\n#]+)|import gpt2_dual[\w., ]*)"
    for match in re.finditer(pattern, text, re.M):
        statement = " ".join(match.group(1).replace("(", " ").replace(")", " ").split())
        found.append(statement.rstrip(","))
    return found


def _readme_imports() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return sorted({s for block in blocks for s in _import_statements(block)})


def _docstring_imports() -> list[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node) or ""
                found.update(_import_statements(doc))
    return sorted(found)


def test_the_lists_are_not_empty():
    # The readers below find what they should: a broken regex would make every test vacuous.
    assert len(MODULES_WITH_ALL) > 30
    assert "from gpt2_dual.pt import GPT2LMHeadModel" in _readme_imports()
    assert "from gpt2_dual import GPT2Config" in _docstring_imports()
    assert _import_statements("from gpt2_dual.tf import (\n    A,\n    B,\n)") == [
        "from gpt2_dual.tf import A, B"
    ]


@pytest.mark.parametrize(("module", "names"), MODULES_WITH_ALL, ids=[m for m, _ in MODULES_WITH_ALL])
def test_every_name_in_all_resolves(module, names):
    imported = importlib.import_module(module)
    missing = [name for name in names if not hasattr(imported, name)]
    assert missing == [], f"{module}.__all__ names what {module} does not define"
    assert len(set(names)) == len(names), f"{module}.__all__ lists a name twice"


@pytest.mark.parametrize("statement", _readme_imports())
def test_every_readme_import_works(statement):
    exec(statement, {})


@pytest.mark.parametrize("statement", _docstring_imports())
def test_every_docstring_import_works(statement):
    exec(statement, {})


@pytest.mark.parametrize(
    "statement",
    [
        # The entry points users reach for, named in the README and the issue that moved them.
        "from gpt2_dual import pipeline",
        "from gpt2_dual.convert import convert, check, open_source",
        "from gpt2_dual.cli import main",
        "import gpt2_dual.pt, gpt2_dual.tf",
    ],
)
def test_entry_points_import(statement):
    exec(statement, {})
