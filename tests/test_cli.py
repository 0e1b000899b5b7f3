"""The ``gpt2-dual`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import gpt2_dual
from gpt2_dual.cli import main
from hub_server import closed_port


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path):
    """The command line never reaches the real Hub or the user's cache here: an empty Hub
    cache under tmp_path, offline, and HF_ENDPOINT at a closed local port in case (the
    subprocesses inherit it). "gpt2" resolves to the tokenizer files gpt2_dual ships."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")


def test_console_script_is_registered():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "gpt2-dual"]
    assert script.value == "gpt2_dual.cli:main"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"gpt2-dual {gpt2_dual.__version__}\n"


def test_help_lists_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "gpt2_dual", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.startswith("usage: gpt2-dual")
    assert "tokenize" in result.stdout


@pytest.mark.parametrize("pure", [False, True], ids=["fast", "pure"])
def test_tokenize_prints_the_tokenizer_ids(capsys, pure):
    from gpt2_dual import GPT2TokenizerFast

    text = "Hello, I'm a language model,"
    assert main(["tokenize", text] + (["--pure"] if pure else [])) == 0
    ids = json.loads(capsys.readouterr().out)
    assert ids == GPT2TokenizerFast.from_pretrained("gpt2").encode(text)
    assert ids[:2] == [15496, 11]  # "Hello", "," in OpenAI's GPT-2 vocabulary


def test_unknown_subcommand_exits_with_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_user_error_is_one_line_and_verbose_shows_the_traceback(tmp_path):
    missing = tmp_path / "no-such-dir"
    command = [sys.executable, "-m", "gpt2_dual", "tokenize", "--tokenizer", str(missing), "hi"]
    quiet = subprocess.run(command, capture_output=True, text=True)
    assert quiet.returncode == 2 and quiet.stdout == ""
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpt2-dual tokenize: error: ")
    assert str(missing) in lines[0]
    loud = subprocess.run(command[:3] + ["-v"] + command[3:], capture_output=True, text=True)
    assert loud.returncode == 2 and "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == lines[0]


@pytest.mark.parametrize("via", ["stdin", "argument"])
def test_tokenize_refuses_bytes_that_are_not_utf8_in_one_line(via):
    data = b"caf\xe9"
    if via == "stdin":
        args, stdin = ["tokenize", "-"], data
    else:
        args, stdin = ["tokenize", data.decode("utf-8", "surrogateescape")], b""
    result = subprocess.run([sys.executable, "-m", "gpt2_dual", *args], input=stdin,
                            capture_output=True)  # fmt: skip
    where = "standard input" if via == "stdin" else "the text argument"
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == (
        f"gpt2-dual tokenize: error: {where} is not UTF-8 text: byte 0xe9 at offset 3; "
        "convert it first (e.g. iconv -f latin1 -t utf-8)\n"
    )
