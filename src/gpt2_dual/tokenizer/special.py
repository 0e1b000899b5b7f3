"""Special and added tokens, shared by both GPT-2 tokenizers.

Added tokens (``<|endoftext|>``, a pad token, user tokens) are matched in the text before BPE
and always map to their own id. Special tokens are the named ones (``bos_token``,
``eos_token``, ``unk_token``, ``pad_token``, ...) plus ``additional_special_tokens``; they can
be skipped when decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gpt2_dual.tokenizer.files import SPECIAL_ATTRS, AddedTokenSpec, added_from_dict

#: A token argument: a string, transformers' dict form, or an ``AddedToken`` (``tokenizers``').
TokenArg = str | Mapping[str, Any] | Any | None
_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


def _content(value: TokenArg) -> str | None:
    """The token string of a token argument."""
    if value is None or isinstance(value, str):
        return value
    content = value.get("content") if isinstance(value, Mapping) else getattr(value, "content", 0)
    if isinstance(content, str):
        return content
    raise TypeError(f"a token must be a str, an AddedToken or a dict with 'content', got {value!r}")


def _flags(value: TokenArg) -> dict[str, Any]:
    """The flags (``lstrip``, ``special``, ...) a token argument sets; none for a string."""
    if isinstance(value, Mapping):
        return {k: value[k] for k in _FLAGS if k in value}
    if value is None or isinstance(value, str):
        return {}
    return {k: getattr(value, k) for k in _FLAGS if hasattr(value, k)}


def _special_property(attr: str) -> property:
    def get(self: SpecialTokensMixin) -> str | None:
        return self._special_tokens[attr]

    def set_(self: SpecialTokensMixin, value: TokenArg) -> None:
        self._set_special(attr, _content(value))

    return property(get, set_, doc=f"The {attr.replace('_', ' ')} (a string), or None.")


def _special_id_property(attr: str) -> property:
    def get(self: SpecialTokensMixin) -> int | None:
        token = self._special_tokens[attr]
        return None if token is None else self.convert_tokens_to_ids(token)

    def set_(self: SpecialTokensMixin, value: int | None) -> None:
        self._set_special(attr, None if value is None else self.convert_ids_to_tokens(value))

    return property(get, set_, doc=f"The id of the {attr.replace('_', ' ')}, or None.")


class SpecialTokensMixin:
    """Special-token attributes and the added-token registry.

    Subclasses provide ``vocab_size``, ``_base_token_to_id``, ``convert_tokens_to_ids``,
    ``convert_ids_to_tokens`` and ``_added_changed`` (called with the newly added tokens).
    """

    bos_token = _special_property("bos_token")
    eos_token = _special_property("eos_token")
    unk_token = _special_property("unk_token")
    sep_token = _special_property("sep_token")
    pad_token = _special_property("pad_token")
    cls_token = _special_property("cls_token")
    mask_token = _special_property("mask_token")
    bos_token_id = _special_id_property("bos_token")
    eos_token_id = _special_id_property("eos_token")
    unk_token_id = _special_id_property("unk_token")
    sep_token_id = _special_id_property("sep_token")
    pad_token_id = _special_id_property("pad_token")
    cls_token_id = _special_id_property("cls_token")
    mask_token_id = _special_id_property("mask_token")

    vocab_size: int
    _special_tokens: dict[str, str | None]
    _additional_special: list[str]
    _added: dict[str, AddedTokenSpec]

    def _init_special(
        self,
        specials: Mapping[str, TokenArg],
        additional: Iterable[TokenArg] | None,
        model_added: Iterable[AddedTokenSpec],
        added_tokens_decoder: Mapping[int, Any] | None,
    ) -> None:
        """Register the model's and the config's added tokens, then the special tokens."""
        self._special_tokens = {attr: _content(specials.get(attr)) for attr in SPECIAL_ATTRS}
        self._additional_special = [t for t in map(_content, additional or []) if t]
        self._added = {}
        config_added = [
            added_from_dict(d, int(i)) for i, d in sorted((added_tokens_decoder or {}).items())
        ]
        self._register([*model_added, *config_added])
        for value in [*(specials.get(a) for a in SPECIAL_ATTRS), *(additional or [])]:
            content = _content(value)
            if content and content not in self._added:
                self._register([self._new_spec(content, True, _flags(value))])

    def _new_spec(
        self, content: str, special: bool, flags: Mapping[str, Any] | None = None
    ) -> AddedTokenSpec:
        """A spec for ``content``: its vocabulary id, or the next free id."""
        token_id = self._base_token_to_id(content)
        if token_id is None:
            token_id = max([self.vocab_size - 1, *(t.id for t in self._added.values())]) + 1
        return added_from_dict({**(flags or {}), "content": content, "special": special}, token_id)

    def _register(self, specs: Iterable[AddedTokenSpec]) -> None:
        """Add ``specs`` to the registry (skipping known ones) and tell the backend.

        Raises:
            ValueError: an id that clashes with the vocabulary or leaves a gap.
            NotImplementedError: a ``single_word`` token.
        """
        new = []
        for spec in specs:
            if spec.content in self._added:
                continue
            if spec.single_word:
                raise NotImplementedError(
                    f"added token {spec.content!r}: single_word=True is not supported"
                )
            base_id = self._base_token_to_id(spec.content)
            if base_id is None:
                base_id = self._new_spec(spec.content, spec.special).id
            if spec.id != base_id:
                raise ValueError(
                    f"added token {spec.content!r} has id {spec.id}, but this tokenizer would "
                    f"give it id {base_id} (added token ids must follow the vocabulary "
                    "without gaps)"
                )
            self._added[spec.content] = spec
            new.append(spec)
        if new:
            self._added_changed(new)

    def _set_special(self, attr: str, content: str | None) -> None:
        self._special_tokens[attr] = content
        if attr == "unk_token":
            self._unk_changed()

    def _unk_changed(self) -> None:
        """Called when ``unk_token`` changes."""

    def _added_changed(self, new: list[AddedTokenSpec]) -> None:
        raise NotImplementedError

    def _base_token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def convert_tokens_to_ids(self, tokens: Any) -> Any:
        raise NotImplementedError

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        raise NotImplementedError

    def add_tokens(
        self, new_tokens: TokenArg | Iterable[TokenArg], special_tokens: bool = False
    ) -> int:
        """Add tokens that are matched in the text before BPE and keep their own id.

        Args:
            new_tokens: a token or tokens: non-empty strings, or ``AddedToken``s (from
                ``tokenizers`` or transformers) whose ``lstrip``/``rstrip``/``special`` are kept.
            special_tokens: mark them special (skipped by ``decode(skip_special_tokens=True)``).

        Returns:
            How many tokens were new to the vocabulary (tokens already in the vocabulary are
            still matched whole, but not counted), like transformers.

        Example:
            >>> tokenizer.add_tokens(["<user>", "<bot>"])  # doctest: +SKIP
            2
        """
        single = isinstance(new_tokens, str | Mapping) or hasattr(new_tokens, "content")
        count = 0
        for token in [new_tokens] if single else list(new_tokens):
            content, flags = _content(token), _flags(token)
            if not content:
                raise ValueError(f"added tokens must be non-empty strings, got {token!r}")
            if content not in self._added:
                special = special_tokens or bool(flags.pop("special", False))
                spec = self._new_spec(content, special, flags)
                count += self._base_token_to_id(content) is None
                self._register([spec])
        return count

    def add_special_tokens(
        self,
        special_tokens_dict: Mapping[str, Any],
        replace_additional_special_tokens: bool = True,
    ) -> int:
        """Set special tokens (``{"pad_token": "<pad>"}``), adding them to the vocabulary.

        Args:
            special_tokens_dict: attribute -> token; keys from ``bos_token``, ``eos_token``,
                ``unk_token``, ``sep_token``, ``pad_token``, ``cls_token``, ``mask_token``,
                ``additional_special_tokens`` (a list).
            replace_additional_special_tokens: replace, rather than extend, the list of
                additional special tokens.

        Returns:
            How many tokens were new to the vocabulary.

        Raises:
            ValueError: an unknown key.
        """
        tokens = []
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                values = [_content(v) for v in value]
                keep = [] if replace_additional_special_tokens else self._additional_special
                self._additional_special = [*keep, *(v for v in values if v not in keep)]
                tokens.extend(value)
            elif key in SPECIAL_ATTRS:
                self._set_special(key, _content(value))
                tokens.append(value)
            else:
                raise ValueError(
                    f"{key!r} is not a special token attribute; use one of "
                    f"{', '.join(SPECIAL_ATTRS)}, additional_special_tokens"
                )
        count = 0
        for token in tokens:
            content = _content(token)
            if content and content not in self._added:
                count += self._base_token_to_id(content) is None
                self._register([self._new_spec(content, True, {**_flags(token), "special": True})])
        return count

    @property
    def additional_special_tokens(self) -> list[str]:
        """Special tokens beyond the named ones."""
        return list(self._additional_special)

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        """The special tokens that are set: attribute -> token (a list for additional ones)."""
        out: dict[str, Any] = {a: t for a, t in self._special_tokens.items() if t is not None}
        if self._additional_special:
            out["additional_special_tokens"] = list(self._additional_special)
        return out

    @property
    def special_tokens_map_extended(self) -> dict[str, Any]:
        """``special_tokens_map`` with each token in transformers' dict form (its flags)."""

        def as_dict(content: str) -> dict[str, Any]:
            spec = self._added.get(content) or AddedTokenSpec(content, -1, normalized=False)
            return spec.to_dict(with_special=False)

        return {
            attr: [as_dict(v) for v in value] if isinstance(value, list) else as_dict(value)
            for attr, value in self.special_tokens_map.items()
        }

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens, each once, in transformers' order."""
        tokens = [t for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys([*tokens, *self._additional_special]))

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of ``all_special_tokens``."""
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedTokenSpec]:
        """Added tokens by id (``<|endoftext|>`` included)."""
        return {t.id: t for t in sorted(self._added.values(), key=lambda t: t.id)}

    def _skip_ids(self) -> set[int]:
        """Ids dropped by ``skip_special_tokens=True``: special attributes and special tokens."""
        ids = set(self.all_special_ids)
        ids.update(t.id for t in self._added.values() if t.special)
        return ids
