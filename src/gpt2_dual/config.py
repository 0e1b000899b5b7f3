"""GPT-2 configuration with Hugging Face ``config.json`` field names, shared by both frameworks.

``GPT2Config`` reads and writes the same ``config.json`` as transformers' ``GPT2Config``: a file
written by transformers loads here with the same values, and one written here loads there. Keys
this class does not know (``n_ctx``, ``architectures``, ``task_specific_params``, ...) are kept
and written back unchanged.

Fields are validated when set, so ``config.pad_token_id = tokenizer.eos_token_id`` is checked
on the spot. Sizes that define weight shapes can be locked by a model built from the config;
assigning them afterwards raises instead of silently desynchronising config and weights. A key
one typo away from a field (``n_layers``, ``n_heads``, ``vocab_sise``) is still kept, as
transformers keeps it, but logs a warning naming the field it resembles.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpt2_dual._config_checks import (
    _VALIDATORS,
    _check_id2label,
    _positive_int,
    check_sizes,
    near_miss,
)
from gpt2_dual._io import atomic_write_text, build_from_file
from gpt2_dual.hub.push import PushToHubMixin
from gpt2_dual.quantization import as_quantization_config

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

#: GPT-2's own fields, with transformers' defaults. Always written to ``config.json``.
GPT2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "activation_function": "gelu_new",
    "resid_pdrop": 0.1,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5,
    "initializer_range": 0.02,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "summary_activation": None,
    "summary_proj_to_labels": True,
    "summary_first_dropout": 0.1,
    "scale_attn_weights": True,
    "use_cache": True,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
}

#: Fields GPT-2 inherits from transformers' ``PretrainedConfig``, with its defaults. Written to
#: ``config.json`` only when they differ from these, as transformers does.
INHERITED_DEFAULTS: dict[str, Any] = {
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "pad_token_id": None,
    "problem_type": None,
}

#: transformers' ``attribute_map`` for GPT-2: common names that alias GPT-2's own.
ALIASES = {
    "hidden_size": "n_embd",
    "max_position_embeddings": "n_positions",
    "num_attention_heads": "n_head",
    "num_hidden_layers": "n_layer",
}

#: Fields that fix weight shapes; a model built from the config locks them.
SHAPE_FIELDS = frozenset({
    "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "num_labels",
    "add_cross_attention", "summary_use_proj", "summary_proj_to_labels",
})  # fmt: skip

#: Every name ``GPT2Config`` reads: unknown keys within one edit of these are warned about.
KNOWN_NAMES = frozenset(
    {*GPT2_DEFAULTS, *INHERITED_DEFAULTS, *ALIASES, "num_labels", "id2label", "label2id"}
)

#: Architecture shapes of the released checkpoints (exact names only).
PRESETS: dict[str, dict[str, int]] = {
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768},  # 124M
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024},  # 355M
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280},  # 774M
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600},  # 1558M
    "distilgpt2": {"n_layer": 6, "n_head": 12, "n_embd": 768},  # 82M
}


def _warn_if_near_miss(name: str) -> None:
    field = near_miss(name, KNOWN_NAMES)
    if field is not None:
        _warn_near_miss(name, field)


@functools.cache  # once per process and key: config.copy() re-reads the kept keys
def _warn_near_miss(name: str, field: str) -> None:
    logger.warning(
        "GPT2Config: %r is not a GPT-2 config field; did you mean %r? It is kept as an extra "
        "attribute (as transformers does) and the model does not read it",
        name,
        field,
    )


class GPT2Config(PushToHubMixin):
    """Configuration of a GPT-2 model, field for field transformers' ``GPT2Config``.

    Every field of transformers' GPT-2 config is accepted with the same name and default
    (see ``GPT2_DEFAULTS`` and ``INHERITED_DEFAULTS``), plus ``num_labels``, ``id2label`` and
    ``label2id``, and the aliases ``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads`` and ``max_position_embeddings``. Unknown keys are kept as
    attributes and written back by ``to_dict``; one that is a single typo away from a field
    (``n_layers``, ``n_heads``, ``vocab_sise``, ``n_embed``) logs a warning naming the field.

    Args:
        **kwargs: field values; anything not given takes transformers' default.

    Raises:
        ValueError: a value breaks its rule; the message names the field, value and rule.

    Example:
        >>> config = GPT2Config(n_layer=2, n_embd=64, n_head=4, num_labels=3)
        >>> config.head_dim, config.num_labels, config.hidden_size
        (16, 3, 64)
    """

    model_type = "gpt2"

    def __init__(self, **kwargs: Any) -> None:
        """Build a config from field values; see the class docstring (``help(GPT2Config)``).

        Args:
            **kwargs: any field of transformers' ``GPT2Config`` (others are kept in ``extra``).

        Raises:
            ValueError: a value breaks its rule.
        """
        object.__setattr__(self, "_ready", False)
        object.__setattr__(self, "_locked_by", None)
        object.__setattr__(self, "extra", {})
        for alias, name in ALIASES.items():
            if alias in kwargs:
                kwargs[name] = kwargs.pop(alias)
        for name, default in {**GPT2_DEFAULTS, **INHERITED_DEFAULTS}.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        self._set_labels(kwargs.pop("num_labels", None), kwargs.pop("id2label", None))
        label2id = kwargs.pop("label2id", None)
        if label2id is not None:
            self.label2id = label2id
        kwargs.pop("model_type", None)
        for name in kwargs:
            _warn_if_near_miss(name)
        if "quantization_config" in kwargs:  # a BitsAndBytesConfig (or another method's dict)
            kwargs["quantization_config"] = as_quantization_config(kwargs["quantization_config"])
        self.extra.update(kwargs)
        object.__setattr__(self, "_ready", True)
        self._check_consistency()

    # ----------------------------------------------------------------- attributes
    def __setattr__(self, name: str, value: Any) -> None:
        name = ALIASES.get(name, name)
        if name in SHAPE_FIELDS and self._locked_by is not None:
            raise AttributeError(
                f"GPT2Config.{name} cannot change after a model was built from this config "
                f"({self._locked_by}); make a new config with config.copy({name}=...) and a "
                "new model from it"
            )
        if name in _VALIDATORS:
            value = _VALIDATORS[name](name, value)
        elif name == "num_labels":
            self._set_labels(_positive_int(name, value), None)
            return
        elif name == "id2label":
            if self._locked_by is not None and len(value) != self.num_labels:
                raise AttributeError(
                    f"GPT2Config.id2label cannot change the number of labels after a model was "
                    f"built from this config ({self._locked_by}); use config.copy(id2label=...)"
                )
            self._set_labels(None, value)
            return
        elif name == "label2id":
            value = {str(k): int(v) for k, v in dict(value).items()}
        elif not name.startswith("_") and name not in ("extra",):
            _warn_if_near_miss(name)
            quantization = name == "quantization_config"
            self.extra[name] = as_quantization_config(value) if quantization else value
            return
        previous = self.__dict__.get(name)
        object.__setattr__(self, name, value)
        if self._ready:
            try:
                self._check_consistency()
            except ValueError:
                object.__setattr__(self, name, previous)  # leave the config as it was
                raise

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: aliases and kept unknown keys.
        if name in ALIASES:
            return getattr(self, ALIASES[name])
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"'GPT2Config' has no attribute {name!r}")

    def _set_labels(self, num_labels: int | None, id2label: Any) -> None:
        if id2label is not None:
            labels = _check_id2label(id2label)
            if num_labels is not None and num_labels != len(labels):
                logger.warning(
                    "num_labels=%d disagrees with id2label of length %d; using id2label",
                    num_labels,
                    len(labels),
                )
        else:
            count = 2 if num_labels is None else _positive_int("num_labels", num_labels)
            labels = {i: f"LABEL_{i}" for i in range(count)}
        object.__setattr__(self, "id2label", labels)
        object.__setattr__(self, "label2id", {v: k for k, v in labels.items()})

    def _check_consistency(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPT2Config.n_embd={self.n_embd} is invalid: must be divisible by "
                f"n_head={self.n_head}"
            )
        check_sizes(self)

    # ----------------------------------------------------------------- derived
    @property
    def num_labels(self) -> int:
        """Number of classification labels, ``len(id2label)``."""
        return len(self.id2label)

    @property
    def head_dim(self) -> int:
        """Size of one attention head, ``n_embd // n_head``."""
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        """MLP hidden size: ``n_inner``, or ``4 * n_embd`` when ``n_inner`` is None."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def lock_shapes(self, owner: str) -> None:
        """Refuse later assignment of the fields that fix weight shapes (``SHAPE_FIELDS``).

        Args:
            owner: name reported in the error, e.g. the model class that built on this config.
        """
        object.__setattr__(self, "_locked_by", owner)

    @contextmanager
    def shapes_unlocked(self) -> Iterator[None]:
        """Inside, locked shape fields may be assigned (validated as always): for a model that
        has just reshaped its own weights to match (``resize_token_embeddings``)."""
        owner = self._locked_by
        object.__setattr__(self, "_locked_by", None)
        try:
            yield
        finally:
            object.__setattr__(self, "_locked_by", owner)

    def copy(self, **changes: Any) -> GPT2Config:
        """Return an unlocked deep copy with ``changes`` applied (and validated)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    # ----------------------------------------------------------------- dicts and JSON
    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any], **overrides: Any) -> GPT2Config:
        """Build a config from a ``config.json``-style dict; ``overrides`` win over its values."""
        return cls(**{**copy.deepcopy(dict(config_dict)), **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPT2Config:
        """Config with the shape of a released checkpoint (a key of ``PRESETS``).

        Raises:
            KeyError: ``name`` is not exactly one of ``PRESETS``; the message lists them.
        """
        if name not in PRESETS:
            raise KeyError(f"unknown GPT-2 preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Every field, the label maps, the kept unknown keys and ``model_type``."""
        out: dict[str, Any] = copy.deepcopy(self.extra)
        if hasattr(out.get("quantization_config"), "to_dict"):  # transformers' JSON form
            out["quantization_config"] = out["quantization_config"].to_dict()
        for name in (*GPT2_DEFAULTS, *INHERITED_DEFAULTS):
            out[name] = copy.deepcopy(getattr(self, name))
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = dict(self.label2id)
        out["model_type"] = self.model_type
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """``to_dict`` without inherited fields at their default, as transformers writes."""
        out = self.to_dict()
        for name, default in INHERITED_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        if self.id2label == {0: "LABEL_0", 1: "LABEL_1"}:
            del out["id2label"], out["label2id"]
        return out

    def to_json_string(self, use_diff: bool = True) -> str:
        """JSON as transformers writes it: sorted keys, two-space indent, trailing newline."""
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GPT2Config) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"GPT2Config {self.to_json_string(use_diff=False)}"

    # ----------------------------------------------------------------- files
    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> GPT2Config:
        """Read a ``config.json``; a malformed file (or value) raises MalformedFileError
        (a ValueError) naming it."""

        def build(data: dict[str, Any]) -> GPT2Config:
            model_type = data.get("model_type", cls.model_type)
            if model_type != cls.model_type:
                logger.warning("%s has model_type=%r; loading it as GPT-2", path, model_type)
            return cls.from_dict(data)

        return build_from_file(path, build)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        subfolder: str = "",
        **overrides: Any,
    ) -> GPT2Config:
        """Load ``config.json`` from a local folder or a Hugging Face Hub repo.

        Args:
            path_or_repo_id: a folder holding ``config.json``, or a Hub repo id (``"gpt2"``).
            revision: Hub branch, tag or commit.
            cache_dir: Hub cache folder (default: huggingface_hub's).
            local_files_only: never touch the network (also set by ``HF_HUB_OFFLINE=1``).
            token: Hub token for private repos.
            subfolder: folder inside the repo or local folder.
            **overrides: field values that replace the file's.

        For the GPT-2 family (``gpt2`` ... ``gpt2-xl``, ``distilgpt2`` and their
        ``openai-community/`` / ``distilbert/`` names) a bundled copy of ``config.json`` is used
        when the Hub cannot be reached or offline mode is on and the file is not cached.

        Example:
            >>> config = GPT2Config.from_pretrained("gpt2", n_layer=2)  # doctest: +SKIP
        """
        from gpt2_dual.hub.resolve import resolve_file

        path = resolve_file(
            path_or_repo_id,
            CONFIG_NAME,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            subfolder=subfolder,
        )
        config = cls.from_json_file(path)
        for name, value in overrides.items():
            setattr(config, name, value)
        return config

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``config.json`` into ``save_directory`` (created if needed), atomically.

        Returns:
            The path of the written file.
        """
        path = Path(save_directory) / CONFIG_NAME
        atomic_write_text(path, self.to_json_string())
        return path
