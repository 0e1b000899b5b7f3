"""gpt2_dual.pt against transformers on this CPU: forward, training step, bf16, loading.

Both libraries run in the same process on the same weights (a gpt2 124M-shaped model with
random weights, dropout off) and the same inputs; every variant's output is compared with
transformers' before it is timed. Variants of our model are measured as well: PyTorch's own
float32 matmuls on the path the CPU rule did not pick (``gpt2_dual.cpu``: oneDNN on AMD x86,
PyTorch's MKL kernels on Intel; ``use_onednn`` flips it) and ``torch.compile``.
Timings interleave the variants round by round, so a burst of load from other processes
hits all of them alike; the table gives the best and the median call. Loading is measured
in fresh subprocesses on a gpt2-medium-shaped checkpoint written by transformers'
``save_pretrained``.

Usage:
    python benchmarks/bench_pt.py                # full run, writes results/pt_cpu_<cpu family>.md
    python benchmarks/bench_pt.py --quick        # no torch.compile variants, fewer rounds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

import gpt2_dual.pt as gpt
import machine  # benchmarks/machine.py
from gpt2_dual import GPT2Config
from gpt2_dual._io import atomic_write_text
from gpt2_dual.cpu import cpu_info
from gpt2_dual.pt.linear import onednn_available, onednn_by_default, use_onednn

#: One results file per CPU family (``gpt2_dual.cpu``), so each kind keeps its last numbers.
RESULTS = machine.results_path("pt_cpu")
# Every variant compiles its own graphs; never fall back to eager under a compiled label.
torch._dynamo.config.recompile_limit = 64
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


# --------------------------------------------------------------------------- models
def make_pair(preset: str, dtype: torch.dtype = torch.float32):
    """Our GPT2LMHeadModel and transformers' (sdpa) with the same random weights."""
    config = GPT2Config.from_preset(preset, **NO_DROPOUT)
    torch.manual_seed(0)
    theirs = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**config.to_dict(), attn_implementation="sdpa")
    )
    with tempfile.TemporaryDirectory() as folder:
        theirs.save_pretrained(folder)
        ours = gpt.GPT2LMHeadModel.from_pretrained(folder, dtype=dtype)
    return ours, theirs.to(dtype).eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# --------------------------------------------------------------------------- timing
#: Clock of the timings: wall time, or this process's CPU time (``--clock cpu``: with one
#: thread, time other processes take from the core is not counted).
CLOCK: Callable[[], float] = time.perf_counter


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, calls: int):
    """Seconds per call of each variant, measured round-robin."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(calls):
                start = CLOCK()
                fn()
                times[name].append(CLOCK() - start)
    return times


def rows(case: str, times: dict[str, list[float]], diffs: dict[str, float], extra: dict):
    """Table rows; the ratio is transformers' time / the variant's (>1: faster than them)."""
    ref = next(iter(times))  # the first variant is always transformers
    best_ref, med_ref = min(times[ref]), statistics.median(times[ref])
    out = []
    for name, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        out.append(
            f"| {case} | {name} | {best * 1e3:.1f} | {med * 1e3:.1f} | "
            f"{best_ref / best:.2f} | {med_ref / med:.2f} | {diffs.get(name, 0.0):.1e} | "
            f"{extra.get(name, '')} |"
        )
    return out


# --------------------------------------------------------------------------- cases
def forward_case(ours, theirs, shape, *, compile_: bool, rounds: int, label: str):
    """Forward latency (inference mode, no cache) of each variant at ``shape``."""
    ids = torch.randint(0, 50257, shape, generator=torch.Generator().manual_seed(1))
    variants: dict[str, Callable] = {
        "transformers": lambda: theirs(ids, use_cache=False).logits,
        "ours": lambda: ours(ids, use_cache=False).logits,
    }
    if ours.dtype == torch.float32 and onednn_available():
        variants[OTHER] = other_path(lambda: ours(ids, use_cache=False).logits)
    extra = {}
    with torch.inference_mode():
        if compile_:
            for name, model in (("ours + compile", ours), ("transformers + compile", theirs)):
                start = time.perf_counter()
                fn = torch.compile(model, dynamic=False)
                fn(ids, use_cache=False)  # compiles
                extra[name] = f"compile {time.perf_counter() - start:.0f} s"
                variants[name] = lambda fn=fn: fn(ids, use_cache=False).logits
        reference = variants["transformers"]()
        diffs = {name: _max_diff(fn(), reference) for name, fn in variants.items()}
        del reference
        times = interleaved(variants, rounds, calls=3 if shape[1] < 256 else 1)
    flops = machine.gpt2_forward_flops(ours.config, *shape)
    for name, ts in times.items():  # share of the float32 GEMM peak measured in this run
        share = machine.percent_of_peak(flops, min(ts), PEAK[1])
        extra[name] = ", ".join(filter(None, [extra.get(name), f"{share} of fp32 GEMM peak"]))
    return rows(f"{label} {shape[0]}x{shape[1]}", times, diffs, extra)


#: (name, GFLOP/s) of the best float32 product measured at the start of the run.
PEAK: tuple[str, float] = ("", float("nan"))


#: Variant name of our model on the float32 path the CPU rule did not pick.
OTHER = "ours, PyTorch matmuls" if onednn_by_default() else "ours, oneDNN matmuls"


def other_path(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run on the float32 path the CPU rule did not pick, then back to the default."""

    def run():
        default = onednn_by_default()
        use_onednn(not default)
        try:
            return fn()
        finally:
            use_onednn(default)

    return run


def _clone(model):
    copy = type(model)(model.config.copy(), attn_implementation=model.attn_implementation)
    copy.load_state_dict(model.state_dict())
    return copy.to(model.dtype).eval()


def train_case(ours, theirs, shape, *, compile_: bool, rounds: int, optimizer: bool):
    """forward + backward (+ fused AdamW step) + zero_grad at ``shape``, labels = inputs.

    Each model carries 4 copies of the weights (weights, gradients, two AdamW moments), so the
    variants run in groups of three, each with its own transformers reference.
    """
    ids = torch.randint(0, 50257, shape, generator=torch.Generator().manual_seed(2))
    groups = [{"ours": lambda: _clone(ours)}]
    if onednn_available():
        groups[0][OTHER] = lambda: _clone(ours)
    if compile_:
        groups += [
            {
                "ours + compile": lambda: torch.compile(_clone(ours), dynamic=False),
                "transformers + compile": lambda: torch.compile(_clone_hf(theirs), dynamic=False),
            },
        ]
    out = []
    label = "train step (fwd, bwd, AdamW)" if optimizer else "fwd + bwd"
    for group in groups:
        builders = {"transformers": lambda: _clone_hf(theirs), **group}
        steps, first, extra = {}, {}, {}
        for name, build in builders.items():
            start = time.perf_counter()
            steps[name] = _train_step(build(), ids, optimizer)
            if name == OTHER:
                steps[name] = other_path(steps[name])
            first[name] = steps[name]()  # loss of the first step (compiles, if compiled)
            if "compile" in name:
                extra[name] = f"compile {time.perf_counter() - start:.0f} s"
        diffs = {name: abs(loss - first["transformers"]) for name, loss in first.items()}
        times = interleaved(steps, rounds, calls=1)
        out += rows(f"{label} {shape[0]}x{shape[1]}", times, diffs, extra)
        del steps
    return out


def _clone_hf(model):
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    return copy


def _train_step(model, ids, optimizer: bool):
    """One step; the optimizer, when used, is AdamW with ``fused=True`` (PyTorch's fastest on
    CPU; the default for-each-tensor AdamW takes 0.4-1.0 s per step here, the same for both
    libraries, and its noise would swamp the models' difference)."""
    model.train()
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True) if optimizer else None

    def step() -> float:
        loss = model(ids, labels=ids, use_cache=False).loss
        loss.backward()
        if adamw is not None:
            adamw.step()
        model.zero_grad(set_to_none=True)
        return loss.item()

    return step


# --------------------------------------------------------------------------- loading
LOAD_CODE = r"""
import json, resource, sys, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
import torch
if sys.argv[1] == "ours":
    from gpt2_dual.pt import GPT2LMHeadModel
else:
    from transformers import GPT2LMHeadModel
before = status("VmHWM")
start = time.perf_counter()
model = GPT2LMHeadModel.from_pretrained(sys.argv[2])
seconds = time.perf_counter() - start
loaded = status("VmHWM")
ids = torch.arange(128)[None]
start = time.perf_counter()
with torch.inference_mode():
    model(ids)  # the first forward reads every weight (a memory-mapped loader pays here)
first = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "first_forward": first, "hwm_before": before,
                  "hwm_loaded": loaded, "hwm_after": status("VmHWM"),
                  "rss_anon": status("RssAnon")}))
"""


def load_case(rounds: int) -> list[str]:
    """from_pretrained time, then the first 1x128 forward, and peak-RSS growth, on a
    gpt2-medium-shaped checkpoint."""
    config = GPT2Config.from_preset("gpt2-medium")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config.to_dict()))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    out = []
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        del model
        results: dict[str, list[dict]] = {"transformers": [], "ours": []}
        for _ in range(rounds):
            for who in results:
                proc = subprocess.run(
                    [sys.executable, "-c", LOAD_CODE, who, folder],
                    capture_output=True, text=True, check=True, timeout=600,
                )  # fmt: skip
                results[who].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    total = {
        who: min(r["seconds"] + r["first_forward"] for r in runs) for who, runs in results.items()
    }
    for who, runs in results.items():
        best = min(r["seconds"] for r in runs)
        first = min(r["first_forward"] for r in runs)
        at_load = max(r["hwm_loaded"] - r["hwm_before"] for r in runs)
        peak = max(r["hwm_after"] - r["hwm_before"] for r in runs)
        anon = max(r["rss_anon"] for r in runs)
        out.append(
            f"| gpt2-medium ({size / 1e9:.2f} GB fp32) | {who} | {best:.2f} s | {first:.2f} s | "
            f"{total['transformers'] / total[who]:.2f} | {at_load / 1e9:.2f} GB | "
            f"{peak / 1e9:.2f} GB ({peak / size:.2f}x) | {anon / 1e9:.2f} GB |"
        )
    return out


# --------------------------------------------------------------------------- report
def machine_facts() -> list[str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    flags = open("/proc/cpuinfo").read()
    from gpt2_dual.pt.linear import _STATE

    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; AVX-512: {'avx512f' in flags}, "
        f"AVX-512 BF16: {'avx512_bf16' in flags}",
        f"- gpt2_dual CPU rule: {cpu_info().describe()}; float32 products on oneDNN in this "
        f"run: {_STATE['onednn']}",
        f"- torch {torch.__version__} (threads: {torch.get_num_threads()}, BLAS: "
        f"{'MKL' if torch.backends.mkl.is_available() else 'other'}, "
        f"mkldnn available: {torch.backends.mkldnn.is_available()}, CPU capability: "
        f"{torch.backends.cpu.get_cpu_capability()}), transformers {transformers.__version__}, "
        f"Python {platform.python_version()}",
        f"- load average before / after: {_load()} / {{after}}",
    ]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="no compile variants, 2 rounds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK = time.process_time
    compile_, rounds = not args.quick, 2 if args.quick else 3
    global PEAK
    PEAK = max(machine.gemm_peak_torch().items(), key=lambda kv: kv[1])
    facts = machine_facts()
    facts.insert(2, f"- float32 GEMM peak in this run: {PEAK[1]:.0f} GFLOP/s ({PEAK[0]})")
    head = "| case | variant | best ms | median ms | speed-up (best) | speed-up (median) | max abs diff vs transformers | note |"  # noqa: E501
    table = [head, "|" + "---|" * 8]
    ours, theirs = make_pair("gpt2")
    for shape in ((1, 128), (8, 512)):
        table += forward_case(ours, theirs, shape, compile_=compile_, rounds=rounds, label="fp32")
        print("\n".join(table[-6:]), flush=True)
    for optimizer in (True, False):
        table += train_case(
            ours, theirs, (4, 128), compile_=compile_, rounds=rounds, optimizer=optimizer
        )
        print("\n".join(table[-6:]), flush=True)
    ours16, theirs16 = ours.to(torch.bfloat16), theirs.to(torch.bfloat16)
    for shape in ((1, 128), (8, 512)):
        table += forward_case(ours16, theirs16, shape, compile_=False, rounds=rounds, label="bf16")
    del ours, theirs, ours16, theirs16
    load = [
        "| checkpoint | loader | from_pretrained | first forward 1x128 | speed-up (both) "
        "| peak RSS growth, loaded | after the forward | RssAnon after |",
        "|---|---|---|---|---|---|---|---|",
        *load_case(rounds=2 if args.quick else 3),
    ]
    facts[-1] = facts[-1].format(after=_load())
    command = "python " + " ".join(sys.argv)
    text = "\n".join([
        "# gpt2_dual.pt vs transformers on CPU", "", f"Command: `{command}`", "", *facts, "",
        f"Clock: {args.clock} time. Speed-up = transformers' time / the variant's time (same "
        "process, interleaved rounds).",
        "", *table, "", *load, "",
    ])  # fmt: skip
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
