"""Training speed on this CPU: ``gpt2-dual train`` against transformers' ``Trainer``, whole
processes, and the training step's share of the machine's measured float32 peak.

Case (issue 21's target): a gpt2-small-shaped model from scratch (random weights, seed 0),
float32, 30 optimizer steps of 4 blocks x 128 tokens, AdamW at 5e-5 (linear schedule), gradient
clipping at 1.0, logging every step, the final model saved, the text tokenized inside the timed
process (a fresh token cache each run). Each run is a fresh subprocess with ``--threads``
threads; the two commands alternate, ``--repeats`` times, and the medians are compared. The
transformers run is ``run_clm``'s recipe cut to the same work: its own fast tokenizer,
``group_texts`` blocks, ``GPT2LMHeadModel(GPT2Config())``, ``Trainer`` with
``per_device_train_batch_size=4``, ``max_steps=30``, ``logging_steps=1``, no saving but the
final model, no reporting, and ``USE_TF=0`` so that transformers does not import TensorFlow
(which this environment has).

Rows: wall seconds (median, min, max), the ratio, and from ``gpt2-dual train``'s own report the
steady tokens/s of its steps and their share of the peak (forward + backward = 3x the forward's
FLOPs over the tokens, against the best float32 GEMM of ``machine.gemm_peak_torch``).

Usage:
    python benchmarks/bench_train.py                 # 3 alternating pairs, 2 threads
    python benchmarks/bench_train.py --repeats 5 --steps 30
Writes ``benchmarks/results/train_cpu_<cpu family>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "text" / "corpus.txt"
BATCH, BLOCK = 4, 128

TRANSFORMERS_SCRIPT = r"""
import sys, torch
from transformers import (GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, Trainer,
                          TrainingArguments, default_data_collator)
from gpt2_dual.hub.bundled import bundled_vocab_dir
text_path, out = sys.argv[1], sys.argv[2]
steps, batch, block = (int(v) for v in sys.argv[3:6])
torch.manual_seed(0)
tok = GPT2TokenizerFast.from_pretrained(str(bundled_vocab_dir()))
ids = tok(open(text_path, encoding="utf-8").read())["input_ids"]
n = len(ids) // block
blocks = [ids[i * block:(i + 1) * block] for i in range(n)]
data = [{"input_ids": b, "labels": b} for b in blocks]
model = GPT2LMHeadModel(GPT2Config())
args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
                         learning_rate=5e-5, logging_steps=1, save_strategy="no",
                         report_to=[], seed=0, use_cpu=True, disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)
trainer.train()
trainer.save_model(out)
"""


def _corpus(folder: Path, min_tokens: int) -> Path:
    """The committed corpus, repeated until it holds ``min_tokens`` (about 4 bytes a token)."""
    text = CORPUS.read_text(encoding="utf-8")
    copies = max(1, -(-min_tokens * 4 // len(text)) + 1)
    path = folder / "train.txt"
    path.write_text("\n".join([text] * copies), encoding="utf-8")
    return path


def _env(threads: int, cache: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GPT2_DUAL_CACHE=str(cache),
               TOKENIZERS_PARALLELISM="true", TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip
    env.pop("RANK", None)
    return env


def run_gpt2_dual(text: Path, work: Path, steps: int, threads: int) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, "-m", "gpt2_dual", "train", "gpt2", "--from-scratch",
           "--train-file", str(text), "--output-dir", str(out), "--max-steps", str(steps),
           "--batch-size", str(BATCH), "--block-size", str(BLOCK), "--seed", "0",
           "--save-steps", str(10 * steps), "--quiet", "--json"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=_env(threads, Path(tempfile.mkdtemp(dir=work))),
                          capture_output=True, text=True, check=True)  # fmt: skip
    return time.perf_counter() - start, json.loads(done.stdout.strip().splitlines()[-1])


def run_transformers(text: Path, work: Path, steps: int, threads: int) -> float:
    out = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, "-c", TRANSFORMERS_SCRIPT, str(text), str(out), str(steps),
           str(BATCH), str(BLOCK)]  # fmt: skip
    start = time.perf_counter()
    env = dict(_env(threads, work), USE_TF="0")  # transformers' best case: no TensorFlow import
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start


def _peak(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    return max(machine.gemm_peak_torch().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    lines = [
        "# Training: gpt2-dual train vs transformers Trainer",
        "",
        *machine.facts(args.threads),
    ]
    ours, theirs, reports = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = _corpus(work, args.steps * BATCH * BLOCK)
        for _ in range(args.repeats):
            seconds, report = run_gpt2_dual(text, work, args.steps, args.threads)
            ours.append(seconds)
            reports.append(report)
            theirs.append(run_transformers(text, work, args.steps, args.threads))
    peak = _peak(args.threads)
    from gpt2_dual import GPT2Config

    rate = statistics.median(r["tokens_per_second"] for r in reports)
    flops_per_token = 3 * machine.gpt2_forward_flops(GPT2Config(), 1, BLOCK) / BLOCK
    share = 100 * rate * flops_per_token / 1e9 / peak
    lines += [
        f"- case: gpt2-small shape from scratch, fp32, {args.steps} steps x {BATCH}x{BLOCK} "
        f"tokens, AdamW, tokenization and saving inside the timed process; "
        f"{args.repeats} alternating pairs",
        f"- command: `python benchmarks/bench_train.py --steps {args.steps} --repeats "
        f"{args.repeats} --threads {args.threads}`",
        "",
        "| whole process | median s | min s | max s | speed-up |",
        "|---|---|---|---|---|",
        _row("transformers Trainer", theirs, statistics.median(theirs)),
        _row("gpt2-dual train", ours, statistics.median(theirs)),
        "",
        f"gpt2-dual train's steps: {rate:,.0f} tokens/s (median of its own reports), "
        f"{share:.0f}% of the measured float32 peak ({peak:,.0f} GFLOP/s; a step counted as "
        f"3x the forward's FLOPs).",
    ]
    text_out = "\n".join(lines) + "\n"
    print(text_out)
    machine.results_path("train_cpu").write_text(text_out)


def _row(name: str, times: list[float], anchor: float) -> str:
    median = statistics.median(times)
    return (f"| {name} | {median:.1f} | {min(times):.1f} | {max(times):.1f} | "
            f"{anchor / median:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
