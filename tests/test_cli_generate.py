"""``gpt2-dual generate`` run as its console script runs it (``cli_runner``) on a tiny random
checkpoint.

The expected texts come from the library in this process (``pipeline("text-generation")`` on the
same folder), so the command line must print exactly what the library generates.
"""

from __future__ import annotations

import pytest

from cli_runner import Result, run_cli
from frameworks import has
from gpt2_dual import GPT2Config, GPT2TokenizerFast, pipeline

torch = pytest.importorskip("torch")

NEW = 6  # new tokens per prompt


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny GPT2LMHeadModel (real vocabulary, wide random weights) and the bundled tokenizer."""
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.2)
    path = tmp_path_factory.mktemp("cli_lm")
    GPT2LMHeadModel(config).save_pretrained(path)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def library(folder):
    """What the library generates for a prompt (greedy unless ``sample`` options are given)."""
    pipe = pipeline("text-generation", model=folder, framework="pt")

    def generate(prompt: str, **options) -> str:
        options = {"do_sample": False, **options}
        (out,) = pipe(prompt, max_new_tokens=NEW, clean_up_tokenization_spaces=False, **options)
        return out["generated_text"]

    return generate


def cli(*args: str, stdin: str = "") -> Result:
    return run_cli("generate", *args, stdin=stdin, env={"HF_HUB_OFFLINE": "1"})


def test_one_prompt_streamed_and_not_print_the_library_text(folder, library):
    prompt = "Hello, I'm a language model,"
    expected = library(prompt)
    assert expected.startswith(prompt) and len(expected) > len(prompt)
    for extra in ([], ["--no-stream"]):
        result = cli("--model", folder, "--max-new-tokens", str(NEW), *extra, prompt)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected + "\n"


def test_prompts_from_stdin_one_per_line_with_sampling(folder, library):
    prompts = ["Once upon a time", "The capital of France is"]
    stdin = f"{prompts[0]}\n\n{prompts[1]}\n{prompts[1]}\n"
    args = ("--sample", "--top-k", "20", "--temperature", "1.3", "--seed", "7")
    result = cli("--model", folder, "--max-new-tokens", str(NEW), *args, "-", stdin=stdin)
    assert result.returncode == 0, result.stderr
    options = {"do_sample": True, "top_k": 20, "temperature": 1.3, "seed": 7}
    expected = [library(p, **options) for p in (prompts[0], prompts[1], prompts[1])]
    assert result.stdout.splitlines() == expected  # the blank line is skipped, seeds repeat
    assert expected[1] != library(prompts[1])  # sampling, not greedy


def test_interactive_reads_until_an_empty_line(folder, library):
    stdin = "Good morning\nThe cat sat\n\nnever read\n"
    result = cli("--model", folder, "--max-new-tokens", str(NEW), "--interactive", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [library("Good morning"), library("The cat sat")]


def test_beam_search_prints_at_the_end(folder, library):
    result = cli("--model", folder, "--max-new-tokens", str(NEW), "--num-beams", "3", "Hi there")
    assert result.returncode == 0, result.stderr
    assert result.stdout == library("Hi there", num_beams=3) + "\n"


@pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow")
def test_tf_framework_prints_the_same_greedy_text(folder, library):
    result = cli("--model", folder, "--framework", "tf", "--max-new-tokens", str(NEW), "Hi there")
    assert result.returncode == 0, result.stderr
    assert result.stdout == library("Hi there") + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/folder", "hi"], "local folder '/no/such/folder' does not exist"),
        (["--temperature", "0.5", "hi"], "--temperature: sampling options; add --sample"),
        (["--max-new-tokens", "100", "hi"], "past the model's n_positions=64"),
        (["--dtype", "int8", "hi"], "dtype must be a floating torch dtype"),
        (["--interactive", "hi"], "give no prompt"),
    ],
    ids=["missing-folder", "sampling-option", "too-long", "dtype", "interactive-prompt"],
)
def test_user_errors_print_one_line_and_exit_2(folder, args, message):
    if args[0] != "--model":
        args = ["--model", folder, *args]
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("gpt2-dual generate: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_generate_is_listed_in_help():
    from gpt2_dual.cli import build_parser

    assert "generate" in build_parser().format_help()


@pytest.mark.parametrize("flag", ["--load-in-4bit", "--load-in-8bit"])
def test_quantized_flags_print_the_library_text(folder, flag):
    pytest.importorskip("bitsandbytes")
    from gpt2_dual import BitsAndBytesConfig

    if flag == "--load-in-4bit":  # the model card's settings, which the flag stands for
        settings = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                        bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype="float16")  # fmt: skip
    else:
        settings = dict(load_in_8bit=True)
    pipe = pipeline(
        "text-generation", model=folder, framework="pt", dtype="float16",
        model_kwargs={"quantization_config": BitsAndBytesConfig(**settings)},
    )  # fmt: skip
    assert pipe.model.config.quantization_config.bits == int(flag[10])
    (out,) = pipe("Hi there", max_new_tokens=NEW, do_sample=False, clean_up_tokenization_spaces=False)
    result = cli("--model", folder, "--max-new-tokens", str(NEW), flag, "Hi there")
    assert result.returncode == 0, result.stderr
    assert result.stdout == out["generated_text"] + "\n"


def test_quantized_flags_are_pytorch_only_and_exclusive(folder):
    result = cli("--model", folder, "--framework", "tf", "--load-in-4bit", "hi")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "gpt2-dual generate: error: --load-in-4bit is bitsandbytes quantization, PyTorch only: "
        "use --framework pt\n"
    )
    result = cli("--model", folder, "--load-in-4bit", "--load-in-8bit", "hi")
    assert result.returncode == 2
    assert "argument --load-in-8bit: not allowed with argument --load-in-4bit" in result.stderr
