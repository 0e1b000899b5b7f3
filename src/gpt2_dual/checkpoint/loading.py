"""Framework-neutral rules of loading and saving checkpoints, shared by ``pt`` and ``tf``.

Both frameworks' ``weights.py`` walk the same name table (``convert/names/``) and must agree
on what a state dict that "does not fit" means, how it is reported, which ``from_pretrained``
options exist and what ``config.json`` they write. That agreement lives here, once:

- ``CanonicalView``: any mapping (numpy arrays, framework tensors) seen through canonical
  names, like ``hf.SafetensorsReader`` (``transformer.`` stripped, old mask buffers set aside).
- ``plan_load`` -> ``LoadPlan``: the bijection between a model's table rows and a state, with
  missing, unexpected, tied and misshapen tensors by name (shapes in the canonical layout).
- ``check_fit`` (``load_canonical``'s rule) and ``check_policy`` (``from_pretrained``'s rule,
  as transformers does it: head weights initialized or skipped and logged; ``strict`` for the
  backbone).
- ``initial_value``: transformers' initialization of one parameter, as numpy.
- ``build_config`` / ``save_config``: ``from_pretrained`` overrides and ``config.json``.

Nothing here imports a framework.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpt2_dual.checkpoint import hf
from gpt2_dual.checkpoint.names import Param, is_backbone, params, to_canonical_key
from gpt2_dual.config import ALIASES, GPT2_DEFAULTS, INHERITED_DEFAULTS, GPT2Config
from gpt2_dual.errors import CheckpointError
from gpt2_dual.heads import HEAD_SPECS

#: Config keys accepted as ``from_pretrained`` overrides besides GPT-2's own fields.
EXTRA_OVERRIDES = frozenset(
    {"num_labels", "id2label", "label2id", "classifier_dropout", "hidden_dropout"}
)

#: safetensors dtype strings -> dtype names.
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass(frozen=True)
class LoadReport:
    """What a load did, by canonical name.

    Attributes:
        missing: parameters the state lacked; newly initialized (only with ``strict=False``).
        unexpected: tensors in the state that the model has no parameter for (left unused).
        ignored: old causal-mask buffers (``attn.bias``/``masked_bias``) dropped on purpose.
        tied: ``lm_head.weight`` found in the state but tied to ``wte.weight`` (equal, unused).
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    tied: tuple[str, ...] = ()


# --------------------------------------------------------------------------- canonical views
class CanonicalView:
    """A mapping (numpy arrays or framework tensors) seen through canonical names.

    Same interface as ``hf.SafetensorsReader``: ``keys()``, ``shape(name)``, ``[name]``,
    ``ignored``. The mapping is read, never changed.

    Raises:
        CheckpointError: two keys map to one canonical name (with and without
            ``transformer.``).
    """

    def __init__(self, state: Mapping[str, Any]) -> None:
        self._state = state
        self._where: dict[str, str] = {}
        self.ignored: list[str] = []
        for key in state:
            name = to_canonical_key(key)
            if name is None:
                self.ignored.append(key)
            elif name in self._where:
                raise CheckpointError(
                    f"state holds {name!r} twice: as {self._where[name]!r} and {key!r}"
                )
            else:
                self._where[name] = key

    def keys(self) -> list[str]:
        """Canonical names present, in the mapping's order."""
        return list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor, canonical layout."""
        return tuple(self._state[self._where[name]].shape)

    def __getitem__(self, name: str) -> Any:
        return self._state[self._where[name]]


def canonical_view(state: Any) -> Any:
    """``state`` as a view with canonical names: readers and views (anything with ``shape``
    and ``ignored``, like the format readers of ``gpt2_dual.convert``) pass through, mappings
    are wrapped."""
    if isinstance(state, hf.SafetensorsReader | CanonicalView):
        return state
    if hasattr(state, "shape") and hasattr(state, "ignored") and hasattr(state, "keys"):
        return state
    return CanonicalView(state)


# --------------------------------------------------------------------------- the bijection
@dataclass(frozen=True)
class LoadPlan:
    """Rows to load, the report, and shape mismatches (one message per tensor).

    Attributes:
        rows: the model's table rows present in the state, in table order.
        report: missing, unexpected, ignored and tied names.
        mismatched: ``"name: expected (..), found (..)"`` per misshapen tensor.
        wrong_dtype: ``"name is int64"`` per tensor of a dtype that cannot be a weight
            (integers, bool, complex); another floating dtype is a legitimate cast.
    """

    rows: tuple[Param, ...]
    report: LoadReport
    mismatched: tuple[str, ...]
    wrong_dtype: tuple[str, ...] = ()


def plan_load(config: GPT2Config, head: str, view: Any) -> LoadPlan:
    """Match a view against the rows of a ``head`` model built from ``config``.

    Args:
        config: the model's config (sizes decide the expected shapes).
        head: key of ``HEAD_SPECS``.
        view: ``CanonicalView`` or ``hf.SafetensorsReader``.

    Returns:
        A ``LoadPlan``; nothing is read but shapes and dtypes.
    """
    rows = params(config, head)
    expected = {row.canonical for row in rows}
    present = view.keys()
    tied = []
    tie = config.tie_word_embeddings and "lm_head" in HEAD_SPECS[head].attrs
    if tie and "lm_head.weight" in present:
        tied = ["lm_head.weight"]
    unexpected = [k for k in present if k not in expected and k not in tied]
    missing = [row.canonical for row in rows if row.canonical not in present]
    mismatched = []
    for row in rows:
        if row.canonical in present:
            want, found = tuple(row.shape(config)), tuple(view.shape(row.canonical))
            if want != found:
                mismatched.append(f"{row.canonical}: expected {want}, found {found}")
    report = LoadReport(tuple(missing), tuple(unexpected), tuple(view.ignored), tuple(tied))
    loaded = tuple(r for r in rows if r.canonical in present)
    wrong = [
        f"{r.canonical} is {dtype}"
        for r in loaded
        if (dtype := _dtype_of(view, r.canonical)) is not None and not _is_floating(dtype)
    ]
    return LoadPlan(loaded, report, tuple(mismatched), tuple(wrong))


#: safetensors codes of floating dtypes (``F8_E4M3``... start with ``F8``).
_FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16"})


def _dtype_of(view: Any, name: str) -> str | None:
    """A tensor's dtype as text, from the header where the view can (None: unknown)."""
    if hasattr(view, "dtype") and callable(view.dtype):
        return str(view.dtype(name))
    if isinstance(view, CanonicalView):
        dtype = getattr(view[name], "dtype", None)
        return None if dtype is None else str(dtype)
    return None


def _is_floating(dtype: str) -> bool:
    """``float32``, ``torch.bfloat16``, ``<dtype: 'float16'>``, ``F32``, ``F8_E4M3`` ..."""
    return "float" in dtype.lower() or dtype in _FLOAT_CODES or dtype.startswith("F8")


def describe(report: LoadReport) -> str:
    """``"missing 2: a, b; unexpected 1: c"`` (empty parts left out)."""
    parts = []
    if report.missing:
        parts.append(f"missing {len(report.missing)}: {', '.join(report.missing)}")
    if report.unexpected:
        parts.append(f"unexpected {len(report.unexpected)}: {', '.join(report.unexpected)}")
    return "; ".join(parts)


def check_fit(class_name: str, plan: LoadPlan, *, strict: bool) -> None:
    """``load_canonical``'s rule: shapes must match; with ``strict``, nothing missing or extra.

    Raises:
        CheckpointError: names every tensor of an integer, bool or complex dtype, or every
            misshapen tensor with expected and found canonical shapes, or (``strict``) every
            missing and unexpected tensor, in one message.
    """
    if plan.wrong_dtype:
        raise CheckpointError(
            f"{class_name}: weights must be floating-point tensors (float16/bfloat16/float32/"
            f"float64 are cast to the model's dtype), but {'; '.join(plan.wrong_dtype)}"
        )
    if plan.mismatched:
        raise CheckpointError(
            f"{class_name}: tensor shapes (canonical layout) do not match the config: "
            + "; ".join(plan.mismatched)
        )
    if strict and (plan.report.missing or plan.report.unexpected):
        raise CheckpointError(f"{class_name} does not fit the state: {describe(plan.report)}")


def check_complete(class_name: str, plan: LoadPlan) -> None:
    """A conversion's rule: shapes must match and nothing of the model may be missing;
    tensors of other heads are left out.

    Raises:
        CheckpointError: names every misshapen or missing tensor.
    """
    check_fit(class_name, plan, strict=False)
    if plan.report.missing:
        raise CheckpointError(
            f"{class_name}: the checkpoint lacks {len(plan.report.missing)} of its tensors: "
            + ", ".join(plan.report.missing)
        )


def check_policy(
    class_name: str, report: LoadReport, *, strict: bool, where: str, logger: Any
) -> None:
    """``from_pretrained``'s rule, transformers': head weights are initialized or skipped and
    logged; ``strict`` makes backbone tensors missing or unused an error.

    Raises:
        CheckpointError: (``strict``) backbone tensors missing or unexpected, all named.
    """
    backbone_missing = [k for k in report.missing if is_backbone(k)]
    backbone_unexpected = [k for k in report.unexpected if is_backbone(k)]
    if strict and (backbone_missing or backbone_unexpected):
        bad = LoadReport(tuple(backbone_missing), tuple(backbone_unexpected))
        raise CheckpointError(
            f"{class_name} does not fit the checkpoint at {where!r}: {describe(bad)} (check the "
            "config; strict=False initializes missing and skips unexpected tensors)"
        )
    if report.missing:
        logger.warning(
            "Some weights of %s were not in the checkpoint at %r and are newly initialized: %s. "
            "Train the model before using it for predictions.",
            class_name, where, ", ".join(report.missing),
        )  # fmt: skip
    if report.unexpected:
        logger.warning(
            "Some weights of the checkpoint at %r were not used when initializing %s: %s",
            where, class_name, ", ".join(report.unexpected),
        )  # fmt: skip
    if report.ignored:
        logger.info("ignored old attention-mask buffers: %s", ", ".join(report.ignored))


def check_tied(
    class_name: str, view: Any, report: LoadReport, equal: Callable[[Any, Any], bool], logger: Any
) -> None:
    """Warn when a tied ``lm_head.weight`` in the state differs from its ``wte.weight``."""
    if not report.tied or "wte.weight" not in view.keys():
        return
    if not equal(view["lm_head.weight"], view["wte.weight"]):
        logger.warning(
            "%s: the checkpoint's lm_head.weight differs from wte.weight, but "
            "config.tie_word_embeddings=True ties them: using wte.weight. Load with "
            "tie_word_embeddings=False to keep a separate lm_head.",
            class_name,
        )


def initial_value(row: Param, config: GPT2Config, rng: np.random.Generator) -> np.ndarray:
    """transformers' initialization of one parameter, canonical layout, float32.

    Biases 0, LayerNorm weights 1, other weights ~ N(0, initializer_range), ``c_proj`` weights
    ~ N(0, initializer_range / sqrt(2 * n_layer)) (GPT-2's residual scaling).
    """
    shape = tuple(row.shape(config))
    parts = row.canonical.rsplit(".", 2)
    if parts[-1] == "bias":
        return np.zeros(shape, np.float32)
    if parts[-2].startswith("ln_"):
        return np.ones(shape, np.float32)
    std = config.initializer_range
    if parts[-2] == "c_proj":  # two residual additions per block
        std /= math.sqrt(2 * config.n_layer)
    return rng.normal(0.0, std, shape).astype(np.float32)


# --------------------------------------------------------------------------- configs and files
def build_config(
    path_or_repo_id: str | os.PathLike,
    config: GPT2Config | None,
    hub: Mapping[str, Any],
    overrides: Mapping[str, Any],
) -> GPT2Config:
    """The checkpoint's config (or a copy of ``config``) with ``overrides`` set and validated.

    Raises:
        TypeError: ``config`` is not a gpt2_dual ``GPT2Config``, or an override is neither a
            GPT2Config field nor a key of the config file.
    """
    if config is not None and not isinstance(config, GPT2Config):
        raise TypeError(
            f"config must be a gpt2_dual GPT2Config, got {type(config).__module__}."
            f"{type(config).__name__}; convert it with GPT2Config.from_dict(config.to_dict())"
        )
    config = GPT2Config.from_pretrained(path_or_repo_id, **hub) if config is None else config.copy()
    known = {*GPT2_DEFAULTS, *INHERITED_DEFAULTS, *ALIASES, *EXTRA_OVERRIDES, *config.extra}
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        hint = " (use dtype=)" if "torch_dtype" in unknown else ""
        raise TypeError(
            f"from_pretrained() got unexpected keyword arguments {unknown}{hint}: they are "
            "neither loading options nor GPT2Config fields"
        )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def config_dtype(config: GPT2Config) -> str | None:
    """The ``dtype`` (or older ``torch_dtype``) a ``config.json`` records, as a plain name."""
    dtype = config.extra.get("dtype") or config.extra.get("torch_dtype")
    return None if dtype is None else str(dtype).removeprefix("torch.")


def safetensors_dtype(view: Any) -> str | None:
    """Dtype name of the checkpoint's ``wte.weight`` (None when absent or not a reader)."""
    if isinstance(view, hf.SafetensorsReader) and "wte.weight" in view:
        return SAFETENSORS_DTYPES.get(view.dtype("wte.weight"))
    return None


def save_config(config: GPT2Config, class_name: str, dtype: str, folder: Path) -> Path:
    """Write ``config.json`` with ``architectures`` and ``dtype`` as transformers writes them.

    Args:
        config: the model's config (not changed).
        class_name: the model class, e.g. ``"GPT2LMHeadModel"``.
        dtype: the weights' dtype name (``"float32"``, ``"bfloat16"``, ...).
        folder: where to write.
    """
    data = config.to_dict()
    data.pop("torch_dtype", None)
    data.update(architectures=[class_name], dtype=dtype)
    return GPT2Config.from_dict(data).save_pretrained(folder)
