"""Find model and tokenizer files in a local folder or a Hugging Face Hub repo.

One resolver serves the config, the tokenizers and the models. A local folder always wins; a Hub
repo id goes through the real ``huggingface_hub`` (``hf_hub_download`` / ``snapshot_download``)
with its cache. ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HOME`` are read
from ``os.environ`` at call time (huggingface_hub reads them once, at its import).

For OpenAI's GPT-2 repos (``BUNDLED_GPT2_REPOS``) the tokenizer files, ``config.json`` and
``generation_config.json`` ship with gpt2_dual (``gpt2_dual.hub.bundled``; the config files are
reconstructions of the released ones, field for field): when the Hub cannot be used (offline,
``local_files_only=True`` or unreachable) and the file is not in the Hub cache, the bundled copy
is returned. Weights are not bundled; the error for them says so.

Example:
    >>> from gpt2_dual.hub.resolve import resolve_file
    >>> path = resolve_file("gpt2", "vocab.json", local_files_only=True)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gpt2_dual.errors import (
    FileNotFoundInRepo,
    HubError,
    LocalFolderNotFound,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
)
from gpt2_dual.hub import paths as paths
from gpt2_dual.hub.bundled import (
    BUNDLED_FILES,
    BUNDLED_GPT2_REPOS,
    TOKENIZER_FILES,
    bundled_file,
    bundled_vocab_dir,
)

__all__ = [
    "BUNDLED_GPT2_REPOS",
    "FileNotFoundInRepo",
    "HubError",
    "LocalFolderNotFound",
    "OfflineMiss",
    "RepoNotFound",
    "RevisionNotFound",
    "bundled_vocab_dir",
    "resolve_file",
    "resolve_snapshot",
]

logger = logging.getLogger(__name__)

_announced_bundle: set[tuple[str, str]] = set()  # (repo id, "vocabulary" or "config")


def resolve_file(
    path_or_repo_id: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str = "",
    required: bool = True,
) -> Path | None:
    """Return the local path of ``filename`` from a local folder or a Hub repo.

    An existing directory is used as is (``folder/subfolder/filename``); anything else must be
    a Hub repo id and goes through ``hf_hub_download`` and its cache.

    Args:
        path_or_repo_id: a local folder, or a Hub repo id such as ``"gpt2"`` or ``"me/tiny"``.
        filename: file name inside the folder or repo (``/``-separated, no ``..``).
        revision: Hub branch, tag or commit (default ``"main"``); ignored for a local folder.
        cache_dir: Hub cache folder (default: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, read now).
        local_files_only: never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
        token: Hub token; ``None`` uses the stored login or ``HF_TOKEN``, ``False`` sends none.
        subfolder: folder inside the local folder or repo.
        required: when False, a file that does not exist gives ``None`` instead of
            ``FileNotFoundInRepo``. Offline, a missing file counts as absent only if the repo's
            revision is in the Hub cache (or, for a bundled GPT-2 repo, it is a tokenizer file).

    A bundled GPT-2 repo (``BUNDLED_GPT2_REPOS``, default revision, no subfolder) falls back to
    the copies shipped with gpt2_dual for its tokenizer files, ``config.json`` and
    ``generation_config.json`` when the Hub cannot be used and the cache lacks the file.

    Returns:
        The file's path (inside the Hub cache for a repo), or ``None`` (see ``required``).

    Raises:
        LocalFolderNotFound: ``path_or_repo_id`` looks like a path and is not a folder.
        FileNotFoundInRepo: the folder or repo lacks the file (and ``required`` is True).
        RepoNotFound: unknown, private or gated repo.
        RevisionNotFound: the repo has no such revision.
        OfflineMiss: offline or Hub unreachable, and the file is not cached.
        HubError: any other Hub failure.
        ValueError: ``filename`` or ``subfolder`` is not a relative path inside the repo.

    Example:
        >>> resolve_file("gpt2", "merges.txt").name  # doctest: +SKIP
        'merges.txt'
    """
    paths.check_relative(filename, "filename")
    paths.check_relative(subfolder, "subfolder", allow_empty=True)
    folder = paths.local_folder(path_or_repo_id, for_what=f"'{filename}'")
    if folder is not None:
        return _from_folder(folder, subfolder, filename, required)
    repo_id = str(path_or_repo_id)
    relpath = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
    call = paths.HubCall.make(repo_id, f"file '{relpath}'", revision, cache_dir, local_files_only)
    bundle_repo = repo_id in BUNDLED_GPT2_REPOS and not subfolder and call.revision == "main"
    if not call.offline:
        # One quick TCP probe: huggingface_hub would retry an unreachable endpoint for ~20 s.
        call = call.with_reachability()
    try:
        return Path(_download(call, filename, subfolder, revision, token))
    except Exception as err:
        mapped = _map_hub_error(err, call)
        if mapped is None:
            raise
        bundled = bundled_file(repo_id, filename) if bundle_repo else None
        if isinstance(mapped, OfflineMiss) and bundled is not None:
            return _announce_bundled(repo_id, filename, bundled, call)
        if not required and isinstance(mapped, FileNotFoundInRepo):
            return None
        bundled_optional = bundle_repo and filename in TOKENIZER_FILES
        if not required and isinstance(mapped, OfflineMiss):
            if bundled_optional or paths.recorded_missing(call, relpath):
                logger.info("%s: '%s' is not in the Hub cache; treated as absent", repo_id, relpath)
                return None
        if isinstance(mapped, OfflineMiss) and bundle_repo:
            mapped = OfflineMiss(
                f"{mapped} (gpt2_dual bundles only the tokenizer and config files of "
                f"'{repo_id}', not its weights)"
            )
        raise mapped from err


def resolve_snapshot(
    path_or_repo_id: str | os.PathLike,
    *,
    allow_patterns: list[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str = "",
) -> Path:
    """Return a folder holding a local folder's or a Hub repo's files (e.g. sharded weights).

    A local folder is returned as is (joined with ``subfolder``). A Hub repo goes through
    ``snapshot_download``, fetching only the files that match ``allow_patterns``.

    Args:
        path_or_repo_id: a local folder, or a Hub repo id.
        allow_patterns: fnmatch patterns of the files to fetch, relative to ``subfolder``
            (default: all files).
        revision: Hub branch, tag or commit (default ``"main"``).
        cache_dir: Hub cache folder (default as in ``resolve_file``).
        local_files_only: never touch the network (also implied by ``HF_HUB_OFFLINE=1``).
        token: Hub token (as in ``resolve_file``).
        subfolder: folder inside the local folder or repo.

    Returns:
        The folder (for a repo, inside the Hub cache's snapshot of the revision).

    Raises:
        FileNotFoundInRepo: no file of the repo matches ``allow_patterns``, or the local folder
            has no such ``subfolder``.
        LocalFolderNotFound, RepoNotFound, RevisionNotFound, OfflineMiss, HubError: as in
            ``resolve_file``.

    Example:
        >>> folder = resolve_snapshot("me/big", allow_patterns=["*.safetensors*"])  # doctest: +SKIP
    """
    paths.check_relative(subfolder, "subfolder", allow_empty=True)
    folder = paths.local_folder(path_or_repo_id, for_what="its files")
    if folder is not None:
        target = folder / subfolder if subfolder else folder
        if not target.is_dir():
            raise FileNotFoundInRepo(
                f"gpt2_dual: subfolder '{subfolder}' not found in local folder '{folder}'; "
                "check the folder's contents"
            )
        return target
    repo_id = str(path_or_repo_id)
    patterns = paths.scoped_patterns(allow_patterns, subfolder)
    what = f"files matching {patterns}" if patterns is not None else "files"
    call = paths.HubCall.make(repo_id, what, revision, cache_dir, local_files_only)
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=str(call.cache_dir),
            local_files_only=call.offline,
            token=token,
            allow_patterns=patterns,
            endpoint=call.endpoint,
            **paths.library_info(),
        )
    except Exception as err:
        mapped = _map_hub_error(err, call)
        if mapped is None:
            raise
        raise mapped from err
    if not paths.has_matching_file(Path(snapshot), patterns):
        where = f"Hub repo '{repo_id}' (revision '{call.revision}')"
        if call.offline:
            raise OfflineMiss(
                f"gpt2_dual: the local Hub cache of {where} has no {what} and offline mode is on "
                "(HF_HUB_OFFLINE=1 or local_files_only=True); run once online or pass a local "
                "folder"
            )
        raise FileNotFoundInRepo(
            f"gpt2_dual: no {what} in {where}; check the repo's files or the patterns"
        )
    return Path(snapshot) / subfolder if subfolder else Path(snapshot)


def _from_folder(folder: Path, subfolder: str, filename: str, required: bool) -> Path | None:
    parts = [*subfolder.strip("/").split("/"), *filename.split("/")] if subfolder else [filename]
    path = folder.joinpath(*parts)
    if path.is_file():
        return path
    if not required:
        return None
    relpath = f"{subfolder.strip('/')}/{filename}" if subfolder else filename
    raise FileNotFoundInRepo(
        f"gpt2_dual: file '{relpath}' not found in local folder '{folder}'; "
        "check the folder's files"
    )


def _download(
    call: paths.HubCall, filename: str, subfolder: str, revision: str | None, token: object
) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(
        call.repo_id,
        filename,
        subfolder=subfolder or None,
        revision=revision,
        cache_dir=str(call.cache_dir),
        local_files_only=call.offline or call.unreachable is not None,
        token=token,
        endpoint=call.endpoint,
        **paths.library_info(),
    )


def _announce_bundled(repo_id: str, filename: str, path: Path, call: paths.HubCall) -> Path:
    """Log once per repo and kind that a bundled copy stands in for the Hub's file; ``path``."""
    kind = "vocabulary" if filename in BUNDLED_FILES else "config"
    if (repo_id, kind) not in _announced_bundle:
        _announced_bundle.add((repo_id, kind))
        reason = "offline mode is on" if call.offline else f"{call.endpoint} is unreachable"
        logger.info(
            "gpt2_dual: using the bundled GPT-2 %s for '%s' (%s and the file is not in the "
            "Hub cache)",
            kind,
            repo_id,
            reason,
        )
    return path


def _map_hub_error(err: Exception, call: paths.HubCall) -> HubError | None:
    """Translate a huggingface_hub error into ours; ``None`` when it is not a Hub error."""
    from huggingface_hub import errors

    def hf(name: str) -> type | tuple[()]:  # tolerate a class missing in some release
        return getattr(errors, name, ())

    where = f"Hub repo '{call.repo_id}' (revision '{call.revision}')"
    offline = (
        call.offline
        or isinstance(err, hf("OfflineModeIsEnabled"))
        or isinstance(err.__cause__, hf("OfflineModeIsEnabled"))
    )
    if isinstance(err, hf("LocalEntryNotFoundError")) or isinstance(
        err, hf("OfflineModeIsEnabled")
    ):
        if offline:
            return OfflineMiss(
                f"gpt2_dual: {call.what} of {where} is not in the local Hub cache and offline mode "
                "is on (HF_HUB_OFFLINE=1 or local_files_only=True); run once online or pass a "
                "local folder"
            )
        return _unreachable(call, where, call.unreachable or paths.describe(err.__cause__ or err))
    if isinstance(err, hf("GatedRepoError")):
        return RepoNotFound(
            f"gpt2_dual: Hub repo '{call.repo_id}' is gated; accept its conditions on the Hub, "
            "then pass token=... (or log in)"
        )
    if isinstance(err, hf("RepositoryNotFoundError")):
        return RepoNotFound(
            f"gpt2_dual: Hub repo '{call.repo_id}' not found (or you have no access); check the "
            "id, or pass token=... for a private repo"
        )
    if isinstance(err, hf("RevisionNotFoundError")):
        return RevisionNotFound(
            f"gpt2_dual: revision '{call.revision}' not found in Hub repo '{call.repo_id}'; "
            "check the branch, tag or commit"
        )
    if isinstance(err, hf("EntryNotFoundError")):
        return FileNotFoundInRepo(
            f"gpt2_dual: {call.what} not found in {where}; check the repo's files or pass a "
            "local folder"
        )
    if isinstance(err, hf("HfHubHTTPError")):
        return HubError(
            f"gpt2_dual: the Hub at {call.endpoint} refused {call.what} of {where} "
            f"({paths.describe(err)}); check token=... and HF_ENDPOINT, or try again later"
        )
    if paths.is_network_error(err):
        return _unreachable(call, where, paths.describe(err))
    return None


def _unreachable(call: paths.HubCall, where: str, cause: str) -> OfflineMiss:
    return OfflineMiss(
        f"gpt2_dual: could not get {call.what} of {where} from the Hub at {call.endpoint} "
        f"({cause}) and it is not in the local Hub cache; check your connection, proxy and "
        "HF_ENDPOINT, or pass a local folder"
    )
