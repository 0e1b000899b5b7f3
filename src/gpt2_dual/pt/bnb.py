"""bitsandbytes 4-bit and 8-bit layers for gpt2_dual.pt, as transformers' quantizer builds them.

Importing this module imports bitsandbytes (the ``bnb`` extra); ``from_pretrained`` imports it
only when a model is quantized. ``replace_layers`` swaps the ``Conv1D`` and ``nn.Linear``
modules of a model built on ``meta`` for ``Linear4bit`` / ``Linear8bitLt`` (subclasses of
bitsandbytes' own, so ``isinstance`` checks of peft and others hold); ``set_weight`` then gives
each one its checkpoint tensor, quantized on the target device one tensor at a time (or a
checkpoint's already quantized tensors as they are). bitsandbytes' layers hold ``(out, in)``
weights, as ``nn.Linear``: a ``Conv1D`` weight, ``(in, out)`` in transformers' layout, is
transposed in ``set_weight`` and nowhere else. Quantized checkpoints store the ``(out, in)``
result, as transformers writes them.

bitsandbytes 0.50 repacks a 4-bit weight in place on its first no-grad forward on a CPU with
AVX-512 BF16 (``packing_format_for_cpu``: a blocked nibble order and bfloat16 block scales, the
double-quantized scales expanded). Its way back is lossy: bfloat16 scales, double-quantized
ones quantized again, the others left transposed; and its forward casts the bias to the compute
dtype in place. transformers 4.57 saves through both, so a checkpoint saved after a forward
reloads off by 13-27% of the logit scale without double quantization, 0.2-0.3% with (tiny
models, measured), and the model itself computes those numbers from then on. ``Linear4bit``
here keeps the quantization state it was loaded with when it repacks (a reference: the fp32
block scales, 1/8 of the packed weight's bytes without double quantization), undoes the nibble
order exactly when saving or moving, and so saves the same bytes before and after any forward.
Neither layer changes its bias dtype in ``forward``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from gpt2_dual.pt.bnb_load import Plan, Prequantized, QuantizedView, file_dtype
from gpt2_dual.pt.linear import Conv1D
from gpt2_dual.quantization import BitsAndBytesConfig, is_skipped, modules_to_not_convert

logger = logging.getLogger(__name__)

INSTALL = 'pip install "gpt2_dual[bnb]"'


def require_bitsandbytes() -> Any:
    """The ``bitsandbytes`` module.

    Raises:
        ImportError: bitsandbytes is not installed; the message names the extra to install.
    """
    try:
        import bitsandbytes
    except ImportError as err:
        raise ImportError(
            "4-bit and 8-bit loading (quantization_config, --load-in-4bit/--load-in-8bit) need "
            f"bitsandbytes, which is not installed: {INSTALL}"
        ) from err
    return bitsandbytes


bnb = require_bitsandbytes()
_F = bnb.functional
#: bitsandbytes >= 0.49 on AVX-512 BF16 CPUs repacks 4-bit weights for its CPU kernel.
_PACK = getattr(_F, "_convert_weight_packed_for_cpu", None)
_UNPACK = getattr(_F, "_convert_weight_packed_for_cpu_inverse", None)
#: Rows per block of that layout (``block_n``): out_features must be a multiple of it.
_PACK_BLOCK_N = 32

__all__ = [
    "Linear4bit",
    "Linear8bitLt",
    "replace_layers",
    "saved_weight",
    "set_weight",
]


def _packed(layer: nn.Module) -> bool:
    return bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))


def _packable(layer: nn.Module) -> bool:
    """Whether bitsandbytes' CPU layout can hold the weight: ``out_features`` a multiple of its
    row block, ``in_features`` of the quantization block. Other layers keep the plain layout
    (bitsandbytes' own layer fails on them; so does transformers' model)."""
    blocksize = layer.weight.quant_state.blocksize
    return layer.out_features % _PACK_BLOCK_N == 0 and layer.in_features % blocksize == 0


def _unpacked_data(data: torch.Tensor, state: Any) -> torch.Tensor:
    """The packed 4-bit weight before bitsandbytes' CPU repacking: the nibble order undone
    exactly (a permutation), without touching ``state`` or re-quantizing the scales."""
    probe = copy.copy(state)
    probe.original_nested = False  # the scales come from the kept state, not from here
    weight, _ = _UNPACK(data, probe)
    return weight


class Linear4bit(bnb.nn.Linear4bit):
    """bitsandbytes' 4-bit linear layer (weight ``(out, in)``, packed) that saves what it
    loaded: the same bytes before and after it ran, repacked for the CPU or not.

    Shapes:
        ``(..., in_features) -> (..., out_features)``.
    """

    bnb_bits = 4
    #: Replaced a ``Conv1D``: its checkpoint weight is ``(in, out)``.
    conv1d = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """bitsandbytes 0.50's ``Linear4bit.forward``, keeping the loaded quantization state
        when it repacks and never casting the bias in place."""
        bnb.nn.modules.fix_4bit_weight_quant_state_from_module(self)
        state = self.weight.quant_state
        repack = (
            _PACK is not None
            and x.device.type == "cpu"
            and getattr(self, "support_avx512bf16_for_cpu", False)
            and not self.training
            and not x.requires_grad
            and not _packed(self)
            and _packable(self)
        )
        if repack:
            self._loaded_state = copy.copy(state)  # the repack rebinds its fields, in place
            self.weight.data, state = _PACK(self.weight.data, state)
        if not self.compute_type_is_set:
            self.set_compute_type(x)
            self.compute_type_is_set = True
        dtype = x.dtype
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return bnb.matmul_4bit(x, self.weight, bias=bias, quant_state=state).to(dtype)

    def saved_state(self) -> dict[str, torch.Tensor]:
        """``"weight"`` (packed, as loaded) and its ``"weight.absmax"``, ``"weight.quant_map"``,
        ... statistics, as transformers saves them; the layer is not changed."""
        data, state = self.weight.data, self.weight.quant_state
        if _packed(self):
            data, state = _unpacked_data(data, state), self._loaded_state
        out = {"weight": data.detach()}
        for key, value in state.as_dict(packed=True).items():
            out[f"weight.{key}"] = value.detach().clone()  # small; own storage for safetensors
        return out

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        state = self.saved_state()
        destination[prefix + "weight"] = state.pop("weight")
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()
        destination.update({prefix + k: v for k, v in state.items()})

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        # Before a move or cast, back to the loaded layout (bitsandbytes' .cuda() undoes the
        # repacking lossily, its .to() not at all); the next CPU forward repacks again.
        if _packed(self):
            state = self._loaded_state
            self.weight.data = _unpacked_data(self.weight.data, self.weight.quant_state)
            self.weight.quant_state = self.quant_state = state
            del self._loaded_state
        return super()._apply(fn, recurse)


class Linear8bitLt(bnb.nn.Linear8bitLt):
    """bitsandbytes' LLM.int8() linear layer (int8 weight ``(out, in)``, row scales ``SCB``)
    whose forward leaves the bias dtype alone.

    Shapes:
        ``(..., in_features) -> (..., out_features)``.
    """

    bnb_bits = 8
    conv1d = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """bitsandbytes 0.50's ``Linear8bitLt.forward`` with the bias cast out of place."""
        self.state.is_training = self.training
        if self.weight.CB is not None:
            self.init_8bit_state()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = bnb.matmul(x, self.weight, bias=bias, state=self.state)
        if not self.state.has_fp16_weights and self.state.CB is not None:
            self.weight.data = self.state.CB
        return out

    def saved_state(self) -> dict[str, torch.Tensor]:
        """``"weight"`` (int8), ``"SCB"`` and ``"weight_format"``, as transformers saves them.

        Raises:
            NotImplementedError: ``llm_int8_has_fp16_weight``: the weights are 16-bit.
        """
        if self.state.has_fp16_weights:
            raise NotImplementedError(
                "save_pretrained of an 8-bit model loaded with llm_int8_has_fp16_weight=True is "
                "not supported: its weights are 16-bit, not int8; load it with the default "
                "llm_int8_has_fp16_weight=False to save it quantized"
            )
        scb = getattr(self.weight, "SCB", None)
        scb = self.state.SCB if scb is None else scb
        return {
            "weight": self.weight.data.detach(),
            "SCB": scb.detach().clone(),
            "weight_format": torch.tensor(0, dtype=torch.uint8),  # "row", transformers' value
        }


# --------------------------------------------------------------------------- building
def _layer(module: nn.Module, quantization: BitsAndBytesConfig) -> nn.Module:
    """A bitsandbytes layer on ``meta`` for ``module`` (a ``Conv1D`` or ``nn.Linear``)."""
    bias = module.bias is not None
    with torch.device("meta"):
        if quantization.load_in_4bit:
            layer = Linear4bit(
                module.in_features, module.out_features, bias,
                compute_dtype=getattr(torch, quantization.bnb_4bit_compute_dtype),
                compress_statistics=quantization.bnb_4bit_use_double_quant,
                quant_type=quantization.bnb_4bit_quant_type,
                quant_storage=getattr(torch, quantization.bnb_4bit_quant_storage),
            )  # fmt: skip
        else:
            layer = Linear8bitLt(
                module.in_features, module.out_features, bias,
                has_fp16_weights=quantization.llm_int8_has_fp16_weight,
                threshold=quantization.llm_int8_threshold,
            )  # fmt: skip
    layer.conv1d = isinstance(module, Conv1D)
    if bias:
        layer.bias = nn.Parameter(layer.bias.to(module.bias.dtype), requires_grad=False)
    return layer.requires_grad_(False)


def attach(plan: Plan, model: nn.Module, view: Any, paths: dict[str, str]) -> QuantizedView:
    """Swap the model's layers (built on ``meta``, in its final dtype) for bitsandbytes
    ones, as ``plan`` says, and return the view to load from. ``paths``: canonical name ->
    attribute path of each of the model's parameters.

    Raises:
        ImportError: bitsandbytes is not installed (names the extra).
    """
    owners = {p.removesuffix(".weight"): n for n, p in paths.items() if p.endswith(".weight")}
    quantized = {n for n in plan.groups if n in paths}
    swapped = replace_layers(
        model, plan.config, only={paths[n].removesuffix(".weight") for n in quantized}
    ) if plan.groups else replace_layers(model, plan.config)  # fmt: skip
    layers = {owners[p]: model.get_submodule(p) for p in swapped}
    conv1d = {name for name, layer in layers.items() if layer.conv1d}
    dtype = next(model.parameters()).dtype
    plain = {n for n in view.keys() if n in paths and n not in plan.groups} & (
        set(layers) | {n for n in paths if file_dtype(view, n) not in (None, dtype)}
    )  # converted on loading: quantized here, or cast
    return QuantizedView(view, plan.groups, conv1d, plain)


def replace_layers(
    model: nn.Module, quantization: BitsAndBytesConfig, *, only: set[str] | None = None
) -> list[str]:
    """Swap a model's ``Conv1D`` and ``nn.Linear`` modules for bitsandbytes layers, in place.

    Args:
        model: a gpt2_dual.pt model built on ``meta`` (``from_pretrained`` does so).
        quantization: 4-bit or 8-bit settings.
        only: module paths to swap (a quantized checkpoint's); None: every one that
            ``llm_int8_skip_modules`` or, without it, ``KEEP_IN_FULL_PRECISION`` does not keep.

    Returns:
        The paths swapped (``"transformer.h.0.attn.c_attn"``, ...).
    """
    skip = modules_to_not_convert(type(model).head, model.config, quantization)
    swapped = []
    for path, module in list(model.named_modules()):
        if not isinstance(module, Conv1D | nn.Linear):
            continue
        if (path not in only) if only is not None else is_skipped(path, skip):
            continue
        owner, _, name = path.rpartition(".")
        setattr(model.get_submodule(owner), name, _layer(module, quantization))
        swapped.append(path)
    return swapped


def set_weight(
    layer: nn.Module, value: torch.Tensor | Prequantized, device: torch.device, dtype: torch.dtype
) -> None:
    """Give a bitsandbytes layer its weight on ``device``: a checkpoint tensor, cast to
    ``dtype`` (as transformers does), transposed when it is a ``Conv1D``'s ``(in, out)`` and
    quantized on ``device``; or a quantized checkpoint's tensors as they are."""
    if isinstance(value, Prequantized):
        _set_prequantized(layer, value, device)
        return
    weight = value.to(dtype=dtype)
    if layer.conv1d:  # the one transposition: (in, out) -> bitsandbytes' (out, in)
        weight = weight.t()
    weight = weight.contiguous().cpu()
    old = layer.weight
    if layer.bnb_bits == 4:
        param = bnb.nn.Params4bit(
            weight, requires_grad=False, blocksize=old.blocksize,
            compress_statistics=old.compress_statistics, quant_type=old.quant_type,
            quant_storage=old.quant_storage, module=layer,
        ).to(device)  # fmt: skip
    else:
        fp16 = old.has_fp16_weights
        param = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=fp16).to(device)
    layer._parameters["weight"] = param


def _set_prequantized(layer: nn.Module, value: Prequantized, device: torch.device) -> None:
    data = torch.as_tensor(value.data)
    if value.bits == 4:
        stats = {k: torch.as_tensor(v) for k, v in value.stats.items()}
        param = bnb.nn.Params4bit.from_prequantized(
            data=data, quantized_stats=stats, requires_grad=False, device=device, module=layer
        )
    else:
        param = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False).to(device)
        param.SCB = torch.as_tensor(value.stats["SCB"]).to(device)
    layer._parameters["weight"] = param


# --------------------------------------------------------------------------- saving
def saved_weight(layer: nn.Module, key: str) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of a bitsandbytes layer whose weight is saved as ``key``
    (``"transformer.h.0.attn.c_attn.weight"``): the weight, and its statistics named as
    transformers names them (``<key>.absmax``, ... for 4-bit; ``<module>.SCB`` and
    ``<module>.weight_format`` for 8-bit)."""
    module_key = key.removesuffix("weight")
    return {module_key + name: tensor for name, tensor in layer.saved_state().items()}


def check_cast(model: nn.Module, fn: Any) -> None:
    """Refuse ``model.to(dtype)`` (``fn``: what ``nn.Module._apply`` applies) before any tensor
    changes, when the model's 4-bit weights are packed into a float ``bnb_4bit_quant_storage``:
    the cast would convert the packed bytes as numbers.

    Raises:
        TypeError: the cast would change that storage dtype.
    """
    quantization = model.config.quantization_config
    if quantization.bits != 4:
        return
    stored = getattr(torch, quantization.bnb_4bit_quant_storage)
    if stored.is_floating_point and fn(torch.empty(0, dtype=stored)).dtype != stored:
        raise TypeError(
            f"cannot cast a 4-bit model whose packed weights are stored as {stored} "
            "(bnb_4bit_quant_storage): the bytes would be converted as numbers; load it "
            "again with the dtype you want"
        )
