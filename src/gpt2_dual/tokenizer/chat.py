"""Chat templates as transformers keeps them: the ``chat_template`` attribute,
``get_chat_template``, ``apply_chat_template`` and the template files.

GPT-2 has no chat template, so ``apply_chat_template`` on a GPT-2 tokenizer raises transformers'
own ValueError (``NO_TEMPLATE``). A template the user sets (the ``chat_template`` attribute or
constructor argument, ``tokenizer_config.json``'s ``chat_template``, ``chat_template.jinja``, or
``additional_chat_templates/<name>.jinja`` in a local folder) is kept, returned by
``get_chat_template`` and saved where transformers saves it. Rendering a template needs Jinja2,
which is not among gpt2_dual's dependencies (numpy, regex, tokenizers, safetensors,
huggingface_hub): ``apply_chat_template`` refuses to render with NotImplementedError
(``NO_RENDERING``) rather than depend on a package that may be missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpt2_dual._io import atomic_write_text, read_text
from gpt2_dual.errors import InputTypeError, MalformedFileError, OfflineMiss

logger = logging.getLogger(__name__)

CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"

#: A chat template as transformers keeps it: one template, or template name -> template.
ChatTemplate = str | dict[str, str] | None

#: transformers' error (same type and text) for a tokenizer without a chat template.
NO_TEMPLATE = (
    "Cannot use chat template functions because tokenizer.chat_template is not set and no "
    "template argument was passed! For information about writing templates and setting the "
    "tokenizer.chat_template attribute, please see the documentation at "
    "https://huggingface.co/docs/transformers/main/en/chat_templating"
)
NO_RENDERING = (
    "apply_chat_template cannot render a chat template here: rendering needs Jinja2, which "
    "gpt2_dual does not depend on. Write the conversation as text yourself "
    "(tokenizer.get_chat_template() returns the template) and call the tokenizer on it, or "
    "render it with transformers' tokenizer."
)


def as_chat_template(value: Any) -> ChatTemplate:
    """``value`` in the form transformers keeps: None, a str, or a dict name -> template (a
    list of ``{"name": ..., "template": ...}`` objects, ``tokenizer_config.json``'s form for
    several templates, becomes that dict).

    Raises:
        InputTypeError: anything else (the message says what is accepted).
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple):
        pairs = [(d.get("name"), d.get("template")) if isinstance(d, Mapping) else d for d in value]
    else:
        pairs = None
    ok = pairs is not None and all(
        isinstance(p, tuple) and all(isinstance(x, str) for x in p) for p in pairs
    )
    if not ok:
        raise InputTypeError(
            "chat_template must be a str, a dict of template name -> str, or a list of "
            f"{{'name': str, 'template': str}} objects; got {value!r:.80}"
        )
    return dict(pairs)


def find_template_file(path_or_repo_id: str | os.PathLike, **hub: Any) -> Path | None:
    """``chat_template.jinja`` of a local folder or a Hub repo, or None.

    Offline, a repo cached before this file was looked for has no record of it; it counts as
    absent (logged), so such a cached tokenizer still loads.

    Args:
        path_or_repo_id: as for ``from_pretrained``.
        **hub: ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``subfolder``.
    """
    # Imported here, like files.find_files does: the Hub machinery loads on first use.
    from gpt2_dual.hub.resolve import resolve_file

    try:
        return resolve_file(path_or_repo_id, CHAT_TEMPLATE_FILE, required=False, **hub)
    except OfflineMiss as err:
        logger.info("%s treated as absent: %s", CHAT_TEMPLATE_FILE, err)
        return None


def load_chat_template(
    config_value: Any, config_path: Path | None, template_file: Path | None, folder: Path | None
) -> ChatTemplate:
    """The template(s) to load, with transformers' precedence: template files win over the
    config's ``chat_template``.

    Args:
        config_value: ``tokenizer_config.json``'s ``chat_template``, or None.
        config_path: that file, for messages.
        template_file: ``chat_template.jinja`` (the "default" template), or None.
        folder: a local folder whose ``additional_chat_templates/*.jinja`` are read, or None
            (the Hub's extra templates are not listed).

    Raises:
        MalformedFileError: a template file that is not UTF-8, or a config ``chat_template``
            that is neither a str nor a list of ``{"name", "template"}`` objects (named).
    """
    templates = {}
    if template_file is not None:
        templates["default"] = read_text(template_file)
    extra = folder / CHAT_TEMPLATE_DIR if folder is not None else None
    if extra is not None and extra.is_dir():
        for path in sorted(extra.glob("*.jinja")):
            templates[path.name.removesuffix(".jinja")] = read_text(path)
    if list(templates) == ["default"]:
        return templates["default"]
    if templates:
        return templates
    try:
        return as_chat_template(config_value)
    except InputTypeError as err:
        raise MalformedFileError(f"{config_path}: {err}") from None


def save_chat_template(folder: Path, template: ChatTemplate) -> list[str]:
    """Write ``template`` as transformers 4.57 does: one template (or the "default" one) in
    ``chat_template.jinja``, other named ones in ``additional_chat_templates/<name>.jinja``.

    Returns:
        The paths written, in transformers' order.
    """
    if template is None:
        return []
    named = {"default": template} if isinstance(template, str) else template
    written = []
    for name, text in named.items():
        if name == "default":
            path = folder / CHAT_TEMPLATE_FILE
        else:
            (folder / CHAT_TEMPLATE_DIR).mkdir(exist_ok=True)
            path = folder / CHAT_TEMPLATE_DIR / f"{name}.jinja"
        written.append(str(atomic_write_text(path, text)))
    return written


class ChatTemplateMixin:
    """``get_chat_template`` and ``apply_chat_template`` on the ``chat_template`` attribute
    (None, a str, or a dict name -> template; set by ``GPT2TokenizerBase``)."""

    chat_template: ChatTemplate

    def get_chat_template(
        self, chat_template: str | None = None, tools: list[dict] | None = None
    ) -> str:
        """The template ``apply_chat_template`` would use, chosen as transformers chooses it.

        Args:
            chat_template: a template, or the name of one of this tokenizer's templates.
            tools: with several templates, picks the "tool_use" one when there is one.

        Raises:
            ValueError: no template set and none passed (transformers' message), or several
                templates, none named "default", and none chosen.
        """
        own = self.chat_template
        if isinstance(own, dict):
            if chat_template is not None and chat_template in own:
                return own[chat_template]
            if chat_template is None:
                if tools is not None and "tool_use" in own:
                    return own["tool_use"]
                if "default" in own:
                    return own["default"]
                raise ValueError(
                    "This model has multiple chat templates with no default specified! Please "
                    "either pass a chat template or the name of the template you wish to use to "
                    "the `chat_template` argument. Available template names are "
                    f"{sorted(own.keys())}."
                )
        elif chat_template is None:
            if own is None:
                raise ValueError(NO_TEMPLATE)
            return own
        return chat_template

    def apply_chat_template(
        self,
        conversation: Any,
        tools: list[Any] | None = None,
        documents: list[dict[str, str]] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = True,
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_dict: bool = False,
        return_assistant_tokens_mask: bool = False,
        tokenizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """transformers' ``apply_chat_template``, which GPT-2 cannot honour: its checks, in
        transformers' order, then a refusal to render.

        Raises:
            ValueError: transformers' errors: ``return_dict`` without ``tokenize``,
                ``return_assistant_tokens_mask`` without ``return_dict``, no chat template
                (every GPT-2 tokenizer as loaded), ``continue_final_message`` with
                ``add_generation_prompt`` or ``return_assistant_tokens_mask``.
            NotImplementedError: a template is set or passed; rendering it needs Jinja2,
                which gpt2_dual does not depend on.
        """
        if return_dict and not tokenize:
            raise ValueError(
                "`return_dict=True` is incompatible with `tokenize=False`, because there is no "
                "dict of tokenizer outputs to return."
            )
        if return_assistant_tokens_mask and not return_dict:
            raise ValueError(
                "`return_assistant_tokens_mask=True` is incompatible with `return_dict=False`"
            )
        self.get_chat_template(chat_template, tools)
        if continue_final_message:
            if add_generation_prompt:
                raise ValueError(
                    "continue_final_message and add_generation_prompt are not compatible. Use "
                    "continue_final_message when you want the model to continue the final "
                    "message, and add_generation_prompt when you want to add a header that will "
                    "prompt it to start a new assistant message instead."
                )
            if return_assistant_tokens_mask:
                raise ValueError(
                    "continue_final_message is not compatible with return_assistant_tokens_mask."
                )
        raise NotImplementedError(NO_RENDERING)
