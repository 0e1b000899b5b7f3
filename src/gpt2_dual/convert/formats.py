"""Checkpoint formats: one reader and one writer per format, all meeting in canonical form.

Every conversion goes *source -> canonical -> target*. A reader turns a checkpoint into a
``Source``: its config, the head it was saved from, a lazy *canonical view* of its tensors
(numpy arrays named and laid out as ``convert.names`` says) and its tokenizer files. A writer
writes a ``Source`` into an empty folder. Atomic placement, checks and reports are the
caller's (``convert.convert``); a format module only reads and writes.

A format module (``FORMATS[name].module``) provides::

    detect(path: Path) -> bool          # this path holds this format (cheap: names, not data)
    read(path: Path) -> Source          # lazy where the format allows
    write(source: Source, folder: Path, *, dtype: str | None = None) -> None   # writers only

A canonical view has ``keys()``, ``name in view``, ``shape(name)``, ``view[name]`` (a numpy
array in the canonical layout, read on access) and ``ignored`` (keys deliberately not read).

Nothing here imports a framework; format modules import one inside the functions that need it.
"""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import FormatError

#: Floating dtypes a writer may store, by the names the CLI uses.
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Source:
    """A checkpoint read into canonical form.

    Attributes:
        format: key of ``FORMATS`` it was read from.
        path: the file or folder it was read from.
        config: its config.
        head: the head it was saved from (a key of ``heads.HEAD_SPECS``).
        view: canonical view of its tensors (see the module docstring).
        generation_config: ``generation_config.json`` as a dict, when the source has one.
        tokenizer_files: transformers tokenizer file name (``vocab.json``, ``merges.txt``,
            ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``) ->
            local path, for those the source has (converted to those names by the reader).
    """

    format: str
    path: Path
    config: GPT2Config
    head: str
    view: Any
    generation_config: dict[str, Any] | None = None
    tokenizer_files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class FormatSpec:
    """One format: its CLI name, module, and what gpt2_dual does with it."""

    name: str
    module: str
    description: str
    readable: bool = True
    writable: bool = True


FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec(
            "hf", "gpt2_dual.convert.hf_format",
            "transformers folder: model.safetensors (or shards), pytorch_model.bin (read, "
            "weights_only), config.json, generation_config.json, tokenizer files",
        ),
        FormatSpec(
            "tf-h5", "gpt2_dual.convert.tf_h5",
            "transformers 4.x TensorFlow folder: tf_model.h5 and config.json",
        ),
        FormatSpec(
            "keras", "gpt2_dual.convert.keras_file",
            "Keras 3 files of gpt2_dual.tf: model.keras, or *.weights.h5 with config.json",
        ),
        FormatSpec(
            "keras-hub", "gpt2_dual.convert.keras_hub",
            "KerasHub GPT-2 preset: config.json, model.weights.h5, tokenizer assets",
        ),
        FormatSpec(
            "openai", "gpt2_dual.convert.openai",
            "OpenAI's GPT-2 release: model.ckpt.*, hparams.json, encoder.json, vocab.bpe",
            writable=False,
        ),
    )
}  # fmt: skip

#: Detection order: the most specific layouts first (a KerasHub preset also has config.json).
DETECT_ORDER = ("keras-hub", "openai", "keras", "hf", "tf-h5")


def module(name: str) -> Any:
    """The module implementing format ``name``."""
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[name].module)


def detect(path: str | os.PathLike) -> str:
    """The format of a local file or folder.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        FormatError: no format recognizes it (the message lists what each one looks for).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    for name in DETECT_ORDER:
        if module(name).detect(path):
            return name
    looked = "; ".join(f"{n}: {FORMATS[n].description}" for n in DETECT_ORDER)
    raise FormatError(f"{path} is not a GPT-2 checkpoint gpt2_dual can read (looked for {looked})")


def read(path: str | os.PathLike, format: str | None = None) -> Source:
    """Read a local checkpoint (format detected when None) into a ``Source``."""
    name = format or detect(path)
    if not FORMATS[name].readable:
        raise FormatError(f"gpt2_dual does not read the {name!r} format")
    return module(name).read(Path(path))


def write(source: Source, folder: str | os.PathLike, format: str, **options: Any) -> None:
    """Write ``source`` into ``folder`` (created, must be empty) in ``format``."""
    spec = FORMATS.get(format)
    if spec is None or not spec.writable:
        writable = ", ".join(n for n, s in FORMATS.items() if s.writable)
        raise FormatError(f"cannot write format {format!r}; writable formats: {writable}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module(format).write(source, folder, **options)


def copy_tokenizer_files(source: Source, folder: Path) -> list[Path]:
    """Copy the source's tokenizer files into ``folder`` under transformers' names."""
    written = []
    for name, path in source.tokenizer_files.items():
        shutil.copyfile(path, folder / name)
        written.append(folder / name)
    return written
