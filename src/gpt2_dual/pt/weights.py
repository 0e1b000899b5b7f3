"""PyTorch weights <-> canonical state dicts and transformers-format checkpoints.

This is the only PyTorch code that applies the weight-name table (``convert/names/``): a
row's ``pt`` path says where a tensor lives in a gpt2_dual.pt model (relative to
``model.transformer`` for backbone rows of head models); layouts are transformers' own
(``Conv1D`` weights ``(in, out)``), so tensors move as they are.

Loading asserts a bijection: every parameter is filled and every tensor is used, or the
difference is named (``CheckpointError``, or a ``LoadReport`` with ``strict=False``).

``from_pretrained`` builds the model on the ``meta`` device and then makes each parameter the
checkpoint's own tensor: safetensors files (and ``.bin`` files, through
``torch.load(mmap=True)``) are memory-mapped copy-on-write, and nothing is read until first
use. Loading then takes no time and memory of its own, and the weights are resident once (the
file's pages; a write, such as an optimizer step, gives the written page its own copy).
Another dtype or device costs one converted copy per tensor. As transformers does, the file
stays mapped while the model lives: replace it only by writing a new file and renaming it
over the old (``save_pretrained`` does so).

Example:
    >>> from gpt2_dual.pt import GPT2LMHeadModel
    >>> model = GPT2LMHeadModel.from_pretrained("gpt2")  # doctest: +SKIP
    >>> model.save_pretrained("out/")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gpt2_dual.checkpoint import hf, loading
from gpt2_dual.checkpoint.loading import CheckpointError, LoadReport
from gpt2_dual.checkpoint.names import BACKBONE_ATTR, HF_PREFIX, Param, is_backbone, params
from gpt2_dual.checkpoint.tf_h5 import H5Reader
from gpt2_dual.checkpoint.torch_bin import read_bin
from gpt2_dual.config import GPT2Config
from gpt2_dual.errors import QuantizedModelError
from gpt2_dual.generation.config import load_for_model
from gpt2_dual.pt import bnb_load
from gpt2_dual.pt import pretrained_io as files
from gpt2_dual.quantization import as_torchao

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "LoadReport",
    "from_pretrained",
    "load_canonical",
    "save_pretrained",
    "to_canonical",
]


# --------------------------------------------------------------------------- canonical views
def _view(state: Any) -> Any:
    return loading.canonical_view(state)


def _as_tensor(value: Any) -> Any:
    if isinstance(value, torch.Tensor | bnb_load.Prequantized):
        return value  # a quantized checkpoint's weight: pt.quantize.set_weight places it
    array = np.asarray(value)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    return torch.from_numpy(array)


# --------------------------------------------------------------------------- to canonical
def _path(model: nn.Module, row: Param) -> str:
    """The row's attribute path from the model itself (backbone rows sit under ``transformer``
    in head models)."""
    if type(model).head != "base" and is_backbone(row.canonical):
        return f"{BACKBONE_ATTR}.{row.pt}"
    return row.pt


def _rows(model: nn.Module) -> list[Param]:
    return params(model.config, type(model).head)


def _canonical_tensor(model: nn.Module, row: Param) -> torch.Tensor:
    return model.get_parameter(_path(model, row)).detach()


def to_canonical(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's parameters as a canonical numpy state dict (new, contiguous arrays).

    A tied ``lm_head.weight`` is left out, as transformers leaves it out of its checkpoints.

    Args:
        model: a gpt2_dual.pt model (any head).

    Returns:
        Canonical name -> array in transformers' layout and the parameter's dtype.

    Raises:
        TypeError: a parameter is bfloat16, which numpy cannot hold; cast the model to float32
            first, or use ``save_pretrained``, which writes bfloat16 as it is.

    Example:
        >>> state = to_canonical(model)  # doctest: +SKIP
        >>> state["h.0.attn.c_attn.weight"].shape  # (C, 3C), transformers' Conv1D layout
    """
    _refuse_quantized(model, "to_canonical", "save_pretrained writes its quantized checkpoint")
    out = {}
    for row in _rows(model):
        tensor = _canonical_tensor(model, row)
        if tensor.dtype == torch.bfloat16:
            raise TypeError(
                f"{row.canonical} is bfloat16, which numpy cannot hold; call model.float() first "
                "or use save_pretrained (it writes bfloat16 safetensors as they are)"
            )
        out[row.canonical] = tensor.cpu().numpy().copy()  # copy: never alias live parameters
    return out


# --------------------------------------------------------------------------- load
def load_canonical(model: nn.Module, state: Any, *, strict: bool = True) -> LoadReport:
    """Fill the model's parameters from a canonical state, applying the table's transposes.

    Keys may carry the ``transformer.`` prefix; old ``attn.bias``/``masked_bias`` buffers are
    ignored. Values are copied into the parameters in place (keeping their dtype and device);
    a model on the ``meta`` device is first given CPU tensors. Nothing is written unless every
    check passes.

    Args:
        model: a gpt2_dual.pt model (any head).
        state: canonical name (or checkpoint key) -> numpy array or torch tensor, or an
            ``hf.SafetensorsReader`` (read one tensor at a time).
        strict: when True, any missing or unexpected tensor is an error. When False, both are
            listed in the report; unexpected tensors are left unused, missing parameters keep
            their values (on a ``meta`` model: transformers' initialization).

    Returns:
        A ``LoadReport``.

    Raises:
        CheckpointError: shapes differ (names tensor, expected and found canonical shapes), or
            with ``strict``, tensors are missing or unexpected (all named in one message).

    Example:
        >>> report = load_canonical(model, to_canonical(other_model))  # doctest: +SKIP
    """
    _refuse_quantized(model, "load_canonical", "load it with from_pretrained")
    fresh = any(p.is_meta for p in model.parameters())
    return _load(model, _view(state), strict=strict, fresh=fresh)


def _refuse_quantized(model: nn.Module, what: str, instead: str) -> None:
    if getattr(model, "quantization_method", None) == "torchao":
        raise QuantizedModelError(
            f"{what} works on float weights, but {type(model).__name__} is quantized with "
            "torchao (int8_weight_only); use the float model"
        )
    if getattr(model, "is_quantized", False):
        raise TypeError(
            f"{what} works on float weights, but {type(model).__name__} is quantized with "
            f"bitsandbytes ({model.config.quantization_config.quantization_method()}); {instead}"
        )


def _load(model: nn.Module, view: Any, *, strict: bool, fresh: bool) -> LoadReport:
    """Check everything, then copy row by row; ``fresh``: the parameters hold no values yet
    (built on meta), so missing ones are initialized."""
    name = type(model).__name__
    plan = loading.plan_load(model.config, type(model).head, view)
    loading.check_fit(name, plan, strict=strict)
    loading.check_tied(name, view, plan.report, _equal, logger)
    if any(p.is_meta for p in model.parameters()):
        files.materialise(model, torch.device("cpu"))
    for row in plan.rows:
        _assign(model, row, _as_tensor(view[row.canonical]))
    if fresh:
        # transformers' initialization, drawn from torch's generator (torch.manual_seed holds).
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        rows = {row.canonical: row for row in _rows(model)}
        for missing in plan.report.missing:
            value = loading.initial_value(rows[missing], model.config, rng)
            _assign(model, rows[missing], torch.from_numpy(value))
    model.tie_weights()
    return plan.report


def _equal(a: Any, b: Any) -> bool:
    return torch.equal(_as_tensor(a), _as_tensor(b))


def _assign(model: nn.Module, row: Param, value: torch.Tensor) -> None:
    with torch.no_grad():
        model.get_parameter(_path(model, row)).copy_(value)


def from_pretrained(
    cls: type[nn.Module],
    path_or_repo_id: str | os.PathLike,
    *,
    config: GPT2Config | None = None,
    dtype: torch.dtype | str | None = "auto",
    device: torch.device | str | None = None,
    attn_implementation: str = "sdpa",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str = "",
    use_safetensors: bool | None = None,
    weights_only: bool = True,
    strict: bool = True,
    torch_dtype: torch.dtype | str | None = None,
    device_map: str | int | dict | None = None,
    low_cpu_mem_usage: bool | None = None,
    quantization_config: Any = None,
    **config_overrides: Any,
) -> nn.Module:
    """Load a transformers-format GPT-2 checkpoint (local folder or Hub repo) into ``cls``.

    Reads ``config.json`` and ``model.safetensors`` (or shards plus index), else
    ``pytorch_model.bin`` (or shards) through ``torch.load(weights_only=True)``, else
    transformers TF's ``tf_model.h5`` (needs h5py; ``convert.tf_h5``). A checkpoint
    of any GPT-2 head loads into any head: head weights the checkpoint lacks are newly
    initialized and logged (as transformers does), head weights of another head are logged as
    unused.

    Args:
        cls: the gpt2_dual.pt model class.
        path_or_repo_id: local folder or Hub repo id.
        config: use this config instead of the checkpoint's ``config.json``.
        dtype: parameter dtype (``torch.float16``, ``"bfloat16"``, ...). ``"auto"``, the
            default as in transformers 5 (transformers 4 defaulted to float32): the dtype
            ``config.json`` records (``dtype``, or the older ``torch_dtype``), else that of the
            checkpoint's ``wte.weight``, so a bfloat16 checkpoint loads as bfloat16. None:
            torch's default dtype (float32), transformers 4's default.
        device: where the parameters are created (default CPU).
        attn_implementation: ``"sdpa"``, ``"eager"``, ... as the model class accepts.
        revision, cache_dir, local_files_only, token, subfolder: Hub options
            (see ``gpt2_dual.hub.resolve.resolve_file``).
        use_safetensors: None: safetensors if present, else ``.bin``; True: safetensors only;
            False: ``.bin`` only.
        weights_only: must be True; gpt2_dual never unpickles arbitrary objects.
        strict: when True, backbone tensors missing or not used are an error; when False they
            are initialized or left unused, and logged.
        torch_dtype: transformers' old name of ``dtype`` (FutureWarning).
        device_map: one device for the whole model, transformers' spelling: ``"auto"``,
            ``"cpu"``, ``"cuda"``, an index or ``{"": device}`` (no accelerate needed).
        low_cpu_mem_usage: accepted for transformers' code; loading never holds a second
            copy of the weights anyway.
        quantization_config: a ``gpt2_dual.BitsAndBytesConfig`` (transformers' one or its
            dict too): the ``Conv1D``/``nn.Linear`` layers become bitsandbytes 4-bit or 8-bit
            ones, each weight quantized on ``device`` as it is read (the float model is never
            whole in memory); the head and embeddings stay in ``dtype`` as in transformers
            (``gpt2_dual.quantization``). A checkpoint saved quantized (its ``config.json``
            has a bitsandbytes ``quantization_config``) loads quantized without it.
            ``dtype=None`` then means float16, transformers 4's rule. Needs the ``bnb`` extra.
            A ``gpt2_dual.quantization.TorchAoConfig`` (or transformers' ``TorchAoConfig`` with
            ``Int8WeightOnlyConfig()``): the float model is loaded, then every product made
            int8 weight-only (``gpt2_dual.pt.torchao_int8``; the ``torchao`` extra).
        **config_overrides: GPT2Config fields to override (e.g. ``num_labels=3``).

    Returns:
        The model in ``eval()`` mode.

    Raises:
        CheckpointError: tensors missing, unexpected or misshapen (all named).
        FileNotFoundError: no weight file; the message lists the files looked for.
        InvalidInputError: ``device`` is not a device of this machine (``"banana"``,
            ``"cuda:7"`` without it).
        MalformedFileError: a file is not what its name says (named).
        pickle.UnpicklingError: a ``.bin`` holds objects other than tensors.
        TypeError: an override is not a GPT2Config field.

    Example:
        >>> from gpt2_dual.pt import GPT2ForSequenceClassification
        >>> model = GPT2ForSequenceClassification.from_pretrained(
        ...     "gpt2", num_labels=3
        ... )  # doctest: +SKIP
    """
    if not weights_only:
        raise ValueError(
            "weights_only=False is not supported: gpt2_dual never unpickles arbitrary objects; "
            "convert the checkpoint to safetensors in a trusted environment"
        )
    del low_cpu_mem_usage  # always low: the model is built on meta and given the tensors
    dtype, device = files.transformers_aliases(
        dtype, device, torch_dtype=torch_dtype, device_map=device_map
    )
    device = files.check_device(device)
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    hub.update(token=token, subfolder=subfolder)
    config = loading.build_config(path_or_repo_id, config, hub, config_overrides)
    found = files.find_weights(path_or_repo_id, use_safetensors, hub)
    if found.format == "safetensors":  # memory-mapped; a tensor is read on first use
        view = hf.SafetensorsReader(found.files, framework="pt")
    elif found.format == "tf-h5":  # transformers TF's tf_model.h5, one tensor at a time
        view = H5Reader(found.files)
    else:
        view = loading.CanonicalView(read_bin(found.files))
    where = str(path_or_repo_id)
    torchao = as_torchao(quantization_config)  # quantized once the float weights are in
    if torchao is not None:
        quantization_config = None
    quant = bnb_load.plan(config, view, quantization_config, where=where)
    dtype = files.resolve_dtype(quant.dtype(dtype) if quant else dtype, config, view)
    model = None
    if quant is not None:  # its layers decide how a quantized checkpoint's tensors read
        model = _build(cls, config, attn_implementation, dtype)
        paths = {row.canonical: _path(model, row) for row in _rows(model)}
        from gpt2_dual.pt.bnb import attach

        view = attach(quant, model, view, paths)
    # Config against checkpoint, shapes and dtypes only, before anything is filled.
    plan = loading.plan_load(config, cls.head, view)
    loading.check_policy(cls.__name__, plan.report, strict=strict, where=where, logger=logger)
    loading.check_fit(cls.__name__, plan, strict=False)  # shapes and dtypes
    if model is None:
        model = _build(cls, config, attn_implementation, dtype)
    loading.check_tied(cls.__name__, view, plan.report, _equal, logger)
    _adopt(model, view, plan, torch.device(device or "cpu"), dtype)
    if hasattr(model, "generate"):
        model.generation_config = load_for_model(path_or_repo_id, config, hub)
    if quant is not None:
        quant.finish(model)
    if torchao is not None:
        from gpt2_dual.pt.torchao_int8 import quantize

        quantize(model, torchao)
    return model.eval()


def _build(cls: type[nn.Module], config: GPT2Config, attn: str, dtype: torch.dtype) -> nn.Module:
    """The model on ``meta`` (no memory, no initialization)."""
    with torch.device("meta"), files.NoInitOnMeta():
        return cls(config, attn_implementation=attn).to(dtype)


def _adopt(
    model: nn.Module, view: Any, plan: loading.LoadPlan, device: torch.device, dtype: torch.dtype
) -> None:
    """Make the parameters of a model built on ``meta`` the checkpoint's tensors (views of the
    memory-mapped file where device and dtype allow), initialize the missing ones, tie."""
    files.check_no_buffers(model)
    for row in plan.rows:
        _set(model, row, _as_tensor(view[row.canonical]), device, dtype)
    # transformers' initialization, drawn from torch's generator (torch.manual_seed holds).
    rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
    rows = {row.canonical: row for row in _rows(model)}
    for missing in plan.report.missing:
        value = loading.initial_value(rows[missing], model.config, rng)
        _set(model, rows[missing], torch.from_numpy(value), device, dtype)
    model.tie_weights()
    left = [name for name, p in model.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"{type(model).__name__}: no value for {left}; gpt2_dual bug")


def _set(
    model: nn.Module, row: Param, value: Any, device: torch.device, dtype: torch.dtype
) -> None:
    """Replace the row's parameter by ``value`` (itself when the device and dtype already
    match); a bitsandbytes layer's weight is quantized (or taken as quantized) instead."""
    owner, _, name = _path(model, row).rpartition(".")
    module = model.get_submodule(owner)
    if name == "weight" and getattr(module, "bnb_bits", None):
        from gpt2_dual.pt.bnb import set_weight

        set_weight(module, value, device, dtype)
        return
    value = value.to(device=device, dtype=dtype)
    module._parameters[name] = nn.Parameter(value, module._parameters[name].requires_grad)


# --------------------------------------------------------------------------- save
def _disk_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keys as transformers' same class saves them, canonical layouts, the model's dtypes."""
    prefix = HF_PREFIX if type(model).head != "base" else ""
    out = {}
    for row in _rows(model):
        key = prefix + row.canonical if is_backbone(row.canonical) else row.canonical
        owner, _, name = _path(model, row).rpartition(".")
        module = model.get_submodule(owner)
        if name == "weight" and getattr(module, "bnb_bits", None):
            from gpt2_dual.pt.bnb import saved_weight

            out.update(saved_weight(module, key))  # packed, with its statistics
            continue
        out[key] = _canonical_tensor(model, row)  # a view; made contiguous per shard
    return out


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    max_shard_size: int | str = "5GB",
    safe_serialization: bool = True,
) -> list[Path]:
    """Write ``config.json`` and the weights as transformers' same class would.

    Backbone keys carry ``transformer.`` in head models (not in ``GPT2Model``); a tied
    ``lm_head.weight`` is left out; dtypes are kept (bfloat16 included). Past
    ``max_shard_size`` the weights are sharded with an index. Every file is written to a
    temporary name and renamed; weight files of another layout left in the folder are removed.

    Args:
        model: a gpt2_dual.pt model (any head).
        save_directory: folder to write into (created if needed).
        max_shard_size: largest shard, in bytes or as ``"5GB"``/``"500MB"``.
        safe_serialization: True: ``model.safetensors``; False: ``pytorch_model.bin``.

    Returns:
        The written files (``generation_config.json`` too for the LM heads), ``config.json``
        last.

    Raises:
        QuantizedModelError: a torchao int8 model (save the float one, quantize at load).

    Example:
        >>> model.save_pretrained("out/")  # then transformers' from_pretrained("out/") works
    """
    if getattr(model, "quantization_method", None) == "torchao":
        raise QuantizedModelError(
            f"save_pretrained of a torchao int8 {type(model).__name__} is not supported: "
            "transformers has no torchao layout for GPT-2's Conv1D; save the float model and "
            "quantize at load (from_pretrained(..., quantization_config=TorchAoConfig()))"
        )
    folder = Path(save_directory)
    state = _disk_state(model)
    written = files.write_weights(state, folder, max_shard_size, safe_serialization)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if hasattr(model, "generate"):
        written.append(model.generation_config.save_pretrained(folder))
    written.append(loading.save_config(model.config, type(model).__name__, dtype, folder))
    return written
