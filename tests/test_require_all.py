"""``GPT2_DUAL_REQUIRE_ALL=1`` turns a skip for a missing framework into a failure: the plugin in
a pytest of its own, and every such skip the suite has (read from its source) caught by it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from require_all import REQUIRED, missing_module

TESTS = Path(__file__).parent
BODY = '''
import pytest

broken = pytest.importorskip("hypothesis.not_a_module")  # a module of a required package


def test_runs():
    pass
'''
MARKED = '''
import pytest


@pytest.mark.skipif(True, reason="no tensorflow")
def test_needs_tf():
    pass


@pytest.mark.skipif(True, reason="no CUDA device")
def test_needs_cuda():
    pass
'''


# --------------------------------------------------------------------------- the suite's skips
def _callee(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _probe(node: ast.expr, probes: set[str]) -> bool:
    """``has("x")`` or ``find_spec("x")`` of a ``REQUIRED`` module (``find_spec(...) is
    None`` too), or a name in ``probes`` (called or not)."""
    if isinstance(node, ast.Compare) and len(node.comparators) == 1:
        return _probe(node.left, probes)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in probes:
            return True
        module = node.args[0] if node.args else None
        return (
            _callee(node.func) in ("has", "find_spec")
            and isinstance(module, ast.Constant)
            and str(module.value).split(".")[0] in REQUIRED
        )
    return isinstance(node, ast.Name) and node.id in probes


def _only_probes(node: ast.expr, probes: set[str]) -> bool:
    """Whether ``node`` is probes joined by ``and``/``or``/``not`` and nothing else (the
    definition of a probe: ``has("torch") and torch.cuda.is_available()`` is not one)."""
    if isinstance(node, ast.BoolOp):
        return all(_only_probes(v, probes) for v in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _only_probes(node.operand, probes)
    return _probe(node, probes)


def _asks(node: ast.expr, probes: set[str]) -> bool:
    """Whether a skip condition asks, among other things, if a ``REQUIRED`` module is
    installed."""
    return any(isinstance(sub, ast.expr) and _probe(sub, probes) for sub in ast.walk(node))


def _probe_name(stmt: ast.stmt, probes: set[str]) -> list[str]:
    """The module-level names ``stmt`` defines as probes: ``def f(): return <probes>`` (a
    docstring allowed) and ``NAME = <probes>``."""
    if isinstance(stmt, ast.FunctionDef):
        docstring = [s for s in stmt.body[:1] if isinstance(s, ast.Expr)]
        body = stmt.body[len(docstring) :]
        if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
            return [stmt.name] if _only_probes(body[0].value, probes) else []
    if isinstance(stmt, ast.Assign) and _only_probes(stmt.value, probes):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    return []


def _text(node: ast.expr | None) -> str:
    """A reason's text; an f-string or other expression is shown as its source, which no
    wording of ``missing_module`` matches (such a reason cannot be checked: write it out)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return f"<not a plain string: {ast.unparse(node) if node else 'none'}>"


def dependency_skips(source: str) -> list[str]:
    """The reasons of the skips in ``source`` whose condition asks whether a ``REQUIRED``
    module is installed: ``skipif(<that>, reason=...)`` and ``if <that>: pytest.skip(...)``."""
    tree = ast.parse(source)
    probes: set[str] = set()
    for stmt in tree.body:  # in order: a probe may use an earlier one
        probes.update(_probe_name(stmt, probes))
    reasons = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _callee(node.func) == "skipif" and node.args:
            if _asks(node.args[0], probes):
                reason = next((k.value for k in node.keywords if k.arg == "reason"), None)
                reasons.append(_text(reason))
        elif isinstance(node, ast.If) and _asks(node.test, probes):
            for stmt in node.body:
                call = stmt.value if isinstance(stmt, ast.Expr) else None
                if isinstance(call, ast.Call) and _callee(call.func) == "skip":
                    reasons.append(_text(call.args[0] if call.args else None))
    return reasons


def _suite_skips() -> dict[str, list[str]]:
    files = sorted(p for p in TESTS.rglob("*.py") if p != Path(__file__))
    found = {str(p.relative_to(TESTS)): dependency_skips(p.read_text()) for p in files}
    return {path: reasons for path, reasons in found.items() if reasons}


def test_the_reader_finds_each_form_of_skip():
    source = '''
import importlib.util
import pytest
from frameworks import has

def _tf_reader():
    return has("tf_keras") and has("tensorflow")

HAS_PEFT = has("peft")

@pytest.mark.skipif(not _tf_reader(), reason="needs tensorflow, tf_keras")
def test_a(): pass

@pytest.mark.skipif(not HAS_PEFT, reason=f"no {'peft'}")
def test_b(): pass

@pytest.mark.skipif(not has("flash_attn"), reason="needs flash-attn")  # not required
def test_c(): pass

def test_d(kind):
    if kind == "tf" and importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")
    if kind == "cuda":
        pytest.skip("no CUDA device")
'''
    assert dependency_skips(source) == [
        "needs tensorflow, tf_keras", "<not a plain string: f\"no {'peft'}\">",
        "TensorFlow is not installed",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "reason, module",
    [("could not import 'torch': No module named 'torch'", "torch"),
     ("could not import 'hypothesis.extra.numpy': No module named 'x'", "hypothesis.extra.numpy"),
     ("no tensorflow", "tensorflow"),
     ("parity with gpt2_dual.pt needs torch", "torch"),
     ("needs torch and tensorflow", "torch, tensorflow"),
     ("needs tensorflow, tf_keras, transformers", "tensorflow, tf_keras, transformers"),
     ("TensorFlow is not installed", "TensorFlow"),
     ("Skipped: TensorFlow is not installed", "TensorFlow"),  # pytest.skip's report
     ("no CUDA device", None), ("needs a CUDA device", None), ("needs --run-slow", None),
     ("needs CUDA and flash-attn", None), ("keras' jax backend needs jax", None),
     ("no oneDNN in this torch build", None), ("needs CUDA and torch", None),
     ("gpt2_dual.pt has no resize_token_embeddings", None),
     ("bf16 path 'none': no native bf16 kernels on this CPU", None)],
)  # fmt: skip
def test_missing_module_reads_the_suites_wordings(reason, module):
    assert missing_module(reason) == module


def test_every_dependency_skip_in_the_suite_is_caught():
    skips = _suite_skips()
    # issue 18: the transformers-TF reader of our h5 files and the tokenizer's TF tensors
    assert {"test_tf_h5.py", "test_tokenizer_api.py"} <= set(skips), sorted(skips)
    uncaught = {path: [r for r in reasons if missing_module(r) is None]
                for path, reasons in skips.items()}  # fmt: skip
    assert not {path: r for path, r in uncaught.items() if r}


# --------------------------------------------------------------------------- the plugin
def _pytest(folder: Path, require: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    env.pop("GPT2_DUAL_REQUIRE_ALL", None)
    if require:
        env["GPT2_DUAL_REQUIRE_ALL"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "require_all", "-p", "no:cacheprovider",
               "-rA", "--continue-on-collection-errors", "--rootdir", str(folder), "-c", os.devnull, str(folder)]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=folder, timeout=120)


def _suite_reasons_module() -> tuple[str, int]:
    """A test module that skips with each reason the suite's dependency skips use, once as a
    ``skipif`` mark and once as ``pytest.skip``; and how many reasons."""
    reasons = sorted({r for rs in _suite_skips().values() for r in rs})
    lines = ["import pytest", ""]
    for n, reason in enumerate(reasons):
        lines += [f"@pytest.mark.skipif(True, reason={reason!r})", f"def test_mark_{n}():",
                  "    pass", "", f"def test_call_{n}():", f"    pytest.skip({reason!r})",
                  ""]  # fmt: skip
    return "\n".join(lines), len(reasons)


@pytest.mark.parametrize("require", [False, True])
def test_missing_framework_skips_fail_only_when_required(tmp_path, require):
    (tmp_path / "test_import.py").write_text(BODY)
    (tmp_path / "test_marked.py").write_text(MARKED)
    suite, reasons = _suite_reasons_module()
    (tmp_path / "test_suite_reasons.py").write_text(suite)
    result = _pytest(tmp_path, require)
    summary = result.stdout.strip().splitlines()[-1]
    if not require:
        assert result.returncode == 0, result.stdout
        assert f"{3 + 2 * reasons} skipped" in summary, summary
        return
    assert result.returncode == 1, result.stdout
    # A skip while collecting or in setup (a mark) is an error, one in the test a failure:
    # test_import's collection, test_needs_tf and the marks; the suite's pytest.skip calls.
    assert f"{reasons} failed, 1 skipped, {2 + reasons} errors" in summary, summary
    assert "GPT2_DUAL_REQUIRE_ALL=1 forbids this skip" in result.stdout
    assert "SKIPPED" in result.stdout and "no CUDA device" in result.stdout  # left alone
