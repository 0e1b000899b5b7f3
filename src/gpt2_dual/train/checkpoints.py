"""The output folder of a training run: claiming it, and checkpoints written atomically.

A run's folder holds, as transformers' Trainer lays it out, ``checkpoint-<step>/`` folders,
``trainer_state.json``, ``runs/`` (TensorBoard) and, at the end, the final model. A checkpoint
is first written into ``.checkpoint-<step>.tmp`` and renamed to ``checkpoint-<step>`` only when
every process has written its files, so a run killed at any moment (``kill -9``) leaves either
a complete checkpoint or a ``.tmp`` folder that ``latest_checkpoint`` ignores and the next
``write_checkpoint`` (or ``claim_output_dir``) removes.

Example:
    >>> resume_from = claim_output_dir(Path("out"), resume=True, overwrite=False)
    >>> write_checkpoint(Path("out"), 100, lambda folder: save(folder), save_total_limit=2)
"""

from __future__ import annotations

import logging
import numbers
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from gpt2_dual.errors import InvalidInputError, TrainingError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
#: The files and folders of a run (besides its checkpoints) that mark a folder as held.
STATE_FILE = "trainer_state.json"
RUNS_DIR = "runs"
_STEP = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)")
#: Temporary folders: ``.checkpoint-<step>.tmp`` (being written), ``.checkpoint-<step>.old.tmp``
#: (being deleted).
_TMP_GLOB = f".{CHECKPOINT_PREFIX}*.tmp"


def claim_output_dir(output_dir: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Check that a run may write into ``output_dir``, before anything is written.

    Call it on the main process only, before training starts. When it refuses, nothing on
    disk is created or changed. When it accepts, it removes the ``.tmp`` folders of an earlier
    run's interrupted checkpoint writes (nothing else).

    Args:
        output_dir: the run's folder (``--output-dir``); it need not exist yet.
        resume: continue the run in ``output_dir`` (``--resume``).
        overwrite: replace the run in ``output_dir`` (``--overwrite``); nothing is deleted
            here: call ``clear_run`` once the rest of the set-up has been checked.

    Returns:
        With ``resume``: the newest complete checkpoint folder, or None when there is none (a
        fresh start). Otherwise None.

    Raises:
        InvalidInputError: both ``resume`` and ``overwrite``.
        TrainingError: ``output_dir`` holds a run (``trainer_state.json`` or a
            ``checkpoint-*``) and neither flag is given; or ``output_dir`` (or the folder it
            would be created in) is not a writable folder.
    """
    output_dir = Path(output_dir)
    if resume and overwrite:
        raise InvalidInputError(
            "--resume and --overwrite cannot be given together: --resume continues the run in "
            f"{output_dir}, --overwrite replaces it"
        )
    _check_writable(output_dir)
    if not (resume or overwrite):
        held = _run_marker(output_dir)
        if held is not None:
            raise TrainingError(
                f"--output-dir {output_dir} already holds a training run ({held} is there); "
                "pass --resume to continue it or --overwrite to replace it"
            )
    if output_dir.is_dir():
        _remove_tmp_folders(output_dir)
    return latest_checkpoint(output_dir) if resume else None


def clear_run(output_dir: Path) -> None:
    """Delete an earlier run from ``output_dir``: its ``checkpoint-*`` (and ``.tmp``) folders,
    ``trainer_state.json`` and ``runs/``; every other file is left alone."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return
    doomed = [*output_dir.glob(f"{CHECKPOINT_PREFIX}*"), *output_dir.glob(_TMP_GLOB)]
    doomed += [p for p in (output_dir / STATE_FILE, output_dir / RUNS_DIR) if p.exists()]
    for path in sorted(doomed):
        _delete(path)
    logger.info("Removed the earlier run in %s (%d entries)", output_dir, len(doomed))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete ``checkpoint-<step>`` folder with the highest step in ``output_dir``, or
    None (no such folder, or no ``output_dir``); ``.tmp`` folders are never complete."""
    found = _checkpoints(Path(output_dir))
    return found[-1][1] if found else None


def write_checkpoint(
    output_dir: Path,
    step: int,
    write: Callable[[Path], None],
    *,
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
    save_total_limit: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically; every process of the run calls it.

    The main process removes stale ``.tmp`` folders and creates an empty
    ``.checkpoint-<step>.tmp``; ``barrier()``; every process calls ``write(tmp)`` (each writes
    its own files); ``barrier()``; the main process fsyncs the files, renames the folder to
    ``checkpoint-<step>`` (replacing one of that step) and deletes the oldest complete
    checkpoints beyond ``save_total_limit``; ``barrier()``. If ``write`` raises, the main
    process removes its ``.tmp`` folder and the earlier checkpoints stay as they were.

    Args:
        output_dir: the run's folder (created if needed).
        step: the optimizer steps taken; names the folder.
        write: writes this process's files into the folder it is given.
        is_main: whether this is the process that manages the folders (rank 0).
        barrier: waits for every process of the run (a no-op for one process).
        save_total_limit: keep at most this many checkpoints, deleting the lowest steps
            first, never the one just written; None or <= 0 keeps them all (transformers).

    Returns:
        The ``checkpoint-<step>`` folder (on every process).
    """
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise InvalidInputError(f"checkpoint step must be an int >= 0, got {step!r}")
    step = int(step)
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    tmp = output_dir / f".{final.name}.tmp"
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        _remove_tmp_folders(output_dir)
        tmp.mkdir()
    barrier()
    try:
        write(tmp)
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    if is_main:
        _fsync_tree(tmp)
        if final.exists():
            _delete(final)
        os.replace(tmp, final)
        _fsync_dir(output_dir)
        _rotate(output_dir, keep=final, limit=save_total_limit)
        logger.info("Saved %s", final)
    barrier()
    return final


def _check_writable(output_dir: Path) -> None:
    """TrainingError naming the folder when ``output_dir`` cannot be created or written."""
    folder = output_dir
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent  # the nearest existing folder is where output_dir would be made
    if not folder.is_dir():
        what = "a broken link" if folder.is_symlink() and not folder.exists() else "a file"
        raise TrainingError(
            f"--output-dir {output_dir} cannot be written: {folder} is {what}, not a folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrainingError(
            f"--output-dir {output_dir} cannot be written: no permission to write in the "
            f"folder {folder}"
        )
    if folder == output_dir and not os.access(folder, os.R_OK):
        raise TrainingError(
            f"--output-dir {output_dir} cannot be read: no permission to list the folder {folder}"
        )


def _run_marker(output_dir: Path) -> Path | None:
    """The first entry that shows ``output_dir`` holds a run, or None."""
    if not output_dir.is_dir():
        return None
    if (output_dir / STATE_FILE).exists():
        return output_dir / STATE_FILE
    return min(output_dir.glob(f"{CHECKPOINT_PREFIX}*"), default=None)


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders, ``(step, path)`` sorted by step."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
        match = _STEP.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _rotate(output_dir: Path, *, keep: Path, limit: int | None) -> None:
    """Delete the lowest-step checkpoints beyond ``limit``, never ``keep``."""
    if limit is None or limit <= 0:
        return
    others = [path for _, path in _checkpoints(output_dir) if path != keep]
    for path in others[: max(0, len(others) + 1 - limit)]:
        _delete(path)
        logger.info("Deleted %s (save_total_limit=%d)", path, limit)


def _remove_tmp_folders(output_dir: Path) -> None:
    for path in output_dir.glob(_TMP_GLOB):
        logger.info("Removing %s, left by an interrupted checkpoint write", path)
        _delete(path)


def _delete(path: Path) -> None:
    """Remove a file or folder; a folder is first renamed out of the checkpoints' names, so an
    interrupted delete never leaves a partial ``checkpoint-<step>``."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    if not path.name.endswith(".tmp"):
        aside = path.with_name(f".{path.name}.old.tmp")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(path, aside)
        path = aside
    shutil.rmtree(path)


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
