"""int8 weight-only decoding (gpt2_dual.pt.torchao_int8) against float32, ours and
transformers', in one process: greedy tokens/s at batch 1 and 8, the weight-read floors, and
int8's error.

Case: gpt2-small shape, random weights (init 0.02), 16 prompt + 64 new tokens (no eos), greedy,
2 threads. Every model decodes in the same rounds, one call each per round, round-robin
(``machine.interleaved``: a burst of load from other processes hits all alike), after one
warm-up call; each row is the median of ``ROUNDS`` calls, with the min and max.

Floors (batch 1): a decode step reads every weight once, so memory bandwidth bounds it. The
``floor`` rows read that many bytes of weights, cold in cache, through matrix-vector products:
float32 (494 MB; MKL and oneDNN, as ``bench_generate.py``) and int8 (124 MB; the int8 kernel
on bf16 rows). As tokens/s they are about the most an implementation of that dtype reaches;
each batch-1 row is given as a share of both.

Errors: teacher-forced over 8 x 120 tokens, int8 against the float32 model of the same weights:
top-1 agreement and max |logit error| / std(logits). Ours twice: one token a step through the
cache (decoding's products, one row: the rows go in split, exact) and one forward per sequence
(120 rows on the kernel, one bf16 part); and a bfloat16 copy of the model quantized the same
way (its rows are bf16 already: one part, the fastest). Beside them the issue's error budget,
per-channel int8 of every product done by hand (numpy: ``scale = max|w| / 127``,
``round(w / scale)``, float32 products), and transformers' own ``TorchAoConfig`` int8 against
transformers' float32.

    .venv/bin/python benchmarks/bench_int8.py
Writes ``benchmarks/results/int8_<cpu family>.md``.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpt2_dual.config import GPT2Config  # noqa: E402
from gpt2_dual.cpu import cpu_info  # noqa: E402
from gpt2_dual.pt import GPT2LMHeadModel  # noqa: E402
from gpt2_dual.pt.linear import _STATE as LINEAR  # noqa: E402
from gpt2_dual.pt.torchao_int8 import DEQUANTIZE_ROWS, int8_path, quantize  # noqa: E402
from gpt2_dual.quantization import TorchAoConfig  # noqa: E402
from machine import facts, interleaved, results_path  # noqa: E402

PROMPT, NEW, THREADS, ROUNDS, VOCAB = 16, 64, 2, 3, 50257
WEIGHTS = 124_439_808 - 786_432  # gpt2-small without wpe (one row read a step)
TEACHER = (8, 120)  # sequences x tokens of the error check; 120 < DEQUANTIZE_ROWS


# --------------------------------------------------------------------------- models
def generate_call(model, ids: torch.Tensor, hf: bool) -> Callable[[], object]:
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
    if hf:
        kw["attention_mask"] = torch.ones_like(ids)
    else:
        kw["eos_token_id"] = None

    def call():
        with torch.inference_mode():
            return model.generate(ids, **kw)

    return call


def floors() -> dict[str, Callable[[], object]]:
    """``NEW`` reads of every weight of gpt2, cold: float32 (MKL, oneDNN) and int8 (kernel)."""
    count = WEIGHTS // (768 * 3072)  # (3072, 768) matrices
    x = torch.randn(1, 768)
    xb, ones = x.to(torch.bfloat16), torch.ones(3072, dtype=torch.bfloat16)
    mkl = [torch.randn(768, 3072) for _ in range(count)]
    onednn = [torch.randn(3072, 768) for _ in range(count)]
    int8 = [torch.randint(-127, 128, (3072, 768), dtype=torch.int8) for _ in range(count)]
    mm_nt = torch.ops.mkldnn._linear_pointwise
    return {
        "floor fp32 (MKL gemv)": lambda: [[torch.mm(x, w) for w in mkl] for _ in range(NEW)],
        "floor fp32 (oneDNN gemv)": lambda: [
            [mm_nt(x, w, None, "none", [], "") for w in onednn] for _ in range(NEW)
        ],
        "floor int8 (int8 kernel gemv)": lambda: [
            [torch._weight_int8pack_mm(xb, w, ones) for w in int8] for _ in range(NEW)
        ],
    }


def by_hand(model):
    """A float32 copy whose products use numpy's per-channel int8 weights, dequantized."""

    def int8(w: np.ndarray) -> np.ndarray:  # (N, K), per row
        scale = np.abs(w).max(axis=1, keepdims=True) / np.float32(127)
        return (np.rint(w.astype(np.float64) / scale) * scale).astype(np.float32)

    ref = copy.deepcopy(model)
    with torch.no_grad():
        for block in ref.transformer.h:
            for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                layer.weight.copy_(torch.from_numpy(int8(layer.weight.numpy().T).T))
        ref.config.tie_word_embeddings = False
        ref.lm_head.weight = torch.nn.Parameter(torch.from_numpy(int8(ref.lm_head.weight.numpy())))
    return ref


def logits(model, ids: torch.Tensor, decode: bool) -> torch.Tensor:
    """Teacher-forced logits ``(R * T, V)`` of ``ids`` ``(R, T)``: one forward per sequence, or
    (``decode``) one token a step through the cache, as generation runs its products."""
    out = []
    with torch.inference_mode():
        for row in ids:
            if not decode:
                out.append(model(row[None]).logits[0])
                continue
            cache = None
            for t in range(len(row)):
                step = model(row[None, t : t + 1], past_key_values=cache, use_cache=True)
                cache = step.past_key_values
                out.append(step.logits[0, -1:])
    return torch.cat(out)


def errors(want: torch.Tensor, got: torch.Tensor) -> tuple[float, float, float, float]:
    """Of logits ``got`` against ``want``: top-1 agreement, and the max, 99.99th percentile and
    root mean square of |logit error|, each over std(logits)."""
    agree = (want.argmax(-1) == got.argmax(-1)).float().mean().item()
    error, std = (got - want).abs().flatten(), want.std().item()
    tail = error.kthvalue(int(error.numel() * 0.9999)).values.item()
    return agree, error.max().item() / std, tail / std, error.pow(2).mean().sqrt().item() / std


# --------------------------------------------------------------------------- report
def paths() -> dict[str, str]:
    capability = torch.backends.cpu.get_cpu_capability()
    int8 = int8_path(cpu_info(), capability, platform.system())
    kernel = "dequantized"
    if int8 == "int8pack":
        kernel = "torch._weight_int8pack_mm, rows split in two bf16 parts below 4"
    ours = "oneDNN matmul" if LINEAR["onednn"] else "PyTorch addmm (MKL)"
    return {
        "transformers fp32": "PyTorch addmm (MKL)",
        "gpt2_dual.pt fp32": ours,
        "gpt2_dual.pt int8 (torchao)": f"{int8}: {kernel} (ATen {capability})",
        "gpt2_dual.pt int8 (torchao), bfloat16 model": f"{int8}: bf16 rows (ATen {capability})",
        "transformers TorchAoConfig int8": "unquantized (its filter skips Conv1D): addmm",
    }


def rows_of(batch: int, times: dict[str, list[float]], kinds: dict[str, str]) -> list[str]:
    rate = {name: batch * NEW / statistics.median(t) for name, t in times.items()}
    base, ours = rate["transformers fp32"], rate["gpt2_dual.pt fp32"]
    fp32_floor = max(v for k, v in rate.items() if k.startswith("floor fp32")) if batch == 1 else 0
    int8_floor = rate.get("floor int8 (int8 kernel gemv)", 0)
    out = []
    for name, t in times.items():
        spread = f"{batch * NEW / max(t):.1f}-{batch * NEW / min(t):.1f}"
        share = ""
        if batch == 1 and not name.startswith("floor"):
            share = f"{100 * rate[name] / int8_floor:.0f}% / {100 * rate[name] / fp32_floor:.0f}%"
        vs = f"{rate[name] / base:.2f}x | {rate[name] / ours:.2f}x"
        if name.startswith("floor"):
            vs = " | "
        out.append(
            f"| {name} | {kinds.get(name, '')} | {batch} | {rate[name]:.1f} ({spread}) | "
            f"{vs} | {share} |"
        )
    return out


def main() -> None:
    logging.getLogger("torchao").setLevel(logging.ERROR)
    torch.set_num_threads(THREADS)
    import torchao
    import transformers
    from torchao.quantization import Int8WeightOnlyConfig

    head = facts(THREADS)  # the load average before anything runs
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    ours = GPT2LMHeadModel(GPT2Config()).eval()
    prompts = {b: torch.randint(0, VOCAB, (b, PROMPT)) for b in (1, 8)}
    teacher = torch.randint(0, VOCAB, TEACHER)
    assert TEACHER[1] < DEQUANTIZE_ROWS
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        hf = transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
        q = GPT2LMHeadModel.from_pretrained(folder, quantization_config=TorchAoConfig())
        q_bf16 = quantize(copy.deepcopy(ours).to(torch.bfloat16), TorchAoConfig())
        hf_q = transformers.GPT2LMHeadModel.from_pretrained(
            folder,
            dtype=torch.float32,
            quantization_config=transformers.TorchAoConfig(quant_type=Int8WeightOnlyConfig()),
        ).eval()
    want, hf_want = logits(ours, teacher, True), logits(hf, teacher, True)
    err = {
        "by hand: numpy per-channel int8, float32 products": errors(
            want, logits(by_hand(ours), teacher, True)
        ),
        "gpt2_dual.pt int8 (torchao), decode steps: rows split": errors(
            want, logits(q, teacher, True)
        ),
        "gpt2_dual.pt int8 (torchao), one forward: one bf16 part": errors(
            want, logits(q, teacher, False)
        ),
        "gpt2_dual.pt int8 (torchao), bfloat16 model, decode steps": errors(
            want, logits(q_bf16, teacher, True).float()
        ),
        "transformers TorchAoConfig int8": errors(hf_want, logits(hf_q, teacher, True)),
    }
    table = []
    for batch in (1, 8):
        ids = prompts[batch]
        calls = {
            "transformers fp32": generate_call(hf, ids, hf=True),
            "gpt2_dual.pt fp32": generate_call(ours, ids, hf=False),
            "gpt2_dual.pt int8 (torchao)": generate_call(q, ids, hf=False),
            "gpt2_dual.pt int8 (torchao), bfloat16 model": generate_call(q_bf16, ids, hf=False),
        }
        if batch == 1:
            calls["transformers TorchAoConfig int8"] = generate_call(hf_q, ids, hf=True)
            calls.update(floors())
        times = interleaved(calls, rounds=ROUNDS, warmup=1)
        table += rows_of(batch, times, paths())
    lines = ["# int8 weight-only greedy decoding, gpt2-small shape", "", *head]
    load_end = os.getloadavg()[0]
    busy = "busy: other work shared the cores" if max(load_start, load_end) > 0.5 else "quiet"
    lines += [
        f"- 1-minute load average at the end: {load_end:.2f} ({busy}; every row ran in the same "
        "rounds, so load hit all alike)",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, torchao "
        f"{torchao.__version__}; {PROMPT} prompt + {NEW} new tokens, greedy, no eos; median of "
        f"{ROUNDS} interleaved rounds after a warm-up (min-max); errors teacher-forced over "
        f"{TEACHER[0]} x {TEACHER[1]} tokens against the float32 model's decode steps, random "
        "weights (init 0.02)",
        "",
        "| model | kernel path | batch | tokens/s (min-max) | vs transformers fp32 | vs "
        "gpt2_dual.pt fp32 | % of int8 / fp32 floor |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        "| error against float32 | top-1 agreement | max err / std | 99.99th pct / std | rms / "
        "std |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {a:.1%} | {m:.3f} | {t:.3f} | {r:.4f} |"
            for name, (a, m, t, r) in err.items()
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results_path("int8").write_text(text)


if __name__ == "__main__":
    main()
