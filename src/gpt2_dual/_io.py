"""Atomic file writes (a reader never sees a half-written file) and checked JSON reads."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it over ``path``.

    The parent folder is created if needed. On any error the temporary file is removed and
    ``path`` is left as it was.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file is the user's
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_dir_public(path: str | os.PathLike) -> None:
    """Give a ``tempfile.mkdtemp`` folder (0700) the permissions of a normal new folder."""
    os.chmod(path, 0o777 & ~_umask())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming the file when it is not valid JSON or
    holds something other than an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data
