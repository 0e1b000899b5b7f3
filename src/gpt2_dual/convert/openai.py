"""Read OpenAI's original GPT-2 release (format ``"openai"``; read only).

The release is a folder (``models/124M/`` in openai/gpt-2)::

    checkpoint                          # TF1 bookkeeping: model_checkpoint_path: "model.ckpt"
    model.ckpt.index                    # TF1 checkpoint (tf.compat.v1.train.Saver)
    model.ckpt.data-00000-of-00001
    model.ckpt.meta                     # the graph; not needed to read the variables
    hparams.json                        # {"n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"}
    encoder.json                        # = transformers' vocab.json
    vocab.bpe                           # = transformers' merges.txt

``path`` is that folder, or the checkpoint prefix itself (``models/124M/model.ckpt``, what
transformers' ``load_tf_weights_in_gpt2`` takes, with ``hparams.json`` beside it). The folder's
checkpoint is ``model.ckpt`` when ``model.ckpt.index`` exists, otherwise the one the
``checkpoint`` file names (fine-tuning scripts save ``model-<step>``); that name is looked up
in the folder itself, so a moved folder still reads.

Variable names and layouts come from ``convert.names.openai``. ``read`` checks the variables
against ``hparams.json`` by name and shape (the index only, no data), then returns a lazy
canonical view that reads one variable at a time. Where transformers' importer differs:

- a variable missing from the checkpoint is an error here; transformers leaves that
  parameter at its random initialization without a word;
- a variable the table does not know is an error, as in transformers (it fails on the
  attribute walk), but here every such name is listed in one message;
- shapes must be the release's exactly (``(1, in, out)`` for ``w``); transformers
  ``squeeze()``s every array and compares after that.

TensorFlow is imported inside the functions that read the checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual.checkpoint.loading import CanonicalView, CheckpointError
from gpt2_dual.checkpoint.names import openai as names
from gpt2_dual.config import GPT2Config
from gpt2_dual.convert.formats import FormatError, Source
from gpt2_dual.tokenizer.files import MERGES_NAME, VOCAB_NAME

logger = logging.getLogger(__name__)

HPARAMS = "hparams.json"
PREFIX = "model.ckpt"
CHECKPOINT_STATE = "checkpoint"
#: OpenAI's tokenizer files -> transformers' names (the contents are the same).
TOKENIZER_FILES = {"encoder.json": VOCAB_NAME, "vocab.bpe": MERGES_NAME}
#: ``hparams.json`` key -> GPT2Config field, as transformers' converted configs hold them
#: (the Hub's ``gpt2/config.json`` also keeps ``n_ctx``).
HPARAMS_FIELDS = {
    "n_vocab": "vocab_size",
    "n_ctx": "n_positions",
    "n_embd": "n_embd",
    "n_head": "n_head",
    "n_layer": "n_layer",
}

_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)


def detect(path: Path) -> bool:
    """A folder with ``hparams.json`` and a TF1 checkpoint, or such a checkpoint's prefix."""
    try:
        _locate(Path(path))
    except FormatError:
        return False
    return True


def read(path: Path) -> Source:
    """Read a release folder (or checkpoint prefix) into a ``Source`` with head ``"lm"``.

    Returns:
        A ``Source`` whose view reads one variable per access; ``tokenizer_files`` maps
        ``vocab.json``/``merges.txt`` to the folder's ``encoder.json``/``vocab.bpe`` (empty
        unless both are there); no generation config (the release has none).

    Raises:
        FormatError: no checkpoint or no ``hparams.json`` (names the folder), ``hparams.json``
            invalid (names the file and key), or the checkpoint cannot be opened.
        CheckpointError: variables missing, unknown, or misshapen for ``hparams.json``'s
            sizes (all named, with expected and found shapes, in one message).
        ImportError: TensorFlow is not installed.
    """
    path = Path(path)
    folder, prefix = _locate(path)
    config = read_hparams(folder / HPARAMS)
    view = OpenAIView(prefix, config)
    tokenizer_files = {name: folder / theirs for theirs, name in TOKENIZER_FILES.items()}
    if not all(p.is_file() for p in tokenizer_files.values()):  # one alone is no tokenizer
        logger.info("%s: no tokenizer (needs both encoder.json and vocab.bpe)", folder)
        tokenizer_files = {}
    return Source(
        format="openai",
        path=path,
        config=config,
        head=names.HEAD,
        view=view,
        generation_config=None,
        tokenizer_files=tokenizer_files,
    )


def read_hparams(path: Path) -> GPT2Config:
    """``hparams.json`` -> the config transformers' converted checkpoints carry.

    ``vocab_size=n_vocab``, ``n_positions=n_ctx`` (and ``n_ctx`` kept, as in the Hub's
    ``gpt2`` config), ``n_embd``, ``n_head``, ``n_layer``; every other field takes
    transformers' default (``gelu_new``, ``layer_norm_epsilon=1e-5``: OpenAI's model code).
    Unknown keys are logged and ignored.

    Raises:
        FormatError: the file is missing, not a JSON object, lacks a key, or holds a value
            the config rejects (the message names the file).
    """
    if not path.is_file():
        raise _no_hparams(path.parent)
    try:
        hparams = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(f"{path} is not valid JSON: {err}") from None
    return config_from_hparams(hparams, where=str(path))


def config_from_hparams(hparams: Any, *, where: str = HPARAMS) -> GPT2Config:
    """The config for an ``hparams.json`` dict (see ``read_hparams``); ``where`` names its
    source in errors.

    Raises:
        FormatError: not a dict, a key missing, or a value the config rejects.
    """
    if not isinstance(hparams, dict):
        raise FormatError(f"{where}: expected a JSON object, got {type(hparams).__name__}")
    missing = [key for key in HPARAMS_FIELDS if key not in hparams]
    if missing:
        raise FormatError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(hparams) - set(HPARAMS_FIELDS))
    if unknown:
        logger.warning("%s: ignoring keys gpt2_dual does not use: %s", where, ", ".join(unknown))
    fields = {field: hparams[key] for key, field in HPARAMS_FIELDS.items()}
    try:
        return GPT2Config(**fields, n_ctx=hparams["n_ctx"])
    except (TypeError, ValueError) as err:
        raise FormatError(f"{where}: {err}") from None


class OpenAIView(CanonicalView):
    """Lazy canonical view of a release checkpoint: ``keys()``, ``shape(name)``, ``[name]``
    (one variable read, ``(1, in, out)`` weights squeezed to ``(in, out)``), ``ignored``.

    A ``CanonicalView`` so that ``load_canonical`` of either framework takes it as it is.

    Args:
        prefix: the checkpoint prefix (``.../model.ckpt``).
        config: the config from ``hparams.json``; fixes the expected names and shapes.

    Raises:
        FormatError: the checkpoint cannot be opened.
        CheckpointError: variables missing, unknown or misshapen (all named at once).
        ImportError: TensorFlow is not installed.
    """

    def __init__(self, prefix: Path, config: GPT2Config) -> None:
        super().__init__({})
        self.prefix = prefix
        self._reader = _open_checkpoint(prefix)
        self._rows = {v.canonical: v for v in names.variables(config)}
        _check_variables(prefix, self._reader.get_variable_to_shape_map(), self._rows)

    def keys(self) -> list[str]:
        """Canonical names, in table order (every one is present: ``__init__`` checked)."""
        return list(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def shape(self, name: str) -> tuple[int, ...]:
        """Canonical shape, without reading the variable."""
        return self._rows[name].canonical_shape

    def dtype(self, name: str) -> str:
        """numpy dtype name of a variable (``"float32"`` in the release), without reading it."""
        return self._reader.get_variable_to_dtype_map()[self._rows[name].variable].name

    def __getitem__(self, name: str) -> np.ndarray:
        """The variable as a numpy array in the canonical layout.

        Raises:
            FormatError: the data file cannot be read (truncated, missing); names the variable.
        """
        import tensorflow as tf  # already loaded: the reader came from it

        row = self._rows[name]
        try:
            array = self._reader.get_tensor(row.variable)
        except (tf.errors.OpError, IndexError) as err:  # truncated data: IndexError
            raise FormatError(f"{self.prefix}: cannot read {row.variable}: {err}") from None
        return np.asarray(row.to_canonical(array))

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """(canonical name, array) pairs, one variable read at a time."""
        for name in self._rows:
            yield name, self[name]


def _locate(path: Path) -> tuple[Path, Path]:
    """``(folder, checkpoint prefix)`` for a release folder or a checkpoint prefix.

    Raises:
        FormatError: no ``hparams.json`` next to the checkpoint, or no checkpoint.
    """
    if path.is_dir():
        folder = path
        prefix = _folder_prefix(folder)
        if prefix is None:
            raise FormatError(
                f"{folder}: no TF1 checkpoint ({PREFIX}.index, or a '{CHECKPOINT_STATE}' file "
                "naming one)"
            )
    elif Path(f"{path}.index").is_file():
        folder, prefix = path.parent, path
    else:
        raise FormatError(f"{path} is neither a folder nor a TF1 checkpoint prefix")
    if not (folder / HPARAMS).is_file():
        raise _no_hparams(folder)
    return folder, prefix


def _no_hparams(folder: Path) -> FormatError:
    return FormatError(
        f"{folder}: no {HPARAMS}; OpenAI's GPT-2 release keeps the model sizes there "
        f"({', '.join(HPARAMS_FIELDS)})"
    )


def _folder_prefix(folder: Path) -> Path | None:
    """``model.ckpt`` when present, else the ``checkpoint`` file's latest (by base name)."""
    if (folder / f"{PREFIX}.index").is_file():
        return folder / PREFIX
    state = folder / CHECKPOINT_STATE
    if not state.is_file():
        return None
    match = _STATE_LINE.search(state.read_text(encoding="utf-8", errors="replace"))
    if match is None:
        return None
    prefix = folder / Path(match.group(1)).name
    return prefix if Path(f"{prefix}.index").is_file() else None


def _open_checkpoint(prefix: Path) -> Any:
    """``tf.train.load_checkpoint(prefix)``: a reader with ``get_tensor`` and shapes."""
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError(
            "reading OpenAI's GPT-2 checkpoints (TF1 format) needs TensorFlow: "
            'pip install "gpt2_dual[tf]"'
        ) from err
    try:
        return tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as err:
        raise FormatError(f"{prefix}: cannot open the TF1 checkpoint: {err}") from None


def _check_variables(
    prefix: Path, found: dict[str, list[int]], rows: dict[str, names.Variable]
) -> None:
    """Every table variable present with its stored shape, and nothing else.

    Raises:
        CheckpointError: ``"<prefix> does not match hparams.json: missing 1: ...; unknown 1:
            ...; misshapen 1: <variable>: expected (..), found (..)"`` (empty parts left out).
    """
    expected = {row.variable: row for row in rows.values()}
    missing = [v for v in expected if v not in found]
    unknown = sorted(v for v in found if v not in expected)
    misshapen = [
        f"{v}: expected {row.shape}, found {tuple(found[v])}"
        for v, row in expected.items()
        if v in found and tuple(found[v]) != row.shape
    ]
    parts = [
        f"{label} {len(items)}: {', '.join(items)}"
        for label, items in (("missing", missing), ("unknown", unknown), ("misshapen", misshapen))
        if items
    ]
    if parts:
        raise CheckpointError(f"{prefix} does not match {HPARAMS}: {'; '.join(parts)}")
