"""Keras weights <-> canonical state dicts and transformers-format checkpoints.

This is the only Keras code that applies the weight-name table (``convert/names/``): a row's
``tf`` path says where a variable lives in a gpt2_dual.tf model (a ``getattr`` walk, digits
index the ``h`` list; relative to ``model.transformer`` for backbone rows of head models), and
``tf_transpose`` says that a Keras ``Dense`` kernel ``(in, out)`` is the transpose of
transformers' ``nn.Linear`` weight ``(out, in)`` (the head rows). Block rows are transformers
``Conv1D`` weights, already ``(in, out)``: no transpose.

Loading asserts a bijection: every variable is filled and every tensor is used, or the
difference is named (``CheckpointError``, or a ``LoadReport`` with ``strict=False``); and every
variable of the model must be reachable through the table. Shapes are compared in the
canonical layout, before the transpose. The rules (what is missing, unexpected, tied, how it is
reported) are shared with gpt2_dual.pt in ``convert/loading.py``.

Only safetensors are read, through ``SafetensorsReader(framework="np")``, one tensor at a time,
or else transformers TF's ``tf_model.h5`` (``checkpoint.tf_h5.H5Reader``): loading never imports
torch and never unpickles. A checkpoint with only ``pytorch_model.bin`` gets an error that says
how to convert it.

Example:
    >>> from gpt2_dual.tf import GPT2LMHeadModel
    >>> model = GPT2LMHeadModel.from_pretrained("gpt2")  # doctest: +SKIP
    >>> model.save_pretrained("out/")  # loads in transformers' PyTorch GPT2LMHeadModel
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from gpt2_dual.checkpoint import hf, loading
from gpt2_dual.checkpoint.loading import CheckpointError, LoadReport
from gpt2_dual.checkpoint.names import BACKBONE_ATTR, HF_PREFIX, Param, is_backbone, params
from gpt2_dual.checkpoint.tf_h5 import H5Reader
from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import InvalidInputError
from gpt2_dual.generation.config import load_for_model
from gpt2_dual.tf.int8 import check_float, dequantized

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "LoadReport",
    "from_pretrained",
    "load_canonical",
    "save_pretrained",
    "to_canonical",
]

_FLOATS = ("float16", "bfloat16", "float32", "float64")


# --------------------------------------------------------------------------- to canonical
def _path(model: keras.Model, row: Param) -> str:
    """The row's attribute path from the model itself (backbone rows sit under ``transformer``
    in head models)."""
    if type(model).head != "base" and is_backbone(row.canonical):
        return f"{BACKBONE_ATTR}.{row.tf}"
    return row.tf


def _rows(model: keras.Model) -> list[Param]:
    return params(model.config, type(model).head)


def _owner(model: keras.Model, row: Param) -> tuple[Any, str]:
    """The layer holding the row's variable and the variable's attribute name: walk the
    row's path, attributes and list indices for digits (``h.0``)."""
    *parts, attr = _path(model, row).split(".")
    target: Any = model
    for part in parts:
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    return target, attr


def _variable(model: keras.Model, row: Param) -> keras.Variable:
    layer, attr = _owner(model, row)
    return getattr(layer, attr)


def _numpy(value: Any) -> np.ndarray:
    """Variables and tensors via ``.numpy()`` (``np.array(tensor)`` warns under numpy 2)."""
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _canonical_array(model: keras.Model, row: Param) -> np.ndarray:
    layer, attr = _owner(model, row)
    if attr in ("kernel", "embeddings") and layer.quantization_mode:  # int8 values and scales
        array = dequantized(layer)
    else:
        array = _numpy(getattr(layer, attr))
    # Dense kernel (in, out) -> transformers nn.Linear (out, in) for the head rows.
    return np.ascontiguousarray(array.T if row.tf_transpose else array)


def to_canonical(model: keras.Model, *, dequantize: bool = False) -> dict[str, np.ndarray]:
    """The model's weights as a canonical numpy state dict (new, contiguous arrays).

    A tied ``lm_head.weight`` is left out, as transformers leaves it out of its checkpoints.
    bfloat16 variables come back as ``ml_dtypes.bfloat16`` arrays.

    Args:
        model: a gpt2_dual.tf model (any head).
        dequantize: for a model after ``quantize("int8")``: float weights rebuilt from the
            int8 values and scales (their rounding stays); without it such a model is refused.

    Returns:
        Canonical name -> array in transformers' layout and the variable's dtype.

    Raises:
        QuantizedModelError: the model is quantized and ``dequantize`` is False.

    Example:
        >>> state = to_canonical(model)  # doctest: +SKIP
        >>> state["h.0.attn.c_attn.weight"].shape  # (C, 3C), transformers' Conv1D layout
    """
    if not dequantize:
        check_float(model, "to_canonical", hint=_DEQUANTIZE.format(call="to_canonical"))
    return {row.canonical: _canonical_array(model, row) for row in _rows(model)}


_DEQUANTIZE = (
    "pass dequantize=True for float weights rebuilt from the int8 ones (rounding included), "
    "or keep the int8 model with model.save('model.keras') or save_weights ({call})"
)


# --------------------------------------------------------------------------- load
def load_canonical(model: keras.Model, state: Any, *, strict: bool = True) -> LoadReport:
    """Fill the model's variables from a canonical state, applying the table's transposes.

    Keys may carry the ``transformer.`` prefix; old ``attn.bias``/``masked_bias`` buffers are
    ignored. Values are cast to each variable's dtype. Nothing is written unless every check
    passes.

    Args:
        model: a gpt2_dual.tf model (any head).
        state: canonical name (or checkpoint key) -> numpy array (or a tensor or variable),
            or an ``hf.SafetensorsReader`` (read one tensor at a time).
        strict: when True, any missing or unexpected tensor is an error. When False, missing
            variables get transformers' initialization and unexpected tensors are left
            unused; both are listed in the report.

    Returns:
        A ``LoadReport``.

    Raises:
        CheckpointError: shapes differ (names tensor, expected and found canonical shapes), or
            with ``strict``, tensors are missing or unexpected (all named in one message).
        QuantizedModelError: the model is quantized (load into the float model first).

    Example:
        >>> report = load_canonical(model, to_canonical(other_model))  # doctest: +SKIP
    """
    check_float(
        model, "load_canonical", hint="load the weights into the float model, then quantize()"
    )
    return _load(model, loading.canonical_view(state), strict=strict)


def _load(model: keras.Model, view: Any, *, strict: bool) -> LoadReport:
    name = type(model).__name__
    plan = loading.plan_load(model.config, type(model).head, view)
    loading.check_fit(name, plan, strict=strict)
    loading.check_tied(name, view, plan.report, _equal, logger)
    for row in plan.rows:
        _assign(model, row, view[row.canonical])
    _init_missing(model, plan.report.missing)
    return plan.report


def _equal(a: Any, b: Any) -> bool:
    return bool(np.array_equal(_numpy(a), _numpy(b)))


def _assign(model: keras.Model, row: Param, value: Any) -> None:
    variable = _variable(model, row)
    value = _numpy(value)
    # transformers nn.Linear (out, in) -> our Dense kernel (in, out) for the head rows.
    value = value.T if row.tf_transpose else value
    variable.assign(keras.ops.cast(value, variable.dtype))


def _init_missing(model: keras.Model, names: tuple[str, ...]) -> None:
    """transformers' initialization, for variables the state lacked (``strict=False``).

    The draw follows numpy's global seed (set by ``keras.utils.set_random_seed``).
    """
    if not names:
        return
    rng = np.random.default_rng(np.random.randint(2**31))
    by_name = {row.canonical: row for row in _rows(model)}
    for name in names:
        row = by_name[name]
        _assign(model, row, loading.initial_value(row, model.config, rng))


# --------------------------------------------------------------------------- from_pretrained
def _refuse_bitsandbytes(where: str, given: bool) -> None:
    what = "quantization_config=" if given else f"the checkpoint at {where!r}, quantized with"
    raise InvalidInputError(
        f"{what} bitsandbytes is PyTorch only: load it with gpt2_dual.pt; in Keras, load "
        "the float checkpoint and call model.quantize('int8')"
    )


def from_pretrained(
    cls: type[keras.Model],
    path_or_repo_id: str | os.PathLike,
    *,
    config: GPT2Config | None = None,
    dtype: Any = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str = "",
    strict: bool = True,
    quantization_config: Any = None,
    **config_overrides: Any,
) -> keras.Model:
    """Load a transformers-format GPT-2 checkpoint (local folder or Hub repo) into ``cls``.

    Reads ``config.json`` and ``model.safetensors`` (or shards plus index), with or without the
    ``transformer.`` prefix, else transformers TF's ``tf_model.h5``, one tensor at a time,
    without importing torch. A checkpoint of any GPT-2 head loads into any head: head weights
    the checkpoint lacks are newly initialized and logged (as transformers does), head weights
    of another head are logged as unused.

    Args:
        cls: the gpt2_dual.tf model class.
        path_or_repo_id: local folder or Hub repo id.
        config: use this config instead of the checkpoint's ``config.json``.
        dtype: Keras dtype policy or its name (``"bfloat16"``, ``"mixed_bfloat16"``, ...);
            ``"auto"`` takes the config's ``dtype`` (else the checkpoint's); None: Keras'
            global policy (``keras.config.dtype_policy()``).
        revision, cache_dir, local_files_only, token, subfolder: Hub options
            (see ``gpt2_dual.hub.resolve.resolve_file``).
        strict: when True, backbone tensors missing or not used are an error; when False they
            are initialized or left unused, and logged.
        quantization_config: accepted for ``gpt2_dual.pt``'s signature and refused:
            bitsandbytes is PyTorch only (Keras' int8 is ``model.quantize("int8")``).
        **config_overrides: GPT2Config fields to override (e.g. ``num_labels=3``).

    Returns:
        The model, built, with the checkpoint's weights.

    Raises:
        CheckpointError: tensors missing, unexpected or misshapen (all named).
        FileNotFoundError: no safetensors weights (a ``pytorch_model.bin``-only checkpoint
            says how to convert it).
        TypeError: an override is not a GPT2Config field.
        ValueError: ``dtype`` is not a floating dtype or policy.
        InvalidInputError: a bitsandbytes ``quantization_config`` (given, or in the
            checkpoint's config.json): bitsandbytes is PyTorch only.

    Example:
        >>> from gpt2_dual.tf import GPT2ForSequenceClassification
        >>> model = GPT2ForSequenceClassification.from_pretrained(
        ...     "gpt2", num_labels=3
        ... )  # doctest: +SKIP
    """
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    hub.update(token=token, subfolder=subfolder)
    if quantization_config is not None:
        _refuse_bitsandbytes(str(path_or_repo_id), True)
    config = loading.build_config(path_or_repo_id, config, hub, config_overrides)
    if config.extra.get("quantization_config") is not None:
        _refuse_bitsandbytes(str(path_or_repo_id), False)
    found = hf.find_checkpoint(path_or_repo_id, **hub)
    if found.format == "bin":  # read transformers TF weights beside it, else refuse
        try:
            found = hf.find_checkpoint(path_or_repo_id, formats=("tf-h5",), **hub)
        except FileNotFoundError:
            where, file = str(path_or_repo_id), found.files[0]
            raise FileNotFoundError(
                _BIN_ONLY.format(where=where, file=file, cls=cls.__name__)
            ) from None
    if found.format == "tf-h5":  # transformers TF's tf_model.h5, one tensor at a time
        view = H5Reader(found.files)
    else:
        view = hf.SafetensorsReader(found.files)
    # Config against checkpoint, shapes and dtypes only, before the model is built.
    plan = loading.plan_load(config, cls.head, view)
    loading.check_policy(
        cls.__name__, plan.report, strict=strict, where=str(path_or_repo_id), logger=logger
    )
    loading.check_fit(cls.__name__, plan, strict=False)
    policy = _resolve_dtype(dtype, config, view)
    model = cls(config) if policy is None else cls(config, dtype=policy)
    _load(model, view, strict=False)
    _check_covered(model)
    if hasattr(model, "generate"):
        model.generation_config = load_for_model(path_or_repo_id, config, hub)
    return model


_BIN_ONLY = (
    "no safetensors weights in {where!r} (looked for model.safetensors, "
    "model.safetensors.index.json, tf_model.h5, tf_model.h5.index.json); it has {file}, which "
    "gpt2_dual.tf does not read (it would need torch and unpickling). Convert it to "
    "safetensors once, in a trusted environment: "
    "gpt2_dual.pt.{cls}.from_pretrained(path).save_pretrained(out) (or transformers' "
    "save_pretrained(out, safe_serialization=True)), then load out"
)


def _resolve_dtype(dtype: Any, config: GPT2Config, view: Any) -> keras.DTypePolicy | None:
    """``dtype`` argument -> a Keras dtype policy (None: the global policy applies)."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype == "auto":
        dtype = loading.config_dtype(config) or loading.safetensors_dtype(view)
        if dtype is None:
            return None
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", dtype)
    if not isinstance(dtype, keras.DTypePolicy):
        try:
            dtype = keras.DTypePolicy(name)
        except (ValueError, TypeError):
            dtype = None
    if dtype is None or {dtype.compute_dtype, dtype.variable_dtype} - set(_FLOATS):
        raise ValueError(
            "dtype must be a floating Keras dtype policy, its name (float32, bfloat16, "
            f"float16, mixed_bfloat16, mixed_float16) or 'auto'; got {name!r}"
        )
    return dtype


def _check_covered(model: keras.Model) -> None:
    """Every variable of the model is a table row (no weight is left at its random init)."""
    reached = {id(_variable(model, row)) for row in _rows(model)}
    left = [v.path for v in model.weights if id(v) not in reached]
    if left:
        raise RuntimeError(
            f"{type(model).__name__}.from_pretrained left variables unloaded: {left}; "
            "they are not in the weight-name table (gpt2_dual bug)"
        )


# --------------------------------------------------------------------------- save
def _disk_state(model: keras.Model) -> dict[str, np.ndarray]:
    """Keys as transformers' same class saves them, canonical layouts, the variables' dtypes."""
    prefix = HF_PREFIX if type(model).head != "base" else ""
    out = {}
    for row in _rows(model):
        key = prefix + row.canonical if is_backbone(row.canonical) else row.canonical
        out[key] = _canonical_array(model, row)
    return out


def save_pretrained(
    model: keras.Model,
    save_directory: str | os.PathLike,
    *,
    max_shard_size: int | str = "5GB",
    dequantize: bool = False,
) -> list[Path]:
    """Write ``config.json`` and ``model.safetensors`` as transformers' PyTorch class would.

    Backbone keys carry ``transformer.`` in head models (not in ``GPT2Model``); a tied
    ``lm_head.weight`` is left out; dtypes are kept (bfloat16 included). Past
    ``max_shard_size`` the weights are sharded with an index. Every file is written to a
    temporary name and renamed; weight files of another layout left in the folder are removed.
    transformers' PyTorch GPT-2 and gpt2_dual.pt load the result with nothing missing or unused.

    Args:
        model: a gpt2_dual.tf model (any head).
        save_directory: folder to write into (created if needed).
        max_shard_size: largest shard, in bytes or as ``"5GB"``/``"500MB"``.
        dequantize: for a model after ``quantize("int8")``: write float weights rebuilt from
            the int8 values and scales (their rounding stays; 4x the int8 size); without it
            such a model is refused, since transformers' format has no Keras int8 layout.

    Returns:
        The written files (``generation_config.json`` too for the LM heads), ``config.json``
        last.

    Raises:
        QuantizedModelError: the model is quantized and ``dequantize`` is False (nothing is
            written).

    Example:
        >>> model.save_pretrained("out/")  # then transformers' from_pretrained("out/") works
    """
    if not dequantize:
        check_float(model, "save_pretrained", hint=_DEQUANTIZE.format(call="save_pretrained"))
    folder = Path(save_directory)
    state = _disk_state(model)
    written = hf.save_safetensors(state, folder, max_shard_size=max_shard_size)
    if hasattr(model, "generate"):
        written.append(model.generation_config.save_pretrained(folder))
    dtype = keras.backend.standardize_dtype(_owner(model, _rows(model)[0])[0].variable_dtype)
    written.append(loading.save_config(model.config, type(model).__name__, dtype, folder))
    return written
