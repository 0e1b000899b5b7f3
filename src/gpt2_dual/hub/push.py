"""``push_to_hub``: upload what ``save_pretrained`` writes to a Hugging Face Hub repo.

transformers' ``PushToHubMixin`` habit, for every class here that has ``save_pretrained``: the
PyTorch and Keras models, both tokenizers, ``GPT2Config`` and ``GenerationConfig``. The object
is saved into a temporary folder, the repo is created when it does not exist
(``HfApi.create_repo(exist_ok=True)``), a branch is created for a new ``revision``, and the
folder is uploaded as one commit (``HfApi.upload_folder``). huggingface_hub leaves out files
whose content the repo already has; files of the repo that the save does not write stay.

Deliberate differences from transformers: options are keyword-only, there is no
``use_temp_dir`` (the folder is always temporary) and no model card is written.

The Hub settings (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``) are read at call time, as for loading;
huggingface_hub is imported only when a push is made.

Example:
    >>> model.push_to_hub("me/tiny-gpt2", private=True)  # doctest: +SKIP
    >>> tokenizer.push_to_hub("me/tiny-gpt2")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from gpt2_dual.errors import HubError
from gpt2_dual.hub import paths as paths

__all__ = ["PushToHubMixin", "api_of", "push_to_hub"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class PushToHubMixin:
    """``push_to_hub`` for a class with ``save_pretrained(save_directory, **kwargs)``."""

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        commit_description: str | None = None,
        **save_kwargs: Any,
    ) -> Any:
        """Save into a temporary folder and upload it to the Hub repo ``repo_id`` in one commit.

        Args:
            repo_id: ``"owner/name"`` (or ``"name"``, under the token's user); created if
                missing.
            token: Hub token with write access; ``None`` uses the stored login or ``HF_TOKEN``.
            private: make a new repo private (``None``: the Hub's default); an existing repo
                keeps its visibility.
            commit_message: default ``"Upload model"``, ``"Upload tokenizer"`` or
                ``"Upload config"``, as transformers writes.
            revision: branch to commit to (created from ``main`` if missing); default ``main``.
            create_pr: open a pull request with the commit instead of committing to the branch.
            commit_description: the commit's (or pull request's) description.
            **save_kwargs: passed to ``save_pretrained`` (models: ``max_shard_size``,
                ``safe_serialization``).

        Returns:
            huggingface_hub's ``CommitInfo`` (a ``str``: the URL of the pushed files;
            ``.commit_url``, ``.oid``, ``.pr_url``).

        Raises:
            gpt2_dual.errors.HubError: offline mode is on, the Hub refused (no token, no write
                access) or could not be reached; the message says which and what to do.
            ValueError: ``repo_id`` is not a valid Hub repo id.

        Example:
            >>> config.push_to_hub("me/tiny-gpt2", token="hf_...")  # doctest: +SKIP
        """
        return push_to_hub(
            self,
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            commit_description=commit_description,
            save_kwargs=save_kwargs,
        )


def push_to_hub(
    obj: Any,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_description: str | None = None,
    save_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Upload ``obj.save_pretrained``'s files to ``repo_id``; see ``PushToHubMixin.push_to_hub``.

    Args:
        obj: anything with ``save_pretrained(save_directory, **save_kwargs)``.
        repo_id, token, private, commit_message, revision, create_pr, commit_description: as
            for ``PushToHubMixin.push_to_hub``.
        save_kwargs: keywords for ``save_pretrained``.

    Returns:
        huggingface_hub's ``CommitInfo``.
    """
    if not isinstance(repo_id, str) or not paths.is_repo_id(repo_id):
        raise ValueError(
            f"gpt2_dual: push_to_hub needs a Hub repo id such as 'me/tiny-gpt2', got {repo_id!r}"
        )
    endpoint = paths.hub_endpoint()
    if paths.hub_offline():
        raise HubError(
            f"gpt2_dual: cannot push to Hub repo '{repo_id}': offline mode is on "
            "(HF_HUB_OFFLINE=1); unset it to upload"
        )
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token, **paths.library_info())
    message = commit_message or _default_message(obj)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and revision != "main" and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"gpt2_dual-push-{os.getpid()}-") as folder:
            obj.save_pretrained(folder, **(save_kwargs or {}))
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=message,
                commit_description=commit_description,
                revision=revision,
                create_pr=create_pr,
            )
    except Exception as err:
        mapped = _map_push_error(err, repo_id, endpoint)
        if mapped is None:
            raise
        raise mapped from err
    logger.info("gpt2_dual: pushed %s to %s (%s)", type(obj).__name__, repo_id, info.commit_url)
    return info


def api_of(impl: Callable[..., Any]) -> Callable[[F], F]:
    """Give a thin wrapper method the docstring and signature of the function it calls.

    ``impl``'s first parameter (the model or class it is given) becomes the wrapper's own first
    parameter (``self`` or ``cls``), and its entry in the docstring's ``Args`` is left out, so
    ``help()`` and ``inspect.signature`` of the method show every option of ``impl``.

    Example:
        >>> def _load(cls, path, *, strict=True):
        ...     '''Load.'''
        >>> class Model:
        ...     @classmethod
        ...     @api_of(_load)
        ...     def from_pretrained(cls, path, **kwargs):
        ...         return _load(cls, path, **kwargs)
        >>> str(inspect.signature(Model.from_pretrained))
        '(path, *, strict=True)'
    """

    def decorate(wrapper: F) -> F:
        own_first = next(iter(inspect.signature(wrapper).parameters.values()))
        signature = inspect.signature(impl)
        first, *rest = signature.parameters.values()
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[first.replace(name=own_first.name, annotation=own_first.empty), *rest]
        )
        # Drop the "first: ..." entry (and its continuation lines) from the Args section.
        entry = rf"^(?P<indent>[ ]+){re.escape(first.name)}: .*\n(?:(?P=indent)[ ]+.*\n)*"
        wrapper.__doc__ = re.sub(entry, "", impl.__doc__ or "", count=1, flags=re.MULTILINE)
        return wrapper

    return decorate


def _default_message(obj: Any) -> str:
    """transformers' default commit messages."""
    name = type(obj).__name__
    if "Tokenizer" in name:
        return "Upload tokenizer"
    if "Config" in name:
        return "Upload config"
    return "Upload model"


def _map_push_error(err: Exception, repo_id: str, endpoint: str) -> Exception | None:
    """Translate a huggingface_hub or network error into ``HubError``; ``None`` otherwise."""
    from huggingface_hub import constants, errors

    where = f"Hub repo '{repo_id}' at {endpoint}"
    if isinstance(err, getattr(errors, "OfflineModeIsEnabled", ())):
        return HubError(
            f"gpt2_dual: cannot push to {where}: huggingface_hub is in offline mode "
            "(HF_HUB_OFFLINE was set when it was imported); restart without it"
        )
    if isinstance(err, errors.HfHubHTTPError):
        status = getattr(err.response, "status_code", None)
        if status in (401, 403):
            return HubError(
                f"gpt2_dual: the Hub refused to push to {where} ({paths.describe(err)}); log in "
                "(`hf auth login`) or pass token=... with write access to the repo"
            )
        return HubError(
            f"gpt2_dual: pushing to {where} failed ({paths.describe(err)}: {err}); check the "
            "repo id, revision and token, or try again later"
        )
    if paths.is_network_error(err):
        return HubError(
            f"gpt2_dual: could not reach the Hub to push to {where} ({paths.describe(err)}); "
            "check your connection, proxy and HF_ENDPOINT"
        )
    if isinstance(err, ValueError) and "Unable to retrieve user and repo ID" in str(err):
        # huggingface_hub parses the commit URL against the endpoint it read at its import.
        return HubError(
            f"gpt2_dual: the push to {where} was committed, but huggingface_hub could not read "
            f"the Hub's answer: HF_ENDPOINT changed after huggingface_hub was imported (it reads "
            f"it once, at import: {constants.ENDPOINT}); set HF_ENDPOINT before importing it"
        )
    return None
