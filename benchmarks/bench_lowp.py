"""Low precision on this CPU: bfloat16 (gpt2_dual.pt and gpt2_dual.tf) and int8 dynamic
quantization (gpt2_dual.pt through torch.ao), each against float32 of the same framework.

Case: a gpt2-small-shaped LM with random weights (seeded; GPT-2's init: N(0, 0.02), residual
projections 0.02 / sqrt(2 n_layer)), dropout off, ``--threads`` threads. Forward 1x128 and
8x512 (no cache; logits over the vocabulary) and greedy decoding (16-token prompt, no eos),
batch 1 and 8, as new tokens per second. Every variant's logits are compared with float32's
before timing: max |diff|, that over the float32 logits' standard deviation, and top-1
agreement over all positions; decoding reports how many greedy tokens equal float32's.

Variants:

- PyTorch: float32 on the CPU rule's path (``gpt2_dual.cpu.float32_path``); bfloat16
  (``model.to(torch.bfloat16)``: oneDNN's bf16 GEMMs where the CPU has them, packed weights
  when decoding); int8 dynamic quantization of every Conv1D/Linear (LM head included) with
  ``torch.ao.nn.quantized.dynamic.Linear``, as ``quantize_dynamic`` makes it (per-tensor
  weights, 7-bit activations) and at its most precise (per-channel weights, 8-bit activations).
- TensorFlow: float32 under XLA and in graph mode (``tf.function`` without XLA: TensorFlow's
  oneDNN kernels), dtype policies ``"bfloat16"`` (graph and XLA) and ``"mixed_bfloat16"``
  (graph); ``generate`` with ``jit_compile`` True and False.
- CPUs without bf16 arithmetic, emulated on this one (PyTorch only; fresh processes):
  ``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` (AVX-512 without bf16, as Skylake-SP to Ice Lake: oneDNN
  widens bf16 in registers) and ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (PyTorch
  then finds no oneDNN bf16 and uses its own kernels, as on an AVX2-only CPU). The kernel
  choices are those CPUs'; the timings are this core's, so only the ratio bf16/fp32 carries.

Each framework runs in its own subprocess; variants are timed in interleaved rounds (other
work on a shared machine hits all of them alike) and the tables give the best and the median.

Usage:
    python benchmarks/bench_lowp.py            # full run (~6 min on 2 idle cores)
    python benchmarks/bench_lowp.py --quick    # 1x128 and batch-1 decoding only, fewer rounds
    python benchmarks/bench_lowp.py --threads 1 --clock cpu   # busy machine: 1 thread, CPU time
Writes ``benchmarks/results/lowp_cpu_<cpu family>.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np

import machine  # benchmarks/machine.py
from gpt2_dual._io import atomic_write_text
from gpt2_dual.cpu import bfloat16_path, cpu_info

MARK = "@@ROW "
#: Clock of the timings: wall time, or this process's CPU time (``--clock cpu``: time other
#: processes take from the cores is not counted; with 1 thread it is the fairest on a shared
#: machine, with more it also counts threads spinning while they wait for each other).
CLOCK: Callable[[], float] = time.perf_counter
VOCAB, PROMPT = 50257, 16
EMULATIONS = {
    "avx512-no-bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}
#: ``gpt2_dual.cpu.bfloat16_path`` of the CPU kind each emulation stands for.
EMULATED_PATH = {"avx512-no-bf16": "avx512", "avx2": "none"}


# --------------------------------------------------------------------------- measuring
def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, *, warm_up: bool = True
) -> dict[str, list]:
    """Seconds per call of each variant, measured round-robin (after one warm-up call each)."""
    for fn in variants.values() if warm_up else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return times


def logit_error(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max |diff|, max |diff| / std(reference), top-1 agreement over positions (row by row:
    8x512 logits are 823 MB each in float32)."""
    diff, agree = 0.0, 0
    for row, ref in zip(logits, reference, strict=True):
        diff = max(diff, float(np.max(np.abs(row.astype(np.float32) - ref))))
        agree += int(np.sum(row.argmax(-1) == ref.argmax(-1)))
    top1 = agree / (reference.size // reference.shape[-1])
    return dict(max_abs=diff, rel_std=diff / float(reference.std()), top1=top1)


def greedy_agreement(ids: np.ndarray, reference: np.ndarray) -> str:
    """``"same n/N"``: new tokens equal to the reference's, counted up to the first difference
    in each row (after one, the rows continue from different text)."""
    same = 0
    for row, ref in zip(ids[:, PROMPT:], reference[:, PROMPT:], strict=True):
        differ = np.nonzero(row != ref)[0]
        same += len(row) if len(differ) == 0 else int(differ[0])
    return f"{same}/{reference[:, PROMPT:].size}"


def emit(**row) -> None:
    sys.stdout.write(MARK + json.dumps(row) + "\n")
    sys.stdout.flush()


def timing(times: list[float], tokens: int | None = None) -> dict[str, float]:
    best, median = min(times), statistics.median(times)
    row = dict(best_ms=1e3 * best, median_ms=1e3 * median)
    if tokens:
        row["tokens_per_s"] = tokens / median
    return row


# --------------------------------------------------------------------------- PyTorch
def pt_models(int8: bool) -> dict[str, object]:
    import torch

    from gpt2_dual import GPT2Config
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    fp32 = GPT2LMHeadModel(GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()
    models = {"fp32": fp32, "bf16": copy.deepcopy(fp32).to(torch.bfloat16)}
    if int8:
        models["int8, torch.ao defaults"] = int8_copy(fp32, per_channel=False, reduce_range=True)
        models["int8, per-channel, 8-bit act."] = int8_copy(
            fp32, per_channel=True, reduce_range=False
        )
    return models


def int8_copy(model, *, per_channel: bool, reduce_range: bool):
    """A copy of ``model`` whose Conv1D/Linear layers (LM head included: an int8 copy of the
    tied matrix) are torch.ao dynamic int8 Linears: int8 weights (per tensor or per output
    channel), activations quantized per tensor at each call (7 bits with ``reduce_range``, as
    torch.ao's module always does on x86; 8 bits are safe with VNNI)."""
    import torch
    from torch import nn

    from gpt2_dual.pt.linear import Conv1D, Linear

    with warnings.catch_warnings():  # torch.ao.quantization and quantized tensors: deprecated
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

        class Int8(nn.Module):
            def __init__(self, layer: DynamicLinear) -> None:
                super().__init__()
                self.layer = layer

            def forward(self, x):
                packed = self.layer._packed_params._packed_params
                return torch.ops.quantized.linear_dynamic(x, packed, reduce_range)

        copied = copy.deepcopy(model)
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        for parent in list(copied.modules()):
            for name, child in list(parent.named_children()):
                if not isinstance(child, Conv1D | Linear):
                    continue
                weight = child.weight.detach()  # Conv1D: (in, out); Linear: (out, in)
                weight = weight if isinstance(child, Linear) else weight.t()
                plain = nn.Linear(weight.shape[1], weight.shape[0], bias=child.bias is not None)
                with torch.no_grad():
                    plain.weight.copy_(weight)
                    if child.bias is not None:
                        plain.bias.copy_(child.bias)
                plain.qconfig = qconfig
                setattr(parent, name, Int8(DynamicLinear.from_float(plain)))
    return copied


def _logits(model, ids):
    return model(ids, use_cache=False).logits


def pt_path(name: str, emulation: str) -> str:
    import torch

    from gpt2_dual.pt.linear import _STATE
    from gpt2_dual.pt.packing import bf16_packing_available

    if name == "fp32":
        return "oneDNN sgemm" if _STATE["onednn"] else "PyTorch addmm (MKL/BLAS)"
    if name == "bf16":
        kind = EMULATED_PATH.get(emulation) or bfloat16_path(cpu_info())
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return f"bf16 path {kind}: PyTorch's own bf16 kernels (no oneDNN bf16)"
        packed = "; decode: packed weights" if bf16_packing_available() else ""
        return f"bf16 path {kind}: oneDNN bf16{packed}"
    return f"torch.ao dynamic int8 ({torch.backends.quantized.engine} engine, fbgemm)"


def pt_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    emulated = args.worker != "pt"
    where = args.worker if emulated else "this CPU"
    models = pt_models(int8=not emulated)
    shapes = [(1, 128)] if args.quick or emulated else [(1, 128), (8, 512)]
    for shape in shapes:
        ids = torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(1))
        calls = {k: partial(_logits, m, ids) for k, m in models.items()}
        with torch.inference_mode():
            ref = calls["fp32"]().numpy()
            errors = {k: logit_error(fn().float().numpy(), ref) for k, fn in calls.items()}
            del ref
            rounds = args.rounds if shape[1] < 256 else max(2, args.rounds // 2)
            times = interleaved(calls, rounds, warm_up=False)  # warmed up by the errors
        for name in models:
            emit(framework="pt", case=f"forward {shape[0]}x{shape[1]}", variant=name,
                 path=pt_path(name, args.worker), emulation=where, **errors[name],
                 **timing(times[name]))  # fmt: skip
    batches = [1] if args.quick or emulated else [1, 8]
    new = 16 if emulated else args.new_tokens
    for batch in batches:
        seed = torch.Generator().manual_seed(2)
        prompt = torch.randint(0, VOCAB, (batch, PROMPT), generator=seed)
        kw = dict(max_new_tokens=new, eos_token_id=None, pad_token_id=0)
        calls = {k: partial(m.generate, prompt, **kw) for k, m in models.items()}
        ref = calls["fp32"]().numpy()
        same = {k: greedy_agreement(fn().numpy(), ref) for k, fn in calls.items()}
        times = interleaved(calls, max(2, args.rounds // 2), warm_up=False)
        for name in models:
            emit(framework="pt", case=f"decode batch {batch}", variant=name,
                 path=pt_path(name, args.worker), emulation=where, greedy=same[name],
                 **timing(times[name], tokens=batch * new))  # fmt: skip


# --------------------------------------------------------------------------- TensorFlow
TF_FORWARD = (("fp32", "xla"), ("fp32", "graph"), ("bf16", "graph"), ("bf16", "xla"),
              ("mixed_bf16", "graph"))  # fmt: skip
TF_DECODE = (("fp32", "xla"), ("fp32", "graph"), ("bf16", "xla"), ("bf16", "graph"))
TF_POLICY = {"fp32": "float32", "bf16": "bfloat16", "mixed_bf16": "mixed_bfloat16"}


def tf_models() -> dict[str, object]:
    import keras
    import tensorflow as tf

    from gpt2_dual import GPT2Config
    from gpt2_dual.tf import GPT2LMHeadModel

    config = GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    keras.utils.set_random_seed(0)
    models = {}
    for name, policy in TF_POLICY.items():
        models[name] = GPT2LMHeadModel(config.copy(), dtype=policy)
        models[name](np.zeros((1, 4), np.int32))  # builds
    for name in ("bf16", "mixed_bf16"):  # the float32 model's weights, rounded
        for ours, source in zip(models[name].weights, models["fp32"].weights, strict=True):
            ours.assign(tf.cast(source, ours.dtype))
    return models


def _tf_logits(model, ids):
    return model({"input_ids": ids}, use_cache=False, training=False)["logits"]


def tf_path(name: str, mode: str) -> str:
    if mode == "xla":
        return "XLA (Eigen; bf16 dots computed in float32)" if name != "fp32" else "XLA (Eigen)"
    return "graph mode (TensorFlow's oneDNN kernels)"


def tf_worker(args: argparse.Namespace) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    models = tf_models()
    shapes = [(1, 128)] if args.quick else [(1, 128), (8, 512)]
    for shape in shapes:
        ids = tf.constant(np.random.default_rng(1).integers(0, VOCAB, shape), tf.int32)
        calls, errors, ref = {}, {}, None
        for name, mode in TF_FORWARD:  # float32 under XLA first: the reference
            fn = tf.function(partial(_tf_logits, models[name], ids), jit_compile=mode == "xla")
            logits = np.asarray(tf.cast(fn(), tf.float32))  # compiles: also the warm-up call
            ref = logits if ref is None else ref
            errors[f"{name} {mode}"] = logit_error(logits, ref)
            calls[f"{name} {mode}"] = lambda fn=fn: float(fn()[0, 0, 0])  # computed in full
            del logits
        del ref
        rounds = args.rounds if shape[1] < 256 else max(2, args.rounds // 3)
        times = interleaved(calls, rounds, warm_up=False)
        for (name, mode), key in zip(TF_FORWARD, calls, strict=True):
            emit(framework="tf", case=f"forward {shape[0]}x{shape[1]}", variant=key,
                 path=tf_path(name, mode), emulation="this CPU", **errors[key],
                 **timing(times[key]))  # fmt: skip
    for batch in [1] if args.quick else [1, 8]:
        prompt = np.random.default_rng(2).integers(0, VOCAB, (batch, PROMPT)).astype(np.int32)
        calls = {}
        for name, mode in TF_DECODE:
            kw = dict(max_new_tokens=args.new_tokens, eos_token_id=None)
            generate = partial(models[name].generate, prompt, jit_compile=mode == "xla", **kw)
            calls[f"{name} {mode}"] = lambda generate=generate: np.asarray(generate())
        ref = calls["fp32 xla"]()
        same = {k: greedy_agreement(fn(), ref) for k, fn in calls.items()}
        times = interleaved(calls, max(2, args.rounds // 2), warm_up=False)
        for (name, mode), key in zip(TF_DECODE, calls, strict=True):
            emit(framework="tf", case=f"decode batch {batch}", variant=key,
                 path=tf_path(name, mode), emulation="this CPU", greedy=same[key],
                 **timing(times[key], tokens=batch * args.new_tokens))  # fmt: skip


# --------------------------------------------------------------------------- driver
def run_worker(worker: str, args: argparse.Namespace) -> list[dict]:
    """Rows of one worker, run in a fresh process (emulations set their environment there)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=str(args.threads))
    env.update(EMULATIONS.get(worker, {}))
    command = [sys.executable, __file__, "--worker", worker, "--threads", str(args.threads),
               "--rounds", str(args.rounds), "--new-tokens", str(args.new_tokens),
               "--clock", args.clock]  # fmt: skip
    command += ["--quick"] if args.quick else []
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    rows = [json.loads(ln[len(MARK) :]) for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode != 0 or not rows:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])[:400]
        rows.append(dict(framework=worker, case="-", variant="-", path="-", error=tail))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f"{worker}: {len(rows)} rows in {time.perf_counter() - start:.0f} s; peak RSS of "
          f"the workers so far {peak:.1f} GiB", flush=True)  # fmt: skip
    return rows


def table(rows: list[dict]) -> list[str]:
    """One markdown row per measurement; speed-up = float32's median / the variant's, float32
    being the faster fp32 row of the same case in the same worker (PyTorch: the CPU rule's
    path; TF: XLA or graph mode)."""
    out = ["| framework | CPU (emulated?) | case | variant | path taken | best ms | median ms "
           "| tokens/s | speed-up vs best fp32 | max abs diff | / logit std | top-1 or greedy |",
           "|" + "---|" * 12]  # fmt: skip
    for r in rows:
        if "error" in r:
            out.append(f"| {r['framework']} | | | | error: {r['error']} |" + " |" * 7)
            continue
        fp32 = _fp32_row(rows, r)
        ratio = f"{fp32['median_ms'] / r['median_ms']:.2f}x" if fp32 else ""
        rate = f"{r['tokens_per_s']:.1f}" if "tokens_per_s" in r else ""
        agree = r.get("greedy") or f"{100 * r['top1']:.1f}%"
        err = f"{r['max_abs']:.3g} | {r['rel_std']:.3f}" if "max_abs" in r else " | "
        out.append(
            f"| {r['framework']} | {r['emulation']} | {r['case']} | {r['variant']} | "
            f"{r['path']} | {r['best_ms']:.1f} | {r['median_ms']:.1f} | {rate} | {ratio} | "
            f"{err} | {agree} |"
        )
    return out


def _fp32_row(rows: list[dict], row: dict) -> dict | None:
    """The fastest float32 row (median) of the same framework, emulation and case."""
    keys = ("framework", "emulation", "case")
    fp32 = [r for r in rows if "error" not in r and r["variant"].split()[0] == "fp32"
            and all(r.get(k) == row.get(k) for k in keys)]  # fmt: skip
    return min(fp32, key=lambda r: r["median_ms"], default=None)


def machine_facts(args: argparse.Namespace) -> list[str]:
    """``machine.facts`` plus the bf16 rule, the versions and the clock."""
    import torch

    lines = machine.facts(args.threads)
    lines.insert(1, f"- bf16 path by the CPU rule (`gpt2_dual.cpu.bfloat16_path`): "
                 f"{bfloat16_path(cpu_info())}; shared machine: variants interleave, ratios "
                 "are within one worker")  # fmt: skip
    versions = (f"- torch {torch.__version__} (CPU capability "
                f"{torch.backends.cpu.get_cpu_capability()}, quantized engine "
                f"{torch.backends.quantized.engine})")  # fmt: skip
    for name in ("tensorflow", "keras"):  # versions only: TensorFlow loads in its worker
        try:
            versions += f", {name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            versions += f", {name} not installed"
    return [*lines, versions, f"- clock: {args.clock} time; date {time.strftime('%Y-%m-%d')}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1x128 and batch 1 only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (1x128)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--workers", nargs="+", default=["pt", "tf", *EMULATIONS],
                        choices=["pt", "tf", *EMULATIONS])  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 6)
    if args.clock == "cpu":
        global CLOCK
        CLOCK = time.process_time
    if args.worker:
        return (tf_worker if args.worker == "tf" else pt_worker)(args)
    facts = machine_facts(args)
    rows = [row for worker in args.workers for row in run_worker(worker, args)]
    facts.append(f"- 1-minute load average at the end: {os.getloadavg()[0]:.2f}")
    command = "python benchmarks/bench_lowp.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        f"# Low precision on CPU: {cpu_info().model}", "", f"Command: `{command.strip()}`", "",
        *facts, "",
        "gpt2-small shape, random weights (seeded, GPT-2's init), dropout off. Errors are "
        "against float32 of the same framework (logits over 50257 tokens; `/ logit std`: max "
        "abs diff over the float32 logits' standard deviation; top-1: share of positions "
        "whose argmax agrees; greedy: new tokens equal to float32's up to the first "
        f"difference). Decoding: {PROMPT}-token prompt, {args.new_tokens} new tokens "
        "(emulated CPUs: 16). Emulated rows: kernel choices of that CPU kind, timings of this "
        "core, so only their ratio to the fp32 row of the same emulation carries.", "",
        *table(rows), "",
    ])  # fmt: skip
    atomic_write_text(args.out or machine.results_path("lowp_cpu"), text)
    print(text)


if __name__ == "__main__":
    main()
