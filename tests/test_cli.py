"""The ``gpt2-dual`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import gpt2_dual
from gpt2_dual.cli import main


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
