"""What ``from_pretrained`` quantizes, and a quantized checkpoint seen through canonical names.

``plan`` decides from the ``quantization_config`` argument, the checkpoint's ``config.json``
and its tensors: a checkpoint that holds bitsandbytes statistics (``*.weight.absmax``,
``*.weight.quant_state.bitsandbytes__nf4``, ... for 4-bit; ``*.SCB`` for 8-bit) is loaded as it
is, with its own settings (as transformers does, which also warns when the argument differs);
float weights are quantized while loading. ``QuantizedView`` then shows such a checkpoint to
the loader as float weights of their logical canonical shapes, its statistics hidden, each
quantized weight read as a ``Prequantized`` bundle.

This module does not import bitsandbytes; ``bnb.attach`` swaps the layers when a model is
quantized.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from gpt2_dual._io import release_memory
from gpt2_dual.checkpoint.loading import CheckpointError
from gpt2_dual.checkpoint.safetensors_io import read_header
from gpt2_dual.errors import InvalidInputError, MalformedFileError
from gpt2_dual.pt.pretrained_io import _DTYPES as SAFETENSORS_DTYPES
from gpt2_dual.quantization import BitsAndBytesConfig, as_quantization_config
from gpt2_dual.quantization.bnb import QUANT_TYPES

logger = logging.getLogger(__name__)

__all__ = ["Plan", "Prequantized", "QuantizedView", "find_quantized", "plan"]

#: Statistics saved next to a 4-bit ``<name>.weight`` (``<name>.weight.<stat>``).
STATS_4BIT = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
#: The JSON blob of a 4-bit weight: ``<name>.weight.quant_state.bitsandbytes__<type>``.
QUANT_STATE = ".quant_state.bitsandbytes__"
#: Statistics saved next to an 8-bit ``<name>.weight`` (``<name>.<stat>``).
STATS_8BIT = ("SCB", "weight_format")


@dataclass(frozen=True)
class Group:
    """One quantized weight of a checkpoint.

    Attributes:
        bits: 4 or 8.
        weight: canonical name of the weight (``"h.0.attn.c_attn.weight"``).
        stats: canonical names of its statistics.
        shape: the weight's logical ``(out, in)``.
        dtype: the dtype it was quantized from (``"float16"``, ...).
    """

    bits: int
    weight: str
    stats: tuple[str, ...]
    shape: tuple[int, int]
    dtype: str = "float16"


def _blob(view: Any, key: str) -> dict[str, Any]:
    """The JSON object bitsandbytes packs into a ``uint8`` tensor."""
    try:
        data = json.loads(bytes(np.asarray(view[key], dtype=np.uint8)).decode("utf-8"))
        shape = tuple(int(n) for n in data["shape"])
        if len(shape) != 2:
            raise ValueError(f"shape {shape} is not 2-D")
        return {**data, "shape": shape}
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
        raise MalformedFileError(
            f"{key}: not a bitsandbytes quantization state ({type(err).__name__}: {err})"
        ) from None


def find_quantized(view: Any) -> dict[str, Group]:
    """The checkpoint's bitsandbytes-quantized weights by canonical name (empty: none)."""
    keys = set(view.keys())
    groups = {}
    for key in view.keys():
        weight, sep, kind = key.rpartition(QUANT_STATE)
        if sep and kind in QUANT_TYPES:
            stats = tuple(f"{weight}.{s}" for s in STATS_4BIT if f"{weight}.{s}" in keys)
            blob = _blob(view, key)
            dtype = str(blob.get("dtype", "float16"))
            groups[weight] = Group(4, weight, (*stats, key), blob["shape"], dtype)
        elif key.endswith(".SCB"):
            module = key.removesuffix("SCB")
            stats = tuple(module + s for s in STATS_8BIT if module + s in keys)
            groups[module + "weight"] = Group(8, module + "weight", stats, (0, 0))
    for name, group in groups.items():
        if name not in keys:
            raise CheckpointError(f"the checkpoint holds {group.stats[0]} but no {name}")
        if group.bits == 8:
            groups[name] = Group(8, name, group.stats, tuple(view.shape(name)))
    return groups


class Prequantized:
    """A quantized checkpoint's tensors for one weight (read from the file, not yet placed).

    Attributes:
        bits: 4 or 8.
        data: the packed 4-bit or int8 weight.
        stats: its statistics by checkpoint name suffix (``"absmax"``, ``"SCB"``, ...) or, for
            4-bit, by full key (bitsandbytes' ``QuantState.from_dict`` strips prefixes).
        shape: the weight's ``(out, in)``.
    """

    def __init__(self, bits: int, data: Any, stats: dict[str, Any], shape: tuple[int, int]):
        self.bits, self.data, self.stats, self.shape = bits, data, stats, shape


class QuantizedView:
    """A checkpoint as a quantized load reads it: statistics hidden; each quantized weight has
    its logical canonical shape (``(in, out)`` for a ``Conv1D``) and reads as a
    ``Prequantized`` bundle. Tensors named in ``plain`` are read from safetensors files with
    plain file reads into memory of their own (the loader converts them and drops them, and
    no page of the file stays mapped); others pass through (views of the memory map).

    Args:
        base: the checkpoint's canonical view (``hf.SafetensorsReader``, ``CanonicalView``).
        groups: ``find_quantized(base)``.
        conv1d: canonical names of the quantized weights whose layer replaced a ``Conv1D``.
        plain: canonical names to read with plain reads (where ``base`` has files).
    """

    def __init__(
        self, base: Any, groups: dict[str, Group], conv1d: set[str], plain: set[str]
    ) -> None:
        self._base, self._groups, self._conv1d = base, groups, conv1d
        self._plain = plain if hasattr(base, "location") else set()
        self._headers: dict[Any, tuple[dict, int]] = {}
        self._hidden = {s for g in groups.values() for s in g.stats}
        self.ignored = base.ignored

    def keys(self) -> list[str]:
        """Canonical names of the weights, statistics left out."""
        return [k for k in self._base.keys() if k not in self._hidden]

    def __contains__(self, name: object) -> bool:
        return name in self._base and name not in self._hidden

    def shape(self, name: str) -> tuple[int, ...]:
        """Logical canonical shape (a quantized weight's as its float weight had)."""
        group = self._groups.get(name)
        if group is None:
            return tuple(self._base.shape(name))
        out, inp = group.shape
        return (inp, out) if name in self._conv1d else (out, inp)

    def dtype(self, name: str) -> str:
        """The tensor's dtype; a quantized weight's is the dtype it was quantized from."""
        group = self._groups.get(name)
        if group is not None:
            return group.dtype
        if hasattr(self._base, "dtype"):
            return str(self._base.dtype(name))
        return str(self._base[name].dtype)

    def __getitem__(self, name: str) -> Any:
        group = self._groups.get(name)
        if group is None:
            return self._read(name) if name in self._plain else self._base[name]
        if group.bits == 4:
            stats = {s: self._base[s] for s in group.stats}
        else:
            stats = {s.rpartition(".")[2]: self._base[s] for s in group.stats}
        return Prequantized(group.bits, self._base[name], stats, group.shape)

    def _read(self, name: str) -> torch.Tensor:
        """A tensor of a safetensors file in new memory, through plain reads."""
        path, key = self._base.location(name)
        if path not in self._headers:
            self._headers[path] = read_header(path)
        entries, start = self._headers[path]
        info = entries[key]
        begin, end = info["data_offsets"]
        with open(path, "rb") as f:
            f.seek(start + begin)
            raw = np.fromfile(f, dtype=np.uint8, count=end - begin)
        return torch.from_numpy(raw).view(SAFETENSORS_DTYPES[info["dtype"]]).view(info["shape"])


@dataclass
class Plan:
    """How a load quantizes.

    Attributes:
        config: the settings used (the checkpoint's own for a quantized checkpoint).
        groups: the checkpoint's quantized weights (empty: float weights, quantized here).
    """

    config: BitsAndBytesConfig
    groups: dict[str, Group] = field(default_factory=dict)

    def dtype(self, dtype: Any) -> Any:
        """``from_pretrained``'s ``dtype`` for the layers kept in full precision: None becomes
        float16, transformers 4's rule for bitsandbytes loading; others are kept."""
        return torch.float16 if dtype is None else dtype

    def finish(self, model: nn.Module) -> None:
        """Record the settings in ``model.config`` and set transformers' flags on the model
        (``is_quantized`` also keeps ``generate`` from compiling its decode step, as
        transformers does for bitsandbytes models)."""
        model.config.quantization_config = self.config
        # the float tensors quantized on the way (0.7 -> 0.3 GB, gpt2-medium)
        release_memory(sum(p.numel() * p.element_size() for p in model.parameters()))
        model.is_quantized = True
        model.quantization_method = "bitsandbytes"
        model.is_loaded_in_4bit = self.config.bits == 4
        model.is_loaded_in_8bit = self.config.bits == 8


def file_dtype(view: Any, name: str) -> torch.dtype | None:
    if name not in view or not hasattr(view, "dtype"):
        return None
    return SAFETENSORS_DTYPES.get(str(view.dtype(name)))


def plan(config: Any, view: Any, quantization_config: Any, *, where: str) -> Plan | None:
    """The quantization of a load, or None for a float load.

    Args:
        config: the checkpoint's ``GPT2Config`` (its ``quantization_config``, if any).
        view: the checkpoint's canonical view.
        quantization_config: ``from_pretrained``'s argument (ours, transformers', a dict, None).
        where: the checkpoint, for messages.

    Raises:
        CheckpointError: quantized tensors without a bitsandbytes ``quantization_config``, of
            mixed bits, or of other bits than the config says.
        InvalidInputError: a config of another method, or one without 4 or 8 bits.
    """
    given = as_quantization_config(quantization_config)
    stored = config.extra.get("quantization_config")
    groups = find_quantized(view)
    chosen = given if given is not None else stored
    if groups and stored is not None:
        if given is not None and given != stored:
            logger.warning(
                "You passed quantization_config to from_pretrained but the checkpoint at %r is "
                "already quantized: its own quantization_config is used",
                where,
            )
        chosen = stored
    if chosen is None:
        if groups:
            first = next(iter(groups.values()))
            raise CheckpointError(
                f"the checkpoint at {where!r} holds bitsandbytes {first.bits}-bit weights "
                f"({first.weight}, ...) but its config.json has no quantization_config"
            )
        return None
    if not isinstance(chosen, BitsAndBytesConfig):
        method = chosen.get("quant_method") if isinstance(chosen, dict) else chosen
        raise InvalidInputError(
            f"quantization_config with quant_method={method!r:.40} is not supported: gpt2_dual "
            "loads bitsandbytes 4-bit and 8-bit only"
        )
    if not chosen.is_quantizable():
        raise InvalidInputError(
            "quantization_config sets neither load_in_4bit nor load_in_8bit; set one of them"
        )
    bits = sorted({g.bits for g in groups.values()})
    if bits and bits != [chosen.bits]:
        raise CheckpointError(
            f"the checkpoint at {where!r} holds bitsandbytes {'- and '.join(map(str, bits))}-bit "
            f"weights, but its quantization_config says {chosen.bits}-bit"
        )
    return Plan(chosen, groups)
