"""Files and options of ``from_pretrained``/``save_pretrained`` (see ``pt/weights.py``).

Finding the weight files (``.bin`` ones are read by ``gpt2_dual.checkpoint.torch_bin``);
resolving ``dtype`` and config overrides; writing transformers-format weight files
(one file, or shards plus an index), each atomically.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gpt2_dual._io import atomic_write, atomic_write_text
from gpt2_dual.checkpoint import hf, loading
from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import InvalidInputError

logger = logging.getLogger(__name__)

BIN_STEM = "pytorch_model"


# --------------------------------------------------------------------------- reading
#: safetensors dtype names -> torch dtypes (the ones a GPT-2 checkpoint can hold).
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


def find_weights(path_or_repo_id: Any, use_safetensors: bool | None, hub: dict) -> hf.Checkpoint:
    """The checkpoint's weight files; ``use_safetensors`` as in ``from_pretrained``."""
    if use_safetensors is not False:
        found = hf.find_checkpoint(path_or_repo_id, **hub)
        if use_safetensors and found.format != "safetensors":
            raise FileNotFoundError(
                f"no safetensors weights in {str(path_or_repo_id)!r} (looked for "
                f"{hf.SAFE_WEIGHTS}, {hf.SAFE_INDEX}); pass use_safetensors=None to accept "
                f"{found.files[0].name}"
            )
        return found
    from gpt2_dual.hub.resolve import resolve_file

    for name in (hf.BIN_WEIGHTS, hf.BIN_INDEX):
        path = resolve_file(path_or_repo_id, name, required=False, **hub)
        if path is None:
            continue
        if name == hf.BIN_WEIGHTS:
            return hf.Checkpoint("bin", (Path(path),))
        return hf.Checkpoint("bin", hf.resolve_shards(path_or_repo_id, path, **hub))
    raise FileNotFoundError(
        f"no weights found in {str(path_or_repo_id)!r} with use_safetensors=False: looked for "
        f"{hf.BIN_WEIGHTS}, {hf.BIN_INDEX}"
    )


# --------------------------------------------------------------------------- options
def transformers_aliases(
    dtype: Any, device: Any, *, torch_dtype: Any, device_map: Any
) -> tuple[Any, Any]:
    """``from_pretrained``'s transformers spellings -> ``(dtype, device)``.

    ``torch_dtype`` is transformers' old name of ``dtype`` (deprecated there too: a
    FutureWarning); it replaces ``dtype``'s default, ``"auto"``. ``device_map`` places the
    whole model on one device, without accelerate: ``"auto"`` (CUDA when available, else CPU),
    ``"cpu"``, ``"cuda"``, ``"cuda:1"``, an index, or ``{"": device}``.

    Raises:
        ValueError: both spellings given with different values, or a ``device_map`` that
            splits the model.
    """
    if torch_dtype is not None:
        warnings.warn(
            "from_pretrained(torch_dtype=...) is deprecated, as in transformers; use dtype=",
            FutureWarning, stacklevel=4,
        )  # fmt: skip
        if dtype not in (None, "auto") and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree")
        dtype = torch_dtype
    if device_map is None:
        return dtype, device
    target = device_map
    if isinstance(device_map, Mapping):
        if set(device_map) != {""}:
            raise ValueError(
                f"device_map={device_map!r} splits the model; gpt2_dual.pt places a model on "
                'one device: use device_map={"": device}, "auto", "cpu" or "cuda"'
            )
        target = device_map[""]
    if target == "auto":
        target = "cuda" if torch.cuda.is_available() else "cpu"
    target = check_device(f"cuda:{target}" if isinstance(target, int) else target)
    if device is not None and check_device(device) != target:
        raise ValueError(f"device={device!r} and device_map={device_map!r} disagree")
    return dtype, target


def check_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device`` this machine has (None stays None).

    Raises:
        InvalidInputError: not a device name (``"banana"``), or a device this machine lacks
            (``"cuda"`` without CUDA, ``"cuda:7"`` with fewer GPUs).
    """
    if device is None:
        return None
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise InvalidInputError(
            f"device={device!r:.60} is not a torch device ({err}); use 'cpu', 'cuda', "
            "'cuda:0', 'mps', ... or a torch.device"
        ) from None
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if target.index is None else target.index
        if index >= count:
            have = f"cuda:0..cuda:{count - 1}" if count else "no CUDA device"
            raise InvalidInputError(
                f"device={device!r} is not on this machine: it has {have} "
                f"(torch.cuda.device_count() = {count})"
            )
    elif target.type not in ("cpu", "meta"):
        try:
            torch.empty(0, device=target)
        except (RuntimeError, AssertionError) as err:
            raise InvalidInputError(
                f"device={device!r} is not available on this machine: {err}"
            ) from None
    return target


def resolve_dtype(dtype: Any, config: GPT2Config, view: Any) -> torch.dtype:
    """``dtype`` argument -> torch dtype (None: torch's default; ``"auto"``: the config's
    ``dtype``/``torch_dtype``, else the checkpoint's ``wte.weight``)."""
    if dtype is None:
        return torch.get_default_dtype()
    if dtype == "auto":
        dtype = loading.config_dtype(config)
        if dtype is None:
            if "wte.weight" not in view.keys():
                return torch.get_default_dtype()
            if not hasattr(view, "dtype"):
                return view["wte.weight"].dtype
            return _DTYPES.get(view.dtype("wte.weight"), torch.get_default_dtype())
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"dtype must be a floating torch.dtype, its name, or 'auto'; got {dtype!r}"
        )
    return dtype


# --------------------------------------------------------------------------- building
class NoInitOnMeta(TorchFunctionMode):
    """Skip in-place initializers on ``meta`` tensors while a model is built there: they have
    no data, and ``normal_`` on meta would import torch's Python reference kernels (seconds)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # nn.init passes tensor=...
        initializer = func in _INITIALIZERS or getattr(func, "__module__", "") == "torch.nn.init"
        if initializer and getattr(target, "is_meta", False):
            return target
        return func(*args, **kwargs)


_INITIALIZERS = {getattr(torch.Tensor, f"{op}_") for op in ("normal", "uniform", "fill", "zero")}


def check_no_buffers(model: nn.Module) -> None:
    """Loading fills parameters only.

    Raises:
        RuntimeError: the model has buffers; their values cannot come from a checkpoint.
    """
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        raise RuntimeError(
            f"{type(model).__name__} has buffers {buffers} that loading cannot fill (they are "
            "not in the weight-name table); gpt2_dual bug"
        )


def materialise(model: nn.Module, device: torch.device) -> None:
    """Give a model built on ``meta`` empty tensors on ``device`` (``nn.Module.to_empty``).

    Raises:
        RuntimeError: the model has buffers; their values cannot come from a checkpoint.
    """
    check_no_buffers(model)
    model.to_empty(device=device)


# --------------------------------------------------------------------------- writing
def write_weights(
    state: Mapping[str, torch.Tensor], folder: Path, max_shard_size: int | str, safe: bool
) -> list[Path]:
    """Write ``state`` (disk keys -> tensors, any layout) as one file or shards plus index.

    Shard names follow transformers (``model-00001-of-00002.safetensors``,
    ``pytorch_model-00001-of-00002.bin``). Weight files of another layout are removed after
    the new ones are in place, so a reader never picks a stale one.
    """
    shards = _plan_shards(state, hf.parse_size(max_shard_size))
    stem, ext = ("model", "safetensors") if safe else (BIN_STEM, "bin")
    count = len(shards)
    names = [f"{stem}.{ext}"] if count == 1 else [
        f"{stem}-{n + 1:05d}-of-{count:05d}.{ext}" for n in range(count)
    ]  # fmt: skip
    written = [
        atomic_write(folder / name, lambda f, k=keys: _write_shard(f, state, k, safe))
        for name, keys in zip(names, shards, strict=True)
    ]
    if count > 1:
        weight_map = {k: name for name, keys in zip(names, shards, strict=True) for k in keys}
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in state.values())},
            "weight_map": dict(sorted(weight_map.items())),
        }
        index_name = hf.SAFE_INDEX if safe else hf.BIN_INDEX
        written.append(atomic_write_text(folder / index_name, json.dumps(index, indent=2) + "\n"))
    _remove_stale(folder, {p.name for p in written})
    return written


def _plan_shards(state: Mapping[str, torch.Tensor], limit: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for key, tensor in state.items():
        if shards[-1] and size + tensor.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += tensor.nbytes
    return shards


def _write_shard(f: io.BufferedIOBase, state: Mapping, keys: list[str], safe: bool) -> None:
    if (
        safe
        and sys.byteorder == "little"
        and all(state[k].dtype in _SAFETENSORS_CODES for k in keys)
    ):
        _stream_safetensors(f, [(k, state[k]) for k in keys])
        return
    # One shard's contiguous copies at a time: transposed views become real tensors here.
    tensors = {k: state[k].contiguous().cpu() for k in keys}
    if safe:  # a dtype the streaming writer does not know (float8, ...), or big-endian
        from safetensors.torch import save

        f.write(save(tensors, metadata={"format": "pt"}))
    else:
        torch.save({k: t.clone() for k, t in tensors.items()}, f)  # clone: own storage each


#: torch dtype -> safetensors dtype, in the order ``safetensors.torch.save`` lays tensors out:
#: its ``Dtype`` enum descending (wider types first), then by key.
_SAFETENSORS_CODES = {
    torch.uint64: "U64", torch.int64: "I64", torch.float64: "F64", torch.float32: "F32",
    torch.uint32: "U32", torch.int32: "I32", torch.bfloat16: "BF16", torch.float16: "F16",
    torch.uint16: "U16", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip
_SAFETENSORS_RANK = {dtype: rank for rank, dtype in enumerate(_SAFETENSORS_CODES)}


def _stream_safetensors(f: io.BufferedIOBase, items: list[tuple[str, torch.Tensor]]) -> None:
    """Write the bytes ``safetensors.torch.save(dict(items), metadata={"format": "pt"})``
    returns, one tensor in memory at a time: the header from shapes alone, then each tensor's
    bytes straight from a contiguous CPU copy's buffer (the tensor itself when it is one)."""
    items = sorted(items, key=lambda item: (_SAFETENSORS_RANK[item[1].dtype], item[0]))
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, tensor in items:
        size = tensor.numel() * tensor.element_size()
        code = _SAFETENSORS_CODES[tensor.dtype]
        header[key] = {
            "dtype": code,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors pads
    f.write(struct.pack("<Q", len(blob)) + blob)
    for _, tensor in items:
        data = tensor.detach().cpu().contiguous().reshape(-1)
        f.write(data.view(torch.uint8).numpy().data)  # bf16 too: its bytes, no copy


def _remove_stale(folder: Path, keep: set[str]) -> None:
    for path in folder.iterdir():
        name = path.name
        shard = name.startswith(("model-", f"{BIN_STEM}-")) and name.endswith(
            (".safetensors", ".bin")
        )
        if (name in hf.WEIGHT_FILES or shard) and name not in keep:
            logger.info("removing stale weight file %s", path)
            path.unlink()
