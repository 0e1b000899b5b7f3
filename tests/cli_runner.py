"""``gpt2-dual`` run in this process, as its console script runs it: ``gpt2_dual.cli.main(argv)``.

A subprocess pays a Python start with torch and TensorFlow imported (5-8 s) for every command;
here a command costs what it does. ``sys.stdin``, ``sys.stdout`` and ``sys.stderr`` are byte
streams of their own for the call, so what the CLI prints, logs (``logging`` writes to the
``stderr`` of the call, as in a terminal) or reads comes and goes as it would through pipes.
A bug (an exception ``main`` does not turn into an exit status) leaves a traceback on
``stderr`` and status 1, as the interpreter would.

Tests that need a fresh process keep ``subprocess``: the console script and ``python -m``
themselves, and behaviour fixed at start-up (environment, import order).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gpt2_dual.cli import main


@dataclass(frozen=True)
class Result:
    """What a process would leave: its exit status and its two output streams."""

    returncode: int
    stdout: str | bytes
    stderr: str | bytes


@contextlib.contextmanager
def _environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _root_logger_for_the_call() -> Iterator[None]:
    """An empty root logger, so ``main``'s ``logging.basicConfig`` writes to this call's
    ``stderr``; pytest's own handlers and the level come back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


@contextlib.contextmanager
def _directory(path: str | os.PathLike | None) -> Iterator[None]:
    saved = os.getcwd()
    try:
        if path is not None:
            os.chdir(path)
        yield
    finally:
        os.chdir(saved)


def run_cli(
    *args: str,
    stdin: str | bytes = "",
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Result:
    """``gpt2-dual ARGS`` with ``stdin``; ``env`` changes the environment and ``cwd`` the
    working directory for the call only. Output comes back as ``str`` for a ``str`` stdin,
    else as ``bytes``."""
    text = isinstance(stdin, str)
    raw_in = stdin.encode("utf-8") if text else stdin
    streams = {name: io.BytesIO() for name in ("stdout", "stderr")}
    wrapped = {name: io.TextIOWrapper(s, encoding="utf-8", write_through=True)
               for name, s in streams.items()}  # fmt: skip
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(raw_in), encoding="utf-8")
    sys.stdout, sys.stderr = wrapped["stdout"], wrapped["stderr"]
    try:
        with _environment(env or {}), _directory(cwd), _root_logger_for_the_call():
            try:
                code = main(list(args))
            except SystemExit as done:  # argparse: --help, --version, usage errors
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            except Exception:  # a bug: the interpreter would print it and exit with 1
                traceback.print_exc()
                code = 1
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    for stream in wrapped.values():
        stream.flush()
    out, err = (streams[name].getvalue() for name in ("stdout", "stderr"))
    if text:
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    return Result(code, out, err)
