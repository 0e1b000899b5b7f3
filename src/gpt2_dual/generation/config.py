"""``GenerationConfig``: the decoding options of ``generate``, with transformers' field names.

One config drives ``model.generate`` in both frameworks. It reads and writes the same
``generation_config.json`` as transformers: fields this class implements are attributes; keys
it does not know are kept in ``extra`` and written back unchanged, except that a transformers
decoding option we do not implement (``num_beam_groups``, ``penalty_alpha``, ``min_p``, ...)
set to a non-default value is refused by ``validate`` instead of being silently ignored.

``validate()`` checks each field and the contradictions between them; ``resolve(prompt_length,
n_positions, vocab_size)`` also fixes the number of new tokens for a prompt. Both raise
``ValueError`` naming the field, the value and the rule, before any model work.

Example:
    >>> from gpt2_dual import GenerationConfig
    >>> config = GenerationConfig(max_new_tokens=8, do_sample=True, top_p=0.9)
    >>> config.resolve(prompt_length=4, n_positions=1024, vocab_size=50257).max_new_tokens
    8
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpt2_dual._io import atomic_write_text, build_from_file
from gpt2_dual.generation.checks import check_config, resolve
from gpt2_dual.generation.fields import DEFAULTS, Resolved
from gpt2_dual.hub.push import PushToHubMixin

logger = logging.getLogger(__name__)

GENERATION_CONFIG_NAME = "generation_config.json"

class GenerationConfig(PushToHubMixin):
    """Decoding options (transformers' ``GenerationConfig`` names and defaults).

    Args:
        **kwargs: any field of ``DEFAULTS``; other keys are kept in ``extra``.

    Attributes:
        extra: keys this class does not implement, written back to JSON unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        """Build decoding options from field values; see ``help(GenerationConfig)``.

        Args:
            **kwargs: any field of ``DEFAULTS``; other keys are kept in ``extra``.
        """
        for name, value in DEFAULTS.items():
            setattr(self, name, copy.deepcopy(value))
        self.extra: dict[str, Any] = {}
        self.update(**kwargs)

    # ----------------------------------------------------------------- building
    def update(self, **kwargs: Any) -> GenerationConfig:
        """Set fields in place (unknown keys go to ``extra``); returns ``self``."""
        for name, value in kwargs.items():
            if name in DEFAULTS:
                setattr(self, name, value)
            elif name != "transformers_version":
                self.extra[name] = value
        return self

    def copy(self, **changes: Any) -> GenerationConfig:
        """A deep copy with ``changes`` applied."""
        new = copy.deepcopy(self)
        return new.update(**changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> GenerationConfig:
        """From a ``generation_config.json`` dict (transformers' keys)."""
        return cls(**{**data, **overrides})

    @classmethod
    def from_model_config(cls, config: Any) -> GenerationConfig:
        """Defaults taken from a ``GPT2Config``: its bos, eos and pad token ids."""
        return cls(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, then the extra keys."""
        return {**{k: copy.deepcopy(getattr(self, k)) for k in DEFAULTS}, **self.extra}

    def to_diff_dict(self) -> dict[str, Any]:
        """Fields that differ from transformers' defaults, then the extra keys (as transformers
        writes ``generation_config.json``)."""
        diff = {k: getattr(self, k) for k, v in DEFAULTS.items() if getattr(self, k) != v}
        return {**copy.deepcopy(diff), **self.extra}

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"GenerationConfig({self.to_diff_dict()})"

    # ----------------------------------------------------------------- files
    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> GenerationConfig:
        """Read a ``generation_config.json``; a malformed file raises ValueError naming it."""
        return build_from_file(path, cls.from_dict)

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
    ) -> GenerationConfig:
        """Load ``generation_config.json`` from a folder or a Hub repo.

        For the GPT-2 family (``gpt2`` ... ``gpt2-xl``, ``distilgpt2`` and their
        ``openai-community/`` / ``distilbert/`` names) a bundled copy is used when the Hub cannot
        be reached or offline mode is on and the file is not cached.

        Args:
            path_or_repo_id: a local folder or a Hub repo id.
            revision: Hub branch, tag or commit.
            cache_dir: Hub cache folder (default: huggingface_hub's).
            local_files_only: never touch the network (also set by ``HF_HUB_OFFLINE=1``).
            token: Hub token for private repos.
            subfolder: folder inside the repo or local folder.
            **overrides: field values that replace the file's.

        Example:
            >>> GenerationConfig.from_pretrained("gpt2").eos_token_id  # doctest: +SKIP
            50256
        """
        from gpt2_dual.hub.resolve import resolve_file

        path = resolve_file(
            path_or_repo_id,
            GENERATION_CONFIG_NAME,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            subfolder=subfolder,
        )
        return cls.from_json_file(path).update(**overrides)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``generation_config.json`` into ``save_directory`` atomically; its path."""
        self.validate()
        path = Path(save_directory) / GENERATION_CONFIG_NAME
        atomic_write_text(path, self.to_json_string())
        return path

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check every field and their combinations.

        Raises:
            ValueError: ``GenerationConfig.<field>=<value> is invalid: <rule>``, or a
                contradiction between fields, or an unsupported transformers option.
        """
        check_config(self)

    def resolve(self, *, prompt_length: int, n_positions: int, vocab_size: int) -> Resolved:
        """Validate, then fix the lengths and ids of one ``generate`` call.

        Args:
            prompt_length: tokens per row of the (padded) prompt.
            n_positions: the model's context size; prompt plus new tokens must fit.
            vocab_size: ids must be below it.

        Raises:
            ValueError: see ``validate``; also no room for a new token, or a prompt plus
                ``max_new_tokens`` past ``n_positions``.
        """
        return resolve(self, prompt_length, n_positions, vocab_size)


class HasGenerationConfig:
    """The ``generation_config`` attribute of the models that generate (both frameworks)."""

    @property
    def generation_config(self) -> GenerationConfig:
        """The model's default decoding options (from ``generation_config.json`` when loaded,
        else from the model config's bos/eos/pad ids)."""
        if self.__dict__.get("_generation_config") is None:
            self.__dict__["_generation_config"] = GenerationConfig.from_model_config(self.config)
        return self.__dict__["_generation_config"]

    @generation_config.setter
    def generation_config(self, value: GenerationConfig) -> None:
        if not isinstance(value, GenerationConfig):
            raise TypeError(f"generation_config must be a GenerationConfig, got {type(value)}")
        self.__dict__["_generation_config"] = value


def load_for_model(
    path_or_repo_id: str | os.PathLike, model_config: Any, hub: Mapping[str, Any]
) -> GenerationConfig:
    """The ``generation_config.json`` saved beside a checkpoint, else the model config's
    defaults (``from_model_config``); what ``from_pretrained`` gives the LM heads."""
    from gpt2_dual.hub.resolve import resolve_file

    path = resolve_file(path_or_repo_id, GENERATION_CONFIG_NAME, required=False, **hub)
    if path is None:
        return GenerationConfig.from_model_config(model_config)
    return GenerationConfig.from_json_file(path)
