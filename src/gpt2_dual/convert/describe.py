"""What a checkpoint holds: format, model, config, tensors, sizes (``gpt2-dual inspect``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual.checkpoint import loading
from gpt2_dual.convert.formats import FORMATS, Source
from gpt2_dual.heads import HEAD_SPECS

#: Config fields shown by ``inspect`` (all of them go to ``--json``).
SHOWN = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
         "activation_function", "tie_word_embeddings")  # fmt: skip


def tensor_dtype(view: Any, name: str) -> str:
    """A tensor's dtype name, without reading it when the view can tell."""
    from gpt2_dual.checkpoint.safetensors_io import NUMPY_NAMES

    found = str(view.dtype(name)) if hasattr(view, "dtype") else str(view[name].dtype)
    return NUMPY_NAMES.get(found, found)  # safetensors codes ("F32") as numpy names


def usable_heads(source: Source) -> list[str]:
    """Heads whose every tensor the checkpoint holds (a tied LM head needs only ``wte``)."""
    return [
        head for head in HEAD_SPECS
        if not loading.plan_load(source.config, head, source.view).report.missing
    ]  # fmt: skip


def disk_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size, 1
    sizes = [p.stat().st_size for p in path.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def describe(source: Source) -> dict[str, Any]:
    """A JSON-ready description of ``source``.

    Returns:
        ``format``, ``path``, ``model`` (class saved from), ``heads`` (heads it can give),
        ``config`` (the full config dict), ``parameters`` (unique, a tied lm_head counted
        once), ``bytes_on_disk``, ``files``, and ``tensors``: canonical name -> shape, dtype.
    """
    view = source.view
    tensors = {
        name: {"shape": list(view.shape(name)), "dtype": tensor_dtype(view, name)}
        for name in view.keys()
    }
    size, files = disk_bytes(Path(source.path))
    return {
        "format": source.format,
        "format_description": FORMATS[source.format].description,
        "path": os.fspath(source.path),
        "model": HEAD_SPECS[source.head].class_name,
        "heads": usable_heads(source),
        "config": source.config.to_dict(),
        "parameters": int(sum(np.prod(t["shape"], dtype=np.int64) for t in tensors.values())),
        "bytes_on_disk": size,
        "files": files,
        "tensors": tensors,
        "ignored": list(view.ignored),
    }


def as_text(info: dict[str, Any]) -> str:
    """``describe``'s result as aligned text."""
    config = info["config"]
    lines = [
        f"format:      {info['format']} ({info['format_description']})",
        f"path:        {info['path']}",
        f"model:       {info['model']}; heads it can give: {', '.join(info['heads'])}",
        "config:      " + ", ".join(f"{k}={config.get(k)}" for k in SHOWN),
        f"parameters:  {info['parameters']:,}",
        f"on disk:     {info['bytes_on_disk']:,} bytes in {info['files']} file(s)",
        f"tensors:     {len(info['tensors'])}",
    ]
    width = max((len(n) for n in info["tensors"]), default=0)
    for name, t in info["tensors"].items():
        lines.append(f"  {name:<{width}}  {str(tuple(t['shape'])):<16} {t['dtype']}")
    if info["ignored"]:
        lines.append(f"ignored:     {', '.join(info['ignored'])}")
    return "\n".join(lines)
