"""``gpt2-dual serve`` as a process: where it listens, the API key, and SIGTERM/SIGINT.

Each server is ``python -m gpt2_dual serve`` in a subprocess on a tiny checkpoint (the real
vocabulary, so text round-trips), one thread per framework pool. It logs the URL it listens on
(``serving NAMES on http://HOST:PORT (...)``); the tests read the port from there (``--port 0``
picks a free one) and wait for ``/health`` in a bounded loop. HTTP is ``http.client`` from the
standard library, so a stream is read line by line as it arrives. Options a user gets wrong run
in this process (``cli_runner``): they fail before anything listens.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_runner import run_cli

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
torch = pytest.importorskip("torch")

NAME = "tiny"
START_SECONDS = 90  # bound on a server's start (a Python with torch, a tiny model)
EXIT_SECONDS = 30  # bound on an exit once the shutdown is due
BANNER = re.compile(r"serving (?P<names>.+) on http://(?P<host>[^:]+):(?P<port>\d+) \(")
ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1", "HF_HUB_OFFLINE": "1",
}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """A tiny GPT2LMHeadModel (real vocabulary, wide random weights, 1024 positions so a
    completion can run long) and the bundled tokenizer."""
    from gpt2_dual import GPT2Config, GPT2TokenizerFast
    from gpt2_dual.pt import GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_embd=48, n_layer=3, n_head=4, n_positions=1024, initializer_range=0.3)
    path = tmp_path_factory.mktemp("serve_lm")
    GPT2LMHeadModel(config).save_pretrained(path)
    GPT2TokenizerFast.from_pretrained("gpt2").save_pretrained(path)
    return str(path)


class Server:
    """``gpt2-dual serve FOLDER ARGS`` in a subprocess; its output lines are collected."""

    def __init__(self, folder: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "gpt2_dual", "serve", folder,
                   "--served-model-name", NAME, *args]  # fmt: skip
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **ENV, **(env or {})},
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        banner = self._wait_for_banner()
        self.host, self.port = banner["host"], int(banner["port"])
        self._wait_healthy()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))

    def _wait_for_banner(self) -> re.Match[str]:
        end = time.monotonic() + START_SECONDS
        while time.monotonic() < end and self.proc.poll() is None:
            found = next(filter(None, map(BANNER.search, list(self.lines))), None)
            if found:
                return found
            time.sleep(0.05)
        self.kill()
        raise AssertionError("the server did not start:\n" + "\n".join(self.lines))

    def _wait_healthy(self) -> None:
        for _ in range(100):
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("/health never answered 200:\n" + "\n".join(self.lines))

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:  # fmt: skip
        """One request on a new connection: (status, JSON body or {})."""
        conn = self.connection()
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, path, body=data, headers={
                "Content-Type": "application/json", **(headers or {})})  # fmt: skip
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw.strip().startswith(b"{") else {}
        finally:
            conn.close()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self) -> tuple[int, float]:
        """The exit status and the seconds it took from now."""
        start = time.monotonic()
        code = self.proc.wait(timeout=EXIT_SECONDS)
        seconds = time.monotonic() - start
        self._reader.join(timeout=5)
        self.proc.stdout.close()  # type: ignore[union-attr]
        return code, seconds

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait()


@pytest.fixture
def start(folder):
    """``start(*args, env=...)`` starts a server; any left running is killed afterwards."""
    servers: list[Server] = []

    def _start(*args: str, env: dict[str, str] | None = None) -> Server:
        servers.append(Server(folder, *args, env=env))
        return servers[-1]

    yield _start
    for server in servers:
        server.kill()


def _listening_addresses(port: int) -> set[str]:
    """The local IPv4/IPv6 addresses in state LISTEN on ``port`` (``/proc/net/tcp*``)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _completion(server: Server, max_tokens: int, headers: dict[str, str] | None = None):
    return server.request("POST", "/v1/completions", {
        "model": NAME, "prompt": "Hello, I'm a language model,", "max_tokens": max_tokens,
        "temperature": 0,
    }, headers)  # fmt: skip


class Stream:
    """A streamed completion read as it arrives: ``first()`` waits for the first chunk,
    ``rest()`` reads to the end (or to a cut connection)."""

    def __init__(self, server: Server, max_tokens: int) -> None:
        self.conn = server.connection()
        body = {"model": NAME, "prompt": "Hello, I'm a language model,", "stream": True,
                "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}  # fmt: skip
        self.conn.request("POST", "/v1/completions", body=json.dumps(body),
                          headers={"Content-Type": "application/json"})  # fmt: skip
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.events: list[str] = []
        self.cut = False

    def _next(self) -> str | None:
        try:
            line = self.response.readline()
        except (http.client.IncompleteRead, ConnectionError):
            self.cut = True
            return None
        if not line:
            return None
        return line.decode().strip()

    def first(self) -> None:
        while not self.events:
            line = self._next()
            assert line is not None, "the stream ended before its first chunk"
            if line.startswith("data: "):
                self.events.append(line[len("data: ") :])

    def rest(self) -> None:
        while (line := self._next()) is not None:
            if line.startswith("data: "):
                self.events.append(line[len("data: ") :])
        self.conn.close()

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    @property
    def finish_reasons(self) -> list[str]:
        chunks = [json.loads(e) for e in self.events if e != "[DONE]"]
        return [c["finish_reason"] for chunk in chunks for c in chunk.get("choices", [])
                if c.get("finish_reason")]  # fmt: skip


def test_listens_on_loopback_by_default_takes_the_key_from_the_environment_and_sigint_exits_0(
    start,
):
    port = _free_port()
    server = start("--port", str(port), env={"GPT2_DUAL_API_KEY": "env-key"})
    assert (server.host, server.port) == ("127.0.0.1", port)
    banner = next(line for line in server.lines if BANNER.search(line))
    assert f"serving {NAME} on http://127.0.0.1:{port} (pt, 16 slots, KV " in banner
    if Path("/proc/net/tcp").exists():  # Linux: the kernel's table of sockets
        assert _listening_addresses(port) == {"127.0.0.1"}
    key = {"Authorization": "Bearer env-key"}
    assert _completion(server, 2)[0] == 401
    assert _completion(server, 2, key)[0] == 200
    status, models = server.request("GET", "/v1/models", headers=key)
    assert status == 200 and [m["id"] for m in models["data"]] == [NAME]
    server.signal(signal.SIGINT)
    code, _ = server.wait()
    assert code == 0, "\n".join(server.lines)


def test_api_key_from_the_flag_wins_over_the_environment_and_sigterm_when_idle_exits_0(start):
    server = start("--port", "0", "--api-key", "flag-key", env={"GPT2_DUAL_API_KEY": "env-key"})
    for headers in ({}, {"Authorization": "Bearer env-key"}, {"Authorization": "flag-key"}):
        status, body = _completion(server, 2, headers)
        assert status == 401, headers
        assert body["error"]["type"] == "AuthenticationError"
        assert server.request("GET", "/v1/models", headers=headers)[0] == 401
    status, body = _completion(server, 2, {"Authorization": "Bearer flag-key"})
    assert status == 200 and body["usage"]["completion_tokens"] == 2
    assert server.request("GET", "/health")[0] == 200  # health checks need no key (as vLLM)
    server.signal(signal.SIGTERM)
    code, seconds = server.wait()
    assert code == 0, "\n".join(server.lines)
    print(f"idle SIGTERM: exit 0 after {seconds:.2f} s")


def test_sigterm_lets_a_stream_in_flight_finish_and_admits_nothing_new(start):
    server = start("--port", "0", "--shutdown-timeout", "60")
    stream = Stream(server, max_tokens=300)  # still running when the listener closes
    stream.first()
    server.signal(signal.SIGTERM)
    start_time = time.monotonic()
    for _ in range(200):  # the listener closes at once; the stream runs on
        try:
            socket.create_connection((server.host, server.port), timeout=5).close()
        except ConnectionRefusedError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the server still accepts connections after SIGTERM")
    stream.rest()
    assert stream.done and not stream.cut
    assert stream.finish_reasons == ["length"]
    code, _ = server.wait()
    assert code == 0, "\n".join(server.lines)
    print(f"SIGTERM mid-stream, 60 s grace: stream done, exit 0 after "
          f"{time.monotonic() - start_time:.2f} s")  # fmt: skip


def test_sigterm_past_the_shutdown_timeout_aborts_a_stream_and_exits_0(start):
    server = start("--port", "0", "--shutdown-timeout", "0")
    stream = Stream(server, max_tokens=900)
    stream.first()
    server.signal(signal.SIGTERM)
    start_time = time.monotonic()
    stream.rest()
    assert stream.done and not stream.cut
    assert stream.finish_reasons == ["abort"]
    code, _ = server.wait()
    assert code == 0, "\n".join(server.lines)
    print(f"SIGTERM mid-stream, 0 s grace: stream aborted, exit 0 after "
          f"{time.monotonic() - start_time:.2f} s")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-num-seqs", "0"], "--max-num-seqs must be at least 1, got 0"),
        (["--max-queue", "-1"], "--max-queue must be at least 1, got -1"),
        (["--max-model-len", "0"], "--max-model-len must be at least 1, got 0"),
        (["--port", "70000"], "--port must be in 0..65535, got 70000"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout must be at least 0, got -1.0"),
        (["--api-key", ""], "--api-key is empty: give a key, or leave the option out"),
        (["--load-in-4bit", "--framework", "tf"],
         "--load-in-4bit is bitsandbytes quantization, PyTorch only: use --framework pt"),
        (["--load-in-8bit", "--framework", "tf"],
         "--load-in-8bit is bitsandbytes quantization, PyTorch only: use --framework pt"),
    ],
)  # fmt: skip
def test_an_option_out_of_range_is_one_line_exit_2(folder, args, message):
    result = run_cli("serve", folder, *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"gpt2-dual serve: error: {message}\n"


def test_a_missing_folder_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_cli("serve", str(missing), "--framework", "pt", env={"HF_HUB_OFFLINE": "1"})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("gpt2-dual serve: error: ") and str(missing) in result.stderr


def test_a_port_in_use_is_one_line_exit_2(folder):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", folder, "--port", str(port), "--max-num-seqs", "2")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"gpt2-dual serve: error: cannot listen on http://127.0.0.1:{port}: "
        "Address already in use\n"
    )


@pytest.mark.parametrize("package", ["uvicorn", "starlette"])
def test_without_the_serve_extra_it_names_the_extra(tmp_path, monkeypatch, package):
    gone = ("gpt2_dual.serve.app", "gpt2_dual.serve.server", package)
    for name in [m for m in sys.modules if m.startswith(gone)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)  # what an import finds when not installed
    result = run_cli("serve", str(tmp_path / "never-loaded"))  # the check comes before the load
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"gpt2-dual serve: error: gpt2-dual serve needs {package}, not installed: "
        "pip install 'gpt2_dual[serve]'\n"
    )
