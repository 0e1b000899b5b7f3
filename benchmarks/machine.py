"""What every CPU benchmark prints and shares: the machine's facts, its results file per CPU
family, the float32 GEMM peak measured in the same run, and GPT-2's FLOP counts.

Results are kept per CPU family (``gpt2_dual.cpu.CpuInfo.family``: vendor, product line and
microarchitecture, e.g. ``amd-epyc-zen5``), so a regression on one kind of machine stays
visible next to the other kinds' last numbers.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from gpt2_dual.cpu import cpu_info

RESULTS = Path(__file__).parent / "results"
#: Large float32 products used for the peak: (M, K, N), the 8x512 MLP and a square one.
PEAK_SHAPES = ((4096, 768, 3072), (2048, 2048, 2048))


def results_path(stem: str) -> Path:
    """``benchmarks/results/<stem>_<cpu family>.md``."""
    return RESULTS / f"{stem}_{cpu_info().family}.md"


def facts(threads: int | None) -> list[str]:
    """Markdown bullet lines: CPU model, vendor, microarchitecture, flags that matter, the
    kernel paths gpt2_dual picks here, threads, Python and the load average."""
    info = cpu_info()
    from gpt2_dual.cpu import tf_forward_path

    return [
        f"- CPU: {info.describe()}; {os.cpu_count()} logical cores; results family "
        f"`{info.family}`",
        f"- TensorFlow path by the CPU rule: float32 forward {tf_forward_path(True)}, training "
        f"{tf_forward_path(True, 'train')}, bfloat16 forward "
        f"{tf_forward_path(True, 'forward', 'bfloat16')} where TF's oneDNN is on (else "
        f"{tf_forward_path(False, 'forward', 'bfloat16')})",
        f"- threads per library: {threads or 'library default'}; Python "
        f"{platform.python_version()}; {platform.platform()}",
        f"- 1-minute load average at the start: {os.getloadavg()[0]:.2f}",
    ]


def _best_gflops(fn: Callable[[], object], flops: float, calls: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def gemm_peak_torch() -> dict[str, float]:
    """Best GFLOP/s of ``PEAK_SHAPES`` in PyTorch, on MKL (aten ``mm``) and on oneDNN, with
    torch's current thread count (wall clock, best of 5)."""
    import torch

    out = {}
    g = torch.Generator().manual_seed(0)
    for m, k, n in PEAK_SHAPES:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        bt = b.t().contiguous()
        flops = 2.0 * m * k * n
        out[f"torch mm (MKL) {m}x{k}x{n}"] = _best_gflops(lambda a=a, b=b: torch.mm(a, b), flops)
        if hasattr(torch.ops.mkldnn, "_linear_pointwise"):

            def onednn(a=a, bt=bt):
                return torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], "")

            out[f"torch oneDNN {m}x{k}x{n}"] = _best_gflops(onednn, flops)
    return out


def gemm_peak_tf() -> dict[str, float]:
    """Best GFLOP/s of ``PEAK_SHAPES`` in TensorFlow, graph mode (oneDNN where on) and XLA."""
    import numpy as np
    import tensorflow as tf

    out = {}
    rng = np.random.default_rng(0)
    for m, k, n in PEAK_SHAPES:
        a = tf.constant(rng.standard_normal((m, k), dtype=np.float32))
        b = tf.constant(rng.standard_normal((k, n), dtype=np.float32))
        flops = 2.0 * m * k * n
        for name, jit in (("graph", False), ("XLA", True)):
            fn = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)[:1, :1]), jit_compile=jit)
            out[f"tf {name} {m}x{k}x{n}"] = _best_gflops(lambda fn=fn, a=a, b=b: fn(a, b).numpy(),
                                                         flops)  # fmt: skip
    return out


def gpt2_forward_flops(config, batch: int, tokens: int, lm: bool = True) -> float:
    """Multiply-adds x 2 of one forward: the blocks' products, attention's score and value
    products over the causal half (what a causal model needs), and the LM head."""
    c, t, layers = config.n_embd, tokens, config.n_layer
    inner = config.n_inner or 4 * c
    per_token = layers * (c * 3 * c + c * c + 2 * c * inner) + (c * config.vocab_size if lm else 0)
    attention = layers * 2 * (t * (t + 1) // 2) * c  # q.k and p.v, causal half
    return 2.0 * batch * (t * per_token + attention)


def percent_of_peak(flops: float, seconds: float, peak_gflops: float) -> str:
    return f"{100 * flops / seconds / 1e9 / peak_gflops:.0f}%"


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 0
) -> dict[str, list[float]]:
    """Wall seconds per call of each variant: ``warmup`` untimed calls each, then one call
    each per round, round-robin (a burst of load from other processes hits all alike)."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times
