"""``gpt2-dual serve MODEL``: an OpenAI-compatible HTTP server with continuous batching.

A thin front over ``gpt2_dual.serve``: ``Engine.from_pretrained(MODEL, ...)`` loads the model,
``serve(engine, ...)`` runs it on uvicorn until SIGTERM or Ctrl-C, then exits with status 0
after the requests in flight finished or ``--shutdown-timeout`` passed. Flags take vLLM's names
where vLLM has the flag (``--host``, ``--port``, ``--served-model-name``, ``--api-key``,
``--max-num-seqs``, ``--max-model-len``, ``--dtype``, ``--chat-template``,
``--uvicorn-log-level``); the API key may also come from ``GPT2_DUAL_API_KEY`` (vLLM reads
``VLLM_API_KEY``). The server listens on loopback unless ``--host`` says otherwise. Errors a
user can fix (no such model, an option out of range, a port in use) print one line to stderr and
exit with status 2 (``gpt2_dual.cli``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from gpt2_dual.cli.loading import add_loading_flags, loading_options

#: The environment variable read for the API key when ``--api-key`` is not given.
ENV_API_KEY = "GPT2_DUAL_API_KEY"
#: What the ``serve`` extra installs for the HTTP side.
SERVING_PACKAGES = ("uvicorn", "starlette")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
#: Options that must be at least 1 (``--max-model-len`` when given).
_POSITIVE = ("max_num_seqs", "max_queue", "max_body_bytes", "max_model_len")


def add_parser(sub: Any) -> None:
    """Add the ``serve`` subcommand to the ``gpt2-dual`` subparsers."""
    p = sub.add_parser(
        "serve",
        help="serve a GPT-2 checkpoint over HTTP with OpenAI's API (completions, chat)",
        description="Serve a checkpoint over HTTP with OpenAI's API and continuous batching, "
        "e.g. gpt2-dual serve ./my-gpt2 --port 8000; then POST /v1/completions.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or Hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument(
        "--served-model-name", nargs="+", metavar="NAME",
        help="the model names requests may use; the first is reported (default: MODEL as given)",
    )  # fmt: skip
    p.add_argument(
        "--api-key", metavar="KEY",
        help=f"requests without 'Authorization: Bearer KEY' get 401 (default: ${ENV_API_KEY})",
    )  # fmt: skip
    add_loading_flags(p)
    p.add_argument(
        "--max-num-seqs", type=int, default=16, metavar="N",
        help="sequences decoded together, one KV slot each (default 16)",
    )  # fmt: skip
    p.add_argument(
        "--max-model-len", type=int, metavar="N",
        help="prompt plus completion tokens at most (default: the model's n_positions)",
    )  # fmt: skip
    p.add_argument(
        "--max-queue", type=int, default=256, metavar="N",
        help="requests waiting for a slot at most; more get 429 (default 256)",
    )  # fmt: skip
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, metavar="N",
        help="larger request bodies get 413 (default 1 MiB)",
    )  # fmt: skip
    p.add_argument(
        "--chat-template", metavar="FILE",
        help="a Jinja chat template file (or the template itself) for /v1/chat/completions",
    )  # fmt: skip
    p.add_argument(
        "--shutdown-timeout", type=float, default=10.0, metavar="SECONDS",
        help="after SIGTERM, seconds requests in flight may run before they are aborted "
        "(default 10)",
    )  # fmt: skip
    p.add_argument("--uvicorn-log-level", choices=LOG_LEVELS, default="info", help="default: info")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    """ValueError for an option out of range, before anything is loaded."""
    for name in _POSITIVE:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if not args.shutdown_timeout >= 0:  # also NaN
        raise ValueError(f"--shutdown-timeout must be at least 0, got {args.shutdown_timeout}")
    if args.api_key == "":
        raise ValueError("--api-key is empty: give a key, or leave the option out")


def _chat_template(value: str | None) -> str | None:
    """The template text: the file's content, or ``value`` itself when it reads as a template
    (vLLM's rule); OSError for a file that cannot be read."""
    if value is None:
        return None
    if any(mark in value for mark in ("{{", "{%")):
        return value
    return Path(value).read_text(encoding="utf-8")


def _serve_function() -> Any:
    """``gpt2_dual.serve.server.serve``, imported before the model loads; ImportError naming the
    extra when the HTTP packages are not installed."""
    try:
        from gpt2_dual.serve.server import serve
    except ModuleNotFoundError as err:
        package = (err.name or "").split(".")[0]
        if package not in SERVING_PACKAGES:
            raise
        raise ImportError(
            f"gpt2-dual serve needs {package}, not installed: pip install 'gpt2_dual[serve]'"
        ) from err
    return serve


def run(args: argparse.Namespace) -> int:
    """Run ``gpt2-dual serve``; user errors raise (``gpt2_dual.cli.main`` reports them)."""
    _check(args)
    api_key = args.api_key or os.environ.get(ENV_API_KEY) or None
    chat_template = _chat_template(args.chat_template)
    load = loading_options(args)
    logging.getLogger("gpt2_dual.serve").setLevel(logging.INFO)  # the "serving ... on URL" line
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    serve = _serve_function()
    from gpt2_dual.serve import Engine

    engine = Engine.from_pretrained(
        args.model,
        framework=load["framework"],
        dtype=load["dtype"],
        device=load["device"],
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        max_queue=args.max_queue,
        chat_template=chat_template,
        **load["model_kwargs"],
    )
    return serve(
        engine,
        host=args.host,
        port=args.port,
        served_model_names=args.served_model_name or [args.model],
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        shutdown_timeout=args.shutdown_timeout,
        log_level=args.uvicorn_log_level,
    )
