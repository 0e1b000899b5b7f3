"""What ``bench_serve.py`` and ``soak_serve.py`` share: a model folder to serve, prompts of real
words, a server subprocess on loopback, and an asyncio + httpx client for OpenAI completions
(streamed server-sent events parsed by hand, so one client code measures every server).

Everything here is bounded: servers get a start-up deadline and are stopped with SIGTERM then
SIGKILL; every request has a timeout; a load phase has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

MODEL_NAME = "gpt2-bench"  # --served-model-name given to every server


# --------------------------------------------------------------------------- model and prompts
def build_folder(path: str | Path, *, shape: str = "small", seed: int = 0) -> Path:
    """Write a random-weight GPT-2 in transformers' layout with the real vocabulary to ``path``.

    ``shape`` "small" is gpt2 (124M: 12 layers, 12 heads of 64, 768 wide); "tiny" is 2 layers,
    2 heads of 64 (vLLM's CPU attention needs 64-wide heads), 128 wide, 256 positions.
    The tokenizer files are the bundled GPT-2 vocabulary (``gpt2_dual/data/gpt2/``).
    """
    import torch
    import transformers

    from gpt2_dual.hub.bundled import BUNDLED_FILES, bundled_vocab_dir

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sizes = {} if shape == "small" else dict(n_layer=2, n_head=2, n_embd=128, n_positions=256)
    config = transformers.GPT2Config(**sizes)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(path)
    vocab = bundled_vocab_dir()
    for name in sorted(BUNDLED_FILES):
        shutil.copyfile(vocab / name, path / name)
    return path


class Prompts:
    """Prompts of real words, ``tokens`` tokens each, fixed by ``seed`` and a key.

    The words are vocabulary entries that are one lowercase word after a space (``Ġword``, 3+
    letters), so a prompt of ``tokens`` words is exactly ``tokens`` tokens (checked).
    """

    def __init__(self, tokenizer, tokens: int, seed: int) -> None:
        vocab = tokenizer.get_vocab()
        self.words = sorted(
            t[1:]
            for t in vocab
            if t.startswith("Ġ")
            and t[1:].isascii()  # byte-level pieces such as "âĸł" pass isalpha()
            and t[1:].isalpha()
            and t[1:].islower()
            and len(t) > 3
        )
        self.tokenizer, self.tokens, self.seed = tokenizer, tokens, seed

    def __call__(self, *key: int) -> str:
        """The prompt for ``key`` (e.g. concurrency, client, request number)."""
        rng = np.random.default_rng([self.seed, *key])
        text = "".join(" " + self.words[i] for i in rng.integers(0, len(self.words), self.tokens))
        if len(self.tokenizer.encode(text)) != self.tokens:
            raise AssertionError(f"prompt {text!r} is not {self.tokens} tokens")
        return text


def load_tokenizer(folder: str | Path):
    from gpt2_dual import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(folder))


# --------------------------------------------------------------------------- server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` in ``/proc/<pid>/status``), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Server:
    """A server subprocess on 127.0.0.1: its command, log file and base URL."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    start_timeout: float = 600.0
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))
    proc: subprocess.Popen | None = None
    started_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        """Start the process and wait until ``GET /health`` answers 200."""
        start = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = start + self.start_timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2, trust_env=False).status_code == 200:
                    self.started_s = time.perf_counter() - start
                    return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"{self.name} not healthy after {self.start_timeout:.0f} s: {self.tail()}"
        )

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL to the process group after ``grace`` seconds; the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ours_command(
    folder: str,
    port: int,
    *,
    max_num_seqs: int,
    dtype: str = "float32",
    framework: str = "pt",
    extra: list[str] | None = None,
) -> list[str]:
    """``python -m gpt2_dual serve`` with vLLM's flag names."""
    return [
        sys.executable,
        "-m",
        "gpt2_dual",
        "serve",
        folder,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-num-seqs",
        str(max_num_seqs),
        "--dtype",
        dtype,
        "--framework",
        framework,
        "--served-model-name",
        MODEL_NAME,
        *(extra or []),
    ]


def thread_env(threads: int) -> dict[str, str]:
    """The environment that pins a server's compute threads (torch and vLLM CPU read these)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


# --------------------------------------------------------------------------- one request
@dataclass
class Reply:
    """One completion request as the client saw it."""

    status: int = 0
    sent: float = 0.0  # perf_counter when sent
    chunk_times: list[float] = field(default_factory=list)  # arrival of each data chunk
    texts: dict[int, str] = field(default_factory=dict)  # choice index -> text
    finish: dict[int, str | None] = field(default_factory=dict)
    usage: dict | None = None
    body: object = None  # the JSON of a non-streamed answer or of an error
    done: bool = False  # saw ``data: [DONE]``
    error: str | None = None  # transport or protocol problem seen by the client

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.sent if self.chunk_times else None

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:], strict=False)]


async def complete(
    client: httpx.AsyncClient, url: str, body: dict | bytes, *, stop_after_chunks: int | None = None
) -> Reply:
    """POST ``body`` (a dict, or raw bytes sent as JSON) to ``url`` and read the answer.

    Streams are read line by line (``data: {...}`` events up to ``data: [DONE]``). With
    ``stop_after_chunks``, the client closes the connection after that many chunks (a client
    that goes away mid-stream).
    """
    reply = Reply(sent=time.perf_counter())
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    try:
        async with client.stream("POST", url, content=content, headers=headers) as resp:
            reply.status = resp.status_code
            streamed = resp.headers.get("content-type", "").startswith("text/event-stream")
            if resp.status_code != 200 or not streamed:
                raw = await resp.aread()
                try:
                    reply.body = json.loads(raw)
                except ValueError:
                    reply.error = f"not JSON: {raw[:200]!r}"
                return reply
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    reply.done = True
                    break
                _take_chunk(reply, json.loads(data))
                if stop_after_chunks is not None and len(reply.chunk_times) >= stop_after_chunks:
                    break  # leaving the block closes the connection
    except (httpx.HTTPError, ValueError) as err:
        reply.error = f"{type(err).__name__}: {err}"
    return reply


def _take_chunk(reply: Reply, chunk: dict) -> None:
    if "error" in chunk:
        reply.body, reply.error = chunk, f"error event: {chunk['error']}"
        return
    if chunk.get("usage"):
        reply.usage = chunk["usage"]
    choices = chunk.get("choices") or []
    if choices:
        reply.chunk_times.append(time.perf_counter())
    for choice in choices:
        i = choice.get("index", 0)
        reply.texts[i] = reply.texts.get(i, "") + (choice.get("text") or "")
        if choice.get("finish_reason") is not None:
            reply.finish[i] = choice["finish_reason"]


# --------------------------------------------------------------------------- load
@dataclass
class LoadResult:
    """One server at one concurrency."""

    concurrency: int
    wall_s: float
    replies: list[Reply]
    max_tokens: int
    timed_out: bool = False

    @property
    def ok(self) -> list[Reply]:
        return [r for r in self.replies if r.status == 200 and r.done and not r.error]

    def tokens(self, reply: Reply) -> int:
        """Generated tokens: usage when sent, else ``max_tokens`` for a "length" finish."""
        if reply.usage:
            return reply.usage["completion_tokens"]
        return self.max_tokens if reply.finish.get(0) == "length" else len(reply.chunk_times)

    def summary(self) -> dict:
        ok = self.ok
        ttft = [r.ttft for r in ok if r.ttft is not None]
        gaps = [g for r in ok for g in r.gaps]
        generated = sum(self.tokens(r) for r in ok)
        return dict(
            concurrency=self.concurrency,
            requests=len(self.replies),
            ok=len(ok),
            failed=len(self.replies) - len(ok),
            timed_out=self.timed_out,
            wall_s=self.wall_s,
            tokens=generated,
            tokens_per_s=generated / self.wall_s,
            requests_per_s=len(ok) / self.wall_s,
            ttft_p50=percentile(ttft, 50),
            ttft_p99=percentile(ttft, 99),
            itl_p50=percentile(gaps, 50),
            errors=sorted({r.error or f"HTTP {r.status}" for r in self.replies if r not in ok}),
        )


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), None for no values."""
    return float(np.percentile(values, q)) if values else None


async def run_load(
    base_url: str,
    prompt_of: Callable[[int, int], str],
    concurrency: int,
    *,
    max_tokens: int,
    requests_per_client: int,
    duration: float | None = None,
    request_timeout: float = 600.0,
    phase_timeout: float = 3600.0,
    model: str = MODEL_NAME,
) -> LoadResult:
    """``concurrency`` clients, each sending completions one after another (greedy,
    ``max_tokens`` with ``ignore_eos``, streamed), client c's k-th prompt ``prompt_of(c, k)``:
    ``requests_per_client`` each, or as many as start within ``duration`` seconds when given.
    The phase ends by ``phase_timeout`` at the latest (unfinished requests are cancelled)."""
    limits = httpx.Limits(
        max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4
    )
    timeout = httpx.Timeout(request_timeout, connect=30)
    replies: list[Reply] = []
    start = time.perf_counter()

    def more(k: int) -> bool:
        if duration is None:
            return k < requests_per_client
        return time.perf_counter() - start < duration

    async def client_loop(client: httpx.AsyncClient, c: int) -> None:
        k = 0
        while more(k):
            body = dict(
                model=model,
                prompt=prompt_of(c, k),
                max_tokens=max_tokens,
                temperature=0,
                ignore_eos=True,
                stream=True,
            )
            replies.append(await complete(client, base_url + "/v1/completions", body))
            k += 1

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        tasks = [asyncio.create_task(client_loop(client, c)) for c in range(concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=phase_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - start
    return LoadResult(concurrency, wall, replies, max_tokens, timed_out=bool(pending))
