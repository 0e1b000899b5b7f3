"""The ``gpt2-dual`` command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import gpt2_dual
from cases import tiny_config
from cli_runner import Result, run_cli
from gpt2_dual.checkpoint import hf
from gpt2_dual.cli import main
from hub_server import closed_port
from tokenizer_refs import BUNDLED


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


def gpt2_dual_cli(*args: str, stdin: str = "") -> Result:
    return run_cli(*args, stdin=stdin)


# ------------------------------------------------------------------- the error policy
class _OpensAFile:
    """Pickles as a call of ``open(path, "w")``: unpickling it creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def config_and_tokenizer(tmp_path_factory) -> Path:
    """A transformers folder's config and tokenizer files (each test copies them); the
    tokenizer is the one gpt2_dual ships (what "gpt2" gives offline)."""
    from gpt2_dual import GPT2TokenizerFast

    folder = tmp_path_factory.mktemp("config_and_tokenizer")
    tiny_config(vocab_size=50257).save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained(BUNDLED).save_pretrained(folder)
    return folder


def _malicious_checkpoint(folder: Path, marker: Path, files: Path) -> Path:
    """A transformers folder (config, tokenizer: copied from ``files``) whose
    pytorch_model.bin, a real torch.save file, creates ``marker`` when unpickled by anything
    but weights_only loading."""
    import torch

    shutil.copytree(files, folder)
    torch.save({"wte.weight": _OpensAFile(marker)}, folder / hf.BIN_WEIGHTS)
    return folder / hf.BIN_WEIGHTS


MALICIOUS_RUNS = {
    "convert": ["convert", "{src}", "{tmp}/out"],
    "check": ["check", "{src}"],
    "inspect": ["inspect", "{src}"],
    "generate": ["generate", "{src}", "Hello"],
}


@pytest.mark.parametrize("command", list(MALICIOUS_RUNS))
def test_a_malicious_pickle_is_refused_in_one_line_and_never_runs(
    tmp_path, command, config_and_tokenizer
):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "the-payload-ran"
    path = _malicious_checkpoint(tmp_path / "evil", marker, config_and_tokenizer)
    args = [a.format(src=path.parent, tmp=tmp_path) for a in MALICIOUS_RUNS[command]]
    result = gpt2_dual_cli(*args)
    assert not marker.exists()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(
        f"gpt2-dual {command}: error: gpt2_dual refused to unpickle {path}: it holds more than "
        "tensors (torch: "
    )
    assert result.stderr.endswith(
        "), and torch.load(weights_only=True) reads only tensors and plain containers; convert "
        "it to safetensors in a trusted environment\n"
    )
    assert result.stderr.count("\n") == 1 and "io.open" in result.stderr  # the global refused
    assert not (tmp_path / "out").exists()
    # the file is a real exploit: a plain unpickle runs the payload, which opens the marker
    torch.load(path, weights_only=False)["wte.weight"].close()
    assert marker.exists()


def test_a_shard_index_leaving_the_folder_is_one_line_naming_both(tmp_path):
    folder = tmp_path / "ckpt"
    tiny_config().save_pretrained(folder)
    index = folder / hf.SAFE_INDEX
    index.write_text(json.dumps({"weight_map": {"wte.weight": "../model.safetensors"}}))
    result = gpt2_dual_cli("inspect", str(folder))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"gpt2-dual inspect: error: {index}: weight_map['wte.weight'] names "
        "'../model.safetensors', outside the index's folder; a shard must be a file in the same "
        "folder (no leading '/', drive, '..' or '\\')\n"
    )


def _dict_lookup(args):
    return {}["no such key"]


def _bad_call(args):
    return len(args.text, 2)


def _library_error(args):
    return json.loads("{")


def _raised_outside_gpt2_dual(args):
    raise ValueError("not raised by gpt2_dual")


@pytest.mark.parametrize(
    ("bug", "error"),
    [(_dict_lookup, KeyError), (_bad_call, TypeError), (_library_error, ValueError),
     (_raised_outside_gpt2_dual, ValueError)],
    ids=["dict-lookup", "bad-call", "library-error", "raised-elsewhere"],
)  # fmt: skip
def test_a_bug_keeps_its_traceback(monkeypatch, bug, error):
    from gpt2_dual.cli import tokenize as tokenize_command

    monkeypatch.setattr(tokenize_command, "run", bug)
    with pytest.raises(error):
        main(["tokenize", "hi"])


def test_a_bug_prints_the_traceback_and_exits_1():
    code = (
        "import sys, gpt2_dual.cli.tokenize as t; from gpt2_dual.cli import main\n"
        "t.run = lambda args: {}['no such key']\n"
        "sys.exit(main(['tokenize', 'hi']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.endswith("KeyError: 'no such key'\n")


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    from gpt2_dual.cli import tokenize as tokenize_command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenize_command, "run", interrupted)
    assert main(["tokenize", "hi"]) == 130
    assert capsys.readouterr() == ("", "\n")


def test_verbose_also_after_the_command(tmp_path):
    missing = str(tmp_path / "no-such-dir")
    for args in (["-v", "tokenize", "--tokenizer", missing, "hi"],
                 ["tokenize", "--tokenizer", missing, "hi", "-v"]):  # fmt: skip
        result = gpt2_dual_cli(*args)
        assert result.returncode == 2 and "Traceback (most recent call last)" in result.stderr
        assert result.stderr.splitlines()[-1].startswith("gpt2-dual tokenize: error: ")
