"""The model's matrix products: ``Conv1D`` (transformers' layout) and ``linear``.

Shapes: M rows (batch x tokens), K in features, N out features.

``Conv1D`` keeps transformers' GPT-2 layout, weight ``(K, N)``, so state dicts equal
transformers' tensor for tensor and ``from_pretrained`` can use a checkpoint's tensors in
place. ``linear(x, weight, bias, out_in=...)`` is the one product both it and ``Linear``
(the heads' ``nn.Linear``, weight ``(N, K)``) call.

On CPU in float32, on the CPUs where it is faster, the product runs on oneDNN, which ships
inside PyTorch (``torch.ops.mkldnn._linear_pointwise``): PyTorch's own float32 path is MKL's
sgemm, whose AVX2 code AMD CPUs get, while Intel CPUs get MKL's best code. The choice is made
by what the CPU is (``gpt2_dual.cpu.float32_path``: oneDNN on AMD x86, PyTorch's kernels on
Intel and elsewhere), never by where it was measured; ``GPT2_DUAL_ONEDNN=0/1`` and
``use_onednn`` override it. Both are IEEE float32 GEMMs with float32 accumulation; only the
summation order differs (logits stay within 1e-5 of transformers). Measured on a 2-core AMD
EPYC (``benchmarks/results/gemm_cpu.md``, one thread): 63-66 against 92-99 GFLOP/s on the LM
head's forward, 91-103 against 101-112 on the blocks'. A single row (a decode step) takes
oneDNN too: there the product is a matrix-vector one that reads every weight once, and with
weights cold in cache (as in decoding) oneDNN reads them at 29-33 GB/s against MKL's 16-22
on 2 threads, and faster on 1 (greedy gpt2 decoding: 44 against 32 tokens/s on 2 threads,
35 against 33 on 1; ``benchmarks/bench_generate.py``).

Eager, the product is an ``autograd.Function`` with its own backward: oneDNN for the input
gradient and the LM head's weight gradient, MKL (which reads transposed operands in place)
for the blocks' weight gradients. Under ``torch.compile`` it is a ``torch.library`` custom op
that inductor calls as an opaque kernel; eager code avoids the custom op, whose first call
costs about 1 s. Every other case (GPU, other dtypes, CPU autocast, no oneDNN in the build,
or ``use_onednn(False)``) runs PyTorch's ``addmm``/``linear``.

bfloat16 products on CPU run PyTorch's bf16 ``addmm``/``linear``, which is oneDNN's where the
CPU has bf16 arithmetic (``gpt2_dual.cpu.bfloat16_path``: AVX-512 BF16 or AMX). On x86 CPUs
without it, the first bf16 CPU product logs one warning (``gpt2_dual.cpu.bfloat16_advice``:
measured there, float32 is the faster choice).

Inference products on a weight with an active oneDNN-packed copy read the copy instead
(``_PACKED``; ``gpt2_dual.pt.packing`` makes the copies, for ``generate`` and serving).
"""

from __future__ import annotations

import logging
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Conv1D", "Linear", "linear", "onednn_available", "onednn_by_default", "use_onednn"]


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN and its fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_by_default() -> bool:
    """Whether CPU float32 products start on oneDNN in this process: oneDNN is in the build
    and the CPU rule (``gpt2_dual.cpu``: AMD x86 yes, Intel x86 and others no) or the
    ``GPT2_DUAL_ONEDNN`` environment variable says so."""
    from gpt2_dual.cpu import onednn_default

    return onednn_available() and onednn_default()


_STATE = {"onednn": onednn_by_default(), "bf16_checked": False}
logger = logging.getLogger(__name__)


def use_onednn(enabled: bool) -> None:
    """Turn the oneDNN path for CPU float32 products on or off, process-wide.

    The default is ``onednn_by_default()``: decided by what the CPU is (``gpt2_dual.cpu``),
    overridable with ``GPT2_DUAL_ONEDNN=0/1``. Off, every product runs PyTorch's own kernels
    (MKL on x86).

    Raises:
        RuntimeError: ``enabled`` without oneDNN in this PyTorch build.
    """
    if enabled and not onednn_available():
        raise RuntimeError("this PyTorch build has no oneDNN linear op (torch.backends.mkldnn)")
    _STATE["onednn"] = bool(enabled)


def _onednn_on(x: Tensor, weight: Tensor) -> bool:
    return (
        _STATE["onednn"]
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    )


#: ``id(weight) -> (weight, packed)``: the oneDNN-packed copies now active (filled and emptied
#: by ``gpt2_dual.pt.packing.using_packed``).
_PACKED: dict[int, tuple[Tensor, Tensor]] = {}


def _packed(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """The product on ``weight``'s packed copy, when one is active and no gradient is needed."""
    entry = _PACKED.get(id(weight))
    if entry is None or entry[0] is not weight or x.dtype != weight.dtype:
        return None
    if _needs_grad(x, weight, bias) or x.device.type != "cpu":
        return None
    return _unfold(_nt(x.reshape(-1, x.shape[-1]), entry[1], bias), x)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, *, out_in: bool) -> Tensor:
    """``x @ W + bias`` with ``W`` the ``(K, N)`` matrix the weight holds.

    Args:
        x: ``(..., K)``.
        weight: ``(N, K)`` when ``out_in`` (``nn.Linear``), else ``(K, N)`` (``Conv1D``).
        bias: ``(N,)`` or None.
        out_in: the weight's layout.

    Returns:
        ``(..., N)``.
    """
    if not _STATE["bf16_checked"] and x.dtype == torch.bfloat16 and x.device.type == "cpu":
        _check_bfloat16()
    if _PACKED and not torch.compiler.is_compiling():
        y = _packed(x, weight, bias)
        if y is not None:
            return y
    if _onednn_on(x, weight):
        if torch.compiler.is_compiling():
            return _COMPILED(x, weight, bias, out_in)
        if not _needs_grad(x, weight, bias):  # inference: skip autograd.Function's overhead
            return _forward(x, weight, bias, out_in)
        return _Product.apply(x, weight, bias, out_in)
    rows = x.reshape(-1, x.shape[-1])
    if out_in:
        y = F.linear(rows, weight, bias)
    else:
        y = torch.mm(rows, weight) if bias is None else torch.addmm(bias, rows, weight)
    return _unfold(y, x)


def _check_bfloat16() -> None:
    """Once per process: warn when bf16 products run on a CPU without bf16 arithmetic."""
    if torch.compiler.is_compiling():
        return
    from gpt2_dual.cpu import bfloat16_advice, cpu_info

    _STATE["bf16_checked"] = True
    advice = bfloat16_advice(cpu_info())
    if advice is not None:
        logger.warning(advice)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _unfold(y: Tensor, x: Tensor) -> Tensor:
    """``(M, N) -> (..., N)`` with ``x``'s leading shape, as a tensor of its own rather than a
    view (as ``torch.matmul`` returns it): FSDP2 warns about modules that return views."""
    return torch.ops.aten._unsafe_view(y, (*x.shape[:-1], y.shape[-1]))


class Conv1D(nn.Module):
    """transformers' GPT-2 ``Conv1D``: ``y = x @ weight + bias``, weight ``(in, out)``.

    ``gpt2_dual.pt.peft_support.register()`` makes it a subclass of transformers' own
    ``Conv1D`` (for peft), hence ``nn.Module.__init__`` below rather than ``super()``, whose
    ``__init__`` would then be transformers' ``(nf, nx)``.

    Args:
        in_features: ``K``.
        out_features: ``N``.

    Shapes:
        ``(..., K) -> (..., N)``.
    """

    __repr__ = nn.Module.__repr__  # not transformers' Conv1D one once registered

    def __init__(self, in_features: int, out_features: int) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        nn.init.normal_(self.weight, std=0.02)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, out_in=False)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    @property
    def nf(self) -> int:
        """transformers' name of ``out_features``."""
        return self.out_features

    @property
    def nx(self) -> int:
        """transformers' name of ``in_features``."""
        return self.in_features


class Linear(nn.Linear):
    """``nn.Linear`` (weight ``(out, in)``) whose product is ``linear``: the heads' layers.

    Still an ``nn.Linear`` (hooks, ``isinstance`` checks and layer-swapping tools see one);
    only the product's kernel differs.

    Shapes:
        ``(..., in_features) -> (..., out_features)``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, out_in=True)


def _nt(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a (M, K) @ b (N, K).T + bias`` on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def _forward(x: Tensor, weight: Tensor, bias: Tensor | None, out_in: bool) -> Tensor:
    w = weight if out_in else weight.t()  # (N, K), a view for Conv1D
    return _unfold(_nt(x.reshape(-1, x.shape[-1]), w, bias), x)


def _setup(ctx, inputs, output) -> None:
    x, weight, bias, out_in = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias, ctx.out_in = bias is not None, out_in


def _backward(ctx, grad: Tensor, nt=_nt):
    x, weight = ctx.saved_tensors
    g = grad.reshape(-1, grad.shape[-1])  # (M, N)
    dx = dw = db = None
    if ctx.needs_input_grad[0]:  # (M, N) @ (N, K): nt wants the (K, N) matrix
        dx = nt(g, weight.t() if ctx.out_in else weight).view(x.shape)
    if ctx.needs_input_grad[1]:  # in the weight's own layout
        rows = x.reshape(-1, x.shape[-1])  # (M, K)
        if ctx.out_in:  # the LM head's (V, K): oneDNN, even with the two copies, beats MKL
            dw = nt(g.t().contiguous(), rows.t().contiguous())
        else:  # Conv1D's (K, N): MKL, which reads the transposed operand in place
            dw = torch.mm(rows.t(), g)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        db = g.sum(0)
    return dx, dw, db, None


class _Product(torch.autograd.Function):
    """The eager oneDNN product (a ``torch.library`` op costs ~1 s on its first call)."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, out_in: bool) -> Tensor:
        return _forward(x, weight, bias, out_in)

    setup_context = staticmethod(_setup)
    backward = staticmethod(_backward)


def _register():
    """Register the custom ops that ``torch.compile`` sees (inductor would otherwise lower
    oneDNN's linear op itself, which it can only do for frozen weights)."""

    @torch.library.custom_op("gpt2_dual::onednn_mm_nt", mutates_args=())
    def mm_nt(a: Tensor, b: Tensor) -> Tensor:  # a (M, K) @ b (N, K).T
        return _nt(a, b)

    @mm_nt.register_fake
    def _(a: Tensor, b: Tensor) -> Tensor:
        return a.new_empty(a.shape[0], b.shape[0])

    @torch.library.custom_op("gpt2_dual::onednn_linear", mutates_args=())
    def product(x: Tensor, weight: Tensor, bias: Tensor | None, out_in: bool) -> Tensor:
        return _forward(x, weight, bias, out_in)

    @product.register_fake
    def _(x: Tensor, weight: Tensor, bias: Tensor | None, out_in: bool) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0 if out_in else 1])

    product.register_autograd(partial(_backward, nt=mm_nt), setup_context=_setup)
    return product


_COMPILED = _register() if onednn_available() else None
