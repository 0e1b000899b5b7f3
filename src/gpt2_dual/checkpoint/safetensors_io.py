"""Streaming safetensors: write tensors one at a time, read bfloat16 as numpy, cast dtypes.

``safetensors.numpy.save`` needs every tensor of a file in memory at once; a conversion of a
gpt2-xl-sized checkpoint must not. The format is simple (an 8-byte little-endian header size,
a JSON header with each tensor's dtype, shape and byte range, then the raw bytes), so this
module writes the header from shapes alone and then streams each tensor's bytes. numpy has no
bfloat16: ``ml_dtypes.bfloat16`` (installed with TensorFlow and JAX) stands in for it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual._io import atomic_write, atomic_write_text

#: numpy dtype name -> safetensors dtype string.
SAFETENSORS_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip
#: Bytes per element of each safetensors dtype.
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U8": 1, "BOOL": 1}  # fmt: skip


def bfloat16() -> Any:
    """numpy's stand-in for bfloat16 (``ml_dtypes.bfloat16``)."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(
            "bfloat16 tensors need the ml_dtypes package (installed with TensorFlow): "
            'pip install ml_dtypes, or pip install "gpt2_dual[tf]"'
        ) from None
    return ml_dtypes.bfloat16


def dtype_name(array: Any) -> str:
    """``"float32"``, ``"bfloat16"``, ... for a numpy array (ml_dtypes included)."""
    return str(np.asarray(array).dtype) if not hasattr(array, "dtype") else str(array.dtype)


def cast(array: np.ndarray, dtype: str | None) -> np.ndarray:
    """``array`` in floating ``dtype`` (None or its own dtype: unchanged, no copy).

    float32 -> bfloat16 rounds to nearest even, as torch and TensorFlow do.
    """
    if dtype is None or dtype_name(array) == dtype:
        return array
    target = bfloat16() if dtype == "bfloat16" else np.dtype(dtype)
    return np.asarray(array).astype(target)


@dataclass(frozen=True)
class Entry:
    """One tensor to write: its key on disk, shape, safetensors dtype and how to get it."""

    key: str
    shape: tuple[int, ...]
    code: str
    get: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * ITEMSIZE[self.code]


def plan_shards(entries: Sequence[Entry], limit: int) -> list[list[Entry]]:
    """Split entries into shards of at most ``limit`` bytes (a larger tensor gets its own)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


def _header(entries: Iterable[Entry], metadata: dict[str, str]) -> bytes:
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for entry in entries:
        header[entry.key] = {
            "dtype": entry.code, "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }  # fmt: skip
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes
    return struct.pack("<Q", len(blob)) + blob


def _write_file(f: Any, entries: Sequence[Entry], metadata: dict[str, str]) -> None:
    f.write(_header(entries, metadata))
    for entry in entries:
        array = np.ascontiguousarray(entry.get())
        found = (tuple(array.shape), SAFETENSORS_CODES.get(dtype_name(array)))
        if found != (entry.shape, entry.code):
            raise ValueError(
                f"{entry.key}: planned {entry.shape} {entry.code}, got {found[0]} {found[1]}"
            )
        f.write(array.reshape(-1).view(np.uint8).data)  # no copy


def write_sharded(
    entries: Sequence[Entry],
    folder: str | os.PathLike,
    *,
    max_shard_size: int,
    metadata: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``model.safetensors`` (or transformers-named shards plus an index), streaming.

    At most one tensor is in memory at a time; each file goes to a temporary name first.

    Returns:
        The written files (the index last when sharded).
    """
    folder = Path(folder)
    meta = dict(metadata or {"format": "pt"})
    shards = plan_shards(entries, max_shard_size)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors" for n in range(len(shards))]
    )
    written = []
    for name, shard in zip(names, shards, strict=True):
        written.append(atomic_write(folder / name, lambda f, s=shard: _write_file(f, s, meta)))
    if len(shards) > 1:
        weight_map = {e.key: name for name, s in zip(names, shards, strict=True) for e in s}
        index = {
            "metadata": {"total_size": sum(e.nbytes for e in entries)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        text = json.dumps(index, indent=2) + "\n"
        written.append(atomic_write_text(folder / "model.safetensors.index.json", text))
    return written


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (key -> dtype, shape, data_offsets) and data start."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


#: safetensors dtype string -> numpy dtype name (BF16 -> ml_dtypes' bfloat16).
NUMPY_NAMES = {code: name for name, code in SAFETENSORS_CODES.items()}


def read_tensor(path: str | os.PathLike, key: str, header: tuple[dict, int] | None = None):
    """One tensor of a safetensors file as a new numpy array, read with plain file reads.

    Unlike a memory map, nothing of the file stays mapped into the process: a conversion that
    reads tensor after tensor holds one at a time. bfloat16 comes back as ``ml_dtypes``.

    Args:
        path: the file.
        key: the tensor's key in it.
        header: ``read_header(path)``, when the caller keeps it.
    """
    entries, start = header or read_header(path)
    info = entries[key]
    name = NUMPY_NAMES[info["dtype"]]
    dtype = bfloat16() if name == "bfloat16" else np.dtype(name)
    begin, end = info["data_offsets"]
    count = (end - begin) // ITEMSIZE[info["dtype"]]
    with open(path, "rb") as f:
        f.seek(start + begin)
        array = np.fromfile(f, dtype=np.uint8, count=end - begin)
    return array.view(dtype)[:count].reshape(info["shape"])
