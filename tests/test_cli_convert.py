"""``gpt2-dual convert``, ``check``, ``inspect`` and ``demo``, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cases import tiny_config
from cli_runner import Result, run_cli
from frameworks import PT, random_state
from gpt2_dual.cli import main

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def cli(*args: str, cwd: Path | None = None) -> Result:
    return run_cli(*args, cwd=cwd)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "src"
    config = tiny_config()
    PT.build("lm", config, random_state(config, "lm")).save_pretrained(folder)
    return folder


def test_convert_prints_the_report_and_writes_the_folder(source, tmp_path):
    result = cli("convert", str(source), str(tmp_path / "out"), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "verdict: PASS" in result.stdout
    assert result.stdout.endswith(f"wrote {tmp_path / 'out'} (hf)\n")
    assert result.stderr == ""  # quiet when piped: no progress bar, no TensorFlow chatter
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["convert", "{src}", "{src}"], "gpt2-dual convert: error: {src} exists; pass --overwrite (overwrite=True) to replace it"),
        (["convert", "{tmp}/nope", "{tmp}/out"], "gpt2-dual convert: error: {tmp}/nope does not exist"),
        (["convert", "{src}", "{tmp}/out", "--head", "qa"], "gpt2-dual convert: error: --head question_answering: the checkpoint was saved from GPT2LMHeadModel and has no qa_outputs.weight, qa_outputs.bias weights; heads it can give: base, lm"),
        (["check", "{tmp}"], "gpt2-dual check: error: {tmp} is not a GPT-2 checkpoint gpt2_dual can read (looked for "),
        (["inspect", "{tmp}/nope"], "gpt2-dual inspect: error: {tmp}/nope does not exist"),
    ],
    ids=["exists", "missing", "wrong-head", "unknown-format", "inspect-missing"],
)
def test_user_mistakes_are_one_line_and_exit_2(source, tmp_path, args, message):
    fill = lambda s: s.format(src=source, tmp=tmp_path)  # noqa: E731
    result = cli(*map(fill, args))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(fill(message)) and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_refused_conversion_exits_1_with_the_report(source, tmp_path, monkeypatch, capsys):
    from gpt2_dual.convert import hf_format

    original = hf_format.entries

    def perturbed(src, dtype):
        rows = original(src, dtype)
        row = rows[0]  # wte.weight, one value off by 1
        def get(g=row.get):
            value = g().copy()
            value[3, 5] += 1.0
            return value
        rows[0] = type(row)(row.key, row.shape, row.code, get)
        return rows

    monkeypatch.setattr(hf_format, "entries", perturbed)
    code = main(["convert", str(source), str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 1 and not (tmp_path / "out").exists()
    assert "verdict: FAIL" in out and "MISMATCH" in out
    assert err.startswith("gpt2-dual convert: error: conversion refused: the result does not match")


def test_check_and_inspect(source):
    checked = cli("check", str(source))
    assert checked.returncode == 0 and "verdict: PASS" in checked.stdout
    info = json.loads(cli("inspect", str(source), "--json").stdout)
    config = tiny_config()
    assert info["format"] == "hf" and info["model"] == "GPT2LMHeadModel"
    assert info["heads"] == ["base", "lm"]
    assert info["tensors"]["h.0.attn.c_attn.weight"] == {
        "shape": [config.n_embd, 3 * config.n_embd], "dtype": "float32"
    }
    assert info["parameters"] == sum(a.size for a in random_state(config, "lm").values())
    text = cli("inspect", str(source)).stdout
    assert text.startswith("format:      hf (transformers folder")
    assert "  wte.weight" in text


def test_demo_runs_offline_and_passes(tmp_path):
    result = cli("demo", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round trip back to a transformers folder: bit exact" in result.stdout
    assert "the same in gpt2_dual.pt and gpt2_dual.tf" in result.stdout
    assert result.stdout.count("PASS") == 4 and "all checks passed" in result.stdout
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "1-pytorch", "2-keras", "3-transformers", "4-tf-h5", "5-transformers-again"
    ]
