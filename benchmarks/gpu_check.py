"""GPU checks and timings of gpt2_dual.pt against transformers, in one run.

CI has no GPU, so this script is the record of what runs on one: every section checks
numbers first (against transformers on the same weights, or against a no-cache greedy
loop), then times. Sections that fail are reported and the run goes on.

Sections:
  parity     every head, eager and sdpa, fp32 (TF32 off) against transformers; fp16/bf16
             error against an fp32 reference, ours beside transformers'.
  kernels    SDPA forced onto its flash, memory-efficient and math kernels, with and
             without padding; flash_attention_2 when the flash_attn package is importable.
  decode     greedy decoding: DynamicCache, StaticCache and a torch.compile'd static-cache
             step with CUDA graphs (mode="reduce-overhead") against the no-cache oracle.
  generate   model.generate: compiled static-cache decoding (CUDA graphs) against eager and
             transformers' generate; ms per decode step and tokens/s (gpu_generate.py).
  speed      forward and training step at gpt2 / gpt2-medium shapes, fp16 / bf16 / fp32,
             ours against transformers (both sdpa), CUDA-event timed; peak memory.
  bnb        the model card's bitsandbytes 4-bit gpt2-xl (nf4, double quant, fp16 compute)
             and 8-bit, ours against transformers: GPU memory, load time, logits, ms per
             decode step (gpu_bnb.py; needs the wheels in benchmarks/wheels/, see there).

Usage (on a CUDA machine, from the repository root):
    PYTHONPATH=src python benchmarks/gpu_check.py --out benchmarks/results/gpu.md
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import transformers

import gpt2_dual.pt as gpt
from gpt2_dual import GPT2Config
from gpt2_dual.pt.weights import load_canonical

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")  # "cpu": a dry run of the logic
LINES: list[str] = []
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)


def log(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def section(name: str):
    """Run a section; a failure is logged with its traceback and the run goes on."""

    def wrap(fn):
        def run(*args, **kwargs):
            log(f"\n## {name}\n")
            start = time.perf_counter()
            try:
                fn(*args, **kwargs)
            except Exception:  # noqa: BLE001 - report and continue
                log("```\n" + traceback.format_exc() + "```")
                log("**SECTION FAILED**")
            log(f"\n({time.perf_counter() - start:.1f} s)")

        return run

    return wrap


# --------------------------------------------------------------------------- models
HF_CLASSES = {
    "base": "GPT2Model",
    "lm": "GPT2LMHeadModel",
    "double_heads": "GPT2DoubleHeadsModel",
    "question_answering": "GPT2ForQuestionAnswering",
    "sequence_classification": "GPT2ForSequenceClassification",
    "token_classification": "GPT2ForTokenClassification",
}


def pair(head: str, config: GPT2Config, backend: str, dtype=torch.float32, seed=0, hf_backend=None):
    """(ours, theirs) on the GPU with the same perturbed random weights; theirs runs
    ``hf_backend`` (default: ``backend``)."""
    hf_config = transformers.GPT2Config(**config.to_dict())
    hf_config._attn_implementation = hf_backend or backend
    torch.manual_seed(seed)
    theirs = getattr(transformers, HF_CLASSES[head])(hf_config)
    state = theirs.state_dict()
    with torch.no_grad():  # every parameter away from its init (LayerNorm 1/0, zero biases)
        for tensor in state.values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.02)
    ours = gpt.build(head, config, attn_implementation=backend)
    report = load_canonical(ours, {k: v.cpu() for k, v in state.items()})  # strict: all used
    assert not report.missing and not report.unexpected, report
    return ours.to(DEVICE, dtype).eval(), theirs.to(DEVICE, dtype).eval()


def tiny(**changes) -> GPT2Config:
    return GPT2Config(
        vocab_size=1000,
        n_positions=96,
        n_embd=96,
        n_layer=3,
        n_head=6,
        pad_token_id=0,
        num_labels=3,
        **{**NO_DROPOUT, **changes},
    )


def batch(config: GPT2Config, rows=3, length=40, pad=(0, 7, 19), seed=1):
    """Right-padded ids and mask: row r has ``pad[r]`` padding tokens at its end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (rows, length), generator=g)
    mask = torch.ones(rows, length, dtype=torch.long)
    for r, p in enumerate(pad[:rows]):
        if p:
            mask[r, -p:] = 0
            ids[r, -p:] = config.pad_token_id or 0
    return ids.to(DEVICE), mask.to(DEVICE)


def fields(out) -> dict[str, torch.Tensor]:
    get = out.get if isinstance(out, dict) else lambda k: getattr(out, k, None)
    keys = ("logits", "last_hidden_state", "start_logits", "end_logits", "mc_logits", "loss")
    return {k: get(k) for k in keys if get(k) is not None}


def diff(a, b, mask=None) -> float:
    """Max |a - b|, over the positions where ``mask`` is 1 when ``a`` starts with its shape."""
    a, b = a.float(), b.float()
    if mask is not None and a.dim() >= mask.dim() and a.shape[: mask.dim()] == mask.shape:
        a, b = a[mask.bool()], b[mask.bool()]
    return (a - b).abs().max().item()


def head_inputs(head, config, ids, mask):
    # Explicit positions: transformers numbers padding tokens by index, ours from the mask,
    # and a QA or token loss sees the padding tokens' logits too.
    positions = torch.arange(ids.shape[1], device=DEVICE).expand_as(ids)
    kw = dict(input_ids=ids, attention_mask=mask, position_ids=positions)
    lengths = mask.sum(1)
    if head == "lm":
        kw["labels"] = ids.masked_fill(mask == 0, -100)
    elif head == "sequence_classification":
        kw["labels"] = torch.arange(ids.shape[0], device=DEVICE) % config.num_labels
    elif head == "token_classification":
        kw["labels"] = (ids % config.num_labels).masked_fill(mask == 0, -100)
    elif head == "question_answering":
        kw["start_positions"] = lengths // 3
        kw["end_positions"] = lengths // 2
    elif head == "double_heads":  # (B, N=2, T): two choices per row
        kw = dict(
            input_ids=ids[:, None].repeat(1, 2, 1),
            attention_mask=mask[:, None].repeat(1, 2, 1),
            position_ids=positions[:1],  # (1, T): transformers does not fold (B, N, T) ones
            mc_token_ids=(lengths - 1)[:, None].repeat(1, 2),
            mc_labels=torch.zeros(ids.shape[0], dtype=torch.long, device=DEVICE),
        )
    return kw


# --------------------------------------------------------------------------- parity
@section("parity: every head against transformers on CUDA")
def parity() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    log("fp32 with TF32 off; padding positions excluded; tolerance 1e-5 (the CPU table's).")
    log("The reference is transformers' eager attention: its sdpa path ignores")
    log("scale_attn_weights=False, scale_attn_by_inverse_layer_idx and reorder_and_upcast_attn.\n")
    log("| head | config | backend | worst fp32 diff | verdict |")
    log("|---|---|---|---|---|")
    configs = {
        "default": tiny(),
        "flags": tiny(
            scale_attn_by_inverse_layer_idx=True,
            reorder_and_upcast_attn=True,
            activation_function="relu",
            n_inner=200,
        ),
        "unscaled": tiny(scale_attn_weights=False),
    }
    for head in HF_CLASSES:
        for cname, config in configs.items():
            for backend in ("eager", "sdpa"):
                ours, theirs = pair(head, config, backend, hf_backend="eager")
                ids, mask = batch(config)
                kw = head_inputs(head, config, ids, mask)
                with torch.no_grad():
                    a, b = fields(ours(**kw)), fields(theirs(**kw))
                m = mask if head != "double_heads" else mask[:, None].repeat(1, 2, 1)
                worst = max(diff(a[k], b[k], m) for k in b)
                assert set(a) == set(b), (set(a), set(b))
                verdict = "ok" if worst <= 1e-5 else "**over**"
                log(f"| {head} | {cname} | {backend} | {worst:.2e} | {verdict} |")
    log("\nHalf precision: max |logits - fp32 logits| on gpt2-shaped LM, non-padding tokens.\n")
    log("| dtype | backend | ours | transformers |")
    log("|---|---|---|---|")
    config = GPT2Config.from_preset("gpt2", **NO_DROPOUT)
    ids, mask = batch(config, rows=4, length=256, pad=(0, 31, 100, 5))
    ref, _ = pair("lm", config, "eager", torch.float32)
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask).logits
    for dtype in (torch.float16, torch.bfloat16):
        for backend in ("eager", "sdpa"):
            ours, theirs = pair("lm", config, backend, dtype)
            with torch.no_grad():
                a = ours(ids, attention_mask=mask).logits
                b = theirs(ids, attention_mask=mask).logits
            log(
                f"| {dtype} | {backend} | {diff(a, expected, mask):.3e} "
                f"| {diff(b, expected, mask):.3e} |"
            )


# --------------------------------------------------------------------------- kernels
@section("kernels: SDPA backends and flash_attention_2")
def kernels() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = GPT2Config.from_preset("gpt2", n_layer=4, **NO_DROPOUT)
    log("| dtype | kernel | padding | max diff to eager | ran |")
    log("|---|---|---|---|---|")
    for dtype in (torch.float16, torch.bfloat16):
        ours, _ = pair("lm", config, "sdpa", dtype)
        eager, _ = pair("lm", config, "eager", dtype)
        for padded in (False, True):
            ids, mask = batch(config, rows=4, length=128, pad=(0, 9, 50, 3) if padded else (0,) * 4)
            with torch.no_grad():
                expected = eager(ids, attention_mask=mask).logits
            for kernel in (
                SDPBackend.FLASH_ATTENTION,
                SDPBackend.EFFICIENT_ATTENTION,
                SDPBackend.MATH,
            ):
                try:
                    with sdpa_kernel([kernel]), torch.no_grad():
                        kw = {} if not padded else {"attention_mask": mask}  # no mask: is_causal
                        got = ours(ids, **kw).logits
                    log(
                        f"| {dtype} | {kernel.name} | {padded} "
                        f"| {diff(got, expected, mask):.3e} | yes |"
                    )
                except RuntimeError as err:
                    log(
                        f"| {dtype} | {kernel.name} | {padded} "
                        f"| - | no: {str(err).splitlines()[0][:80]} |"
                    )
    if importlib.util.find_spec("flash_attn") is None:
        log("\nflash_attention_2: the flash_attn package is not installed here; not run.")
        return
    for dtype in (torch.float16, torch.bfloat16):
        flash, _ = pair("lm", config, "flash_attention_2", dtype)
        eager, _ = pair("lm", config, "eager", dtype)
        ids, mask = batch(config, rows=4, length=128, pad=(0, 9, 50, 3))
        with torch.no_grad():
            d = diff(
                flash(ids, attention_mask=mask).logits, eager(ids, attention_mask=mask).logits, mask
            )
        log(f"\nflash_attention_2 {dtype}, padded: max diff to eager {d:.3e}")


# --------------------------------------------------------------------------- decode
def greedy_oracle(model, ids, steps):
    for _ in range(steps):
        nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


def greedy_dynamic(model, ids, steps):
    out = model(ids, use_cache=True)
    tokens = [ids]
    for _ in range(steps):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(nxt)
        out = model(nxt, past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(tokens, 1)


def greedy_static(model, step, ids, steps, cache):
    cache.reset()
    out = model(ids, past_key_values=cache, use_cache=True)  # prefill, eager
    tokens = [ids]
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps):
        tokens.append(nxt)
        logits = step(nxt, past_key_values=cache, use_cache=True).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True).clone()
    return torch.cat(tokens, 1)


def cuda_time(fn, repeat=5) -> float:
    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def agreement(tokens: torch.Tensor, oracle: torch.Tensor) -> str:
    return f"{bool((tokens == oracle).all())} ({int((tokens != oracle).sum())} tokens differ)"


@section("decode: cached greedy decoding against the no-cache oracle")
def decode() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    for dtype in (torch.float32, torch.bfloat16):
        decode_one(dtype, steps=int(os.environ.get("GPU_CHECK_STEPS", 64)), prompt=32)


def decode_one(dtype: torch.dtype, steps: int, prompt: int) -> None:
    config = GPT2Config.from_preset("gpt2", **NO_DROPOUT)
    ours, theirs = pair("lm", config, "sdpa", dtype)
    ids, _ = batch(config, rows=2, length=prompt, pad=(0, 0))
    hf_kw = dict(
        attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
        do_sample=False, pad_token_id=0,
    )  # fmt: skip
    with torch.no_grad():
        oracle = greedy_oracle(ours, ids, steps)
        dynamic = greedy_dynamic(ours, ids, steps)
        cache = gpt.StaticCache(config, 2, prompt + steps + 1, dtype=dtype, device=DEVICE)
        static = greedy_static(ours, ours, ids, steps, cache)
        torch._dynamo.reset()
        step = torch.compile(ours, fullgraph=True, mode="reduce-overhead")
        t0 = time.perf_counter()
        compiled = greedy_static(ours, step, ids, steps, cache)
        compile_s = time.perf_counter() - t0
        hf = theirs.generate(ids, **hf_kw)
        t_dyn = cuda_time(lambda: greedy_dynamic(ours, ids, steps))
        t_sta = cuda_time(lambda: greedy_static(ours, step, ids, steps, cache))
        t_hf = cuda_time(lambda: theirs.generate(ids, **hf_kw))
    log(f"\n{dtype}, 2 rows, {prompt}-token prompt, {steps} new tokens (gpt2 shape)")
    log(f"- DynamicCache equals oracle: {agreement(dynamic, oracle)}")
    log(f"- StaticCache equals oracle: {agreement(static, oracle)}")
    log(f"- compiled static step (CUDA graphs): {agreement(compiled, oracle)}")
    log(f"  (first pass, compile included: {compile_s:.1f} s)")
    log(f"- transformers generate equals oracle: {agreement(hf, oracle)}")
    log(
        f"- ms per token: ours dynamic {1e3 * t_dyn / steps:.2f}, ours compiled static "
        f"{1e3 * t_sta / steps:.2f}, transformers generate {1e3 * t_hf / steps:.2f}"
    )


@section("generate: model.generate, ours against transformers")
def generate() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import gpu_generate

    gpu_generate.run(log, pair, lambda preset: GPT2Config.from_preset(preset, **NO_DROPOUT))


# --------------------------------------------------------------------------- speed
def event_time(fn, warmup=3, iters=20) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@section("speed: forward and training step, ours against transformers (both sdpa)")
def speed() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True  # the speed setting users run fp32 with
    log("fp32 rows use TF32 matmuls. Median of 20 CUDA-event timed calls after 3 warm-ups.\n")
    log(
        "| model | dtype | shape | fwd ms ours / theirs | fwd speed-up "
        "| train ms ours / theirs | train speed-up | train peak MiB ours / theirs |"
    )
    log("|---|---|---|---|---|---|---|---|")
    for preset in ("gpt2", "gpt2-medium"):
        config = GPT2Config.from_preset(preset, **NO_DROPOUT)
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            ours, theirs = pair("lm", config, "sdpa", dtype)
            for shape in ((1, 128), (8, 512), (16, 1024)):
                ids = torch.randint(0, config.vocab_size, shape, device=DEVICE)
                fwd, train, peak = {}, {}, {}
                for name, model in (("ours", ours), ("theirs", theirs)):
                    fwd[name], train[name], peak[name] = time_model(model, ids)
                log(
                    f"| {preset} | {str(dtype)[6:]} | {shape[0]}x{shape[1]} "
                    f"| {fwd['ours']:.2f} / {fwd['theirs']:.2f} "
                    f"| {fwd['theirs'] / fwd['ours']:.2f}x "
                    f"| {train['ours']:.1f} / {train['theirs']:.1f} "
                    f"| {train['theirs'] / train['ours']:.2f}x "
                    f"| {peak['ours']:.0f} / {peak['theirs']:.0f} |"
                )
            del ours, theirs
            torch.cuda.empty_cache()


def time_model(model, ids) -> tuple[float, float, float]:
    """Forward ms, training-step ms (forward with loss, backward), peak MiB of the step."""
    with torch.no_grad():
        forward = event_time(lambda: model(ids))
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()

    torch.cuda.reset_peak_memory_stats()
    train = event_time(step, warmup=2, iters=8)
    peak = torch.cuda.max_memory_allocated() / 2**20
    model.zero_grad(set_to_none=True)
    model.eval()
    return forward, train, peak


@section("bnb: bitsandbytes 4-bit and 8-bit gpt2-xl, ours against transformers")
def bnb() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import gpu_bnb

    gpu_bnb.run(log)


@section("speed: torch.compile forward (ours), bf16")
def compiled_speed() -> None:
    config = GPT2Config.from_preset("gpt2", **NO_DROPOUT)
    ours, theirs = pair("lm", config, "sdpa", torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (8, 512), device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True)
    with torch.no_grad():
        diff_c = diff(compiled(ids).logits, ours(ids).logits)
        t_c = event_time(lambda: compiled(ids))
        t_e = event_time(lambda: ours(ids))
        t_h = event_time(lambda: theirs(ids))
    log(
        f"gpt2 bf16 8x512: compiled {t_c:.2f} ms, eager {t_e:.2f} ms, transformers {t_h:.2f} ms; "
        f"compiled vs transformers {t_h / t_c:.2f}x; max |compiled - eager| {diff_c:.3e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument("--only", nargs="*", default=None, help="sections to run")
    args = parser.parse_args()
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check.py needs a CUDA device")
    log("# gpt2_dual.pt on GPU\n")
    log(
        "Command: `PYTHONPATH=src python benchmarks/gpu_check.py`; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    log(
        f"- device: {name}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
        f"transformers {transformers.__version__}; Python {platform.python_version()}"
    )
    log(f"- flash_attn installed: {importlib.util.find_spec('flash_attn') is not None}")
    sections = {
        "parity": parity,
        "kernels": kernels,
        "decode": decode,
        "generate": generate,
        "speed": speed,
        "compiled": compiled_speed,
        "bnb": bnb,
    }
    for name, fn in sections.items():
        if args.only is None or name in args.only:
            fn()
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
