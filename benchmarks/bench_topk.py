"""The vocabulary-wide selections of Keras ``generate`` (``gpt2_dual.tf.topk``) against
TensorFlow's own ``tf.math.top_k``, under XLA and in graph mode.

For each of one and 8 rows of 50,257 float32 logits: the top-k (k=50) then top-p (0.9) filter
of ``gpt2_dual.tf.processors`` and the same top-k filter on ``tf.math.top_k`` (TF's anchor):
ops traced, first call (trace plus compile) and the median of interleaved timed calls. The
filters' outputs are compared (top-k: bit exact).

Usage:
    python benchmarks/bench_topk.py                 # writes results/topk_<cpu family>.md
    python benchmarks/bench_topk.py --rounds 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

import machine  # benchmarks/machine.py
from gpt2_dual._io import atomic_write_text
from gpt2_dual.tf import processors

VOCAB, K, P = 50257, 50, 0.9


def ours_top_k(x: tf.Tensor) -> tf.Tensor:
    return processors._top_k(x, K)


def ours_top_k_top_p(x: tf.Tensor) -> tf.Tensor:
    return processors._top_p(processors._top_k(x, K), P, 1)


def anchor_top_k(x: tf.Tensor) -> tf.Tensor:
    kth = tf.math.top_k(x, K).values[:, -1:]
    return tf.where(x < kth, float("-inf"), x)


VARIANTS = {"gpt2_dual top-k": ours_top_k, "tf.math.top_k top-k": anchor_top_k,
            "gpt2_dual top-k + top-p": ours_top_k_top_p}  # fmt: skip


def measure(rows: int, jit: bool, rounds: int) -> list[str]:
    x = tf.constant(np.random.default_rng(0).normal(size=(rows, VOCAB)).astype(np.float32))
    lines, calls, outputs = [], {}, {}
    for name, fn in VARIANTS.items():
        compiled = tf.function(fn, jit_compile=jit)
        ops = len(compiled.get_concrete_function(x).graph.get_operations())
        start = time.perf_counter()
        outputs[name] = compiled(x).numpy()
        first = time.perf_counter() - start
        calls[name] = (lambda c=compiled: c(x).numpy(), ops, first)
    assert np.array_equal(outputs["gpt2_dual top-k"], outputs["tf.math.top_k top-k"])
    times = machine.interleaved({n: c[0] for n, c in calls.items()}, rounds, warmup=2)
    for name, (_, ops, first) in calls.items():
        median = statistics.median(times[name]) * 1e3
        mode = "XLA" if jit else "graph"
        lines.append(f"| {rows} | {mode} | {name} | {ops} | {first:.2f} s | {median:.2f} ms |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)
    rows = ["| rows | mode | filter | ops traced | first call | median call |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for batch in (1, 8):
        for jit in (True, False):
            rows += measure(batch, jit, args.rounds)
    command = "python benchmarks/bench_topk.py " + " ".join(argv or sys.argv[1:])
    text = "\n".join(["# Sampling filters of Keras generate: gpt2_dual.tf.topk vs tf.math.top_k",
                      "", f"`{command.strip()}`", "", *machine.facts(None), "", *rows, ""])
    atomic_write_text(machine.results_path("topk"), text)
    print(text)


if __name__ == "__main__":
    main()
