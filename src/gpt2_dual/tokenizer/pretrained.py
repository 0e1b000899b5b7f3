"""``from_pretrained``, ``save_pretrained`` and ``save_vocabulary`` of GPT-2's tokenizers.

``PretrainedFilesMixin`` is part of ``GPT2TokenizerBase``: it reads a folder or Hub repo
through ``files`` and ``chat`` into constructor arguments, and writes the files transformers
writes through ``writing`` and ``chat``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from gpt2_dual._io import atomic_write_text
from gpt2_dual.hub.paths import local_folder
from gpt2_dual.hub.push import PushToHubMixin
from gpt2_dual.tokenizer import chat
from gpt2_dual.tokenizer import files as tok_files
from gpt2_dual.tokenizer import writing as tw
from gpt2_dual.tokenizer.files import AddedTokenSpec

T = TypeVar("T", bound="PretrainedFilesMixin")


class PretrainedFilesMixin(PushToHubMixin):
    """Loading and saving. Needs the constructor, ``_base_vocab``, ``_merges``,
    ``_tokenizer_json`` and the token attributes of ``GPT2TokenizerBase``."""

    name_or_path: str
    vocab_size: int
    add_bos_token: bool
    add_prefix_space: bool
    clean_up_tokenization_spaces: bool
    errors: str
    model_max_length: int
    padding_side: str
    truncation_side: str
    chat_template: chat.ChatTemplate
    _do_lower_case: bool | None
    _added: dict[str, AddedTokenSpec]
    special_tokens_map: dict[str, Any]
    special_tokens_map_extended: dict[str, Any]
    added_tokens_decoder: dict[int, AddedTokenSpec]

    @classmethod
    def from_pretrained(
        cls: type[T],
        path_or_repo_id: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        subfolder: str = "",
        **overrides: Any,
    ) -> T:
        """Load from a folder or a Hub repo (``"gpt2"`` works offline: bundled vocabulary).

        Args:
            path_or_repo_id: a folder with the tokenizer files, or a Hub repo id.
            revision, cache_dir, local_files_only, token, subfolder: Hub options.
            **overrides: constructor arguments that replace the files' values
                (``pad_token="<|endoftext|>"``, ``add_prefix_space=True``, ...).

        Raises:
            FileNotFoundError: no ``tokenizer.json`` and no ``vocab.json`` + ``merges.txt``.
            MalformedFileError: a file that cannot be what its name says (named).

        Example:
            >>> tok = GPT2TokenizerFast.from_pretrained("gpt2")  # doctest: +SKIP
        """
        hub = dict(
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            subfolder=subfolder,
        )
        files = tok_files.find_files(path_or_repo_id, **hub)
        kwargs = tok_files.read_config(files)
        folder = local_folder(path_or_repo_id, for_what="tokenizer files")
        kwargs["chat_template"] = chat.load_chat_template(
            kwargs.get("chat_template"),
            files.get(tok_files.CONFIG_NAME),
            chat.find_template_file(path_or_repo_id, **hub),
            None if folder is None else folder / subfolder,
        )
        kwargs.update(overrides)
        tokenizer = cls(**kwargs)
        tokenizer.name_or_path = str(path_or_repo_id)
        return tokenizer

    def save_vocabulary(
        self, save_directory: str | os.PathLike, filename_prefix: str | None = None
    ) -> tuple[str, ...]:
        """Write ``vocab.json`` and ``merges.txt`` into an existing folder; return their paths."""
        return tw.write_vocabulary(
            save_directory, self._base_vocab(), self._merges(), filename_prefix
        )

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write the files transformers writes for GPT-2 (each atomically); transformers'
        ``GPT2Tokenizer`` and ``GPT2TokenizerFast`` load them and give the same ids.

        Returns:
            The paths written: ``tokenizer_config.json``, ``special_tokens_map.json``, the chat
            template files (only with a ``chat_template``), ``vocab.json``, ``merges.txt``,
            ``added_tokens.json`` (only with tokens beyond the vocabulary), ``tokenizer.json``.
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [
            tw.write_json(folder / tok_files.CONFIG_NAME, self._config_dict()),
            tw.write_json(folder / tok_files.SPECIAL_MAP_NAME, self.special_tokens_map_extended),
            *chat.save_chat_template(folder, self.chat_template),
            *self.save_vocabulary(folder),
        ]
        extra = {t.content: t.id for t in self._added.values() if t.id >= self.vocab_size}
        if extra:
            paths.append(tw.write_json(folder / tok_files.ADDED_NAME, extra))
        text = self._tokenizer_json()
        paths.append(str(atomic_write_text(folder / tok_files.TOKENIZER_NAME, text)))
        return tuple(paths)

    def _config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "add_bos_token": self.add_bos_token,
            "add_prefix_space": self.add_prefix_space,
            "added_tokens_decoder": {
                str(i): t.to_dict() for i, t in self.added_tokens_decoder.items()
            },
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "errors": self.errors,
            "extra_special_tokens": {},
            "model_max_length": self.model_max_length,
            "pad_token": None,
            "tokenizer_class": "GPT2Tokenizer",
        }
        config.update(self.special_tokens_map)
        for name in ("padding_side", "truncation_side"):
            if getattr(self, name) != "right":
                config[name] = getattr(self, name)
        if self._do_lower_case is not None:
            config["do_lower_case"] = self._do_lower_case
        return config
