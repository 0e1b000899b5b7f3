"""The ``keras`` format: Keras 3 files of gpt2_dual.tf models, read and written.

Read (``read``):

- a ``.keras`` file, or a folder holding ``model.keras``: ``keras.saving.load_model`` with
  Keras' ``safe_mode`` left on, so loading never deserializes code (lambdas); gpt2_dual.tf's
  classes are registered by importing it first. Anything but a gpt2_dual.tf model is refused.
- a ``*.weights.h5`` file from ``model.save_weights`` (or a folder holding exactly one) with a
  transformers-style ``config.json`` beside it, whose ``architectures`` names the class: the
  model is built from the config (in the ``dtype`` it records, else the file's) and
  ``load_weights`` fills it.

Either way the canonical tensors come from ``gpt2_dual.tf.weights.to_canonical`` and the head
from the class (``heads.HEAD_BY_CLASS``). Tokenizer files and ``generation_config.json`` are
taken from the same folder.

Write (``write``): a folder with ``model.keras`` (the source head's gpt2_dual.tf model, built
from the source config, filled by ``load_canonical``), ``config.json`` as transformers writes
it (``architectures``, ``dtype``), the tokenizer files and ``generation_config.json`` when the
source has them. Every file goes through a temporary name.

``writer_dtype`` and ``replace_when_done`` are shared with the ``keras-hub`` writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual._io import read_json_object
from gpt2_dual.checkpoint import loading
from gpt2_dual.config import CONFIG_NAME, GPT2Config
from gpt2_dual.convert import hf_format
from gpt2_dual.convert.formats import DTYPES, FormatError, Source
from gpt2_dual.generation.config import GENERATION_CONFIG_NAME
from gpt2_dual.heads import HEAD_BY_CLASS, HEAD_SPECS
from gpt2_dual.tokenizer.files import ALL_NAMES as TOKENIZER_NAMES

logger = logging.getLogger(__name__)

FORMAT = "keras"
KERAS_FILE = "model.keras"
WEIGHTS_SUFFIX = ".weights.h5"
#: Floating dtypes the writers store (their Keras dtype policy names).
DTYPE_NAMES = ("float32", "float16", "bfloat16")


# --------------------------------------------------------------------------- shared helpers
def writer_dtype(source: Source, dtype: str | None) -> str:
    """The dtype a writer stores: ``dtype`` (a name of ``DTYPE_NAMES`` or a key of
    ``formats.DTYPES``), or for None the source's ``wte.weight`` dtype (float32 unless it is
    float16 or bfloat16).

    Raises:
        FormatError: ``dtype`` is not one of those names.
    """
    if dtype is None:
        stored = np.dtype(source.view["wte.weight"].dtype).name
        return stored if stored in DTYPE_NAMES else "float32"
    name = DTYPES.get(dtype, dtype)
    if name not in DTYPE_NAMES:
        raise FormatError(
            f"dtype={dtype!r} is not a dtype this writer stores; use one of "
            f"{', '.join(DTYPE_NAMES)} ({', '.join(DTYPES)}) or None to keep the source's"
        )
    return name


@contextlib.contextmanager
def replace_when_done(path: Path) -> Iterator[Path]:
    """A new temporary path beside ``path`` (same suffix, which Keras checks) to write to;
    renamed over ``path`` when the block ends, removed if it raises."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- detect and read
def _architecture(folder: Path) -> str | None:
    """The gpt2_dual class a transformers-style ``config.json`` names, if any."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        data = read_json_object(path)
    except (OSError, ValueError):
        return None
    names = data.get("architectures") or []
    if "class_name" in data or not names or names[0] not in HEAD_BY_CLASS:
        return None
    return names[0]


def _weights_file(folder: Path) -> Path | None:
    found = sorted(folder.glob(f"*{WEIGHTS_SUFFIX}"))
    return found[0] if len(found) == 1 else None


def _resolve(path: Path) -> Path | None:
    """The ``.keras`` or ``.weights.h5`` file a path stands for (None: not this format)."""
    if path.is_file():
        if path.name.endswith(".keras"):
            return path
        if path.name.endswith(WEIGHTS_SUFFIX) and _architecture(path.parent):
            return path
        return None
    if path.is_dir():
        if (path / KERAS_FILE).is_file():
            return path / KERAS_FILE
        weights = _weights_file(path)
        if weights is not None and _architecture(path):
            return weights
    return None


def detect(path: Path) -> bool:
    """A ``.keras`` file or a folder with ``model.keras``; or a ``*.weights.h5`` file (or a
    folder with exactly one) beside a ``config.json`` naming a gpt2_dual class."""
    return _resolve(Path(path)) is not None


def read(path: Path) -> Source:
    """Load the Keras file into gpt2_dual.tf and take its canonical tensors.

    Raises:
        FormatError: not this format, not a gpt2_dual.tf model, or Keras refuses the file
            (``safe_mode``, a mismatched weights file); the message names the file.
    """
    path = Path(path)
    file = _resolve(path)
    if file is None:
        raise FormatError(
            f"{path} is not a Keras file of gpt2_dual.tf (a .keras file, a folder with "
            f"{KERAS_FILE}, or *{WEIGHTS_SUFFIX} with a config.json naming the class)"
        )
    from gpt2_dual.tf.weights import to_canonical

    model = _load_keras(file) if file.name.endswith(".keras") else _load_weights(file)
    head = HEAD_BY_CLASS[type(model).__name__]
    config = model.config.copy()
    view = loading.CanonicalView(to_canonical(model))
    del model
    folder = file.parent
    generation = folder / GENERATION_CONFIG_NAME
    return Source(
        FORMAT, path, config, head, view,
        generation_config=read_json_object(generation) if generation.is_file() else None,
        tokenizer_files={n: folder / n for n in TOKENIZER_NAMES if (folder / n).is_file()},
    )  # fmt: skip


def _load_keras(file: Path) -> Any:
    import keras

    import gpt2_dual.tf as gtf  # registers the classes with Keras

    try:
        model = keras.saving.load_model(file)  # safe_mode=True: no code is deserialized
    except (ValueError, TypeError) as err:
        raise FormatError(f"{file}: Keras could not load it: {err}") from err
    if not isinstance(model, gtf.GPT2PreTrainedModel):
        raise FormatError(f"{file} holds a {type(model).__name__}, not a gpt2_dual.tf model")
    return model


def _load_weights(file: Path) -> Any:
    import gpt2_dual.tf as gtf

    config = GPT2Config.from_json_file(file.parent / CONFIG_NAME)
    head = HEAD_BY_CLASS[_architecture(file.parent)]
    dtype = loading.config_dtype(config)
    dtype = dtype if dtype in DTYPE_NAMES else _h5_dtype(file)
    model = gtf.build(head, config, dtype=dtype)
    try:
        model.load_weights(file)
    except ValueError as err:
        raise FormatError(f"{file} does not fit the config.json beside it: {err}") from err
    return model


def _h5_dtype(file: Path) -> str:
    """The dtype of the first array in a Keras weights file (float32 if not floating)."""
    import h5py

    found: list[str] = []

    def first(_: str, obj: Any) -> bool | None:
        if isinstance(obj, h5py.Dataset):
            marked = obj.attrs.get("dtype")
            found.append("bfloat16" if marked in ("bfloat16", b"bfloat16") else obj.dtype.name)
            return True
        return None

    with h5py.File(file, "r") as f:
        f.visititems(first)
    return found[0] if found and found[0] in DTYPE_NAMES else "float32"


# --------------------------------------------------------------------------- write
class _ViewState(loading.CanonicalView):
    """Any canonical view (``formats``' interface) as ``load_canonical`` takes it, still lazy."""

    def __init__(self, view: Any) -> None:  # no super().__init__: names are canonical already
        self._view = view
        self._where = {name: name for name in view.keys()}
        self.ignored = list(getattr(view, "ignored", ()))

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._view.shape(name))

    def __getitem__(self, name: str) -> Any:
        return self._view[name]


def _model_config(config: GPT2Config, class_name: str, dtype: str) -> GPT2Config:
    """The source config with ``architectures`` and ``dtype`` as ``config.json`` records them."""
    data = config.to_dict()
    data.pop("torch_dtype", None)
    data.update(architectures=[class_name], dtype=dtype)
    return GPT2Config.from_dict(data)


def write(source: Source, folder: Path, *, dtype: str | None = None) -> None:
    """Write ``source`` as ``model.keras`` plus ``config.json``, tokenizer and generation files.

    Args:
        source: any head.
        folder: an existing, empty folder.
        dtype: the model's Keras dtype policy, ``"float32"``, ``"float16"`` or ``"bfloat16"``
            (or ``fp32``/``fp16``/``bf16``): variables and computation in that dtype. None keeps
            the source's floating dtype (float32 for others).

    Raises:
        FormatError: ``dtype`` is not one of those.
        gpt2_dual.checkpoint.loading.CheckpointError: the source lacks tensors of its model or
            has misshapen ones (all named); tensors of other heads are left out.
    """
    import gpt2_dual.tf as gtf
    from gpt2_dual.tf.weights import load_canonical

    folder = Path(folder)
    class_name = HEAD_SPECS[source.head].class_name
    view = _ViewState(source.view)
    loading.check_complete(class_name, loading.plan_load(source.config, source.head, view))
    dtype = writer_dtype(source, dtype)
    model = gtf.build(source.head, _model_config(source.config, class_name, dtype), dtype=dtype)
    load_canonical(model, view, strict=False)  # complete; other heads' tensors are left out
    with replace_when_done(folder / KERAS_FILE) as tmp, warnings.catch_warnings():
        # Keras 3.15's Variable.__array__ lacks numpy 2's copy keyword; saving is unaffected.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        model.save(tmp)
    logger.info("wrote %s (%s, %s)", folder / KERAS_FILE, class_name, dtype)
    hf_format.write_side_files(source, folder)  # generation_config.json, tokenizer files
    loading.save_config(source.config, class_name, dtype, folder)
