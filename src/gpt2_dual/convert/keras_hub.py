"""The ``keras-hub`` format: KerasHub GPT-2 presets, read and written without importing keras_hub.

A preset is a folder (what ``GPT2Backbone.save_to_preset`` / ``GPT2CausalLM.save_to_preset``
write, and ``from_preset`` loads)::

    config.json              {"module": ..., "class_name": "GPT2Backbone", "config": {sizes}}
    model.weights.h5         Keras 3 weights of the backbone (or model.weights.json + shards)
    metadata.json            versions, parameter count, date
    task.json                GPT2CausalLM's config (a causal-LM preset; no weights of its own)
    preprocessor.json        GPT2CausalLMPreprocessor's config (with a tokenizer)
    tokenizer.json           GPT2Tokenizer's Keras config (not transformers' tokenizer.json)
    assets/tokenizer/        vocabulary.json (transformers' vocab.json) and merges.txt

Names and layouts come from ``convert.names.keras_hub``; tensors are read with h5py, one at a
time, bfloat16 included (stored as Keras stores it: opaque 2-byte data, ``dtype`` attribute).
A backbone preset reads as head ``"base"``, a ``GPT2CausalLM`` preset as ``"lm"`` (tied
embeddings). KerasHub hard-codes LayerNorm epsilon 1e-5, the tanh GELU, scaled dot-product
attention and tied output embeddings, and has one dropout rate: ``write`` refuses configs it
cannot represent (``FormatError`` naming the fields) and heads other than ``base``/``lm``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual._io import atomic_write, atomic_write_text, read_json_object
from gpt2_dual.checkpoint import loading
from gpt2_dual.checkpoint.hf import leaves_folder
from gpt2_dual.checkpoint.names import canonical_shapes
from gpt2_dual.checkpoint.names import keras_hub as names
from gpt2_dual.checkpoint.safetensors_io import bfloat16, cast
from gpt2_dual.config import GPT2Config
from gpt2_dual.convert.formats import FormatError, Source
from gpt2_dual.convert.keras_file import replace_when_done, writer_dtype
from gpt2_dual.errors import MalformedFileError
from gpt2_dual.heads import HEAD_SPECS
from gpt2_dual.tokenizer.files import (
    CONFIG_NAME,
    MERGES_NAME,
    TOKENIZER_NAME,
    VOCAB_NAME,
    read_tokenizer_json,
    read_vocab,
)

logger = logging.getLogger(__name__)

FORMAT = "keras-hub"


# --------------------------------------------------------------------------- detect and read
def _hub_json(path: Path) -> dict[str, Any] | None:
    """A KerasHub serialized object (``module``, ``class_name``, ``config``), else None."""
    try:
        data = read_json_object(path)
    except (OSError, ValueError):
        return None
    keys = ("module", "class_name", "config")
    return data if all(k in data for k in keys) and isinstance(data["config"], dict) else None


def detect(path: Path) -> bool:
    """A folder with a KerasHub ``config.json`` and ``model.weights.h5`` (or its shard index)."""
    path = Path(path)
    if not path.is_dir() or not (path / names.CONFIG_FILE).is_file():
        return False
    weights = any(p.is_file() for p in _weight_candidates(path))
    return weights and _hub_json(path / names.CONFIG_FILE) is not None


def read(path: Path) -> Source:
    """Read a KerasHub GPT-2 preset folder (lazily: tensors are read on access).

    Raises:
        FormatError: not a KerasHub preset, not a ``GPT2Backbone``, a config key missing, or
            the weights do not match the config (missing, unexpected or misshapen datasets,
            all named).
    """
    path = Path(path)
    hub = _hub_json(path / names.CONFIG_FILE)
    if hub is None or not any(p.is_file() for p in _weight_candidates(path)):
        raise FormatError(f"{path} is not a KerasHub preset (config.json and model.weights.h5)")
    if hub["class_name"] != names.BACKBONE[1]:
        raise FormatError(f"{path} holds a KerasHub {hub['class_name']}, not a GPT2Backbone")
    config = config_from_hub(hub["config"], where=str(path / names.CONFIG_FILE))
    head = _task_head(path)
    assets = path / names.TOKENIZER_ASSETS
    tokenizer_files = {
        ours: assets / theirs
        for ours, theirs in ((VOCAB_NAME, names.VOCABULARY_FILE), (MERGES_NAME, names.MERGES_FILE))
        if (assets / theirs).is_file()
    }
    view = PresetView(path, config)
    logger.info("read KerasHub preset %s: head %r, %d tensors", path, head, len(view.keys()))
    return Source(FORMAT, path, config, head, view, None, tokenizer_files)


def _weight_candidates(path: Path) -> tuple[Path, Path]:
    return path / names.WEIGHTS_FILE, path / names.SHARDED_WEIGHTS_INDEX


def config_from_hub(hub: dict[str, Any], *, where: str) -> GPT2Config:
    """``GPT2Backbone``'s config dict -> ``GPT2Config``.

    ``intermediate_dim`` becomes ``n_inner`` (None when it is 4 * ``hidden_dim``) and
    ``dropout`` every GPT-2 dropout rate.

    Raises:
        FormatError: a size is missing (named).
    """
    required = (*names.CONFIG_FIELDS, "intermediate_dim")
    missing = [k for k in required if hub.get(k) is None]
    if missing:
        raise FormatError(f"{where}: GPT2Backbone config lacks {', '.join(missing)}")
    fields = {ours: hub[theirs] for theirs, ours in names.CONFIG_FIELDS.items()}
    inner = hub["intermediate_dim"]
    fields["n_inner"] = None if inner == 4 * hub["hidden_dim"] else inner
    dropout = hub.get("dropout", 0.1)
    fields.update(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    try:
        return GPT2Config(**fields)
    except ValueError as err:
        raise FormatError(f"{where}: {err}") from None


def _task_head(path: Path) -> str:
    """``"lm"`` when ``task.json`` is a ``GPT2CausalLM``, else ``"base"``."""
    task = _hub_json(path / names.TASK_FILE) if (path / names.TASK_FILE).is_file() else None
    if task is None:
        return "base"
    head = names.HEAD_BY_TASK.get(task["class_name"])
    if head is None:
        logger.warning("%s: task %s is not a KerasHub GPT-2 task; reading the backbone",
                       path / names.TASK_FILE, task["class_name"])  # fmt: skip
        return "base"
    return head


class PresetView:
    """Lazy canonical view of a preset's ``model.weights.h5`` (or shards).

    Opening checks, from the files' metadata only, that the datasets are exactly those of the
    config's backbone, with the expected shapes; ``view[name]`` then reads and joins the
    name's datasets (e.g. query/key/value -> ``c_attn``), in the stored dtype.

    Raises:
        FormatError: datasets missing, unexpected or misshapen (all named).
    """

    def __init__(self, folder: Path, config: GPT2Config) -> None:
        import h5py

        self._config = config
        self._rows = {row.canonical: row for row in names.hub_params(config)}
        self._shapes = canonical_shapes(config, "base")
        self._where: dict[str, tuple[Path, str]] = {}  # dataset_key -> (file, stored path)
        found: dict[str, tuple[int, ...]] = {}
        for file in _weight_files(folder):
            with h5py.File(file, "r") as f:
                f.visititems(lambda key, obj, file=file: self._index(key, obj, file, found))
        self._check(folder, found)
        self.ignored: list[str] = []

    def _index(self, key: str, obj: Any, file: Path, found: dict) -> None:
        import h5py

        if isinstance(obj, h5py.Dataset):
            self._where[names.dataset_key(key)] = (file, key)
            found[names.dataset_key(key)] = tuple(obj.shape)

    def _check(self, folder: Path, found: dict[str, tuple[int, ...]]) -> None:
        expected = {}
        for name, row in self._rows.items():
            shapes = names.hub_shapes(row, self._config, self._shapes[name])
            keys = [names.dataset_key(d) for d in row.datasets]
            expected.update(zip(keys, shapes, strict=True))
        problems = []
        missing = [k for k in expected if k not in found]
        unexpected = [self._where[k][1] for k in found if k not in expected]
        wrong = [f"{k}: expected {expected[k]}, found {found[k]}"
                 for k in expected if k in found and tuple(expected[k]) != found[k]]  # fmt: skip
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if items:
                problems.append(f"{label} {len(items)}: {', '.join(items)}")
        if problems:
            raise FormatError(
                f"{folder}: the KerasHub weights do not match a GPT2Backbone of its config.json "
                f"({'; '.join(problems)})"
            )

    def keys(self) -> list[str]:
        """Canonical names, in table order."""
        return list(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def shape(self, name: str) -> tuple[int, ...]:
        """Canonical shape, without reading."""
        if name not in self._rows:
            raise KeyError(name)
        return tuple(self._shapes[name])

    def __getitem__(self, name: str) -> np.ndarray:
        import h5py

        row = self._rows[name]
        arrays = []
        for dataset in row.datasets:
            file, key = self._where[names.dataset_key(dataset)]
            with h5py.File(file, "r") as f:
                arrays.append(_read_dataset(f[key]))
        return names.to_canonical(row, arrays, self._config)


def _weight_files(folder: Path) -> list[Path]:
    """``model.weights.h5``, or every shard named by ``model.weights.json``."""
    single, index = _weight_candidates(folder)
    if single.is_file():
        return [single]
    weight_map = read_json_object(index).get("weight_map", {})
    files = set()
    for key, value in weight_map.items():
        shards = [value] if isinstance(value, str) else value
        bad = next((n for n in shards if not isinstance(n, str) or leaves_folder(n)), None)
        if bad is not None:
            raise MalformedFileError(
                f"{index}: weight_map[{key!r:.60}] names {bad!r:.80}, not a file in the "
                "index's folder (no leading '/', drive, '..' or '\\')"
            )
        files.update(shards)
    return [folder / f for f in sorted(files)]


def _read_dataset(dataset: Any) -> np.ndarray:
    """A Keras weights dataset as numpy; bfloat16 (opaque 2-byte data) as ml_dtypes'."""
    array = dataset[()]
    if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        array = np.asarray(array).view(bfloat16())
    return np.asarray(array)


# --------------------------------------------------------------------------- write
def check_representable(config: GPT2Config, head: str) -> None:
    """Refuse what KerasHub's GPT-2 cannot hold.

    Raises:
        FormatError: the head has no KerasHub model, or config fields differ from what
            ``GPT2Backbone`` hard-codes (every such field named, with its value).
    """
    if head not in names.HEAD_BY_TASK.values():
        raise FormatError(
            f"KerasHub has GPT2Backbone and GPT2CausalLM only, no model for head {head!r}; "
            "convert the backbone (head 'base') or the language model (head 'lm')"
        )
    problems = []
    if config.activation_function not in names.GELU_TANH:
        problems.append(f"activation_function={config.activation_function!r} (KerasHub: "
                        "gelu_new, the tanh GELU)")  # fmt: skip
    if config.layer_norm_epsilon != names.LAYER_NORM_EPSILON:
        problems.append(f"layer_norm_epsilon={config.layer_norm_epsilon} (KerasHub: 1e-05)")
    for field, bad in (("scale_attn_weights", False), ("scale_attn_by_inverse_layer_idx", True),
                       ("add_cross_attention", True)):  # fmt: skip
        if getattr(config, field) == bad:
            problems.append(f"{field}={bad} (KerasHub: {not bad})")
    if head == "lm" and not config.tie_word_embeddings:
        problems.append("tie_word_embeddings=False (GPT2CausalLM's output layer is wte)")
    if problems:
        raise FormatError("KerasHub's GPT-2 cannot represent " + "; ".join(problems))
    rates = {config.resid_pdrop, config.embd_pdrop, config.attn_pdrop}
    if len(rates) > 1:
        logger.warning(
            "KerasHub's GPT2Backbone has one dropout rate; writing resid_pdrop=%s "
            "(embd_pdrop=%s, attn_pdrop=%s are not kept)",
            config.resid_pdrop, config.embd_pdrop, config.attn_pdrop,
        )  # fmt: skip


def write(source: Source, folder: Path, *, dtype: str | None = None) -> None:
    """Write ``source`` as a KerasHub preset (with h5py; keras_hub is not imported).

    ``GPT2Backbone.from_preset(folder)`` loads the result, and ``GPT2CausalLM.from_preset``
    too when the source has tokenizer files (or ``preprocessor=None`` is passed). Head
    ``"lm"`` also writes ``task.json``. ``config.json`` is written last, every file through a
    temporary name.

    Args:
        source: a ``Source`` of head ``"base"`` or ``"lm"``.
        folder: an existing, empty folder.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` (or ``fp32``/``fp16``/``bf16``);
            None keeps the source's floating dtype (float32 for others).

    Raises:
        FormatError: the config or head cannot be represented (see ``check_representable``),
            or ``dtype`` is not one of the above.
        gpt2_dual.checkpoint.loading.CheckpointError: the source lacks tensors of its model or
            has misshapen ones (all named); tensors of other heads are left out.
    """
    folder = Path(folder)
    config, head = source.config, source.head
    check_representable(config, head)
    plan = loading.plan_load(config, head, source.view)
    loading.check_complete(HEAD_SPECS[head].class_name, plan)  # other heads' tensors: left out
    dtype = writer_dtype(source, dtype)
    _write_weights(source, names.hub_params(config), folder / names.WEIGHTS_FILE, dtype)
    tokenizer = _write_tokenizer(source, folder)
    backbone = names.backbone_config(config, dtype)
    if tokenizer is not None:
        _write_json(folder / names.TOKENIZER_FILE, tokenizer)
    if head == "lm":
        preprocessor = None
        if tokenizer is not None:
            preprocessor = names.preprocessor_config(tokenizer, config.n_positions)
            _write_json(folder / names.PREPROCESSOR_FILE, preprocessor)
        _write_json(folder / names.TASK_FILE, names.causal_lm_config(backbone, preprocessor))
    _write_json(folder / names.METADATA_FILE, _metadata(config))
    _write_json(folder / names.CONFIG_FILE, backbone)


def _write_weights(source: Source, rows: list[names.HubParam], path: Path, dtype: str) -> None:
    """One tensor at a time into Keras 3's layout, with the layer names as group attributes."""
    import h5py

    groups = names.layer_names(source.config)
    with replace_when_done(path) as tmp, h5py.File(tmp, "w") as f:
        for group, layer in groups.items():
            f.require_group(group).require_group("vars").attrs["name"] = layer
        for row in rows:
            array = cast(np.asarray(source.view[row.canonical]), dtype)
            for key, part in zip(row.datasets, names.from_canonical(row, array, source.config),
                                 strict=True):  # fmt: skip
                dataset = f.create_dataset(key, data=part)
                if dtype == "bfloat16":
                    dataset.attrs["dtype"] = "bfloat16"


def _write_tokenizer(source: Source, folder: Path) -> dict[str, Any] | None:
    """Write the tokenizer assets; return ``GPT2Tokenizer``'s config (None: no tokenizer)."""
    files = source.tokenizer_files
    assets = folder / names.TOKENIZER_ASSETS
    if VOCAB_NAME in files and MERGES_NAME in files:
        vocab = read_vocab(files[VOCAB_NAME])
        vocab_bytes, merges_bytes = files[VOCAB_NAME].read_bytes(), files[MERGES_NAME].read_bytes()
    elif TOKENIZER_NAME in files:  # transformers' tokenizer.json: take its BPE model
        vocab, merges, added = read_tokenizer_json(files[TOKENIZER_NAME])
        vocab.update({t.content: t.id for t in added})
        by_id = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        vocab_bytes = (json.dumps(by_id, ensure_ascii=False) + "\n").encode("utf-8")
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
        merges_bytes = ("\n".join(lines) + "\n").encode("utf-8")
    else:
        return None
    if names.END_OF_TEXT not in vocab:
        logger.warning("the tokenizer has no %s token, which KerasHub's GPT2Tokenizer needs; "
                       "writing the preset without a tokenizer", names.END_OF_TEXT)  # fmt: skip
        return None
    for name, data in ((names.VOCABULARY_FILE, vocab_bytes), (names.MERGES_FILE, merges_bytes)):
        atomic_write(assets / name, lambda f, data=data: f.write(data))
    prefix_space = False
    if CONFIG_NAME in files:
        prefix_space = bool(read_json_object(files[CONFIG_NAME]).get("add_prefix_space", False))
    return names.tokenizer_config(prefix_space)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _metadata(config: GPT2Config) -> dict[str, Any]:
    count = sum(int(np.prod(s)) for s in canonical_shapes(config, "base").values())
    return {
        "keras_version": _version("keras"),
        "keras_hub_version": _version("keras-hub"),
        "parameter_count": count,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "tasks": ["CausalLM"],
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=4) + "\n")
