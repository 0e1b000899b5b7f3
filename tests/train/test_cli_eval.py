"""``gpt2-dual eval`` run as its console script runs it (``cli_runner``) on a tiny random
checkpoint saved by transformers, with one real subprocess.

The command line is thin over ``gpt2_dual.train.evaluate`` (which ``test_evaluate.py`` checks
against transformers' guide), so what it prints must be the library's numbers exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_runner import Result, run_cli
from frameworks import has
from gpt2_dual import GPT2TokenizerFast
from gpt2_dual.train.evaluate import model_nll_sum, perplexity

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "text" / "corpus.txt"
N_POSITIONS = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny transformers GPT2LMHeadModel (wide random weights) and the GPT-2 tokenizer."""
    torch.manual_seed(1)
    config = transformers.GPT2Config(
        n_embd=48, n_head=4, n_layer=3, n_positions=N_POSITIONS, initializer_range=0.2
    )
    path = tmp_path_factory.mktemp("cli_eval_lm")
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    """About 170 tokens of the committed corpus."""
    path = tmp_path_factory.mktemp("cli_eval_text") / "tempest.txt"
    path.write_text(CORPUS.read_text(encoding="utf-8")[:500], encoding="utf-8")
    return path


def library(folder: Path, text_file: Path, framework: str = "pt", **options):
    """What ``gpt2_dual.train.evaluate`` gives for the folder's model on the file."""
    if framework == "pt":
        import gpt2_dual.pt as gpt
    else:
        import gpt2_dual.tf as gpt
    text = text_file.read_text(encoding="utf-8")
    ids = np.asarray(GPT2TokenizerFast.from_pretrained(folder).encode(text), dtype=np.int64)
    nll_sum = model_nll_sum(gpt.GPT2LMHeadModel.from_pretrained(folder))
    return perplexity(ids, nll_sum, **options), len(ids)


def cli(*args: str) -> Result:
    return run_cli("eval", *args, env={"HF_HUB_OFFLINE": "1"})


def as_json(result) -> dict:
    return {"perplexity": result.perplexity, "loss": result.loss, "tokens": result.tokens}


def test_json_is_the_library_result(folder, text_file):
    expected, _ = library(folder, text_file, block_size=32, stride=12, batch_size=2)
    run = cli(str(folder), "--file", str(text_file), "--block-size", "32", "--stride", "12",
              "--batch-size", "2", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1
    assert json.loads(run.stdout) == as_json(expected)
    assert run.stderr == ""


def test_defaults_are_disjoint_windows_of_n_positions_in_a_table(folder, text_file):
    expected, n_text = library(folder, text_file, block_size=N_POSITIONS, stride=N_POSITIONS)
    windows = -(-n_text // N_POSITIONS)
    run = cli(str(folder), "--file", str(text_file))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"model          {folder}",
        f"file           {text_file} ({n_text} tokens)",
        f"windows        {windows} (block size {N_POSITIONS}, stride {N_POSITIONS})",
        f"tokens scored  {n_text - windows}",
        f"loss           {expected.loss:.4f}",
        f"perplexity     {expected.perplexity:.4f}",
    ]


@pytest.mark.skipif(not has("tensorflow"), reason="needs tensorflow")
def test_tensorflow_json_is_the_library_result(folder, text_file):
    """Overlapping windows; with the file's 180 tokens, blocks of 40 every 20 tokens are two
    window shapes (the first window, then 40 tokens scoring 20), so two XLA programs a model."""
    expected, _ = library(folder, text_file, "tf", block_size=40, stride=20)
    run = cli(str(folder), "--file", str(text_file), "--framework", "tf", "--block-size", "40",
              "--stride", "20", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == pytest.approx(as_json(expected), rel=1e-9)


def test_a_folder_without_tokenizer_files_uses_the_bundled_one(folder, text_file, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    expected, _ = library(folder, text_file, block_size=32, stride=32)
    run = cli(str(bare), "--file", str(text_file), "--block-size", "32", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == as_json(expected)
    assert run.stderr == (
        f"WARNING:gpt2_dual.cli.evaluate:{bare} has no tokenizer files; "
        "using the bundled GPT-2 tokenizer\n"
    )


def test_console_script_in_a_subprocess_prints_one_json_line(folder, text_file):
    args = [str(folder), "--file", str(text_file), "--block-size", "32", "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "gpt2_dual", "eval", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == cli(*args).stdout
    assert set(json.loads(done.stdout)) == {"perplexity", "loss", "tokens"}


@pytest.mark.parametrize(
    ("text", "flags", "message"),
    [
        (None, [], "--file {file}: no such file"),
        ("", [], "--file {file} is empty"),
        (b"caf\xe9 au lait", [], "--file {file} is not UTF-8 text: byte 0xe9 at offset 3; "
         "convert it first (e.g. iconv -f latin1 -t utf-8)"),
        ("Hi", [], "--file {file} is 1 token long; perplexity needs at least 2 tokens"),
        ("Hello there", ["--block-size", "65"],
         "--block-size 65 is out of range: 2 to the model's n_positions 64"),
        ("Hello there", ["--block-size", "1"],
         "--block-size 1 is out of range: 2 to the model's n_positions 64"),
        ("Hello there", ["--stride", "0"], "--stride 0 is out of range: 1 to --block-size 64"),
        ("Hello there", ["--block-size", "16", "--stride", "17"],
         "--stride 17 is out of range: 1 to --block-size 16"),
        ("Hello there", ["--batch-size", "0"], "--batch-size 0 is out of range: at least 1"),
    ],
    ids=["missing", "empty", "not-utf8", "one-token", "block-past-n_positions", "block-1",
         "stride-0", "stride-past-block", "batch-0"],
)  # fmt: skip
def test_errors_are_one_line_with_status_2(folder, tmp_path, text, flags, message):
    file = tmp_path / "text.txt"
    if isinstance(text, str):
        file.write_text(text, encoding="utf-8")
    elif isinstance(text, bytes):
        file.write_bytes(text)
    run = cli(str(folder), "--file", str(file), *flags)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"gpt2-dual eval: error: {message.format(file=file)}\n"
