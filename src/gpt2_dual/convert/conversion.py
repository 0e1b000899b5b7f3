"""Conversions that prove themselves: read, write to a temporary folder, cross-check, rename.

``convert(src, dst, to=...)`` reads any format ``formats.FORMATS`` knows (or a Hub repo id),
writes the target format into a temporary folder beside ``dst``, reads the result back with
the target's own reader and cross-checks it against the source in gpt2_dual.pt and
gpt2_dual.tf (``crosscheck``). Only a result that passes is renamed to ``dst``; a failed,
refused or interrupted conversion leaves no output and never touches an existing ``dst``
unless ``overwrite`` is set.

``check(src)`` runs the cross-check of one checkpoint: gpt2_dual.pt against gpt2_dual.tf.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpt2_dual._io import TMP_MARK, atomic_write_text, make_dir_public, pid_alive
from gpt2_dual.checkpoint import loading
from gpt2_dual.checkpoint.names import HEADS
from gpt2_dual.convert import formats
from gpt2_dual.convert.crosscheck import Report, crosscheck
from gpt2_dual.convert.formats import DTYPES, FormatError, Source
from gpt2_dual.errors import ConversionError
from gpt2_dual.heads import HEAD_SPECS
from gpt2_dual.hub.paths import is_repo_id

logger = logging.getLogger(__name__)

# Temporary folders are named ``.<dst name>{TMP_MARK}<pid>-<random>`` beside ``dst`` (the
# mark of ``_io.atomic_write``'s files); a later conversion to the same ``dst`` removes those
# whose process is gone (killed runs).
#: ``--head`` choices: ``auto`` keeps the checkpoint's head.
HEAD_CHOICES = ("auto", *HEAD_SPECS)
#: ``--head`` short names accepted besides the table's keys.
HEAD_ALIASES = {"qa": "question_answering", "seq-cls": "sequence_classification",
                "token-cls": "token_classification", "double-heads": "double_heads"}  # fmt: skip


# --------------------------------------------------------------------------- sources
def open_source(src: str | os.PathLike, *, format: str | None = None, **hub: Any) -> Source:
    """Read a local checkpoint, or a transformers checkpoint from the Hub by repo id.

    Raises:
        FileNotFoundError: a local-looking path that does not exist.
        FormatError: a path in no known format.
    """
    path = Path(src)
    if path.exists() or format is not None or not is_repo_id(str(src)):
        return formats.read(path, format)
    return formats.read(_download(str(src), **hub), "hf")


def _download(repo_id: str, **hub: Any) -> Path:
    """The Hub files of a transformers checkpoint, in the local cache; their folder."""
    from gpt2_dual.checkpoint import hf
    from gpt2_dual.convert.hf_format import GENERATION_CONFIG
    from gpt2_dual.hub.resolve import resolve_file
    from gpt2_dual.tokenizer.files import ALL_NAMES

    config = Path(resolve_file(repo_id, "config.json", **hub))
    hf.find_checkpoint(repo_id, **hub)  # downloads the weights (every shard)
    for name in (GENERATION_CONFIG, *ALL_NAMES):
        resolve_file(repo_id, name, required=False, **hub)
    return config.parent


def with_head(source: Source, head: str | None) -> Source:
    """``source`` seen as a ``head`` model (None or ``"auto"``: its own head).

    Raises:
        ValueError: an unknown head, or one whose weights the checkpoint lacks.
    """
    head = HEAD_ALIASES.get(head or "auto", head or "auto")
    if head == "auto" or head == source.head:
        return source
    if head not in HEAD_SPECS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEAD_CHOICES)}")
    plan = loading.plan_load(source.config, head, source.view)
    if plan.report.missing:
        usable = [h for h in HEAD_SPECS if not loading.plan_load(
            source.config, h, source.view).report.missing]  # fmt: skip
        raise ValueError(
            f"--head {head}: the checkpoint was saved from {HEAD_SPECS[source.head].class_name} "
            f"and has no {', '.join(p.canonical for p in HEADS[head])} weights; heads it can "
            f"give: {', '.join(usable)}"
        )
    return replace(source, head=head)


# --------------------------------------------------------------------------- checks
def check(
    source: Source,
    *,
    against: Source | None = None,
    dtype: str = "float32",
    source_in_tf: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Cross-check ``source`` in both frameworks (and ``against`` it, when given).

    Sides, the first being the reference: the source in gpt2_dual.pt, the source in
    gpt2_dual.tf (unless ``source_in_tf=False``: already checked), then (with ``against``)
    the result in both.
    """
    sides = [("source pt", "pt", source.view)]
    if source_in_tf:
        sides.append(("source tf", "tf", source.view))
    if against is not None:
        sides += [("result pt", "pt", against.view), ("result tf", "tf", against.view)]
    report = crosscheck(sides, source.config, source.head, dtype, progress)
    report.notes.append(
        f"checkpoint: {source.format} {source.path} ({HEAD_SPECS[source.head].class_name})"
    )
    if against is not None:
        report.notes.append(f"result: {against.format} {against.path}")
    return report


def write_report(report: Report, path: str | os.PathLike) -> Path:
    """Write the report as JSON (atomically)."""
    return atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")


# --------------------------------------------------------------------------- convert
def convert(
    src: str | os.PathLike | Source,
    dst: str | os.PathLike,
    *,
    to: str = "hf",
    dtype: str | None = None,
    head: str | None = None,
    max_shard_size: int | str = "5GB",
    verify: bool = True,
    overwrite: bool = False,
    report_path: str | os.PathLike | None = None,
    source_in_tf: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Report | None:
    """Convert a checkpoint to format ``to`` at ``dst``, checked unless ``verify=False``.

    Args:
        src: a local checkpoint (any readable format), a Hub repo id, or a ``Source``.
        dst: the folder to create.
        to: target format (a writable key of ``formats.FORMATS``).
        dtype: ``"fp32"``/``"fp16"``/``"bf16"`` (or ``"float16"``, ...); None keeps the
            source's.
        head: the model to write (``"auto"``/None: the checkpoint's; ``"base"`` drops the head).
        max_shard_size: largest safetensors file (``to="hf"``).
        verify: cross-check the result against the source (the default).
        overwrite: replace an existing ``dst`` (only once the new one has passed).
        report_path: also write the report there as JSON (written when the check fails too).
        source_in_tf: also run the source in gpt2_dual.tf (False when it was just checked,
            e.g. it is the result of the previous conversion in a chain).
        progress: called with a description as each long step starts.

    Returns:
        The cross-check report (None with ``verify=False``).

    Raises:
        FileExistsError: ``dst`` exists and ``overwrite`` is False (checked before any work).
        ConversionError: the cross-check failed; nothing was written to ``dst``.
    """
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass --overwrite (overwrite=True) to replace it")
    if to not in formats.FORMATS or not formats.FORMATS[to].writable:
        formats.write(None, dst, to)  # raises FormatError naming the writable formats
    dtype = _dtype(dtype)
    progress = progress or (lambda what: None)
    progress(f"reading {src if not isinstance(src, Source) else src.path}")
    source = src if isinstance(src, Source) else open_source(src)
    source = with_head(source, head)
    _remove_leftovers(dst)
    prefix = f".{dst.name}{TMP_MARK}{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=_parent(dst)))
    make_dir_public(tmp)
    try:
        options = {"dtype": dtype}
        if to == "hf":
            options["max_shard_size"] = max_shard_size
        progress(f"writing {to}")
        formats.write(source, tmp, to, **options)
        report = _verify(source, tmp, dst, to, dtype, source_in_tf, progress) if verify else None
        if report is not None and report_path is not None:
            write_report(report, report_path)
        if report is not None and not report.ok:
            worst = report.failures()
            named = ", ".join(f"{c.side} {c.model}.{c.output}" for c in worst) or "greedy tokens"
            raise ConversionError(
                f"conversion refused: the result does not match the source ({named}); "
                f"nothing was written to {dst}\n{report.table()}",
                report,
            )
        _place(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _dtype(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    name = DTYPES.get(dtype, dtype)
    if name not in DTYPES.values():
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return name


def _parent(dst: Path) -> Path:
    parent = dst.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _verify(
    source: Source, tmp: Path, dst: Path, to: str, dtype: str | None, source_in_tf: bool,
    progress: Callable,
) -> Report:  # fmt: skip
    result = replace(formats.read(tmp, to), path=dst)
    stored = dtype or _stored_dtype(source)
    tolerance = stored if stored in ("float16", "bfloat16") else "float32"
    return check(source, against=result, dtype=tolerance, source_in_tf=source_in_tf,
                 progress=progress)  # fmt: skip


def _stored_dtype(source: Source) -> str:
    from gpt2_dual.checkpoint.safetensors_io import dtype_name

    return dtype_name(source.view["wte.weight"])


def _remove_leftovers(dst: Path) -> None:
    """Remove temporary folders of earlier conversions to ``dst`` whose process has died."""
    parent = dst.absolute().parent
    if not parent.is_dir():
        return
    for path in parent.glob(f".{dst.name}{TMP_MARK}*"):
        pid = path.name[len(f".{dst.name}{TMP_MARK}") :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)) and path.is_dir():
            logger.info("removing %s, left by an interrupted conversion", path)
            shutil.rmtree(path, ignore_errors=True)


def _place(tmp: Path, dst: Path) -> None:
    """Rename ``tmp`` to ``dst``; an existing ``dst`` is moved aside first and removed after."""
    if not dst.exists():
        os.replace(tmp, dst)
        return
    prefix = f".{dst.name}{TMP_MARK}{os.getpid()}-old-"
    old = Path(tempfile.mkdtemp(prefix=prefix, dir=dst.absolute().parent))
    old.rmdir()
    os.replace(dst, old)
    try:
        os.replace(tmp, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


__all__ = ["ConversionError", "FormatError", "check", "convert", "open_source", "with_head"]
