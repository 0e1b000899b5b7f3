"""``gpt2-dual generate MODEL PROMPT``: the model as the first argument, as ``convert``,
``check`` and ``inspect`` take it, with ``--model MODEL`` still accepted.

Run through the real entry point (``gpt2_dual.cli.main`` in this process, and once as
``python -m gpt2_dual``) on a tiny random checkpoint; the expected text is what the library's
``pipeline("text-generation")`` generates from the same folder.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpt2_dual import GPT2Config, GPT2TokenizerFast, pipeline
from gpt2_dual.cli import main

torch = pytest.importorskip("torch")

NEW = 5  # new tokens per prompt
PROMPT = "Hello, I'm a language model,"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """A tiny GPT2LMHeadModel (real vocabulary, wide random weights) and the bundled tokenizer."""
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.2)
    path = tmp_path_factory.mktemp("cli_model_arg")
    GPT2LMHeadModel(config).save_pretrained(path)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def expected(folder) -> dict[str, str]:
    """The library's greedy text for each prompt used here."""
    pipe = pipeline("text-generation", model=folder, framework="pt")
    texts = {}
    for prompt in (PROMPT, "Once upon a time", "The cat sat"):
        (out,) = pipe(prompt, max_new_tokens=NEW, do_sample=False,
                      clean_up_tokenization_spaces=False)  # fmt: skip
        assert out["generated_text"].startswith(prompt) and out["generated_text"] != prompt
        texts[prompt] = out["generated_text"]
    return texts


def _usage_error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(["generate", *args])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: gpt2-dual generate MODEL PROMPT [options]\n")
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    "args",
    [
        ["{model}", "--max-new-tokens", str(NEW), PROMPT],
        ["{model}", PROMPT, "--max-new-tokens", str(NEW)],
        ["--max-new-tokens", str(NEW), "{model}", PROMPT],
        ["--model", "{model}", "--max-new-tokens", str(NEW), PROMPT],
        [PROMPT, "--max-new-tokens", str(NEW), "--model", "{model}"],
    ],
    ids=["model-options-prompt", "model-prompt-options", "options-model-prompt", "--model",
         "prompt-then---model"],
)  # fmt: skip
def test_every_way_to_name_the_model_prints_the_library_text(folder, expected, capsys, args):
    args = [a.format(model=folder) for a in args]
    assert main(["generate", *args]) == 0
    assert capsys.readouterr() == (expected[PROMPT] + "\n", "")


def test_model_first_from_the_console_with_prompts_on_stdin(folder, expected):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "gpt2_dual", "generate", folder, "--no-stream",
         "--max-new-tokens", str(NEW), "-"],
        input="Once upon a time\nThe cat sat\n", capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [expected["Once upon a time"], expected["The cat sat"]]


def test_the_model_named_twice_is_a_usage_error(folder, capsys):
    assert _usage_error(capsys, ["--model", folder, folder, PROMPT]) == (
        f"gpt2-dual generate: error: the model is named twice, --model {folder!r} and "
        f"{folder!r}; name it once: gpt2-dual generate MODEL PROMPT"
    )


def test_no_model_is_a_usage_error(capsys):
    assert _usage_error(capsys, ["--max-new-tokens", "3"]) == (
        "gpt2-dual generate: error: give the model: gpt2-dual generate MODEL PROMPT (a "
        "checkpoint folder or Hub repo id)"
    )


def test_a_lone_argument_is_the_model_and_the_error_says_so(folder, capsys):
    assert main(["generate", folder]) == 2
    assert capsys.readouterr() == (
        "",
        f"gpt2-dual generate: error: give a prompt after the model {folder!r}, - to read "
        "prompts from stdin, or --interactive\n",
    )


def test_help_shows_the_model_first(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(
        "usage: gpt2-dual generate MODEL PROMPT [options]\n"
        "       gpt2-dual generate MODEL - [options] < prompts.txt     (one prompt per line)\n"
        "       gpt2-dual generate MODEL --interactive [options]\n"
        "       gpt2-dual generate --model MODEL PROMPT [options]\n"
    )
    assert "  MODEL                checkpoint folder or Hub repo id\n" in help_text
