"""A bounded soak of ``gpt2-dual serve`` on 127.0.0.1: random requests, cancellations and bad
bodies for ``--duration`` seconds, then the checks of issue 19.

``--concurrency`` clients loop until the duration is over, each request drawn at random:
- a valid completion (55%): streamed or not, ``max_tokens`` 1-32, ``n`` 1-3, greedy or sampled
  (``temperature``, ``top_p``, ``top_k``, ``seed``), stop strings, ``logprobs``, ``ignore_eos``,
  a prompt of 1-40 words or of token ids;
- a stream that the client drops after 1-5 chunks (15%);
- a bad request (20%) with the answer it must get: malformed JSON, a missing prompt, a
  negative or too large ``max_tokens``, ``temperature`` < 0, ``n`` 0, a field of the wrong
  type (400), an unknown model (404), a body over ``--max-body-bytes`` (413), a chat request to a
  model without a chat template (400);
- ``GET /v1/models``, ``/health`` or ``/metrics`` (10%).

Checks (exit status 1 when one fails): every answer is the intended one (valid requests 200 with
``n`` finished choices, bad ones their status and an OpenAI error object ``{"error": {message,
type, param, code}}``; 429/503 count as intended when they carry that object); at the end every
slot is free (``/metrics``: running 0, waiting 0); the server's resident memory at the end is
within 10% of the one after ``--warmup`` seconds; no traceback in the server's log; SIGTERM
exits 0.

Usage:
    python benchmarks/soak_serve.py                          # 300 s, tiny real-vocab model
    python benchmarks/soak_serve.py --duration 20 --warmup 5  # smoke run
    python benchmarks/soak_serve.py --shape small --duration 600
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402

STOPS = (" the", ".", "\n", " and", ",")
CHAT_URL = "/v1/chat/completions"


class Soak:
    """The request mix and the tally of what came back."""

    def __init__(self, url: str, max_model_len: int, args: argparse.Namespace, prompts) -> None:
        self.url, self.max_model_len, self.args, self.prompts = url, max_model_len, args, prompts
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []

    # ----------------------------------------------------------------- the mix
    def valid_body(self, rng: random.Random, stream: bool) -> dict:
        body: dict = dict(model=loadgen.MODEL_NAME, max_tokens=rng.randint(1, 32), stream=stream)
        if rng.random() < 0.2:
            body["prompt"] = [rng.randrange(50257) for _ in range(rng.randint(1, 40))]
        else:
            body["prompt"] = self.prompts(rng.randrange(1 << 30), rng.randint(1, 40))
        body["n"] = rng.choice((1, 1, 2, 3))
        if rng.random() < 0.5:
            body["temperature"] = 0
        else:
            body.update(temperature=rng.choice((0.7, 1.0, 1.3)), top_p=rng.choice((1.0, 0.9)))
            body["top_k"] = rng.choice((0, 40))
            if rng.random() < 0.7:
                body["seed"] = rng.randrange(1 << 31)
        if rng.random() < 0.4:
            body["stop"] = rng.sample(STOPS, rng.randint(1, 2))
        if rng.random() < 0.2:
            body["logprobs"] = rng.randint(0, 5)
        if rng.random() < 0.3:
            body["ignore_eos"] = True
        return body

    def bad_request(self, rng: random.Random) -> tuple[str, str, bytes | dict, int]:
        """(kind, path, body, expected status) of one bad request."""
        ok = dict(model=loadgen.MODEL_NAME, prompt=self.prompts(rng.randrange(1 << 30), 4))
        path = "/v1/completions"
        kinds = {
            "malformed JSON": (b'{"model": "x", "prompt": ', 400),
            "missing prompt": ({"model": loadgen.MODEL_NAME, "max_tokens": 4}, 400),
            "negative max_tokens": (dict(ok, max_tokens=-rng.randint(1, 5)), 400),
            "max_tokens past the context": (dict(ok, max_tokens=self.max_model_len), 400),
            "negative temperature": (dict(ok, temperature=-0.5), 400),
            "n 0": (dict(ok, n=0), 400),
            "wrong field type": (dict(ok, max_tokens="ten"), 400),
            "unknown model": (dict(ok, model="no-such-model"), 404),
            "oversize body": (dict(ok, prompt="x" * (self.args.max_body_bytes + 1024)), 413),
            "chat without template": (
                {"model": loadgen.MODEL_NAME, "messages": [{"role": "user", "content": "hi"}]},
                400,
            ),
        }
        kind = rng.choice(sorted(kinds))
        body, status = kinds[kind]
        return kind, CHAT_URL if kind == "chat without template" else path, body, status

    # ----------------------------------------------------------------- one request
    async def one(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.55:
            body = self.valid_body(rng, stream=rng.random() < 0.5)
            reply = await loadgen.complete(client, self.url + "/v1/completions", body)
            self.check_valid("completion", body, reply)
        elif roll < 0.70:
            body = dict(self.valid_body(rng, stream=True), max_tokens=rng.randint(32, 64))
            body.pop("stop", None)
            drop = rng.randint(1, 5)
            reply = await loadgen.complete(
                client, self.url + "/v1/completions", body, stop_after_chunks=drop
            )
            self.expect("cancel", reply.status == 200 and reply.error is None, reply)
        elif roll < 0.90:
            kind, path, body, status = self.bad_request(rng)
            reply = await loadgen.complete(client, self.url + path, body)
            self.check_error(kind, status, reply)
        else:
            path = rng.choice(("/v1/models", "/health", "/metrics"))
            try:
                resp = await client.get(self.url + path)
                self.expect(f"GET {path}", resp.status_code == 200, f"HTTP {resp.status_code}")
            except httpx.HTTPError as err:
                self.expect(f"GET {path}", False, f"{type(err).__name__}: {err}")

    def check_valid(self, kind: str, body: dict, reply: loadgen.Reply) -> None:
        if reply.status in (429, 503) and _is_error_object(reply.body):
            self.counts[f"refused {reply.status} (intended)"] += 1
            return
        n = body["n"]
        if reply.status != 200 or reply.error:
            return self.expect(kind, False, reply)
        if body["stream"]:
            finish = reply.finish
            good = reply.done and sorted(finish) == list(range(n))
        else:
            choices = reply.body.get("choices", [])
            finish = {c["index"]: c["finish_reason"] for c in choices}
            used = reply.body.get("usage", {}).get("completion_tokens", -1)
            good = sorted(finish) == list(range(n)) and 0 <= used <= n * body["max_tokens"]
        good = good and all(r in ("stop", "length") for r in finish.values())
        self.expect(f"{kind} {'stream' if body['stream'] else 'whole'}", good, reply)

    def check_error(self, kind: str, status: int, reply: loadgen.Reply) -> None:
        good = reply.status == status and _is_error_object(reply.body)
        self.expect(f"{kind} -> {status}", good, reply)

    def expect(self, kind: str, good: bool, detail: object) -> None:
        self.counts[kind if good else f"UNEXPECTED {kind}"] += 1
        if not good and len(self.failures) < 20:
            if isinstance(detail, loadgen.Reply):
                detail = f"HTTP {detail.status} {detail.error or ''} {str(detail.body)[:300]}"
            self.failures.append(f"{kind}: {detail}")

    # ----------------------------------------------------------------- the run
    async def run(self, duration: float, on_warm, sample) -> None:
        """Clients until ``duration``; ``on_warm()`` after ``--warmup`` s; ``sample()`` (an RSS
        reading) ten times along the way."""
        start = time.perf_counter()
        limits = httpx.Limits(max_connections=self.args.concurrency + 4)
        timeout = httpx.Timeout(self.args.request_timeout, connect=30)

        async def worker(i: int) -> None:
            rng = random.Random(self.args.seed * 1000 + i)
            async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as c:
                while time.perf_counter() - start < duration:
                    await self.one(c, rng)

        async def warm_mark() -> None:
            await asyncio.sleep(min(self.args.warmup, duration))
            on_warm()
            while True:
                await asyncio.sleep(max(duration / 10, 1.0))
                sample()

        tasks = [asyncio.create_task(worker(i)) for i in range(self.args.concurrency)]
        marker = asyncio.create_task(warm_mark())
        _, pending = await asyncio.wait(tasks, timeout=duration + self.args.request_timeout + 30)
        for task in (*pending, marker):
            task.cancel()
        await asyncio.gather(*pending, marker, return_exceptions=True)
        if pending:
            self.expect("clients finished in time", False, f"{len(pending)} still running")


def _is_error_object(body: object) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(err, dict)
        and isinstance(err.get("message"), str)
        and isinstance(err.get("type"), str)
        and {"param", "code"} <= set(err)
    )


def gauges(url: str) -> dict[str, float]:
    """``num_requests_running`` / ``num_requests_waiting`` from ``/metrics`` (any prefix)."""
    text = httpx.get(url + "/metrics", timeout=10, trust_env=False).text
    out = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        for gauge in ("num_requests_running", "num_requests_waiting"):
            if name.endswith(gauge):
                out[gauge] = out.get(gauge, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def wait_idle(url: str, timeout: float = 60.0) -> dict[str, float]:
    deadline = time.perf_counter() + timeout
    while True:
        now = gauges(url)
        if not any(now.values()) or time.perf_counter() > deadline:
            return now
        time.sleep(0.5)


def soak(server: loadgen.Server, args: argparse.Namespace, prompts) -> list[str]:
    """Run the soak against a started ``server``; the failed checks."""
    models = httpx.get(server.url + "/v1/models", timeout=10, trust_env=False).json()
    max_model_len = models["data"][0].get("max_model_len") or args.max_model_len
    run = Soak(server.url, max_model_len, args, prompts)
    pid = server.proc.pid
    rss: dict[str, int] = {}
    trend: list[int] = []
    asyncio.run(
        run.run(
            args.duration,
            lambda: rss.setdefault("warm", loadgen.read_rss_kib(pid)),
            lambda: trend.append(loadgen.read_rss_kib(pid) // 1024),
        )
    )
    idle = wait_idle(server.url)
    rss["end"] = loadgen.read_rss_kib(pid)
    failed = [f"{n} x {k}" for k, n in sorted(run.counts.items()) if k.startswith("UNEXPECTED")]
    if any(idle.values()) or len(idle) < 2:
        failed.append(f"slots not all free at the end: {idle}")
    growth = rss["end"] / rss.get("warm", rss["end"]) - 1
    if abs(growth) > 0.10:
        failed.append(f"RSS after warm-up {rss.get('warm')} KiB, at the end {rss['end']} KiB")
    tracebacks = server.log_path.read_text(errors="replace").count("Traceback")
    if tracebacks:
        failed.append(f"{tracebacks} tracebacks in the server log {server.log_path}")
    start = time.perf_counter()
    code = server.stop(grace=args.shutdown_grace)
    stop_s = time.perf_counter() - start
    if code != 0:
        failed.append(f"SIGTERM: exit status {code}")
    total = sum(run.counts.values())
    print(
        f"soak: {args.duration:.0f} s, {args.concurrency} clients, {total} requests "
        f"({total / args.duration:.1f}/s); max_model_len {max_model_len}"
    )
    for kind, n in sorted(run.counts.items()):
        print(f"  {n:6d}  {kind}")
    print(
        f"slots at the end: {idle}; RSS after warm-up {rss.get('warm')} KiB, at the end "
        f"{rss['end']} KiB ({100 * growth:+.1f}%); tracebacks in log: {tracebacks}; "
        f"SIGTERM exit {code} after {stop_s:.1f} s"
    )
    print(f"RSS along the way (MiB): {trend}")
    for failure in run.failures:
        print("  failure:", failure)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a model folder (default: build a random one)")
    p.add_argument("--shape", choices=["tiny", "small"], default="tiny")
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--warmup", type=float, default=None, help="default: min(60, duration / 4)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server")
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--max-model-len", type=int, default=256)
    p.add_argument("--max-body-bytes", type=int, default=1 << 16)
    p.add_argument("--framework", choices=["pt", "tf"], default="pt")
    p.add_argument("--request-timeout", type=float, default=120)
    p.add_argument("--shutdown-grace", type=float, default=30)
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, args.duration / 4)
    tmp = None if args.model else tempfile.mkdtemp(prefix="soak_serve_")
    folder = args.model or str(loadgen.build_folder(tmp, shape=args.shape, seed=args.seed))
    try:
        words = loadgen.Prompts(loadgen.load_tokenizer(folder), 1, args.seed).words

        def prompts(key: int, count: int) -> str:
            picks = random.Random(key).choices(words, k=count)
            return "".join(" " + w for w in picks)

        port = loadgen.free_port()
        extra = [
            "--max-model-len",
            str(args.max_model_len),
            "--max-body-bytes",
            str(args.max_body_bytes),
            "--uvicorn-log-level",
            "warning",
        ]
        command = loadgen.ours_command(
            folder, port, max_num_seqs=args.max_num_seqs, framework=args.framework, extra=extra
        )
        env = loadgen.thread_env(args.threads) if args.threads else dict(os.environ)
        server = loadgen.Server("ours", command, env, port, start_timeout=300)
        with server:
            failed = soak(server, args, prompts)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print("command:", " ".join(command))
    if failed:
        print(f"server log: {server.log_path}")
    else:
        server.log_path.unlink(missing_ok=True)
    print("FAILED:\n  " + "\n  ".join(failed) if failed else "PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
