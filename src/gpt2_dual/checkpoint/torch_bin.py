"""transformers' ``pytorch_model*.bin`` files, read with ``torch.load(weights_only=True)``.

Never a general unpickle: a file that holds more than tensors and plain containers is refused.
Imports torch when called, so the checkpoint layer stays importable without it.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gpt2_dual.errors import MalformedFileError

__all__ = ["read_bin"]


def read_bin(files: Iterable[Path]) -> dict[str, Any]:
    """Tensors of ``pytorch_model*.bin`` files, memory-mapped, via ``weights_only=True``.

    Raises:
        pickle.UnpicklingError: a file holds objects other than tensors and plain containers.
        TypeError: a file holds something other than a dict of tensors.
    """
    import torch

    state: dict[str, Any] = {}
    for path in files:
        try:
            try:
                shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                # The legacy (pre-zipfile) torch.save format cannot be memory-mapped.
                shard = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(
                f"gpt2_dual refused to unpickle {path}: it holds more than tensors "
                f"(torch: {_refusal(err)}), and torch.load(weights_only=True) reads only tensors "
                "and plain containers; convert it to safetensors in a trusted environment"
            ) from err
        except Exception as err:  # empty, truncated, not a torch file at all
            raise MalformedFileError(
                f"{path} is not a readable PyTorch checkpoint "
                f"({type(err).__name__}: {_first_line(err)})"
            ) from None
        if not isinstance(shard, Mapping):
            raise TypeError(f"{path} holds a {type(shard).__name__}, not a dict of tensors")
        odd = next((k for k, v in shard.items() if not isinstance(v, torch.Tensor)), None)
        if odd is not None:
            raise MalformedFileError(
                f"{path}: {odd!r:.80} holds a {type(shard[odd]).__name__}, not a tensor"
            )
        state.update(shard)
    return state


#: Lines of torch's ``weights_only`` refusal that say how to load anyway, not what was refused.
_ADVICE = ("(1)", "(2)", "Check the documentation", "Please file an issue")


def _refusal(err: pickle.UnpicklingError) -> str:
    """What torch's multi-line ``weights_only`` refusal says the file holds, in one line
    (``Trying to load unsupported GLOBAL posix.system whose module posix is blocked``)."""
    for line in str(err).splitlines()[1:]:
        line = line.rpartition("WeightsUnpickler error:")[2].strip()
        if line and not line.startswith(_ADVICE):
            return line.split(". Please use")[0].rstrip(".")
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0].strip() if lines else "no message"
