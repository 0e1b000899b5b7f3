"""The transformers folder format ("hf"): read and write, one tensor at a time.

Reading: ``config.json``, ``model.safetensors`` (or shards plus index) or ``pytorch_model.bin``
(through ``torch.load(weights_only=True)`` only, so torch is needed for ``.bin``),
``generation_config.json`` and the tokenizer files. Writing: safetensors as transformers' same
class writes them (``transformer.`` before backbone keys in head models, a tied
``lm_head.weight`` left out), streamed (``safetensors_io``), sharded past ``max_shard_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual._io import atomic_write_text, read_json_object
from gpt2_dual.checkpoint import hf, loading, safetensors_io
from gpt2_dual.checkpoint.names import HF_PREFIX, is_backbone
from gpt2_dual.config import GPT2Config
from gpt2_dual.convert.formats import Source, copy_tokenizer_files
from gpt2_dual.heads import HEAD_BY_CLASS, HEAD_SPECS
from gpt2_dual.tokenizer.files import ALL_NAMES as TOKENIZER_NAMES

GENERATION_CONFIG = "generation_config.json"
#: Weight files that make a folder a transformers (PyTorch) checkpoint.
HF_WEIGHT_FILES = (hf.SAFE_WEIGHTS, hf.SAFE_INDEX, hf.BIN_WEIGHTS, hf.BIN_INDEX)


def detect(path: Path) -> bool:
    """A folder with ``config.json`` and safetensors or ``.bin`` weights."""
    return (
        path.is_dir()
        and (path / "config.json").is_file()
        and any((path / name).is_file() for name in HF_WEIGHT_FILES)
    )


class NumpyView:
    """A canonical view whose tensors come back as numpy arrays (bfloat16 as ``ml_dtypes``).

    Wraps ``hf.SafetensorsReader`` (names and shapes from it, tensors read by
    ``safetensors_io.read_tensor`` without a memory map, so reading tensor after tensor holds
    one at a time) or a ``loading.CanonicalView`` of torch tensors from ``pytorch_model.bin``.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.ignored = list(inner.ignored)
        self._headers: dict[Path, tuple[dict, int]] = {}

    def keys(self) -> list[str]:
        return list(self._inner.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._inner

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._inner.shape(name))

    def dtype(self, name: str) -> str:
        """The tensor's dtype name (``"float32"``, ``"bfloat16"``, ...) without reading it."""
        if isinstance(self._inner, hf.SafetensorsReader):
            code = self._inner.dtype(name)
            names = {v: k for k, v in safetensors_io.SAFETENSORS_CODES.items()}
            return names.get(code, code)
        return str(self._inner[name].dtype).removeprefix("torch.")

    def __getitem__(self, name: str) -> np.ndarray:
        inner = self._inner
        if isinstance(inner, hf.SafetensorsReader):  # plain reads: nothing stays mapped
            path, key = inner.location(name)
            if path not in self._headers:
                self._headers[path] = safetensors_io.read_header(path)
            return safetensors_io.read_tensor(path, key, self._headers[path])
        return to_numpy(inner[name])


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array of ``value`` (a torch tensor, numpy array or array-like); torch
    bfloat16 becomes ``ml_dtypes.bfloat16`` bit for bit."""
    if type(value).__module__.startswith("torch"):
        import torch

        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            return value.view(torch.int16).numpy().view(safetensors_io.bfloat16())
        return value.numpy()
    return np.asarray(value)


def infer_head(config: GPT2Config, keys: list[str]) -> str:
    """The head a checkpoint was saved from: its ``architectures`` (``TF`` prefix allowed),
    else the head tensors it holds, else ``"base"``."""
    for arch in config.extra.get("architectures") or ():
        name = str(arch).removeprefix("TF")
        if name in HEAD_BY_CLASS:
            return HEAD_BY_CLASS[name]
    present = {key.split(".", 1)[0] for key in keys}
    if "multiple_choice_head" in present:
        return "double_heads"
    for head in ("lm", "question_answering", "sequence_classification", "token_classification"):
        if set(HEAD_SPECS[head].attrs) & present:
            return head
    return "base"


def tokenizer_files(folder: Path) -> dict[str, Path]:
    """transformers tokenizer files present in ``folder``."""
    return {name: folder / name for name in TOKENIZER_NAMES if (folder / name).is_file()}


def read(path: Path) -> Source:
    """Read a transformers folder (see the module docstring) lazily."""
    config = GPT2Config.from_pretrained(path)
    found = hf.find_checkpoint(path)
    if found.format == "safetensors":
        view = NumpyView(hf.SafetensorsReader(found.files))
    elif found.format == "bin":
        from gpt2_dual.checkpoint.torch_bin import read_bin

        view = NumpyView(loading.CanonicalView(read_bin(found.files)))
    else:
        raise ValueError(f"{path} holds {found.format} weights, not safetensors or .bin")
    gen = path / GENERATION_CONFIG
    return Source(
        format="hf",
        path=path,
        config=config,
        head=infer_head(config, view.keys()),
        view=view,
        generation_config=read_json_object(gen) if gen.is_file() else None,
        tokenizer_files=tokenizer_files(path),
    )


def weights_dtype(source: Source, dtype: str | None) -> str:
    """The dtype to store: ``dtype``, else the dtype of the source's ``wte.weight``."""
    return dtype or safetensors_io.dtype_name(source.view["wte.weight"])


def entries(source: Source, dtype: str) -> list[safetensors_io.Entry]:
    """What to write, as transformers' same class saves it, in table order.

    Tensors of other heads are left out (``source.head`` decides).

    Raises:
        CheckpointError: the source lacks tensors of its model or has misshapen ones.
    """
    plan = loading.plan_load(source.config, source.head, source.view)
    loading.check_complete(HEAD_SPECS[source.head].class_name, plan)
    prefix = HF_PREFIX if source.head != "base" else ""
    code = safetensors_io.SAFETENSORS_CODES[dtype]
    out = []
    for row in plan.rows:
        name = row.canonical
        key = prefix + name if is_backbone(name) else name
        get = lambda n=name: safetensors_io.cast(source.view[n], dtype)  # noqa: E731
        out.append(safetensors_io.Entry(key, row.shape(source.config), code, get))
    return out


def write(
    source: Source,
    folder: Path,
    *,
    dtype: str | None = None,
    max_shard_size: int | str = "5GB",
) -> None:
    """Write ``source`` as a transformers folder that transformers and gpt2_dual load.

    Args:
        source: what to write.
        folder: an existing, empty folder.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``; None keeps the source's dtype
            (that of its ``wte.weight``).
        max_shard_size: largest safetensors file, in bytes or as ``"5GB"``.
    """
    dtype = weights_dtype(source, dtype)
    rows = entries(source, dtype)
    safetensors_io.write_sharded(rows, folder, max_shard_size=hf.parse_size(max_shard_size))
    write_side_files(source, folder)
    loading.save_config(source.config, HEAD_SPECS[source.head].class_name, dtype, folder)


def write_side_files(source: Source, folder: Path) -> None:
    """``generation_config.json`` (when the source has one) and the tokenizer files."""
    if source.generation_config is not None:
        import json

        text = json.dumps(source.generation_config, indent=2, sort_keys=True) + "\n"
        atomic_write_text(folder / GENERATION_CONFIG, text)
    copy_tokenizer_files(source, folder)
