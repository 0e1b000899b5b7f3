"""Atomic file writes (a reader never sees a half-written file) and checked JSON reads.

Temporary files are named ``.<name>.gpt2-dual-tmp-<pid>-<random>`` next to their target: a
save killed mid-write (``kill -9``) leaves one behind, and the next save into that folder
removes those whose process is dead (``remove_leftovers``; conversions use ``pid_alive`` for
their temporary folders, by the same rule).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from gpt2_dual.errors import MalformedFileError

#: Marks our temporary files: ``.<name>{TMP_MARK}<pid>-<random>``.
TMP_MARK = ".gpt2-dual-tmp-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a pid past the limit
        return True
    return True


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files ``atomic_write`` left in ``folder`` when its process died.

    Returns:
        The removed paths.
    """
    removed = []
    try:
        candidates = list(Path(folder).glob(f".*{TMP_MARK}*"))
    except OSError:
        return removed
    for path in candidates:
        pid = path.name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            try:
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed.append(path)
            except OSError:  # removed by a concurrent save, or not ours to remove
                pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it over ``path``.

    The parent folder is created if needed, and temporary files of earlier writes there whose
    process died are removed. On any error the temporary file is removed and ``path`` is left
    as it was.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)
    prefix = f".{path.name}{TMP_MARK}{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix="", dir=path.parent)
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


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``; MalformedFileError naming the file when it is not UTF-8.

    Raises:
        FileNotFoundError, PermissionError, ...: the file cannot be opened (unchanged).
        MalformedFileError: the bytes are not valid UTF-8.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedFileError(
            f"{path} is not UTF-8 text: byte {err.start} is {data[err.start : err.start + 1]!r} "
            f"({err.reason})"
        ) from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path`` (any type), checked.

    Raises:
        MalformedFileError: not UTF-8, not valid JSON, or nested deeper than Python's parser
            goes (its recursion limit, about 1000 levels); the message names the file.
    """
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MalformedFileError(f"{path} is not valid JSON: {err}") from None
    except RecursionError:
        raise MalformedFileError(
            f"{path} nests JSON arrays or objects deeper than the parser's recursion limit "
            f"({sys.getrecursionlimit()})"
        ) from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        MalformedFileError: naming the file, when it is not UTF-8, not valid JSON, nested
            too deeply, or holds something other than an object.
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise MalformedFileError(f"{path} must hold a JSON object, found {json_type(data)}")
    return data


def json_type(value: Any) -> str:
    """JSON's name for the type of a parsed value (``object``, ``array``, ``string``, ...)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def check_field(path: str | os.PathLike, data: dict[str, Any], key: str, types: Any) -> Any:
    """``data[key]`` (None when absent) checked to be of ``types`` (bool is not an int).

    Raises:
        MalformedFileError: naming the file, the key, the value and the type expected.
    """
    value = data.get(key)
    if value is None:
        return None
    types = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        want = " or ".join(t.__name__ for t in types)
        raise MalformedFileError(f"{path}: {key!r} must be {want}, found {value!r:.80}")
    return value


def build_from_file(path: str | os.PathLike, build: Callable[[dict[str, Any]], Any]) -> Any:
    """``build(data)`` on the JSON object of ``path``; a value it refuses names the file.

    Raises:
        MalformedFileError: the file is unreadable as a JSON object, or ``build`` raised
            ValueError or TypeError for one of its values (the message is kept, prefixed by
            the file).
    """
    data = read_json_object(path)
    try:
        return build(data)
    except MalformedFileError:
        raise
    except (ValueError, TypeError) as err:
        raise MalformedFileError(f"{path}: {err}") from err


#: Freed bytes below which ``release_memory`` does nothing: a full collection costs about
#: 0.5 s once torch and TensorFlow are loaded (measured, AMD EPYC), more than a small model's
#: memory is worth.
RELEASE_MIN_BYTES = 64 << 20


def release_memory(nbytes: int | None = None) -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc ``malloc_trim``):
    after a conversion side or a quantized load, the freed float temporaries would otherwise
    stay in the process's resident memory.

    Args:
        nbytes: about how much was just freed; below ``RELEASE_MIN_BYTES`` nothing is done.
            None: always collect.
    """
    if nbytes is not None and nbytes < RELEASE_MIN_BYTES:
        return
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
