"""The ``generate`` section of ``gpu_check.py``: ``model.generate`` on the GPU, ours against
transformers' on the same weights.

Checks first: our compiled static-cache decoding (CUDA graphs) against our eager decoding and
transformers' ``generate`` (fp32, TF32 off: tokens should agree). Then times, per case, the
decode step (ms per new token, prefill excluded: the difference of a 1-token and an N-token
run) and tokens/s overall, for ours (static + compiled, the CUDA default; dynamic) and
transformers (default; static cache, which it compiles itself).

Targets from the issue: < 0.5 ms per step for gpt2 at batch 1, < 1.5 ms for gpt2-xl at batch 1,
> 40,000 tokens/s for gpt2 at batch 32.

Dry run on CPU (logic only, tiny shapes): ``GPU_CHECK_DEVICE=cpu GPU_GEN_TINY=1
PYTHONPATH=src python benchmarks/gpu_check.py --only generate``.
"""

from __future__ import annotations

import os
import time

import torch

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
TINY = os.environ.get("GPU_GEN_TINY") == "1"
CASES = [("gpt2", 1), ("gpt2", 32), ("gpt2-xl", 1)]  # (preset, batch)
PROMPT, NEW = 16, 128


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best


def _step_ms(generate, ids, new: int) -> tuple[float, float]:
    """(ms per decode step, tokens/s over the whole call) for ``new`` tokens."""
    one = _timed(lambda: generate(ids, 1))
    full = _timed(lambda: generate(ids, new))
    return 1e3 * (full - one) / (new - 1), ids.shape[0] * new / full


def run(log, pair, config_of) -> None:
    """Log the checks and the table. ``pair(head, config, attn, dtype)`` gives (ours, theirs)
    with the same weights; ``config_of(preset)`` a dropout-free config."""
    torch.backends.cuda.matmul.allow_tf32 = False
    log("fp32, TF32 off. Tokens: ours compiled static vs ours eager vs transformers.\n")
    log("| model | batch | agree eager / transformers | ms/step ours static+graph | ours dynamic "
        "| transformers default | transformers static | tokens/s ours / transformers best "
        "| first call s |")  # fmt: skip
    log("|---|---|---|---|---|---|---|---|---|")
    for preset, batch in CASES:
        config = config_of(preset)
        if TINY:
            config = config.copy(n_layer=2, n_embd=64, n_head=4)
        ours, theirs = pair("lm", config, "sdpa", torch.float32)
        ids = torch.randint(0, config.vocab_size, (batch, PROMPT), device=DEVICE)
        new = 8 if TINY else NEW
        row = _case(ours, theirs, ids, new)
        log(f"| {preset} | {batch} | {row['agree']} | {row['static']:.3f} | {row['dynamic']:.3f} "
            f"| {row['hf']:.3f} | {row['hf_static']:.3f} | {row['tps']:.0f} / "
            f"{row['hf_tps']:.0f} | {row['first']:.1f} |")  # fmt: skip
        del ours, theirs
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def _case(ours, theirs, ids, new: int) -> dict:
    kw = dict(eos_token_id=None, pad_token_id=0)
    hf_kw = dict(do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))

    def mine(cache: str, compile_: bool = True):
        def generate(x, n):
            return ours.generate(x, max_new_tokens=n, cache_implementation=cache,
                                 disable_compile=not compile_, **kw)  # fmt: skip

        return generate

    def hf(cache: str | None):
        extra = {} if cache is None else dict(cache_implementation=cache)

        def generate(x, n):
            with torch.no_grad():
                return theirs.generate(x, max_new_tokens=n, min_new_tokens=n, **hf_kw, **extra)

        return generate

    torch._dynamo.reset()
    start = time.perf_counter()
    static = mine("static")(ids, new)
    _sync()
    first = time.perf_counter() - start
    eager = mine("static", compile_=False)(ids, new)
    reference = hf(None)(ids, new)
    agree = f"{bool(torch.equal(static, eager))} / {int((static != reference).sum())} differ"
    s_ms, tps = _step_ms(mine("static"), ids, new)
    d_ms, _ = _step_ms(mine("dynamic"), ids, new)
    h_ms, h_tps = _step_ms(hf(None), ids, new)
    hs_ms, hs_tps = _step_ms(hf("static"), ids, new)
    return dict(agree=agree, static=s_ms, dynamic=d_ms, hf=h_ms, hf_static=hs_ms, tps=tps,
                hf_tps=max(h_tps, hs_tps), first=first)  # fmt: skip
