"""Helpers of :mod:`gpt2_dual.hub.resolve`: argument checks, Hub settings read at call time,
cache layout.

Nothing here imports huggingface_hub; the environment is read when a function is called, never
at import, so tests (and users) can change ``HF_*`` variables between calls.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import socket
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from gpt2_dual.errors import LocalFolderNotFound

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
PROBE_MEMORY_S = 30.0  # a probe's answer is remembered this long, so a burst of calls probes once

_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
_REPO_PART = r"[\w](?:[\w.-]*[\w])?"
_REPO_ID_RE = re.compile(rf"(?:{_REPO_PART}/)?{_REPO_PART}")
_REPO_ID_MAX = 96
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_probes: dict[str, tuple[float, str | None]] = {}


def library_info() -> dict[str, str]:
    """``library_name``/``library_version`` for huggingface_hub's user agent."""
    version = getattr(sys.modules.get("gpt2_dual"), "__version__", "unknown")
    return {"library_name": "gpt2_dual", "library_version": str(version)}


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE_VALUES


def hub_endpoint() -> str:
    """The Hub URL: ``HF_ENDPOINT`` now, else ``https://huggingface.co`` (no trailing slash)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hub cache folder as huggingface_hub computes it, but from ``os.environ`` now.

    ``HF_HUB_CACHE``, else the legacy ``HUGGINGFACE_HUB_CACHE``, else ``HF_HOME/hub``, where
    ``HF_HOME`` defaults to ``$XDG_CACHE_HOME/huggingface`` (``~/.cache/huggingface``).
    """
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        home = env.get("HF_HOME") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
        )
        cache = os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


@dataclasses.dataclass(frozen=True)
class HubCall:
    """What one Hub look-up is about; used to build error messages and find the cache.

    Attributes:
        repo_id: the Hub repo id.
        what: the object of the look-up, for messages ("file 'config.json'").
        revision: the revision shown in messages (``"main"`` when none was given).
        cache_dir: the Hub cache folder to use.
        endpoint: the Hub URL.
        offline: ``local_files_only`` or ``HF_HUB_OFFLINE``.
        unreachable: why the endpoint could not be reached (set by ``with_reachability``).
    """

    repo_id: str
    what: str
    revision: str
    cache_dir: Path
    endpoint: str
    offline: bool
    unreachable: str | None = None

    @classmethod
    def make(
        cls,
        repo_id: str,
        what: str,
        revision: str | None,
        cache_dir: str | os.PathLike | None,
        local_files_only: bool,
    ) -> HubCall:
        """Build a call, reading the Hub settings from the environment now."""
        folder = Path(cache_dir).expanduser() if cache_dir is not None else hub_cache_dir()
        offline = bool(local_files_only) or hub_offline()
        return cls(repo_id, what, revision or "main", folder, hub_endpoint(), offline)

    def with_reachability(self) -> HubCall:
        """A copy with ``unreachable`` set when a TCP connection to the endpoint fails."""
        return dataclasses.replace(self, unreachable=probe_endpoint(self.endpoint))


def probe_endpoint(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Try one TCP connection to the endpoint's host; ``None`` if it opened (or cannot be judged).

    A proxied endpoint is not probed (``None``): only the proxy knows the way. The answer is
    remembered for ``PROBE_MEMORY_S`` seconds.

    Returns:
        ``None``, or a short reason (``"cannot connect to HOST:PORT (ConnectionRefusedError)"``).
    """
    now = time.monotonic()
    remembered = _probes.get(endpoint)
    if remembered is not None and now - remembered[0] < PROBE_MEMORY_S:
        return remembered[1]
    parts = urllib.parse.urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return None
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout):
            reason = None
    except (OSError, ValueError) as err:
        reason = f"cannot connect to {parts.netloc} ({type(err).__name__})"
    _probes[endpoint] = (now, reason)
    return reason


def check_relative(value: str, name: str, *, allow_empty: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a relative ``/``-separated path with no ``..``.

    Args:
        value: the path to check.
        name: the argument's name, for the message.
        allow_empty: whether ``""`` is accepted.
    """
    if not isinstance(value, str):
        raise TypeError(f"gpt2_dual: {name} must be a str, got {type(value).__name__}")
    if value == "" and allow_empty:
        return
    parts = value.replace("\\", "/").split("/")
    if value == "" or value.startswith(("/", "\\")) or ".." in parts or re.match(r"^\w:", value):
        raise ValueError(
            f"gpt2_dual: {name} must be a relative path inside the folder or repo "
            f"(no leading '/', no '..'), got {value!r}"
        )


def is_repo_id(value: str) -> bool:
    """Whether ``value`` is a valid Hub repo id (``name`` or ``owner/name``, at most 96 chars)."""
    return (
        len(value) <= _REPO_ID_MAX
        and _REPO_ID_RE.fullmatch(value) is not None
        and "--" not in value
        and ".." not in value
        and not value.endswith(".git")
    )


def local_folder(path_or_repo_id: str | os.PathLike, *, for_what: str) -> Path | None:
    """The local folder named by ``path_or_repo_id``, or ``None`` if it is a Hub repo id.

    Args:
        path_or_repo_id: the caller's argument.
        for_what: what the caller looks for, for the message ("'config.json'").

    Raises:
        gpt2_dual.errors.LocalFolderNotFound: it looks like a path (a ``PathLike``; starts with
            ``.``, ``/`` or ``~``; holds ``\\``; or is no valid repo id) but is no folder.
    """
    if isinstance(path_or_repo_id, os.PathLike):
        text, pathlike = os.fspath(path_or_repo_id), True
    elif isinstance(path_or_repo_id, str):
        text, pathlike = path_or_repo_id, False
    else:
        raise TypeError(
            "gpt2_dual: path_or_repo_id must be a str or os.PathLike, "
            f"got {type(path_or_repo_id).__name__}"
        )
    if not text:
        raise ValueError("gpt2_dual: path_or_repo_id is empty; pass a folder or a Hub repo id")
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    looks_local = pathlike or text.startswith((".", "/", "~")) or "\\" in text
    if not (looks_local or not is_repo_id(text)):
        return None
    if path.exists():
        raise LocalFolderNotFound(
            f"gpt2_dual: '{text}' is a file, not a folder; pass the folder that holds {for_what}"
        )
    raise LocalFolderNotFound(
        f"gpt2_dual: local folder '{text}' does not exist (and it is no Hub repo id such as "
        "'gpt2' or 'owner/name'); check the path"
    )


def scoped_patterns(patterns: list[str] | None, subfolder: str) -> list[str] | None:
    """``allow_patterns`` relative to the repo root (prefixed with ``subfolder/``)."""
    if isinstance(patterns, str):
        raise TypeError("gpt2_dual: allow_patterns must be a list of str, not a str")
    if not subfolder:
        return None if patterns is None else list(patterns)
    prefix = subfolder.strip("/") + "/"
    return [prefix + p for p in (patterns if patterns is not None else ["*"])]


def has_matching_file(folder: Path, patterns: list[str] | None) -> bool:
    """Whether ``folder`` holds a file whose ``/``-path matches a pattern (any file if None)."""
    if not folder.is_dir():
        return False
    for file in folder.rglob("*"):
        if not file.is_file():
            continue
        rel = file.relative_to(folder).as_posix()
        if patterns is None or any(fnmatch.fnmatch(rel, p) for p in patterns):
            return True
    return False


def recorded_missing(call: HubCall, relpath: str) -> bool:
    """Whether huggingface_hub recorded ``relpath`` as absent from the call's revision.

    Only its ``.no_exist`` marker (written when the Hub answered "no such file") proves absence
    offline; a cached snapshot of the revision does not, since other files may never have been
    asked for.
    """
    storage = call.cache_dir / ("models--" + call.repo_id.replace("/", "--"))
    commit: str | None = call.revision if _COMMIT_RE.fullmatch(call.revision) else None
    ref = storage / "refs" / call.revision
    if commit is None and ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    return bool(commit) and (storage / ".no_exist" / commit / relpath).is_file()


def is_network_error(err: BaseException) -> bool:
    """Whether ``err`` is a connection problem (builtin, requests, urllib3 or httpx)."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    return type(err).__module__.split(".")[0] in {"requests", "urllib3", "httpx"}


def describe(err: BaseException) -> str:
    """A one-line description of ``err``: its type, plus the HTTP status when there is one."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return type(err).__name__ + (f" (HTTP {status})" if status is not None else "")
