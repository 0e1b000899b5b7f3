"""Files from a local folder or the Hugging Face Hub, and uploads back to it.

- ``resolve``: ``resolve_file`` / ``resolve_snapshot``, the one resolver behind every
  ``from_pretrained`` (a local folder first, then the Hub through ``huggingface_hub``, then
  the bundled GPT-2 files when offline);
- ``paths``: the Hub's environment (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, the cache), repo id
  and relative-path checks;
- ``bundled``: the hash-verified GPT-2 vocabulary and configs that ship with gpt2_dual;
- ``push``: ``push_to_hub`` and ``PushToHubMixin``.

The errors (``HubError`` and its subclasses) are in ``gpt2_dual.errors``.
"""

from gpt2_dual.errors import (
    FileNotFoundInRepo,
    HubError,
    LocalFolderNotFound,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
)
from gpt2_dual.hub.push import PushToHubMixin, push_to_hub
from gpt2_dual.hub.resolve import resolve_file, resolve_snapshot

__all__ = [
    "FileNotFoundInRepo", "HubError", "LocalFolderNotFound", "OfflineMiss", "PushToHubMixin",
    "RepoNotFound", "RevisionNotFound", "push_to_hub", "resolve_file", "resolve_snapshot",
]  # fmt: skip
