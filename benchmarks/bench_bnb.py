"""bitsandbytes 4-bit and 8-bit GPT-2 on this CPU: gpt2_dual.pt against transformers and fp32.

gpt2-medium and gpt2-xl shapes with random weights, written once as a transformers checkpoint
(safetensors, 1 GiB shards, in a temporary folder deleted at the end; one shard in memory at a
time, so the fp32 gpt2-xl is never whole in this process). Each variant is loaded as a
transformers user writes it, ``GPT2LMHeadModel.from_pretrained(folder, quantization_config=
BitsAndBytesConfig(...), device_map="auto", dtype=...)``, by gpt2_dual.pt and by transformers
4.57 (accelerate + bitsandbytes); fp32 is our unquantized load of the same checkpoint, the
anchor. ``dtype`` (the layers kept in full precision: embeddings, ``lm_head``, LayerNorms,
biases) is set per variant (``VARIANTS``), the same for both libraries: left out, transformers
4 makes them float16, whose products are 4x slower on this CPU.

Every measurement runs in a fresh subprocess, one model size at a time, so peak memory is the
loader's own and a failure or an out-of-memory kill costs one row:

- load worker (one per loader and variant): ``from_pretrained`` wall time; growth of the peak
  resident memory during it (``VmHWM`` from ``/proc/self/status``), of ``RssAnon`` after it
  (and after glibc's ``malloc_trim(0)``, which hands back the freed heap glibc keeps after many
  tensor-sized allocations), and of ``VmRSS`` after the first forward (a memory-mapped fp32
  load is read there); bytes of the weights (parameters, buffers and bitsandbytes'
  quantization state, each storage once), after loading and after a forward (bitsandbytes 0.50
  repacks 4-bit weights on this CPU's first forward); logits of a fixed 1x128 input, compared
  in the parent with fp32's (max and mean |diff| over the fp32 logits' standard deviation,
  top-1 agreement) and ours with transformers'.
- speed worker (one per variant; ours and transformers' loaded side by side): each model is
  saved (``save_pretrained``) before its first forward and again after the timings: checkpoint
  size, and whether the two are tensor for tensor the same. Forward latency at 1x128 (no
  cache) and greedy decoding, batch 1, a 16-token prompt and exactly 32 new tokens
  (``generate(do_sample=False, min_new_tokens=32)``; tokens/s over the whole call, prefill
  included), after a warm-up call; the two libraries are timed round by round (interleaved),
  medians reported (best in brackets).

Ratios: against transformers' same variant (memory: ours / theirs; speed: their time / ours,
> 1: ours is faster) and against our fp32 (memory: variant / fp32; speed: fp32 time / the
variant's, measured in its own process).

Usage:
    python benchmarks/bench_bnb.py          # gpt2-medium and gpt2-xl; writes
                                            # results/bnb_cpu_<cpu family>.md (~15 min)
    python benchmarks/bench_bnb.py --quick  # gpt2-medium only, 2 rounds
    python benchmarks/bench_bnb.py --quick --threads 1 --clock cpu   # on a shared machine
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("USE_TF", "0")  # transformers: no TensorFlow import in the workers

import torch  # noqa: E402

import machine  # noqa: E402 - benchmarks/machine.py
from gpt2_dual import GPT2Config  # noqa: E402
from gpt2_dual._io import atomic_write_text  # noqa: E402

RESULTS = machine.results_path("bnb_cpu")
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
PROMPT, NEW, FORWARD = 16, 32, 128
FORWARD_CALLS = 2  # forward calls per loader and round
NF4 = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
#: Variant -> (BitsAndBytesConfig fields, ``from_pretrained``'s ``dtype``: the layers kept in
#: full precision). None: our float32 load, the anchor. The 8-bit layers compute in float16
#: whatever the input (bitsandbytes casts); float16 kept layers are 4x slower on this CPU.
VARIANTS: dict[str, tuple[dict | None, str]] = {
    "fp32": (None, "float32"),
    "nf4 dq, bf16 compute": ({**NF4, "bnb_4bit_compute_dtype": "bfloat16"}, "bfloat16"),
    "nf4 dq, fp32 compute": ({**NF4, "bnb_4bit_compute_dtype": "float32"}, "float32"),
    "int8": ({"load_in_8bit": True}, "float32"),
}
LOADERS = ("ours", "transformers")
#: gpt2-xl skips fp32 compute by default: 4 more gpt2-xl loads for a path CPU users do not pick.
DEFAULT_VARIANTS = {"gpt2-xl": ["nf4 dq, bf16 compute", "int8"]}
SHARD_BYTES = 1 << 30


# --------------------------------------------------------------------------- checkpoint
def write_checkpoint(preset: str, folder: Path) -> int:
    """A random transformers GPT2LMHeadModel checkpoint of ``preset``'s shape in ``folder``,
    one shard in memory at a time; returns its bytes. Matrices N(0, 0.02) (``c_proj`` scaled by
    1/sqrt(2 n_layer), as GPT-2's initialization), biases and LayerNorms perturbed."""
    import transformers
    from safetensors.torch import save_file

    config = transformers.GPT2Config(**GPT2Config.from_preset(preset, **NO_DROPOUT).to_dict())
    with torch.device("meta"):
        state = transformers.GPT2LMHeadModel(config).state_dict()
    state.pop("lm_head.weight")  # tied to wte: transformers does not save it
    shards: list[dict[str, torch.Size]] = [{}]
    for name, tensor in state.items():
        filled = 4 * sum(shape.numel() for shape in shards[-1].values())
        if shards[-1] and filled + 4 * tensor.numel() > SHARD_BYTES:
            shards.append({})
        shards[-1][name] = tensor.shape
    g = torch.Generator().manual_seed(0)
    index = {}
    for i, shapes in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        name = "model.safetensors" if len(shards) == 1 else name
        save_file({k: _random(k, s, g, config.n_layer) for k, s in shapes.items()},
                  folder / name, metadata={"format": "pt"})  # fmt: skip
        index.update(dict.fromkeys(shapes, name))
    config.save_pretrained(folder)
    total = 4 * sum(t.numel() for t in state.values())
    if len(shards) > 1:
        weight_map = {"metadata": {"total_size": total}, "weight_map": index}
        (folder / "model.safetensors.index.json").write_text(json.dumps(weight_map, indent=2))
    return total


def _random(name: str, shape: torch.Size, g: torch.Generator, layers: int) -> torch.Tensor:
    value = torch.randn(shape, generator=g)
    if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
        return 1 + 0.1 * value
    if name.endswith("c_proj.weight"):
        return value * (0.02 / (2 * layers) ** 0.5)
    return value * 0.02


# --------------------------------------------------------------------------- workers
def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _load(who: str, folder: str, variant: str):
    """The model as a user loads it: (model, seconds)."""
    fields, dtype = VARIANTS[variant]
    if who == "ours":
        from gpt2_dual import BitsAndBytesConfig
        from gpt2_dual.pt import GPT2LMHeadModel
    else:
        from transformers import BitsAndBytesConfig, GPT2LMHeadModel
    kw = {} if fields is None else dict(quantization_config=BitsAndBytesConfig(**fields))
    start = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(folder, device_map="auto", dtype=dtype, **kw)
    return model.eval(), time.perf_counter() - start


def _import_all() -> None:
    """Every library either loader uses, imported before the peak-memory baseline."""
    import bitsandbytes  # noqa: F401
    import transformers  # noqa: F401

    import gpt2_dual.pt  # noqa: F401


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters, buffers and quantization state (bitsandbytes' ``quant_state``,
    8-bit ``SCB``/``CB``, any state a layer keeps), each storage counted once."""
    storages: dict[int, int] = {}

    def walk(obj, depth=3):
        if isinstance(obj, torch.Tensor):
            if obj.device.type != "meta":
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            for attr in ("quant_state", "SCB", "CB"):
                walk(getattr(obj, attr, None), depth)
        elif depth and "State" in type(obj).__name__:  # QuantState, MatmulLtState
            for value in vars(obj).values():
                walk(value, depth - 1)

    for module in model.modules():
        for value in (*module._parameters.values(), *module._buffers.values()):
            walk(value)
        for value in vars(module).values():
            walk(value)
    return sum(storages.values())


def _saved(model, folder: Path) -> tuple[int, dict[str, str]]:
    """``save_pretrained`` into ``folder``: (bytes, name -> digest of each tensor); deleted."""
    from safetensors import safe_open

    model.save_pretrained(folder)
    files = sorted(folder.glob("*.safetensors"))
    digests = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                raw = f.get_tensor(key).reshape(-1).view(torch.uint8).numpy()
                digests[key] = hashlib.sha1(raw).hexdigest()
    size = sum(f.stat().st_size for f in files)
    shutil.rmtree(folder)
    return size, digests


def load_worker(who: str, folder: str, variant: str, out: Path) -> dict:
    """Load, memory, save before and after a forward, logits; ``out``: logits file stem."""
    _import_all()
    before = {key: _status(key) for key in ("VmHWM", "RssAnon", "VmRSS")}
    model, seconds = _load(who, folder, variant)
    result = {"seconds": seconds, "peak": _status("VmHWM") - before["VmHWM"]}
    result["anon"] = _status("RssAnon") - before["RssAnon"]
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap glibc keeps: not the model's
    result["anon_trimmed"] = _status("RssAnon") - before["RssAnon"]
    result["bytes"] = weight_bytes(model)
    first = model.transformer.h[0].attn.c_attn
    result["layer"] = type(first).__name__
    result["kept_dtype"] = str(model.transformer.wte.weight.dtype).removeprefix("torch.")
    ids = torch.arange(FORWARD)[None] * 389 % 50257
    with torch.inference_mode():
        logits = model(ids).logits.float()
    result["rss_forward"] = _status("VmRSS") - before["VmRSS"]  # mapped files count here
    torch.save(logits, out.with_suffix(".pt"))
    result["bytes_after_forward"] = weight_bytes(model)
    return result


def _generate(model, ids, new: int = NEW):
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=50256)
    return model.generate(ids, attention_mask=torch.ones_like(ids), **kw)


def speed_worker(folder: str, variant: str, rounds: int, clock: str, work: Path) -> dict:
    """Forward 1x128 and greedy decoding of each loader's model, interleaved; ``clock``:
    ``"wall"`` or ``"cpu"`` (this process's CPU time). A quantized model is saved (into
    ``work``) before its first forward and after the last: sizes, and whether they are equal."""
    _import_all()
    now = time.process_time if clock == "cpu" else time.perf_counter
    quantized = VARIANTS[variant][0] is not None
    models = {}
    for who in LOADERS[: 1 + quantized]:
        models[who] = _load(who, folder, variant)[0]
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # the next load's peak stays lower
    saved = {who: _saved(model, work / f"saved_{who}") for who, model in models.items()}
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50257, (1, FORWARD), generator=g)
    prompt = torch.randint(0, 50257, (1, PROMPT), generator=g)
    times = {f"{who} {case}": [] for who in models for case in ("forward", "decode")}
    tokens = {}
    with torch.inference_mode():
        for model in models.values():  # warm-up: repacking, first-call allocations
            model(ids, use_cache=False)
            _generate(model, prompt, 2)
        for _ in range(rounds):
            for who, model in models.items():
                for _ in range(FORWARD_CALLS):
                    start = now()
                    model(ids, use_cache=False)
                    times[f"{who} forward"].append(now() - start)
                start = now()
                tokens[who] = _generate(model, prompt)[0, PROMPT:].tolist()
                times[f"{who} decode"].append(now() - start)
    again = {who: _saved(model, work / f"saved_{who}")[1] for who, model in models.items()}
    checkpoints = {who: [size, digests == again[who]] for who, (size, digests) in saved.items()}
    return {"times": times, "tokens": tokens, "saved": checkpoints if quantized else {}}


def worker(argv: list[str]) -> None:
    kind, spec = argv[0], json.loads(argv[1])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if kind == "load":
        result = load_worker(spec["who"], spec["folder"], spec["variant"], Path(spec["out"]))
    else:
        result = speed_worker(
            spec["folder"], spec["variant"], spec["rounds"], spec["clock"], Path(spec["work"])
        )
    Path(spec["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------- parent
def run_worker(kind: str, spec: dict, work: Path) -> dict:
    """One worker subprocess; its result, or ``{"error": ...}`` (a failure costs one row)."""
    spec = {**spec, "result": str(work / "result.json")}
    (work / "result.json").unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"rc {proc.returncode}"]
        print(f"  {kind} {spec.get('who', '')} {spec['variant']} FAILED: {tail[0]}", flush=True)
        return {"error": f"rc {proc.returncode}: {tail[0][:120]}"}
    return json.loads((work / "result.json").read_text())


def _errors(logits: torch.Tensor, reference: torch.Tensor) -> tuple[float, float, float]:
    """(max |diff| / std, mean |diff| / std, top-1 agreement) of logits against a reference."""
    scale = reference.std().item()
    d = (logits - reference).abs()
    top1 = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return d.max().item() / scale, d.mean().item() / scale, top1


def measure(preset: str, args, work: Path) -> tuple[list[str], list[str]]:
    """Load and speed tables' rows of one model size."""
    folder = work / "checkpoint"
    folder.mkdir()
    start = time.perf_counter()
    size = write_checkpoint(preset, folder)
    print(f"{preset}: checkpoint {size / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s",
          flush=True)  # fmt: skip
    base = dict(folder=str(folder), threads=args.threads)
    loads, logits = {}, {}
    variants = ["fp32", *(args.variants or DEFAULT_VARIANTS.get(preset, list(VARIANTS)[1:]))]
    for variant in variants:
        for who in LOADERS if VARIANTS[variant][0] is not None else ("ours",):
            out = work / f"{who}_{len(loads)}"
            spec = {**base, "who": who, "variant": variant, "out": str(out)}
            loads[who, variant] = run_worker("load", spec, work)
            if out.with_suffix(".pt").exists():
                logits[who, variant] = torch.load(out.with_suffix(".pt"))
                out.with_suffix(".pt").unlink()
            print(f"  load {who} {variant}: {loads[who, variant]}", flush=True)
    speeds = {}
    for variant in variants:
        spec = {**base, "variant": variant, "rounds": args.rounds, "clock": args.clock}
        spec["work"] = str(work)
        speeds[variant] = run_worker("speed", spec, work)
        print(f"  speed {variant}: {_medians(speeds[variant])}", flush=True)
    shutil.rmtree(folder)
    return load_rows(preset, size, loads, logits, speeds), speed_rows(preset, speeds)


def _medians(speed: dict) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in speed.get("times", {}).items()}


def _ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{a / b:.2f}"


def load_rows(preset: str, size: int, loads: dict, logits: dict, speeds: dict) -> list[str]:
    """Memory, loading, saving and error rows; ratios: ours / transformers, variant / fp32."""
    rows = []
    reference = logits.get(("ours", "fp32"))
    fp32_bytes = loads["ours", "fp32"].get("bytes")
    for (who, variant), r in loads.items():
        if "error" in r:
            rows.append(f"| {preset} | {variant} | {who} | failed: {r['error']} |" + " |" * 12)
            continue
        theirs = loads.get(("transformers", variant), {}).get("bytes") if who == "ours" else None
        err = other = "-"
        if reference is not None and variant != "fp32" and (who, variant) in logits:
            err = "{:.3f} / {:.4f} / {:.2f}".format(*_errors(logits[who, variant], reference))
        pair = logits.get(("transformers", variant))
        if who == "ours" and pair is not None and (who, variant) in logits:
            other = "{:.1e} / {:.1e} / {:.2f}".format(*_errors(logits[who, variant], pair))
        checkpoint = speeds[variant].get("saved", {}).get(who)
        saved = f"{size / 1e9:.2f} GB (input)" if variant == "fp32" else "-"
        same = "-"
        if checkpoint:
            saved, same = f"{checkpoint[0] / 1e9:.3f} GB", "yes" if checkpoint[1] else "**no**"
        after = r.get("bytes_after_forward", r["bytes"])
        rows.append(
            f"| {preset} | {variant} | {who} | {r['layer']}, {r['kept_dtype']} "
            f"| {r['bytes'] / 1e9:.3f} GB | {_ratio(r['bytes'], fp32_bytes)} "
            f"| {_ratio(r['bytes'], theirs)} | {after / 1e9:.3f} GB | {saved} | {same} "
            f"| {r['seconds']:.1f} s | {r['peak'] / 1e9:.2f} GB "
            f"| {r['anon'] / 1e9:.2f} GB ({r['anon_trimmed'] / 1e9:.2f} GB) "
            f"| {r['rss_forward'] / 1e9:.2f} GB "
            f"| {err} | {other} |"
        )
    return rows


def speed_rows(preset: str, speeds: dict) -> list[str]:
    """Speed rows; ratios: transformers' median time / ours, fp32's / the variant's."""
    rows = []
    fp32 = _medians(speeds["fp32"])
    for variant, result in speeds.items():
        if "error" in result:
            rows.append(f"| {preset} | {variant} | failed: {result['error']} |" + " |" * 7)
            continue
        med, times, tokens = _medians(result), result["times"], result["tokens"]
        for who in tokens:
            ours = who == "ours"
            cells = []
            for case in ("forward", "decode"):
                mine, best = med[f"{who} {case}"], min(times[f"{who} {case}"])
                theirs = med.get(f"transformers {case}") if ours else None
                cells += [
                    f"{mine * 1e3:.0f} ({best * 1e3:.0f})" if case == "forward"
                    else f"{NEW / mine:.2f} ({NEW / best:.2f})",
                    _ratio(theirs, mine), _ratio(fp32.get(f"ours {case}"), mine),
                ]  # fmt: skip
            if ours and "transformers" in tokens:
                equal = sum(
                    a == b for a, b in zip(tokens[who], tokens["transformers"], strict=True)
                )
                cells.append(f"{equal}/{NEW}")
            else:
                cells.append("")
            rows.append(f"| {preset} | {variant} | {who} | " + " | ".join(cells) + " |")
    return rows


def _versions() -> str:
    names = ("torch", "transformers", "accelerate", "bitsandbytes", "safetensors")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


LOAD_HEAD = (
    "| model | variant | loader | layer, kept layers' dtype | weights | vs fp32 | vs transformers "
    "| weights after a forward | saved checkpoint | same checkpoint after a forward "
    "| from_pretrained | peak RSS growth in it | RssAnon growth (after malloc_trim) "
    "| RSS growth after a forward "
    "| error vs fp32: max / mean / top-1 "
    "| vs transformers: max / mean / top-1 |"
)
SPEED_HEAD = (
    "| model | variant | loader | forward 1x128 ms, median (best) | vs transformers | vs fp32 "
    "| decode tokens/s, median (best) | vs transformers | vs fp32 | tokens equal to theirs |"
)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    # A kill ends the run through SystemExit: the running worker is killed and the
    # temporary checkpoint (6 GB for gpt2-xl) deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="gpt2-medium only, 2 rounds")
    parser.add_argument("--presets", nargs="*", help="model shapes (default: medium and xl)")
    parser.add_argument(
        "--variants", nargs="*", choices=list(VARIANTS)[1:],
        help="quantized variants (default: all, less DEFAULT_VARIANTS' cuts; fp32 always runs)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, help="timing rounds (default 2 quick, 3 full)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the worker's CPU time (with --threads 1 on a shared machine)",
    )
    parser.add_argument("--note", default="", help="a line for the results (e.g. the machine)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    presets = args.presets or (["gpt2-medium"] if args.quick else ["gpt2-medium", "gpt2-xl"])
    args.rounds = args.rounds or (2 if args.quick else 3)
    facts = machine.facts(args.threads)
    started = time.perf_counter()
    loads, speeds = [LOAD_HEAD, "|" + "---|" * 16], [SPEED_HEAD, "|" + "---|" * 10]
    for preset in presets:  # one size at a time; its checkpoint is deleted before the next
        with tempfile.TemporaryDirectory(prefix="bench_bnb_") as work:
            load, speed = measure(preset, args, Path(work))
        loads += load
        speeds += speed
    quick = " (quick run)" if args.quick else ""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    note = ("--note", args.note)  # printed on its own below
    command = shlex.join(a for a in sys.argv if a not in note and not a.startswith("--note="))
    speed_title = (
        f"## Speed ({args.clock} clock, {args.rounds} interleaved rounds; decode: {PROMPT}-token "
        f"prompt, {NEW} new tokens, batch 1, the whole generate call)"
    )
    text = "\n".join([
        f"# bitsandbytes 4-bit and 8-bit on CPU: gpt2_dual.pt against transformers{quick}", "",
        f"Command: `python {command}`; {stamp}", "",
        *([args.note, ""] if args.note else []), *facts,
        f"- {_versions()}; Python {platform.python_version()}",
        f"- 1-minute load average at the end: {os.getloadavg()[0]:.2f}; total "
        f"{(time.perf_counter() - started) / 60:.1f} min",
        "", "Random weights; each loader and variant in a fresh process "
        "(`benchmarks/bench_bnb.py` docstring). Errors are over 1x128 logits, divided by the "
        "fp32 logits' standard deviation; top-1 is the share of positions whose argmax agrees.",
        "", "## Memory, loading, saving, error", "", *loads, "",
        speed_title, "", *speeds, "",
    ])  # fmt: skip
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
