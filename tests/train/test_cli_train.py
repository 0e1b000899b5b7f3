"""``gpt2-dual train`` as users run it: the files it leaves (transformers loads them), the
losses of 2 processes against 1, TensorFlow against PyTorch, resuming after ``kill -9``, and
one line on stderr with exit status 2 for each mistake, with nothing on disk touched.

The model is transformers' own ``GPT2LMHeadModel`` (random weights, the real vocabulary so the
committed English text tokenizes as GPT-2 would), saved with ``save_pretrained`` next to the
bundled tokenizer files; the text is ``tests/fixtures/text/corpus.txt``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from cases import assert_close
from cli_runner import run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "text" / "corpus.txt"
SHAPE = dict(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=48)
BLOCK = 32
ERROR = "gpt2-dual train: error: "


def _save_model(folder: Path, dropout: float) -> Path:
    from gpt2_dual import GPT2TokenizerFast

    torch.manual_seed(0)
    config = transformers.GPT2Config(**SHAPE, resid_pdrop=dropout, embd_pdrop=dropout,
                                     attn_pdrop=dropout, initializer_range=0.1)  # fmt: skip
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model(tmp_path_factory.mktemp("tiny") / "model", dropout=0.0)


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model(tmp_path_factory.mktemp("tiny-dropout") / "model", dropout=0.1)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tenth of the corpus (about 3,200 tokens: 99 blocks, quick to tokenize); read only."""
    body = CORPUS.read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("text") / "train.txt"
    path.write_text(body[: len(body) // 10], encoding="utf-8")
    return path


def _args(model: Path, text: Path, out: Path, *extra: str, steps: int = 4) -> list[str]:
    return ["train", str(model), "--train-file", str(text), "--output-dir", str(out),
            "--max-steps", str(steps), "--block-size", str(BLOCK), "--batch-size", "4",
            "--learning-rate", "1e-3", "--quiet", "--cache-dir", str(out.parent / "cache"),
            *extra]  # fmt: skip


def _losses(out: Path) -> list[float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2] / "src"),
                                                      env.get("PYTHONPATH")]))  # fmt: skip
    return env


# ----------------------------------------------------------------------- what a run leaves
def test_run_leaves_a_model_transformers_loads(model_dir: Path, text: Path, tmp_path: Path):
    valid = tmp_path / "valid.txt"  # 360 tokens: 11 blocks, in batches of 4, 4 and 3
    valid.write_text(CORPUS.read_text(encoding="utf-8")[-1200:], encoding="utf-8")
    out = tmp_path / "run"
    done = run_cli(*_args(model_dir, text, out, "--save-steps", "1", "--save-total-limit", "2",
                          "--validation-file", str(valid), "--eval-steps", "2",
                          "--json", steps=3))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["global_step"] == 3
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt",
            "trainer_state.json", "checkpoint-2", "checkpoint-3", "runs"} <= names  # fmt: skip
    assert "checkpoint-1" not in names  # --save-total-limit 2 keeps the newest two
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == [1, 2, 3] and state["global_step"] == 3
    evals = [e for e in state["log_history"] if "eval_loss" in e]
    assert [e["step"] for e in evals] == [2, 3]  # every --eval-steps, and the last step

    # transformers loads the result without complaint; its loss over the validation blocks
    # is the last evaluation's (the same weights, an independent forward)
    reference = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ids = transformers.GPT2TokenizerFast.from_pretrained(out)(valid.read_text())["input_ids"]
    n = len(ids) // BLOCK
    blocks = torch.tensor(ids[: n * BLOCK]).reshape(n, BLOCK)
    with torch.no_grad():
        loss = reference(blocks, labels=blocks).loss.item()
    assert_close(evals[-1]["eval_loss"], loss, what="eval_loss vs transformers")
    assert abs(evals[-1]["eval_perplexity"] - np.exp(loss)) <= 1e-4 * np.exp(loss)

    # gpt2-dual serve's engine takes the folder: its greedy tokens are transformers' own
    from gpt2_dual.serve import Engine, SamplingParams

    prompt = ids[:5]
    with torch.no_grad():
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                      pad_token_id=0)[0, 5:].tolist()  # fmt: skip
    engine = Engine.from_pretrained(out, max_num_seqs=2)
    (served,) = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=6,
                                                         ignore_eos=True), use_tqdm=False)  # fmt: skip
    engine.stop()
    assert list(served.outputs[0].token_ids) == expected


def test_tf_sgd_equals_pt_sgd(model_dir: Path, text: Path, tmp_path: Path):
    pytest.importorskip("tensorflow")
    runs = {}
    for framework in ("pt", "tf"):
        out = tmp_path / framework
        done = run_cli(*_args(model_dir, text, out, "--optimizer", "sgd", "--framework",
                              framework, "--save-steps", "100", steps=6))  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs[framework] = np.array(_losses(out))
    assert len(runs["pt"]) == 6
    np.testing.assert_allclose(runs["tf"], runs["pt"], rtol=1e-3)
    assert runs["pt"][-1] < runs["pt"][0]  # it learned something


#: Steps of the 2-process runs: each compares a loss per step with the 1-process run's.
DIST_STEPS = 6


@pytest.fixture(scope="module")
def one_process_losses(model_dir: Path, text: Path, tmp_path_factory) -> list[float]:
    """The 1-process run (B=4) both launch modes are checked against; read only."""
    one = tmp_path_factory.mktemp("one-process") / "one"
    done = run_cli(*_args(model_dir, text, one, "--save-steps", "100", steps=DIST_STEPS))
    assert done.returncode == 0, done.stderr
    return _losses(one)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_equal_one(model_dir: Path, text: Path, tmp_path: Path, mode: str,
                                 one_process_losses: list[float]):  # fmt: skip
    two = tmp_path / "two"
    args = _args(model_dir, text, two, "--save-steps", "100", steps=DIST_STEPS)
    args[args.index("--batch-size") + 1] = "2"
    if mode == "fsdp":
        args.append("--fsdp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "gpt2_dual", *args]  # fmt: skip
    done = subprocess.run(cmd, env=_subprocess_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(_losses(two), one_process_losses, rtol=1e-4)
    assert len(_losses(two)) == DIST_STEPS


#: The run that is killed: KILL_STEPS steps, a checkpoint every KILL_SAVE; it is killed once
#: checkpoint-KILL_SAVE is complete, with 4 steps, 2 checkpoints and the final save to go.
KILL_STEPS, KILL_SAVE = 6, 2


def _run_on_one_thread(*args: str):
    """``run_cli`` with torch on one thread, as in the subprocesses (OMP_NUM_THREADS=1): a
    reduction split over more threads rounds differently, and the runs must agree bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_cli(*args)
    finally:
        torch.set_num_threads(threads)


def test_resume_after_kill_9_ends_with_the_same_weights(dropout_model_dir: Path, text: Path,
                                                          tmp_path: Path):  # fmt: skip
    """The killed run is a process of its own; the uninterrupted run and the resumed one run
    here (``main`` as the console script runs it), on the files the killed process left."""

    def args(out: Path, *extra: str) -> list[str]:
        return _args(dropout_model_dir, text, out, "--save-steps", str(KILL_SAVE), *extra,
                     steps=KILL_STEPS)  # fmt: skip

    whole = tmp_path / "whole"
    done = _run_on_one_thread(*args(whole))
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    process = subprocess.Popen([sys.executable, "-m", "gpt2_dual", *args(cut)],
                               env=_subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (cut / f"checkpoint-{KILL_SAVE}").exists() and process.poll() is None:
        assert time.monotonic() < deadline, f"no checkpoint-{KILL_SAVE} within 240 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not (cut / "model.safetensors").exists(), "the run ended before it was killed"
    done = _run_on_one_thread(*args(cut, "--resume"))
    assert done.returncode == 0, done.stderr
    expected, actual = load_file(whole / "model.safetensors"), load_file(cut / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    assert _losses(cut) == _losses(whole)
    assert len(_losses(whole)) == KILL_STEPS


# --------------------------------------------------------------------------- bad input
def _snapshot(folder: Path) -> dict[str, float]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "--train-file {missing}: no such file or folder"),
        ("empty", "--train-file {empty} is empty"),
        ("block", "--block-size 65 is past the model's n_positions (64); use at most 64"),
        ("short", "--train-file has 3 tokens, fewer than one block of --block-size 32; give "
                  "more text or a smaller --block-size"),
    ],
)  # fmt: skip
def test_bad_data_is_one_line_and_exit_2(model_dir: Path, tmp_path: Path, case: str, message: str):
    paths = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt",
             "short": tmp_path / "short.txt"}  # fmt: skip
    paths["empty"].write_text("")
    paths["short"].write_text("Hello world!")
    text = paths.get(case, CORPUS)
    args = _args(model_dir, text, tmp_path / "out")
    if case == "block":
        args[args.index("--block-size") + 1] = "65"
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr == ERROR + message.format(**{k: v for k, v in paths.items()}) + "\n"
    assert not (tmp_path / "out").exists()


def test_an_output_dir_holding_a_run_is_refused_untouched(model_dir, text, tmp_path):
    out = tmp_path / "run"
    assert run_cli(*_args(model_dir, text, out, "--save-steps", "1", steps=1)).returncode == 0
    assert (out / "checkpoint-1").is_dir()
    before = _snapshot(out)
    done = run_cli(*_args(model_dir, text, out, steps=1))
    assert done.returncode == 2 and done.stderr.startswith(ERROR)
    assert "--resume" in done.stderr and "--overwrite" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert _snapshot(out) == before
    again = run_cli(*_args(model_dir, text, out, "--overwrite", "--save-steps", "100", steps=1))
    assert again.returncode == 0, again.stderr
    assert not (out / "checkpoint-1").exists()  # --overwrite started over


def test_an_unwritable_output_dir_is_refused(model_dir, text, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_cli(*_args(model_dir, text, blocker / "out"))
    assert done.returncode == 2 and done.stderr.startswith(ERROR)
    assert str(blocker) in done.stderr and len(done.stderr.splitlines()) == 1
    assert blocker.read_text() == "not a folder"


def test_nan_loss_stops_at_its_step_and_keeps_the_checkpoints(model_dir, text, tmp_path):
    out = tmp_path / "run"
    args = _args(model_dir, text, out, "--optimizer", "sgd", "--max-grad-norm", "0",
                 "--save-steps", "1", steps=8)  # fmt: skip
    args[args.index("--learning-rate") + 1] = "1e30"
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith(ERROR + "the loss is nan at step ") or line.startswith(
        ERROR + "the loss is inf at step "
    ), line
    step = int(line.split(" at step ")[1].split(";")[0])
    assert f"checkpoint-{step - 1} is the last good checkpoint" in line
    assert (out / f"checkpoint-{step - 1}" / "model.safetensors").exists()
    assert not (out / f"checkpoint-{step}").exists()
    assert not (out / "model.safetensors").exists()
