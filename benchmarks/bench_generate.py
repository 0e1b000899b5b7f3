"""Greedy generation speed on this CPU: gpt2_dual (PyTorch and Keras/TF) against the tools people
use now, and against the machine's own limit.

Case: a gpt2-small-shaped model with random weights, a 16-token prompt, 64 new tokens (no eos:
every row runs all 64 steps), greedy, batch 1 and batch 8, ``--threads`` threads. Each library
runs in a fresh subprocess; each row gives the first call (compile and warm-up included) and the
median of ``--repeats`` later calls, as new tokens per second.

Decoding one token reads every weight once (494 MB in float32), so memory bandwidth bounds
batch 1. The ``floor`` rows measure this machine's weight-read rate: matrix-vector products over
that many bytes of float32 weights, cold in cache (MKL and oneDNN, the faster counts); as
tokens/s it is about the most a float32 implementation reaches at batch 1 (XLA's fused program
can beat it a little), and every batch-1 row is also given as a percentage of it.

Rows: ``gpt2_dual.pt`` (dynamic and static cache, float32 and bfloat16; float32 once more on
each CPU path, forced: ``-onednn`` keeps oneDNN-packed weights, ``-mkl`` runs PyTorch's own
kernels, so one run on any CPU shows what its rule chose against the other), ``transformers``
(PyTorch 4.x ``generate``, sdpa, float32 and bfloat16), ``gpt2_dual.tf`` (``generate``: one XLA
program), ``keras_hub`` (``GPT2CausalLM.generate``, XLA on and off) and ``transformers.tf``
(``TFGPT2LMHeadModel.generate`` under ``tf.function(jit_compile=True)``, tf-keras).

Usage:
    python benchmarks/bench_generate.py                       # all rows, 2 threads
    python benchmarks/bench_generate.py --libraries gpt2_dual.pt transformers floor
    python benchmarks/bench_generate.py --libraries gpt2_dual.pt transformers --breakdown
                                              # + where each PyTorch row's time goes
Writes ``benchmarks/results/generate_cpu_<cpu family>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MARK = "@@ROW "
PROMPT, NEW, VOCAB = 16, 64, 50257
WEIGHT_BYTES = (124_439_808 - 786_432) * 4  # gpt2-small without wpe (one row read a step)


# --------------------------------------------------------------------------- runners
def _torch_case(dtype_name: str) -> tuple[Callable, Callable]:
    import torch

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    return (lambda b: torch.randint(0, VOCAB, (b, PROMPT))), dtype


def run_gpt2_dual_pt(variant: str) -> Callable[[int], Callable[[], object]]:
    """``cache-dtype[-path]``: ``path`` forces float32 products onto ``onednn`` (kept one-row
    packs in ``generate``) or ``mkl`` (PyTorch's own), whatever this CPU's rule says."""
    from gpt2_dual import GPT2Config
    from gpt2_dual.pt import GPT2LMHeadModel
    from gpt2_dual.pt.linear import use_onednn

    cache, dtype_name, *path = variant.split("-")
    if path:
        use_onednn(path[0] == "onednn")
    ids_of, dtype = _torch_case(dtype_name)
    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()
    model = model.to(dtype)

    def make(batch: int):
        ids = ids_of(batch)
        kw = dict(max_new_tokens=NEW, eos_token_id=None, pad_token_id=0, cache_implementation=cache)
        return lambda: model.generate(ids, **kw)

    return make


def run_transformers(variant: str) -> Callable[[int], Callable[[], object]]:
    import torch
    import transformers

    cache, dtype_name = variant.split("-")
    ids_of, dtype = _torch_case(dtype_name)
    config = transformers.GPT2Config(attn_implementation="sdpa")
    model = transformers.GPT2LMHeadModel(config).eval().to(dtype)

    def make(batch: int):
        ids = ids_of(batch)
        kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
        if cache == "static":
            kw["cache_implementation"] = "static"

        def call():
            with torch.inference_mode():
                return model.generate(ids, attention_mask=torch.ones_like(ids), **kw)

        return call

    return make


def run_gpt2_dual_tf(variant: str) -> Callable[[int], Callable[[], object]]:
    import numpy as np

    from gpt2_dual import GPT2Config
    from gpt2_dual.tf import GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
    rng = np.random.default_rng(0)

    def make(batch: int):
        ids = rng.integers(0, VOCAB, (batch, PROMPT))
        return lambda: np.asarray(model.generate(ids, max_new_tokens=NEW, eos_token_id=None))

    return make


def run_keras_hub(variant: str) -> Callable[[int], Callable[[], object]]:
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=12, num_heads=12, hidden_dim=768,
        intermediate_dim=3072, max_sequence_length=1024,
    )  # fmt: skip
    model = keras_hub.models.GPT2CausalLM(backbone, None)
    model.compile(sampler="greedy")
    model.jit_compile = variant == "xla"
    rng = np.random.default_rng(0)

    def make(batch: int):
        ids = np.zeros((batch, PROMPT + NEW), np.int32)
        ids[:, :PROMPT] = rng.integers(0, VOCAB, (batch, PROMPT))
        mask = np.zeros_like(ids, dtype=bool)
        mask[:, :PROMPT] = True
        inputs = {"token_ids": ids, "padding_mask": mask}
        return lambda: model.generate(inputs, stop_token_ids=None)

    return make


def run_transformers_tf(variant: str) -> Callable[[int], Callable[[], object]]:
    import numpy as np
    import tensorflow as tf
    import transformers

    model = transformers.TFGPT2LMHeadModel(transformers.GPT2Config())
    xla = tf.function(model.generate, jit_compile=True)
    rng = np.random.default_rng(0)

    def make(batch: int):
        ids = tf.constant(rng.integers(0, VOCAB, (batch, PROMPT)), tf.int32)
        mask = tf.ones_like(ids)
        kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
        return lambda: xla(ids, attention_mask=mask, **kw)

    return make


def run_floor(variant: str) -> Callable[[int], Callable[[], object]]:
    """Matrix-vector products over WEIGHT_BYTES of float32 weights, cold in cache: MKL on
    ``(in, out)`` weights or oneDNN on ``(out, in)`` ones (``variant``)."""
    import torch

    shape = (768, 3072) if variant == "mkl gemv" else (3072, 768)
    mats = [torch.randn(shape) for _ in range(WEIGHT_BYTES // (768 * 3072 * 4))]
    x = torch.randn(1, 768)

    def product(w):
        if variant == "mkl gemv":
            return torch.mm(x, w)
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")

    def make(batch: int):
        return lambda: [[product(w) for w in mats] for _ in range(NEW)]  # NEW weight reads

    return make


RUNNERS = {
    "gpt2_dual.pt": (
        run_gpt2_dual_pt,
        [
            "dynamic-float32",
            "static-float32",
            "dynamic-bfloat16",
            "dynamic-float32-onednn",
            "dynamic-float32-mkl",
        ],
    ),  # fmt: skip
    "transformers": (run_transformers, ["dynamic-float32", "static-float32", "dynamic-bfloat16"]),
    "gpt2_dual.tf": (run_gpt2_dual_tf, ["xla"]),
    "keras_hub": (run_keras_hub, ["xla", "no-xla"]),
    "transformers.tf": (run_transformers_tf, ["xla"]),
    "floor": (run_floor, ["mkl gemv", "onednn gemv"]),
}


# --------------------------------------------------------------------------- worker
def _limit_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except ImportError:
        pass


def worker(library: str, args: argparse.Namespace) -> None:
    """Time every variant and batch of ``library``; one JSON line per row."""
    _limit_threads(args.threads)
    runner, variants = RUNNERS[library]
    for variant in variants:
        for batch in args.batches:
            row = dict(library=library, variant=variant, batch=batch)
            try:
                call = runner(variant)(batch)  # may set the kernel path (forced variants)
                row["path"] = kernel_path(library, variant)
                row.update(_time(call, batch, args.repeats))
                if args.breakdown and library in ("gpt2_dual.pt", "transformers"):
                    row["breakdown"] = breakdown(call)
            except Exception as err:  # noqa: BLE001 - reported in the table
                row["error"] = f"{type(err).__name__}: {str(err)[:160]}"
            sys.stdout.write(MARK + json.dumps(row) + "\n")
            sys.stdout.flush()
            if library == "floor":
                break  # one batch: the rate of reading the weights


def kernel_path(library: str, variant: str) -> str:
    """Which kernels the row's products run on, read from the libraries in this process."""
    if library in ("gpt2_dual.tf", "transformers.tf"):
        return "XLA (one compiled program)"
    if library == "keras_hub":
        return "XLA" if variant == "xla" else "TF graph ops (oneDNN)"
    if library == "floor":
        return "MKL sgemv" if variant.startswith("mkl") else "oneDNN matmul"
    import torch

    bf16 = variant.endswith("bfloat16")
    if library == "transformers":
        blas = "MKL" if torch.backends.mkl.is_available() else "BLAS"
        return "PyTorch bf16 matmul (oneDNN)" if bf16 else f"PyTorch addmm ({blas})"
    from gpt2_dual.pt.linear import _STATE
    from gpt2_dual.pt.packing import bf16_packing_available

    if bf16:
        return "oneDNN, packed bf16 weights" if bf16_packing_available() else "PyTorch bf16"
    return "oneDNN matmul" if _STATE["onednn"] else "PyTorch addmm (MKL)"


#: torch.profiler op names by the part of a decode step they are (the rest: "other ops").
PARTS = {
    "products": ("_linear_pointwise", "addmm", "aten::mm", "aten::bmm", "int8pack", "linear"),
    "attention": ("scaled_dot_product", "softmax", "aten::matmul"),
    "cache": ("aten::cat", "index_copy", "index_select"),
    "LM head argmax": ("argmax",),
}


def breakdown(call: Callable[[], object]) -> dict[str, float]:
    """Where one call's time goes: each part's share of the wall time (ops' own CPU time on
    the calling thread, by ``PARTS``), and ``outside ops`` (Python and dispatch between ops:
    wall time less all ops' own time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        call()
        wall = (time.perf_counter() - start) * 1e6
    shares = dict.fromkeys([*PARTS, "other ops"], 0.0)
    for event in prof.key_averages():
        part = next((k for k, keys in PARTS.items() if any(n in event.key for n in keys)), None)
        shares[part or "other ops"] += event.self_cpu_time_total / wall
    shares["outside ops"] = max(0.0, 1 - sum(shares.values()))
    return shares


def _time(call: Callable[[], object], batch: int, repeats: int) -> dict:
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return dict(first_s=first, median_s=median, tokens_per_s=batch * NEW / median)


# --------------------------------------------------------------------------- driver
def cpu_facts() -> dict[str, str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), platform.processor())  # fmt: skip
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                      if ln.startswith("flags")), []))  # fmt: skip
    vendor = "AMD" if "AMD" in model else "Intel" if "Intel" in model else platform.machine()
    family = re.sub(r"[^a-z0-9]+", "-", " ".join(model.split()[:3]).lower()).strip("-")
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return dict(model=model, vendor=vendor, family=family or "unknown",
                flags=" ".join(f for f in wanted if f in flags) or "none")  # fmt: skip


def _run(library: str, args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    env["OMP_NUM_THREADS"] = str(args.threads)
    if library == "transformers.tf":
        env["TF_USE_LEGACY_KERAS"] = "1"
    command = [sys.executable, __file__, "--worker", library, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--batches", *map(str, args.batches),
               *(["--breakdown"] if args.breakdown else [])]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    rows = [json.loads(ln[len(MARK) :]) for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode != 0 or not rows:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])[:300]
        rows.append(dict(library=library, variant="-", batch="-", error=tail))
    return rows


def _dtype(variant: str) -> str:
    """The dtype part of a PyTorch variant (``cache-dtype[-path]``); "" for the others."""
    parts = variant.split("-")
    return parts[1] if len(parts) > 1 else ""


def table(rows: list[dict]) -> list[str]:
    rates = [r["tokens_per_s"] for r in rows if r["library"] == "floor" and "error" not in r]
    floor = max(rates, default=None)  # the faster way this machine reads the weights
    base = {(r["batch"], _dtype(r["variant"])): r["tokens_per_s"] for r in rows
            if r["library"] == "transformers" and r["variant"].startswith("dynamic")
            and "error" not in r}  # fmt: skip
    out = ["| library | variant | kernel path | batch | first call (s) | tokens/s | vs "
           "transformers (same dtype) | % of fp32 floor |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            out.append(f"| {r['library']} | {r['variant']} | {r.get('path', '')} | "
                       f"{r['batch']} | error: {r['error']} | | | |")  # fmt: skip
            continue
        ref = base.get((r["batch"], _dtype(r["variant"])))
        ratio = f"{r['tokens_per_s'] / ref:.2f}x" if ref and r["library"] != "floor" else ""
        pct = f"{100 * r['tokens_per_s'] / floor:.0f}%" if floor and r["batch"] == 1 else ""
        out.append(f"| {r['library']} | {r['variant']} | {r['path']} | {r['batch']} | "
                   f"{r['first_s']:.2f} | {r['tokens_per_s']:.1f} | {ratio} | {pct} |")  # fmt: skip
    return out


def breakdown_table(rows: list[dict]) -> list[str]:
    """``--breakdown``: each profiled row's parts as shares of one call's wall time."""
    rows = [r for r in rows if "breakdown" in r]
    if not rows:
        return []
    parts = list(rows[0]["breakdown"])
    out = ["Where a call's time goes (torch.profiler, one call; ops' own time on the calling "
           "thread as a share of the wall time; `outside ops` = Python and dispatch):", "",
           "| library | variant | batch | " + " | ".join(parts) + " |",
           "|---|---|---|" + "---|" * len(parts)]  # fmt: skip
    for r in rows:
        shares = " | ".join(f"{100 * r['breakdown'][p]:.1f}%" for p in parts)
        out.append(f"| {r['library']} | {r['variant']} | {r['batch']} | {shares} |")
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--libraries", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--breakdown", action="store_true", help="profile one call per PyTorch row: its parts"
    )
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args)
    cpu = cpu_facts()
    rows = [row for library in args.libraries for row in _run(library, args)]
    command = "python benchmarks/bench_generate.py " + " ".join(sys.argv[1:])
    lines = [
        f"# Greedy generation on {cpu['model']}", "",
        f"- CPU: {cpu['model']} (vendor {cpu['vendor']}, flags: {cpu['flags']}), "
        f"{os.cpu_count()} logical cores, {args.threads} threads",
        f"- command: `{command.strip()}`",
        f"- case: gpt2-small shape, random weights, {PROMPT}-token prompt, {NEW} new tokens, "
        "greedy, no eos; median of later calls; first call includes compile/warm-up",
        f"- date: {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}", "",
        *table(rows), "", *breakdown_table(rows),
    ]  # fmt: skip
    out = args.out or Path(__file__).parent / "results" / f"generate_cpu_{cpu['family']}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
