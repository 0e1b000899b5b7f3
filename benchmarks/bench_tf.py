"""gpt2_dual.tf on this CPU: forward and training step, each TensorFlow path, against
KerasHub and gpt2_dual.pt in the same process and the same minutes.

GPT-2 124M shape (12 layers, 12 heads, 768 wide, vocabulary 50257), random weights, float32,
full attention mask, no cache, LM logits over the vocabulary. Variants, timed in interleaved
rounds (a burst of load from other processes hits all of them alike):

- ``gpt2_dual.tf graph``: ``tf.function`` without XLA (TensorFlow's oneDNN kernels on x86);
  ``gpt2_dual.tf XLA``: ``tf.function(jit_compile=True)``; ``gpt2_dual.tf eager``: a plain call.
  The row the CPU rule picks for ``predict``/``evaluate`` is marked (``gpt2_dual.cpu``).
- ``KerasHub XLA`` (the anchor of the ratios) and ``KerasHub graph``: ``GPT2Backbone`` plus its
  tied ``token_embedding(..., reverse=True)`` head.
- ``gpt2_dual.pt``: the same weights as our TF model (saved, then loaded), eager, on the CPU
  rule's float32 path; its logits are compared with ours.
- Training step (batch 4 x 128, AdamW, the model's own LM loss): ``train_on_batch`` with
  ``jit_compile`` True and False; the rule's row for ``fit`` is marked.

The float32 GEMM peak is measured in the same run (``machine.py``: best of PyTorch's MKL and
oneDNN and TensorFlow's graph/XLA products on large shapes); every forward row gives the share
of it that it reaches (FLOPs: ``machine.gpt2_forward_flops``; training step: 3x forward).

Usage:
    python benchmarks/bench_tf.py                  # writes results/tf_cpu_<cpu family>.md
    python benchmarks/bench_tf.py --quick          # 1x128 only, 3 rounds, no training
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version

import numpy as np

import machine  # benchmarks/machine.py

VOCAB, LAYERS, HEADS, WIDTH, POSITIONS = 50257, 12, 12, 768, 1024
ANCHOR = "KerasHub XLA"


def limit_threads(threads: int) -> None:
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(threads)


def build():
    """Our TF LM, the same weights in gpt2_dual.pt, and KerasHub's LM (its own weights)."""
    import keras
    import keras_hub

    from gpt2_dual import GPT2Config
    from gpt2_dual.pt import GPT2LMHeadModel as PtLM
    from gpt2_dual.tf import GPT2LMHeadModel as TfLM

    keras.utils.set_random_seed(0)
    config = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ours = TfLM(config)
    ours({"input_ids": np.zeros((1, 2), np.int32)})
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        pt = PtLM.from_pretrained(folder)
    hub = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=WIDTH,
        intermediate_dim=4 * WIDTH, max_sequence_length=POSITIONS, dropout=0.0,
    )  # fmt: skip
    return config, ours, pt, hub


def forward_variants(ours, pt, hub, shape: tuple[int, int]) -> dict[str, Callable]:
    import tensorflow as tf
    import torch

    rng = np.random.default_rng(1)
    ids_np = rng.integers(0, VOCAB, shape, dtype=np.int32)
    ids, mask = tf.constant(ids_np), tf.ones(shape, tf.int32)
    ids_pt = torch.from_numpy(ids_np).long()

    def ours_call(ids, mask):
        out = ours({"input_ids": ids, "attention_mask": mask}, use_cache=False, training=False)
        return out["logits"]

    def hub_call(ids, mask):
        hidden = hub({"token_ids": ids, "padding_mask": mask}, training=False)
        return hub.token_embedding(hidden, reverse=True)

    def pt_call():
        with torch.inference_mode():
            return pt(input_ids=ids_pt, use_cache=False).logits.numpy()

    graph, xla = tf.function(ours_call), tf.function(ours_call, jit_compile=True)
    hub_xla, hub_graph = tf.function(hub_call, jit_compile=True), tf.function(hub_call)
    return {
        "gpt2_dual.tf graph": lambda: graph(ids, mask).numpy(),
        "gpt2_dual.tf XLA": lambda: xla(ids, mask).numpy(),
        "gpt2_dual.tf eager": lambda: ours_call(ids, mask).numpy(),
        ANCHOR: lambda: hub_xla(ids, mask).numpy(),
        "KerasHub graph": lambda: hub_graph(ids, mask).numpy(),
        "gpt2_dual.pt": pt_call,
    }


def train_variants(config) -> dict[str, Callable]:
    import keras

    from gpt2_dual.tf import GPT2LMHeadModel

    ids = np.random.default_rng(2).integers(0, VOCAB, (4, 128), dtype=np.int32)
    variants = {}
    for name, jit in (("train step XLA", True), ("train step graph", False)):
        keras.utils.set_random_seed(0)
        model = GPT2LMHeadModel(config)
        model.compile(optimizer=keras.optimizers.AdamW(1e-5), jit_compile=jit)
        variants[name] = lambda m=model: m.train_on_batch({"input_ids": ids, "labels": ids})
    return variants


def table(label: str, times, flops: float, peak: float, rule: str, diffs: dict) -> list[str]:
    anchor = times.get(ANCHOR)
    pt = times.get("gpt2_dual.pt")
    out = []
    for name, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        vs_anchor = f"{min(anchor) / best:.2f}x" if anchor else ""
        vs_pt = f"{min(pt) / best:.2f}x" if pt else ""
        mark = " (rule)" if name == rule else ""
        out.append(
            f"| {label} | {name}{mark} | {best * 1e3:.1f} | {med * 1e3:.1f} | {vs_anchor} | "
            f"{vs_pt} | {machine.percent_of_peak(flops, best, peak)} | {diffs.get(name, '')} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", nargs="+", default=["1x128", "8x512"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1x128 only, 3 rounds, no training")
    parser.add_argument("--out", default=None, help="default: results/tf_cpu_<cpu family>.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.shapes, args.rounds = ["1x128"], 3
    limit_threads(args.threads)
    from gpt2_dual.cpu import tf_forward_path
    from gpt2_dual.tf.training import tf_onednn_enabled

    onednn = tf_onednn_enabled()
    forward_rule = f"gpt2_dual.tf {tf_forward_path(onednn).replace('xla', 'XLA')}"
    train_rule = f"train step {tf_forward_path(onednn, 'train').replace('xla', 'XLA')}"
    facts = machine.facts(args.threads)
    peaks = {**machine.gemm_peak_torch(), **machine.gemm_peak_tf()}
    peak_name, peak = max(peaks.items(), key=lambda kv: kv[1])
    print(f"GEMM peak {peak:.0f} GFLOP/s ({peak_name})", flush=True)
    config, ours, pt, hub = build()
    rows = []
    for shape_text in args.shapes:
        shape = tuple(int(n) for n in shape_text.split("x"))
        variants = forward_variants(ours, pt, hub, shape)
        ref = variants["gpt2_dual.tf graph"]()
        diffs = {n: f"{np.abs(variants[n]() - ref).max():.1e}" for n in
                 ("gpt2_dual.tf XLA", "gpt2_dual.tf eager", "gpt2_dual.pt")}  # fmt: skip
        times = machine.interleaved(variants, args.rounds, warmup=2)
        flops = machine.gpt2_forward_flops(config, *shape)
        rows += table(f"forward {shape_text}", times, flops, peak, forward_rule, diffs)
        print("\n".join(rows[-len(variants):]), flush=True)
    if not args.quick:
        times = machine.interleaved(train_variants(config), max(3, args.rounds - 2), warmup=2)
        flops = 3 * machine.gpt2_forward_flops(config, 4, 128)
        rows += table("train 4x128", times, flops, peak, train_rule, {})
        print("\n".join(rows[-2:]), flush=True)
    versions = ", ".join(f"{p} {version(p)}" for p in ("tensorflow", "keras", "keras-hub", "torch"))
    command = "python benchmarks/bench_tf.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# gpt2_dual.tf on CPU: each TensorFlow path against KerasHub and gpt2_dual.pt", "",
        f"Command: `{command.strip()}`", "", *facts, f"- {versions}",
        f"- TensorFlow oneDNN kernels on: {onednn}; float32 GEMM peak measured in this run: "
        f"{peak:.0f} GFLOP/s ({peak_name}); all peaks: "
        + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()),
        f"- 1-minute load average at the end: {__import__('os').getloadavg()[0]:.2f}", "",
        f"Wall clock, {args.rounds} interleaved rounds after 2 warm-up calls each. `vs KerasHub`"
        " and `vs pt` = their best time / this row's best (> 1: this row is faster). `% peak` "
        "= FLOPs / best time / GEMM peak. `max abs diff` = against `gpt2_dual.tf graph`'s "
        "logits (gpt2_dual.pt holds the same weights; KerasHub has its own).", "",
        "| case | variant | best ms | median ms | vs KerasHub XLA | vs pt | % peak "
        "| max abs diff |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
    ]  # fmt: skip
    out = machine.results_path("tf_cpu") if args.out is None else args.out
    from gpt2_dual._io import atomic_write_text

    atomic_write_text(out, "\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
