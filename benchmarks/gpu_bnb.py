"""The ``bnb`` section of ``gpu_check.py``: the model card's 4-bit gpt2-xl on the GPU, ours
against transformers' bitsandbytes path in the same run.

A gpt2-xl-shaped checkpoint with random weights is written as transformers writes it
(``bench_bnb.write_checkpoint``, a temporary folder) and loaded as the model card does,
``GPT2LMHeadModel.from_pretrained(folder, quantization_config=BitsAndBytesConfig(
load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float16",
bnb_4bit_use_double_quant=True), device_map="cuda", dtype=torch.float16)`` (float16: what
transformers 4 picks under bitsandbytes when ``dtype`` is left out, passed so both libraries
keep the same layers), by gpt2_dual.pt and by transformers; then 8-bit (``load_in_8bit``).
Both models of a case stay on the GPU together:

- memory: ``torch.cuda.memory_allocated`` added by the load and the peak during it
  (``max_memory_allocated``), and the bytes of the weights with their quantization state;
  ``from_pretrained`` wall time;
- numbers: 1x128 logits of each against the other and against our unquantized float16 model
  (max |diff| over the float16 logits' standard deviation, top-1 agreement);
- decoding: greedy ``generate`` at batch 1 from a 16-token prompt, exactly ``GPU_BNB_NEW``
  (64) new tokens; ms per decode step (the difference of an N-token and a 1-token call over
  N - 1, CUDA-event timed, median of 5 interleaved rounds after a warm-up) and the tokens the
  two libraries produce (equal or not).

The GPU machine has no package index: the bitsandbytes, accelerate and psutil wheels travel in
``benchmarks/wheels/`` (git-ignored, 43 MB; ``pip download bitsandbytes==0.50.2
accelerate==1.15.0 psutil==7.2.2 --no-deps -d benchmarks/wheels/``; carry that folder). They
are installed with pip, or, where pip may not install (an externally managed Python), unpacked
into ``/tmp/bnb_site`` and put on the path. The one command, from the repository root::

    (python -m pip install -q --no-index --no-deps benchmarks/wheels/*.whl || { for w in
    benchmarks/wheels/*.whl; do python -m zipfile -e "$w" /tmp/bnb_site; done; }) &&
    PYTHONPATH=src:/tmp/bnb_site python benchmarks/gpu_check.py --only bnb
    --out benchmarks/results/gpu_bnb_h100.md

Dry run on CPU (logic only, a gpt2-shaped checkpoint): ``GPU_CHECK_DEVICE=cpu
GPU_BNB_PRESET=gpt2 GPU_BNB_NEW=4 PYTHONPATH=src python benchmarks/gpu_check.py --only bnb``.
"""

from __future__ import annotations

import importlib.metadata
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch

import bench_bnb  # benchmarks/bench_bnb.py: the checkpoint writer and the weight bytes

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
PRESET = os.environ.get("GPU_BNB_PRESET", "gpt2-xl")
PROMPT, NEW, FORWARD, ROUNDS = 16, int(os.environ.get("GPU_BNB_NEW", 64)), 128, 5
NF4 = dict(
    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float16",
    bnb_4bit_use_double_quant=True,
)  # fmt: skip
CASES = {"nf4, double quant, fp16 compute (model card)": NF4, "int8": dict(load_in_8bit=True)}
LOADERS = ("ours", "transformers")


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _allocated() -> tuple[int, int]:
    """(bytes allocated on the GPU now, peak since the last reset); zeros on the CPU."""
    if DEVICE != "cuda":
        return 0, 0
    return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()


def _seconds(fn) -> float:
    """One call of ``fn``, CUDA-event timed on the GPU."""
    if DEVICE != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def _load(who: str, folder: Path, fields: dict | None) -> tuple[torch.nn.Module, dict]:
    """The model as the model card loads it, and its memory and load time."""
    if who == "ours":
        from gpt2_dual import BitsAndBytesConfig
        from gpt2_dual.pt import GPT2LMHeadModel
    else:
        from transformers import BitsAndBytesConfig, GPT2LMHeadModel
    kw = {} if fields is None else dict(quantization_config=BitsAndBytesConfig(**fields))
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before, _ = _allocated()
    start = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(
        folder, device_map=DEVICE, dtype=torch.float16, **kw
    ).eval()
    _sync()
    seconds = time.perf_counter() - start
    now, peak = _allocated()
    layer = type(model.transformer.h[0].attn.c_attn).__name__
    facts = dict(seconds=seconds, added=now - before, peak=peak - before, layer=layer)
    facts["bytes"] = bench_bnb.weight_bytes(model)
    return model, facts


def _generate(model, prompt, new: int):
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=50256)
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), **kw)


def _errors(logits: torch.Tensor, other: torch.Tensor, scale: float) -> str:
    top1 = (logits.argmax(-1) == other.argmax(-1)).float().mean().item()
    return f"{(logits - other).abs().max().item() / scale:.2e} / {top1:.2f}"


def _decode(models: dict, prompt: torch.Tensor) -> tuple[dict, dict]:
    """ms per decode step of each model (interleaved rounds) and its tokens."""
    with torch.no_grad():
        tokens = {who: _generate(m, prompt, NEW)[0, PROMPT:].cpu() for who, m in models.items()}
        times = {who: [] for who in models}
        for _ in range(ROUNDS):
            for who, model in models.items():
                one = _seconds(lambda model=model: _generate(model, prompt, 1))
                full = _seconds(lambda model=model: _generate(model, prompt, NEW))
                times[who].append(1e3 * (full - one) / (NEW - 1))
    return {who: statistics.median(t) for who, t in times.items()}, tokens


def run(log) -> None:
    """Log the bnb section: versions, the checkpoint, one table row per case and loader."""
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("bitsandbytes", "accelerate")
    )
    log(f"{versions}; {PRESET}-shaped random checkpoint, device_map={DEVICE!r}, dtype float16.")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50257, (1, FORWARD), generator=g).to(DEVICE)
    prompt = torch.randint(0, 50257, (1, PROMPT), generator=g).to(DEVICE)
    with tempfile.TemporaryDirectory(prefix="gpu_bnb_") as work:
        folder = Path(work)
        start = time.perf_counter()
        size = bench_bnb.write_checkpoint(PRESET, folder)
        log(f"Checkpoint: {size / 1e9:.2f} GB fp32, written in {time.perf_counter() - start:.0f} s")
        plain, facts = _load("ours", folder, None)
        with torch.no_grad():
            reference = plain(ids).logits.float().cpu()
        scale = reference.std().item()
        log(
            f"Unquantized float16 (ours): {facts['added'] / 2**20:.0f} MiB on the device, "
            f"loaded in {facts['seconds']:.1f} s; logits std {scale:.3f}\n"
        )
        del plain
        log(
            "| case | loader | layer | MiB after load (peak in it) | weights MiB | load s "
            "| vs fp16: max/std, top-1 | vs the other: max/std, top-1 | ms per decode step "
            f"| speed-up | {NEW} tokens equal |"
        )
        log("|---|---|---|---|---|---|---|---|---|---|---|")
        for case, fields in CASES.items():
            try:  # one case failing leaves the other
                _case(log, case, fields, folder, ids, prompt, reference, scale)
            except Exception as err:  # noqa: BLE001 - report and go on
                log(f"| {case} | failed: {type(err).__name__}: {str(err)[:200]} |" + " |" * 9)
                traceback.print_exc()


def _case(log, case, fields, folder, ids, prompt, reference, scale) -> None:
    models, facts, logits = {}, {}, {}
    for who in LOADERS:
        models[who], facts[who] = _load(who, folder, fields)
        with torch.no_grad():
            logits[who] = models[who](ids).logits.float().cpu()
    ms, tokens = _decode(models, prompt)
    equal = bool(torch.equal(tokens["ours"], tokens["transformers"]))
    same = f"{equal} ({int((tokens['ours'] != tokens['transformers']).sum())} differ)"
    for who, other in zip(LOADERS, reversed(LOADERS), strict=True):
        f = facts[who]
        log(
            f"| {case} | {who} | {f['layer']} | {f['added'] / 2**20:.0f} ({f['peak'] / 2**20:.0f})"
            f" | {f['bytes'] / 2**20:.0f} | {f['seconds']:.1f} "
            f"| {_errors(logits[who], reference, scale)} "
            f"| {_errors(logits[who], logits[other], scale)} | {ms[who]:.2f} "
            f"| {ms['transformers'] / ms[who]:.2f} | {same} |"
        )
    del models
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
