"""Opt-in CPU speed-up: run every ``nn.Linear`` of a model on oneDNN, in float32.

PyTorch's CPU wheels run float32 ``nn.Linear``/``addmm`` through MKL, which takes its AVX2 path
on AMD CPUs; oneDNN, shipped inside PyTorch (``torch.ops.mkldnn._linear_pointwise``), uses
AVX-512 on any vendor. Both are IEEE float32 GEMMs with float32 accumulation: only the
summation order differs (outputs stay within 1e-5 of the default path). Measured on a 2-core
AMD EPYC (``benchmarks/results/pt_cpu_1thread.md``): forward 1.33x (1x128) and 1.34x (8x512)
transformers' time, against 1.05x / 1.14x for the default path.

``use_onednn_linear(model)`` swaps each ``nn.Linear.forward`` for a custom op whose forward and
both backward products are oneDNN matmuls, so it serves inference and training, eager or under
``torch.compile`` (inductor calls it as an opaque kernel). It relies on a private PyTorch op,
so it is opt-in and checked by ``onednn_available()``.

Shapes: M rows (batch x tokens), K in features, N out features.
"""

from __future__ import annotations

from functools import cache, partial

import torch
from torch import Tensor, nn

__all__ = ["onednn_available", "use_onednn_linear"]


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN and its fused linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@cache
def _ops():
    """Register the custom ops once, on first use (not at import)."""
    pointwise = torch.ops.mkldnn._linear_pointwise  # (x (M, K), w (N, K), b) -> x @ w.T + b

    @torch.library.custom_op("gpt2_dual::onednn_linear", mutates_args=())
    def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        y = pointwise(x.reshape(-1, x.shape[-1]), weight, bias, "none", [], "")  # (M, N)
        return y.view(*x.shape[:-1], weight.shape[0])

    @linear.register_fake
    def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    @torch.library.custom_op("gpt2_dual::onednn_mm_nt", mutates_args=())
    def mm_nt(a: Tensor, b: Tensor) -> Tensor:  # a (M, K) @ b (N, K).T
        return pointwise(a, b, None, "none", [], "")

    @mm_nt.register_fake
    def _(a: Tensor, b: Tensor) -> Tensor:
        return a.new_empty(a.shape[0], b.shape[0])

    def setup(ctx, inputs, output) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])  # (M, N)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = mm_nt(g2, weight.t()).view(x.shape)  # (M, N) @ (N, K)
        if ctx.needs_input_grad[1]:
            dw = mm_nt(g2.t(), x.reshape(-1, x.shape[-1]).t())  # (N, M) @ (M, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db

    linear.register_autograd(backward, setup_context=setup)
    return linear


def _forward(module: nn.Linear, x: Tensor) -> Tensor:
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return nn.functional.linear(x, module.weight, module.bias)  # oneDNN path: CPU fp32 only
    return _ops()(x, module.weight, module.bias)


def use_onednn_linear(model: nn.Module) -> nn.Module:
    """Make every ``nn.Linear`` of ``model`` run its float32 CPU matmuls on oneDNN (in place).

    Other devices and dtypes keep PyTorch's default path.

    Args:
        model: any module, e.g. a ``gpt2_dual.pt`` model.

    Returns:
        ``model``.

    Raises:
        RuntimeError: this PyTorch build has no oneDNN linear op.

    Example:
        >>> from gpt2_dual.pt.cpu import use_onednn_linear
        >>> model = use_onednn_linear(GPT2LMHeadModel.from_pretrained("gpt2"))  # doctest: +SKIP
    """
    if not onednn_available():
        raise RuntimeError("this PyTorch build has no oneDNN linear op (torch.backends.mkldnn)")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.forward = partial(_forward, module)
    return model
