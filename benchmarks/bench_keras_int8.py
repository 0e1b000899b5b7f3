"""Keras int8 quantization of gpt2_dual.tf on this CPU: weight memory, speed and error.

One process, ``--threads`` TensorFlow threads (default 2). A gpt2 (124M) shaped
``GPT2LMHeadModel`` with random weights (Keras' initialization, seed 0, dropout off), and a
copy with the same weights after ``model.quantize("int8")`` (Keras' rule: int8 ``Dense``
kernels and activations, int8 ``Embedding`` rows, the tied ``lm_head`` on ``wte``'s int8 rows).
float32 is the anchor: every ratio is float32 time / int8 time from the same run (>1: int8 is
faster).

- Weight memory: bytes of every variable of each model.
- Forward latency (no cache, full logits) at 1x128 and 8x512 (batch x tokens), in three modes:
  ``eager`` (a plain call), ``graph`` (``tf.function``: what ``predict`` runs where the CPU
  rule picks graph mode) and ``xla`` (``tf.function(jit_compile=True)``).
- Greedy decoding: ``generate`` from a 16-token prompt, batch 1, with XLA (the default) and in
  graph mode (``jit_compile=False``); tokens per second, and how many new tokens int8 shares
  with float32 before the first difference.
- Error: int8 logits against float32 at each forward shape: max |diff|, median |diff|, the
  logits' standard deviation (for scale) and top-1 agreement (the argmax at each position).
  With random weights the top-2 logits are close (about 0.1 apart at std 0.55), so top-1
  agreement here is a pessimistic figure.

Variants are timed round by round (float32, int8, float32, ...) so load from other processes
hits both alike; tables give the median and the best call (7 rounds at 1x128; at 8x512 two
under XLA and one in eager and graph mode, where int8 takes 20-25 s a call).

Usage:
    python benchmarks/bench_keras_int8.py            # full run (~4 min), writes
                                                     # results/keras_int8_<cpu family>.md
    python benchmarks/bench_keras_int8.py --quick    # 1x128 only, fewer rounds and tokens
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gpt2_dual import GPT2Config  # noqa: E402
from gpt2_dual._io import atomic_write_text  # noqa: E402
from gpt2_dual.cpu import cpu_info  # noqa: E402
from gpt2_dual.tf import GPT2LMHeadModel  # noqa: E402
from gpt2_dual.tf.training import tf_onednn_enabled  # noqa: E402
from machine import interleaved  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).parent / "results" / f"keras_int8_{cpu_info().family}.md"
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
PROMPT = 16
MODES = ("eager", "graph", "xla")


# --------------------------------------------------------------------------- models
def make_models() -> tuple[GPT2LMHeadModel, GPT2LMHeadModel, float]:
    """float32 and int8 models with the same weights, and the seconds ``quantize`` took."""
    keras.utils.set_random_seed(0)
    config = GPT2Config.from_preset("gpt2", **NO_DROPOUT)
    fp32 = GPT2LMHeadModel(config)
    int8 = GPT2LMHeadModel(config.copy())
    int8.set_weights(fp32.get_weights())
    start = time.perf_counter()
    int8.quantize("int8")
    return fp32, int8, time.perf_counter() - start


def weight_bytes(model: keras.Model) -> dict[str, int]:
    """Bytes of the model's variables by dtype."""
    out: dict[str, int] = {}
    for v in model.weights:
        dtype = keras.backend.standardize_dtype(v.dtype)
        out[dtype] = out.get(dtype, 0) + int(np.prod(v.shape)) * np.dtype(dtype).itemsize
    return out


# --------------------------------------------------------------------------- timing
def forward_fn(model: GPT2LMHeadModel, ids: tf.Tensor, mode: str) -> Callable[[], np.ndarray]:
    def call(ids):
        return model(input_ids=ids, use_cache=False).logits

    fn = call if mode == "eager" else tf.function(call, jit_compile=mode == "xla")
    return lambda: fn(ids).numpy()


def errors(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    diff = np.abs(got - ref)
    return {
        "max": float(diff.max()),
        "median": float(np.median(diff)),
        "std": float(ref.std()),
        "top1": float((got.argmax(-1) == ref.argmax(-1)).mean()),
    }


def forward_case(models: dict, shape: tuple[int, int], rounds: dict[str, int]) -> tuple[list, dict]:
    """Timing rows (mode, variant, median, best, ratio, first call) and the int8 error at
    ``shape``; ``rounds`` by mode."""
    ids = tf.constant(np.random.default_rng(1).integers(0, 50257, shape), tf.int32)
    rows, error = [], {}
    for mode in MODES:
        fns = {name: forward_fn(model, ids, mode) for name, model in models.items()}
        start = {}
        for name, fn in fns.items():  # first call: traces/compiles
            t0 = time.perf_counter()
            out = fn()
            start[name] = time.perf_counter() - t0
            if mode == "xla":
                error.setdefault("outputs", {})[name] = out
            del out
        times = interleaved(fns, rounds[mode])
        anchor = statistics.median(times["float32"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append((mode, name, med, min(ts), anchor / med, start[name]))
    outputs = error.pop("outputs")
    error = errors(outputs["int8"], outputs["float32"])
    return rows, error


def decode_case(models: dict, new_tokens: int, rounds: int) -> tuple[list, int]:
    """Rows (mode, variant, median s, tokens/s, ratio) and the tokens int8 shares with fp32."""
    prompt = np.random.default_rng(2).integers(0, 50257, (1, PROMPT)).astype(np.int32)
    options = dict(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    rows, shared = [], 0
    for mode, jit in (("xla", True), ("graph", False)):
        fns = {
            name: (lambda m=model, j=jit: np.asarray(m.generate(prompt, jit_compile=j, **options)))
            for name, model in models.items()
        }
        outs = {name: fn() for name, fn in fns.items()}  # compiles
        if mode == "xla":
            same = outs["int8"][0, PROMPT:] == outs["float32"][0, PROMPT:]
            shared = int(np.argmin(same)) if not same.all() else new_tokens
        times = interleaved(fns, rounds)
        anchor = statistics.median(times["float32"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append((mode, name, med, new_tokens / med, anchor / med))
    return rows, shared


# --------------------------------------------------------------------------- report
def machine_facts(threads: int) -> list[str]:
    info = cpu_info()
    return [
        f"- CPU: {info.describe()}; {os.cpu_count()} logical cores, {threads} TensorFlow "
        "threads (intra-op and inter-op)",
        f"- TensorFlow {tf.__version__} (oneDNN ops: {tf_onednn_enabled()}), Keras "
        f"{keras.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        "- Shared machine: other jobs ran on the same cores; variants are interleaved round by "
        "round and the median is the figure to read",
    ]


def report(args, command, memory, quantize_s, forward, decode, loads) -> str:
    fp32, int8 = memory["float32"], memory["int8"]
    total = {name: sum(m.values()) for name, m in memory.items()}
    lines = [
        "# Keras int8 quantization of gpt2_dual.tf (gpt2 124M shape, random weights)",
        "",
        f"Command: `{command}`",
        "",
        *machine_facts(args.threads),
        f"- Load average (1 min) before / after: {loads[0]:.2f} / {loads[1]:.2f}",
        "",
        "## Weight memory",
        "",
        "| model | total | by dtype |",
        "|---|---|---|",
    ]
    for name, m in (("float32", fp32), ("int8", int8)):
        parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(m.items()))
        lines.append(f"| {name} | {total[name] / 1e6:.1f} MB | {parts} |")
    lines += [
        "",
        f"int8 / float32: {total['int8'] / total['float32']:.3f} "
        f'({total["float32"] / total["int8"]:.2f}x smaller); `quantize("int8")` took '
        f"{quantize_s:.1f} s.",
        "",
        "## Forward latency (no cache, full logits)",
        "",
        "| shape | mode | variant | median ms | best ms | float32 / int8 (median) | first call s |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape, (rows, _) in forward.items():
        for mode, name, med, best, ratio, first in rows:
            lines.append(
                f"| {shape} | {mode} | {name} | {med * 1e3:.1f} | {best * 1e3:.1f} | "
                f"{ratio:.2f} | {first:.1f} |"
            )
    lines += [
        "",
        "## int8 logits against float32 (XLA outputs)",
        "",
        "| shape | max abs diff | median abs diff | logits std | top-1 agreement |",
        "|---|---|---|---|---|",
    ]
    for shape, (_, e) in forward.items():
        lines.append(
            f"| {shape} | {e['max']:.3g} | {e['median']:.3g} | {e['std']:.3g} | "
            f"{e['top1'] * 100:.1f}% |"
        )
    rows, shared = decode
    lines += [
        "",
        f"## Greedy decoding (batch 1, {PROMPT}-token prompt, {args.new_tokens} new tokens)",
        "",
        "| mode | variant | median s | tokens/s | float32 / int8 (median) |",
        "|---|---|---|---|---|",
    ]
    for mode, name, med, tps, ratio in rows:
        lines.append(f"| {mode} | {name} | {med:.2f} | {tps:.1f} | {ratio:.2f} |")
    lines += [
        "",
        f"int8 greedy tokens equal to float32's before the first difference (XLA): {shared} "
        f"of {args.new_tokens}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1x128 only, 2 rounds, 16 tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.new_tokens = args.new_tokens or (16 if args.quick else 64)
    tf.get_logger().setLevel("ERROR")  # each mode's tf.function counts as a retrace: noise
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    command = "python benchmarks/bench_keras_int8.py " + " ".join(sys.argv[1:])
    loads = [os.getloadavg()[0]]
    print("\n".join(machine_facts(args.threads)), flush=True)
    fp32, int8, quantize_s = make_models()
    models = {"float32": fp32, "int8": int8}
    memory = {name: weight_bytes(m) for name, m in models.items()}
    # 8x512 without XLA: one timed call after the first (int8 takes 20-25 s a call there)
    cases = {"1x128": dict.fromkeys(MODES, 3 if args.quick else 7)}
    if not args.quick:
        cases["8x512"] = {"eager": 1, "graph": 1, "xla": 2}
    forward = {}
    for shape, rounds in cases.items():
        forward[shape] = forward_case(models, tuple(map(int, shape.split("x"))), rounds)
        print(shape, forward[shape], flush=True)
    decode = decode_case(models, args.new_tokens, 2 if args.quick else 3)
    print(decode, flush=True)
    loads.append(os.getloadavg()[0])
    text = report(args, command.strip(), memory, quantize_s, forward, decode, loads)
    if args.quick and args.out == RESULTS:
        print(text)
        return
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
