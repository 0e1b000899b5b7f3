"""int8 weight-only quantization of a gpt2_dual.pt model through torchao (``TorchAoConfig``).

Shapes: M rows (batch x tokens), K in features, N out features.

Every product becomes an ``Int8Linear``: weight ``(N, K)`` int8 and one float32 scale per
output channel, made by torchao's own primitives (``choose_qparams_affine`` and
``quantize_affine``, symmetric over ``[-127, 127]``: ``scale = max|w| / 127``, ``q = round(w /
scale)``). The blocks' ``Conv1D`` weights ``(K, N)`` are transposed once, here. With
``include_input_output_embeddings`` the tied LM head gets an ``Int8Linear`` too, quantized from
``wte``'s rows; ``wte`` itself stays float (its lookups stay exact), so the head holds its own
int8 copy of those rows (39 MB for gpt2).

Why not ``quantize_(model, Int8WeightOnlyConfig())``: it takes ``nn.Linear`` only, so on
GPT-2's ``Conv1D`` it quantizes nothing (transformers' ``TorchAoConfig`` shows it), and on CPU
its ``Int8Tensor`` dequantizes the whole weight at every call (this path's first version,
built on it, decoded gpt2 at 0.07x transformers' float32).

How a product runs (``int8_path``, by what the CPU is):

- ``"int8pack"``: PyTorch's own weight-only kernel, ``torch._weight_int8pack_mm``, which reads
  the int8 weight once and widens it in registers: a decode step reads a quarter of float32's
  bytes. Its vectorized code (AVX2 or AVX-512F on x86, NEON on ARM; no bf16 arithmetic
  needed: bf16 is widened by a shift) takes bfloat16 activations only on x86 (float32 ones
  run its scalar loop, 6x slower than float32 ``F.linear``), so the rows go in as bfloat16
  and the kernel's bf16 result is scaled and biased in float32:
  ``y = bf16(bf16(x) @ q.T) * scale + bias``, float32 accumulation. Weight-only means the
  activations stay exact, so a product of fewer than ``SPLIT_ROWS`` float32 rows (decoding a
  few sequences) sends each row in two bf16 parts, ``hi = bf16(x)`` and ``lo = bf16(x - hi)``
  (together exact to about 2^-16 relative), in one call of 2M rows, and adds their sums in
  float32; one bf16 rounding of each sum remains. The second part costs 14% of batch-1
  decoding speed (the kernel's work per weight byte doubles); from 4 rows the kernel is
  compute-bound and the split would halve it, so more rows go in as one bf16 part. A
  bfloat16 model's rows are bf16 already: one part, the fastest, with bf16's error. Layers
  whose K is not a multiple of 16 (the AVX-512 loop's step) and products of
  ``DEQUANTIZE_ROWS`` rows or more (a long prompt, where the kernel's 4x4 tiles lose to a
  float32 GEMM) take the other path.
- ``"dequantize"``: ``x @ (q * scale).T + bias`` in the activations' dtype, through
  ``gpt2_dual.pt.linear``: x86 without AVX2, ATen built by MSVC (Windows: the kernel's scalar
  loop only), CUDA (whose kernel of this op is a naive loop over outputs). On a CPU it is
  slower than float32 (one warning per process).

Gradients reach the input (and a bias set to ``requires_grad``) on both paths; the kernel's
backward is the dequantized product's, ``dx = dy @ (q * scale)``.

Measured on an AMD EPYC (Zen 4, 2 threads), one row: c_attn 768->2304 0.05 ms against float32
``F.linear``'s 0.13, the LM head 768->50257 2.4 ms against 11.1; greedy gpt2-small decoding at
batch 8 0.9-1.2x our float32: the kernel widens every weight once per 4 rows, so from 4 rows
it is compute-bound (``benchmarks/results/int8_amd-epyc-zen4.md``, with batch 1). Accuracy,
teacher-forced decode steps of gpt2-small against float32: split rows give a max logit error of
0.1335 x std against 0.1333 for per-channel int8 done in numpy with float32 products, rms error
1.6% above it (the sums' bf16 rounding); one bf16 part gave 0.1365 and 3.3%.

A quantized model cannot be saved: transformers has no torchao layout for GPT-2's ``Conv1D``
(its quantizer skips them); ``save_pretrained`` raises ``QuantizedModelError``. Save the float
model and quantize at load.

Example:
    >>> from gpt2_dual.quantization import TorchAoConfig
    >>> q = TorchAoConfig()  # or transformers' TorchAoConfig(quant_type=Int8WeightOnlyConfig())
    >>> model = GPT2LMHeadModel.from_pretrained("gpt2", quantization_config=q)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import platform
from typing import Any

import torch
from torch import Tensor, nn

from gpt2_dual.cpu import CpuInfo, cpu_info
from gpt2_dual.errors import InvalidInputError, QuantizedModelError
from gpt2_dual.pt.linear import Conv1D, linear
from gpt2_dual.quantization import TorchAoConfig, as_torchao, is_skipped

logger = logging.getLogger(__name__)

__all__ = [
    "DEQUANTIZE_ROWS",
    "SPLIT_ROWS",
    "Int8Linear",
    "int8_path",
    "int8_weight",
    "quantize",
    "use_int8pack",
]

INSTALL = 'pip install "gpt2_dual[torchao]"'
METHOD = "torchao"
#: Products of this many rows or more dequantize (Zen 4, 2 threads, dequantizing included: the
#: kernel is faster up to 64 rows, a float32 GEMM from about 128).
DEQUANTIZE_ROWS = 128
#: float32 products of fewer rows send them to the kernel split in two bf16 parts (exact rows).
SPLIT_ROWS = 4
#: ATen's x86 builds where the kernel is vectorized (``torch.backends.cpu.get_cpu_capability``).
_VECTOR_X86 = ("AVX2", "AVX512")
_X86 = ("x86_64", "amd64", "i686", "x86")
_STATE: dict[str, Any] = {"int8pack": None}


def _require_torchao() -> Any:
    try:
        from torchao.quantization import quant_primitives
    except ImportError as err:
        raise ImportError(
            f"int8 weight-only quantization (TorchAoConfig) needs torchao, which is not "
            f"installed: {INSTALL}"
        ) from err
    return quant_primitives


def int8_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """torchao's symmetric per-row int8 of a float ``(N, K)`` weight.

    Returns:
        ``(q, scale)``: ``q`` int8 ``(N, K)`` in ``[-127, 127]``, ``round(w / scale)``;
        ``scale`` float32 ``(N,)``, ``max|w| / 127`` per row (the smallest normal float for an
        all-zero row).
    """
    ao = _require_torchao()
    w = weight.detach().float()
    block = (1, w.shape[1])
    scale, zero = ao.choose_qparams_affine(
        w, ao.MappingType.SYMMETRIC, block, torch.int8, quant_min=-127, quant_max=127,
        scale_dtype=torch.float32, zero_point_dtype=torch.int8,
    )  # fmt: skip
    q = ao.quantize_affine(w, block, scale, zero, torch.int8, quant_min=-127, quant_max=127)
    return q.contiguous(), scale.reshape(-1).contiguous()


def int8_path(info: CpuInfo, capability: str, system: str) -> str:
    """``"int8pack"`` where PyTorch's int8 weight-only kernel is vectorized for this CPU, else
    ``"dequantize"`` (module docstring).

    Args:
        info: the CPU (``gpt2_dual.cpu.cpu_info()``).
        capability: ATen's CPU build in use (``torch.backends.cpu.get_cpu_capability()``:
            ``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, ``"SVE256"``, ...).
        system: ``platform.system()``; ATen's Windows builds (MSVC) have the scalar kernel only.
    """
    machine = info.machine.lower()
    if system == "Windows":
        return "dequantize"
    if machine in _X86:
        return "int8pack" if capability.upper() in _VECTOR_X86 else "dequantize"
    return "int8pack" if machine in ("aarch64", "arm64") else "dequantize"


def use_int8pack(enabled: bool | None) -> None:
    """Run CPU products on the int8 kernel (True), dequantize them (False), or follow
    ``int8_path`` for this machine (None, the default), process-wide."""
    _STATE["int8pack"] = None if enabled is None else bool(enabled)


def _int8pack_on() -> bool:
    if _STATE["int8pack"] is None:
        capability = torch.backends.cpu.get_cpu_capability()
        path = int8_path(cpu_info(), capability, platform.system())
        _STATE["int8pack"] = path == "int8pack"
        logger.info("torchao int8 products: %s (ATen CPU build %s)", path, capability)
        if path == "dequantize":
            logger.warning(
                "int8 weight-only products on this CPU (%s, ATen build %s) dequantize their "
                "weights at every call, slower than float32: PyTorch's int8 kernel is not "
                "vectorized here (gpt2_dual.pt.torchao_int8.int8_path)",
                cpu_info().model, capability,
            )  # fmt: skip
    return _STATE["int8pack"]


class Int8Linear(nn.Linear):
    """``y = x @ (q * scale).T + b``: ``q`` int8 ``(N, K)`` (the ``weight``, frozen),
    ``weight_scale`` float32 ``(N,)``, ``bias`` float ``(N,)``.

    Shapes:
        ``(..., in_features) -> (..., out_features)``.
    """

    @classmethod
    def from_float(cls, weight: Tensor, bias: Tensor | None) -> Int8Linear:
        """From a float ``(N, K)`` weight and ``(N,)`` bias (kept as it is)."""
        out_features, in_features = weight.shape
        with torch.device("meta"):
            layer = cls(in_features, out_features, bias=bias is not None)
        q, scale = int8_weight(weight)
        layer.weight = nn.Parameter(q, requires_grad=False)
        layer.register_buffer("weight_scale", scale)
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        layer._ones = torch.ones(out_features, dtype=torch.bfloat16)  # the kernel's scales
        return layer

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)  # (M, K)
        args = (rows, self.weight, self.weight_scale, self.bias)
        if not self._kernel_takes(rows):
            scale = self.weight_scale.to(x.dtype)[:, None]
            y = linear(rows, self.weight.to(x.dtype) * scale, self.bias, out_in=True)
        elif torch.is_grad_enabled() and (rows.requires_grad or _needs_grad(self.bias)):
            y = _KernelProduct.apply(self._ones, *args)
        else:  # inference: skip autograd.Function's overhead
            y = _kernel(self._ones, *args)
        return torch.ops.aten._unsafe_view(y, (*x.shape[:-1], self.out_features))

    def _kernel_takes(self, rows: Tensor) -> bool:
        """Whether the int8 kernel runs this product (module docstring); the kernel loads
        16-byte-aligned int8 rows, hence the layout checks."""
        if rows.device.type != "cpu":
            return False
        w = self.weight
        return (
            _int8pack_on()
            and rows.shape[0] < DEQUANTIZE_ROWS
            and self.in_features % 16 == 0
            and w.is_contiguous()
            and (torch.compiler.is_compiling() or w.data_ptr() % 16 == 0)
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + ", int8 weight-only (torchao)"


def _needs_grad(t: Tensor | None) -> bool:
    return t is not None and t.requires_grad


def _kernel(ones: Tensor, rows: Tensor, q: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
    """``bf16(bf16(rows) @ q.T) * scale + bias`` ``(M, N)`` in ``rows``' dtype; ``ones``:
    bf16 ``(N,)``, the kernel's own scales (ours stay float32, applied after). Fewer than
    ``SPLIT_ROWS`` float32 rows go in split, ``hi = bf16(rows)`` and ``lo = bf16(rows - hi)``
    stacked ``(2M, K)``, and their sums are added in float32 (module docstring)."""
    hi = rows.to(torch.bfloat16, copy=True)
    split = rows.dtype == torch.float32 and rows.shape[0] < SPLIT_ROWS
    if split:
        lo = (rows - hi).to(torch.bfloat16)
        parts = torch._weight_int8pack_mm(torch.cat([hi, lo]), q, ones).float()
        y = parts[: len(rows)] + parts[len(rows) :]
    else:
        y = torch._weight_int8pack_mm(hi, q, ones)
    y = y * scale if bias is None else torch.addcmul(bias, y, scale)
    return y.to(rows.dtype)


class _KernelProduct(torch.autograd.Function):
    """The kernel's product with gradients for the rows and the bias (the weight is frozen):
    ``dx = dy @ (q * scale)``, as if the product were the dequantized one."""

    @staticmethod
    def forward(ctx, ones, rows, q, scale, bias):
        ctx.save_for_backward(q, scale)
        ctx.has_bias = bias is not None
        return _kernel(ones, rows, q, scale, bias)

    @staticmethod
    def backward(ctx, grad):
        q, scale = ctx.saved_tensors
        dx = grad @ (q.to(grad.dtype) * scale.to(grad.dtype)[:, None])
        db = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
        return None, dx, None, None, db


def _targets(model: nn.Module, config: TorchAoConfig) -> list[str]:
    """Paths of the layers to quantize: every ``Conv1D`` and ``nn.Linear`` but the LM head,
    which only with ``include_input_output_embeddings``; none in ``modules_to_not_convert``."""
    out = []
    for path, module in model.named_modules():
        if isinstance(module, Int8Linear):
            raise QuantizedModelError(
                f"{type(model).__name__} is already quantized with torchao int8 ({path}); "
                "quantize the float model once"
            )
        if not isinstance(module, Conv1D | nn.Linear):
            continue
        if path == "lm_head" and not config.include_input_output_embeddings:
            continue
        if not is_skipped(path, config.modules_to_not_convert):
            out.append(path)
    return out


def quantize(model: nn.Module, config: Any = None) -> nn.Module:
    """Make every product of a gpt2_dual.pt model int8 weight-only, in place.

    Args:
        model: a float gpt2_dual.pt model (any head).
        config: ``gpt2_dual.quantization.TorchAoConfig`` (default ``TorchAoConfig()``),
            transformers' ``TorchAoConfig``, or ``"int8_weight_only"``.

    Returns:
        ``model``, with ``is_quantized`` True, ``quantization_method`` ``"torchao"`` and
        ``config.quantization_config`` the ``TorchAoConfig`` used.

    Raises:
        QuantizedModelError: the model is already quantized (torchao or bitsandbytes).
        InvalidInputError: a config of another method or quant type; a model that is not a
            gpt2_dual.pt model (a Keras one).
        ImportError: torchao is not installed.
    """
    config = _as_config(config)
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise InvalidInputError(
            f"torchao quantization takes a gpt2_dual.pt model, got {type(model).__module__}."
            f"{type(model).__name__}; for Keras models use model.quantize('int8')"
        )
    method = getattr(model, "quantization_method", METHOD)
    if getattr(model, "is_quantized", False) and method != METHOD:
        raise QuantizedModelError(
            f"{type(model).__name__} is already quantized with {method}; torchao quantizes "
            "float models"
        )
    paths = _targets(model, config)
    _require_torchao()
    for path in paths:
        module = model.get_submodule(path)
        weight = module.weight if isinstance(module, nn.Linear) else module.weight.t()
        owner, _, name = path.rpartition(".")
        setattr(model.get_submodule(owner), name, Int8Linear.from_float(weight, module.bias))
    logger.info("torchao int8 weight-only: %d layers quantized", len(paths))
    model.config.quantization_config = config
    model.is_quantized = True
    model.quantization_method = METHOD
    return model


def _as_config(config: Any) -> TorchAoConfig:
    if config is None:
        return TorchAoConfig()
    if isinstance(config, str):
        return TorchAoConfig(config)
    found = as_torchao(config)
    if found is None:
        raise InvalidInputError(
            f"quantize takes a TorchAoConfig (gpt2_dual's or transformers'), got "
            f"{type(config).__name__}"
        )
    return found
