"""transformers-format checkpoints on disk: find, read lazily, write (sharded, atomically).

Reading goes through ``SafetensorsReader``, which maps checkpoint keys to canonical names
(``convert.names.to_canonical_key``) and loads one tensor at a time, so a loader never holds
two full copies of the weights. ``pytorch_model.bin`` files are found here but read only by
``gpt2_dual.pt`` (``torch.load(weights_only=True)``): this module imports no framework.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_dual._io import atomic_write, atomic_write_text, json_type, read_json_object
from gpt2_dual.checkpoint.names import to_canonical_key
from gpt2_dual.errors import InputTypeError, InvalidInputError, MalformedFileError

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
#: Looked for in this order; the first one present wins.
WEIGHT_FILES = (SAFE_WEIGHTS, SAFE_INDEX, BIN_WEIGHTS, BIN_INDEX)
#: transformers 4.x TensorFlow weights (read by ``convert.tf_h5``): the last resort.
TF_WEIGHTS = "tf_model.h5"
TF_INDEX = "tf_model.h5.index.json"
#: Checkpoint format -> its weight files (single file, then index).
FORMAT_FILES = {
    "safetensors": (SAFE_WEIGHTS, SAFE_INDEX),
    "bin": (BIN_WEIGHTS, BIN_INDEX),
    "tf-h5": (TF_WEIGHTS, TF_INDEX),
}


@dataclass(frozen=True)
class Checkpoint:
    """Weight files of one checkpoint.

    Attributes:
        format: ``"safetensors"``, ``"bin"`` or ``"tf-h5"``.
        files: local paths of the weight files (one, or every shard).
    """

    format: str
    files: tuple[Path, ...]


def find_checkpoint(
    path_or_repo_id: str | os.PathLike,
    *,
    formats: tuple[str, ...] = ("safetensors", "bin", "tf-h5"),
    **hub_kwargs: Any,
) -> Checkpoint:
    """Locate the weight files of a local folder or Hub repo.

    Args:
        path_or_repo_id: local folder or Hub repo id.
        formats: checkpoint formats in order of preference (``FORMAT_FILES``); by default
            safetensors, then ``.bin``, then transformers TF's ``tf_model.h5``.
        **hub_kwargs: ``revision``, ``cache_dir``, ``local_files_only``, ``token``,
            ``subfolder``, passed to ``gpt2_dual.hub.resolve.resolve_file``.

    Raises:
        FileNotFoundError: none of the formats' files exists (the message lists them), or a
            shard that an index names is missing (the message names the index and the shard).
        MalformedFileError: an index is malformed or names a file outside its folder.
    """
    from gpt2_dual.hub.resolve import resolve_file

    names = [(fmt, name) for fmt in formats for name in FORMAT_FILES[fmt]]
    for fmt, name in names:
        path = resolve_file(path_or_repo_id, name, required=False, **hub_kwargs)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return Checkpoint(fmt, (Path(path),))
        return Checkpoint(fmt, resolve_shards(path_or_repo_id, path, **hub_kwargs))
    looked = ", ".join(name for _, name in names)
    raise FileNotFoundError(f"no weights found in {str(path_or_repo_id)!r}: looked for {looked}")


def read_index(path: str | os.PathLike) -> list[str]:
    """The shard file names of a ``*.index.json`` (sorted, each once).

    Raises:
        MalformedFileError: (a ValueError) not a JSON object, no ``weight_map`` object of
            tensor name -> file name, or a file name that leaves the index's folder (absolute,
            a drive, a ``..`` part, a backslash); names the file and the entry.
    """
    weight_map = read_json_object(path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise MalformedFileError(
            f"{path}: 'weight_map' must be a non-empty JSON object of tensor name -> shard file, "
            f"found {json_type(weight_map)} {weight_map!r:.60}"
        )
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name.strip("/."):
            raise MalformedFileError(
                f"{path}: weight_map[{key!r:.60}] must be a shard file name in the same folder, "
                f"found {json_type(name)} {name!r:.80}"
            )
        if leaves_folder(name):
            raise MalformedFileError(
                f"{path}: weight_map[{key!r:.60}] names {name!r:.80}, outside the index's folder; "
                "a shard must be a file in the same folder (no leading '/', drive, '..' or '\\')"
            )
    return sorted(set(weight_map.values()))


def leaves_folder(name: str) -> bool:
    """Whether a shard name could reach outside its index's folder, on any system."""
    absolute = name.startswith("/") or re.match(r"[A-Za-z]:", name) is not None
    return absolute or "\\" in name or ".." in name.split("/")


def resolve_shards(
    path_or_repo_id: str | os.PathLike, index: str | os.PathLike, **hub_kwargs: Any
) -> tuple[Path, ...]:
    """Local paths of the shards that ``index`` (a resolved ``*.index.json``) names.

    Raises:
        MalformedFileError: the index is malformed (``read_index``).
        FileNotFoundError: a shard is missing; the class ``resolve_file`` raised, its message
            followed by the index that names the shard.
    """
    from gpt2_dual.hub.resolve import resolve_file

    files = []
    for shard in read_index(index):
        try:
            files.append(Path(resolve_file(path_or_repo_id, shard, **hub_kwargs)))
        except FileNotFoundError as err:
            raise type(err)(f"{err} (named by {index})") from None
    return tuple(files)


class SafetensorsReader:
    """Lazy canonical view of one or more safetensors files.

    Args:
        files: the weight files (all shards of one checkpoint).
        framework: ``safe_open`` framework of the returned tensors: ``"np"``, ``"pt"``, ...

    Raises:
        ValueError: a file is not valid safetensors (the message names it), a key appears in
            two shards, or two keys map to one canonical name.
    """

    def __init__(self, files: tuple[Path, ...] | list[Path], framework: str = "np") -> None:
        from safetensors import SafetensorError, safe_open

        self._handles = []
        self._files = tuple(Path(p) for p in files)
        for path in files:  # headers only; a truncated or foreign file fails here
            try:
                self._handles.append(safe_open(str(path), framework=framework))
            except (SafetensorError, OSError, ValueError, RuntimeError) as err:
                raise MalformedFileError(f"{path} is not a valid safetensors file: {err}") from None
        self._where: dict[str, tuple[int, str]] = {}
        self.ignored: list[str] = []
        for n, handle in enumerate(self._handles):
            for key in handle.keys():
                name = to_canonical_key(key)
                if name is None:
                    self.ignored.append(key)
                    continue
                if name in self._where:
                    other = self._where[name][1]
                    raise ValueError(f"checkpoint holds {name!r} twice: as {other!r} and {key!r}")
                self._where[name] = (n, key)

    def keys(self) -> list[str]:
        """Canonical names present, in file order."""
        return list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor without reading it."""
        n, key = self._where[name]
        return tuple(self._handles[n].get_slice(key).get_shape())

    def dtype(self, name: str) -> str:
        """safetensors dtype string (``"F32"``, ``"BF16"``, ...) without reading the tensor."""
        n, key = self._where[name]
        return self._handles[n].get_slice(key).get_dtype()

    def __getitem__(self, name: str) -> Any:
        n, key = self._where[name]
        return self._handles[n].get_tensor(key)

    def location(self, name: str) -> tuple[Path, str]:
        """The file holding a tensor and its key there."""
        n, key = self._where[name]
        return self._files[n], key

    def items(self) -> Iterator[tuple[str, Any]]:
        """(canonical name, tensor) pairs, one tensor read at a time."""
        for name in self._where:
            yield name, self[name]


def parse_size(size: int | str) -> int:
    """``"5GB"``/``"500MB"``/``"10KiB"``/int -> bytes (transformers' convention: GB = 10**9).

    Raises:
        InputTypeError: neither an int nor a string.
        InvalidInputError: not a size, or not at least 1 byte (``-5``, ``0``, ``"0GB"``).
    """
    if isinstance(size, bool) or not isinstance(size, int | str):
        raise InputTypeError(
            f"max_shard_size must be an int of bytes or a string like '5GB', got "
            f"{type(size).__name__} {size!r:.40}"
        )
    value = size if isinstance(size, int) else _parse_size_text(size)
    if value < 1:
        raise InvalidInputError(
            f"max_shard_size={size!r} must be at least 1 byte (it is the largest shard size)"
        )
    return value


def _parse_size_text(size: str) -> int:
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    text = size.strip().upper()
    try:
        for unit, factor in units.items():
            if text.endswith(unit):
                return int(float(text[: -len(unit)]) * factor)
        if text.isdigit():
            return int(text)
    except (ValueError, OverflowError):
        pass
    raise InvalidInputError(f"max_shard_size={size!r:.40} is not a size like 5GB, 500MB or 10000")


def save_safetensors(
    state: Mapping[str, Any],
    save_directory: str | os.PathLike,
    *,
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write numpy arrays as ``model.safetensors``, or shards plus an index past the size.

    Shards are named as transformers names them (``model-00001-of-00002.safetensors``); each
    file is written to a temporary name and renamed. Stale weight files of another layout in
    the folder are removed so a reader never picks the wrong one.

    Args:
        state: key -> numpy array (keys as they should appear on disk).
        save_directory: folder to write into (created if needed).
        max_shard_size: largest shard in bytes (or ``"5GB"``-style string).
        metadata: safetensors metadata; ``{"format": "pt"}`` by default, as transformers writes.

    Returns:
        The written weight files (plus the index when sharded).
    """
    from safetensors.numpy import save

    folder = Path(save_directory)
    meta = dict(metadata or {"format": "pt"})
    shards = _plan_shards(state, parse_size(max_shard_size))
    names = (
        [SAFE_WEIGHTS]
        if len(shards) == 1
        else [f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors" for n in range(len(shards))]
    )
    written = []
    for name, keys in zip(names, shards, strict=True):
        blob = save({k: state[k] for k in keys}, metadata=meta)
        written.append(atomic_write(folder / name, lambda f, b=blob: f.write(b)))
    if len(shards) > 1:
        total = sum(int(state[k].nbytes) for k in state)
        weight_map = {k: name for name, keys in zip(names, shards, strict=True) for k in keys}
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        written.append(atomic_write_text(folder / SAFE_INDEX, json.dumps(index, indent=2) + "\n"))
    _remove_stale(folder, keep={p.name for p in written})
    return written


def _plan_shards(state: Mapping[str, Any], limit: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for key, array in state.items():
        nbytes = int(array.nbytes)
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def _remove_stale(folder: Path, keep: set[str]) -> None:
    for path in folder.iterdir():
        stale = path.name in WEIGHT_FILES or (
            path.name.startswith("model-") and path.name.endswith(".safetensors")
        )
        if stale and path.name not in keep:
            logger.info("removing stale weight file %s", path)
            path.unlink()
