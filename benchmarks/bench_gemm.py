"""The float32 matrix products of GPT-2 on this CPU: MKL (PyTorch's default) against oneDNN.

Backs the bound stated in ``benchmarks/README.md``: how close each library's GEMMs come to
this core's float32 FMA peak on GPT-2's shapes, for the forward product and both backward
products (input gradient ``dX = dY @ W^T``, weight gradient ``dW = X^T @ dY``). One thread,
process CPU time, best of ``--repeats`` calls after one warm-up, so other jobs on the machine
do not count.

The peak that the forward benchmarks' "% of peak" columns divide by is measured again in
each of those runs (``machine.py``); this script gives it too, for ``--threads`` threads.

Usage:
    python benchmarks/bench_gemm.py                  # writes results/gemm_cpu_<cpu family>.md
    python benchmarks/bench_gemm.py --rows 512 1     # M = batch x tokens
    python benchmarks/bench_gemm.py --threads 2      # the products and the peak on 2 threads
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import machine  # benchmarks/machine.py
from gpt2_dual._io import atomic_write_text

RESULTS = machine.results_path("gemm_cpu")
#: (name, K in, N out) of gpt2 (124M): the blocks' Conv1D products and the LM head.
SHAPES = [
    ("attn.c_attn", 768, 2304),
    ("attn.c_proj", 768, 768),
    ("mlp.c_fc", 768, 3072),
    ("mlp.c_proj", 3072, 768),
    ("lm_head", 768, 50257),
]


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def products(M: int, K: int, N: int) -> dict[str, Callable[[], object]]:
    """Each product both ways: MKL through aten, oneDNN through its linear op."""
    nt = torch.ops.mkldnn._linear_pointwise  # a (M, K) @ b (N, K).T
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)  # Conv1D (K, N)
    dy, b = torch.randn(M, N, generator=g), torch.randn(N, generator=g)
    return {
        "forward, MKL": lambda: torch.addmm(b, x, w),
        "forward, oneDNN": lambda: nt(x, w.t(), b, "none", [], ""),
        "dX, MKL": lambda: torch.mm(dy, w.t()),
        "dX, oneDNN": lambda: nt(dy, w, None, "none", [], ""),
        "dW, MKL": lambda: torch.mm(x.t(), dy),
        "dW, oneDNN": lambda: nt(x.t().contiguous(), dy.t().contiguous(), None, "none", [], ""),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 128, 1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peaks = machine.gemm_peak_torch()
    lines = [
        "# float32 GEMMs of GPT-2 on this CPU: MKL against oneDNN",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        *machine.facts(args.threads),
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "- float32 GEMM peak (large products, wall clock, best of 5): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()),
        "",
        f"{args.threads} thread(s), process CPU time (per thread), best of {args.repeats}. "
        "GFLOP/s = 2 M K N / seconds of CPU time / threads. The dW oneDNN row includes the two "
        "transposing copies it needs.",
        "",
        "| M | product | K x N | " + " | ".join(products(1, 1, 1)) + " |",
        "|---|---|---|" + "---|" * 6,
    ]
    for M in args.rows:
        for name, K, N in SHAPES:
            flops = 2 * M * K * N / 1e9 / args.threads
            cells = [
                f"{flops / best_seconds(fn, args.repeats):.0f}" for fn in products(M, K, N).values()
            ]
            lines.append(f"| {M} | {name} | {K} x {N} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
