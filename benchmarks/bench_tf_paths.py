"""Where TensorFlow's float32 products run fastest on this CPU, and whether taking them out of XLA
helps a gpt2_dual.tf forward: XLA's Eigen dot against graph mode's oneDNN MatMul, product by
product and in the model.

Products (2 threads): GPT-2 small's four block products and its LM head at 128 and 4096 rows
(1x128 and 8x512), each as ``tf.function`` with and without ``jit_compile``, interleaved; the head
twice: with the weight laid out ``(C, V)`` and as the tied head reads it, ``wte`` ``(V, C)``
transposed (``tied_product``). GFLOP/s of the best call.

Forward (random weights, float32, no cache): the whole model under XLA (the CPU rule), in graph
mode, and a hybrid, the backbone as a nested ``tf.function(jit_compile=True)`` with the tied
head as a graph-mode product after it; interleaved rounds in one process, logits compared with
the XLA row's.

    .venv/bin/python benchmarks/bench_tf_paths.py [--rounds 5]
Writes ``benchmarks/results/tf_paths_<cpu family>.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from machine import facts, interleaved, results_path  # noqa: E402

THREADS, VOCAB, WIDTH = 2, 50257, 768
PRODUCTS = [(768, 2304), (768, 3072), (3072, 768), (768, VOCAB)]  # (in, out)
SHAPES = [(1, 128), (8, 512)]


def product_variants(rows: int, k: int, n: int, tied: bool) -> dict[str, Callable[[], object]]:
    """XLA and graph mode of ``x (rows, k) @ W (+ b)``; ``tied``: ``W`` is ``(n, k)`` read
    transposed, without bias, as the tied LM head."""
    x = tf.random.normal((rows, k))
    if tied:
        w = tf.Variable(tf.random.normal((n, k)) * 0.02)

        def fn(x):
            return tf.matmul(x, w, transpose_b=True)
    else:
        w, b = tf.Variable(tf.random.normal((k, n)) * 0.02), tf.Variable(tf.zeros(n))

        def fn(x):
            return tf.matmul(x, w) + b

    xla, graph = tf.function(fn, jit_compile=True), tf.function(fn)
    return {"XLA": lambda: xla(x).numpy(), "graph": lambda: graph(x).numpy()}


def products(rounds: int) -> list[str]:
    out = ["| rows x in -> out | weight | XLA GFLOP/s | graph GFLOP/s | graph / XLA |",
           "|---|---|---|---|---|"]  # fmt: skip
    for rows in (128, 4096):
        for k, n in PRODUCTS:
            layouts = [False, True] if n == VOCAB else [False]
            for tied in layouts:
                times = interleaved(product_variants(rows, k, n, tied), rounds, warmup=2)
                rate = {name: 2 * rows * k * n / min(t) / 1e9 for name, t in times.items()}
                weight = "`wte` (V, C), transposed" if tied else "(in, out) + bias"
                out.append(
                    f"| {rows} x {k} -> {n} | {weight} | {rate['XLA']:.0f} | "
                    f"{rate['graph']:.0f} | {rate['graph'] / rate['XLA']:.2f}x |"
                )
    return out


def model():
    import keras

    from gpt2_dual import GPT2Config
    from gpt2_dual.tf import GPT2LMHeadModel

    keras.utils.set_random_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    lm({"input_ids": np.zeros((1, 2), np.int32)})
    return lm


def forward_variants(lm, shape: tuple[int, int]) -> dict[str, Callable[[], np.ndarray]]:
    from gpt2_dual.tf.heads import tied_product

    ids = tf.constant(np.random.default_rng(1).integers(0, VOCAB, shape, dtype=np.int32))
    mask = tf.ones(shape, tf.int32)
    inputs = {"input_ids": ids, "attention_mask": mask}

    def full(inputs):
        return lm(inputs, use_cache=False, training=False)["logits"]

    def backbone(inputs):
        return lm.transformer(inputs, use_cache=False, training=False)["last_hidden_state"]

    xla_backbone = tf.function(backbone, jit_compile=True)

    def hybrid(inputs):
        return tied_product(xla_backbone(inputs), lm.transformer.wte.embeddings)

    calls = {
        "XLA (rule)": tf.function(full, jit_compile=True),
        "graph": tf.function(full),
        "hybrid: XLA backbone, graph head": tf.function(hybrid),
    }
    return {name: (lambda f=f: f(inputs).numpy()) for name, f in calls.items()}


def forwards(rounds: int) -> list[str]:
    lm = model()
    out = ["| shape | variant | best ms | median ms | vs XLA (best) | max abs diff |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for shape in SHAPES:
        variants = forward_variants(lm, shape)
        reference = variants["XLA (rule)"]()
        diffs = {name: float(np.abs(fn() - reference).max()) for name, fn in variants.items()}
        times = interleaved(variants, rounds, warmup=1)
        base = min(times["XLA (rule)"])
        for name, t in times.items():
            out.append(
                f"| {shape[0]}x{shape[1]} | {name} | {min(t) * 1e3:.1f} | "
                f"{statistics.median(t) * 1e3:.1f} | {base / min(t):.2f}x | {diffs[name]:.1e} |"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    head = facts(THREADS)
    lines = [
        "# TensorFlow float32 products: XLA against graph mode (oneDNN), and in the model",
        "",
        f"Command: `python benchmarks/bench_tf_paths.py --rounds {args.rounds}`",
        "",
        *head,
        f"- tensorflow {tf.__version__}; best of {args.rounds} interleaved rounds",
        "",
        *products(args.rounds),
        "",
        *forwards(args.rounds),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results_path("tf_paths").write_text(text)


if __name__ == "__main__":
    main()
