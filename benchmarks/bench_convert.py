"""Conversion time and peak memory against the checkpoint's size (gpt2-medium, gpt2-xl shapes).

Writes a random-weight transformers checkpoint of each shape (streamed, so the benchmark itself
never holds a model), then converts it in a fresh process per run and records wall time and
peak resident memory (VmRSS sampled every 5 ms) above the process's memory just before the
conversion (after its imports). The claim under test: a conversion streams tensors, holding
about one tensor at a time (the largest is ``wte``), so its extra memory stays near that
tensor's size whatever the checkpoint's size; a verified conversion loads one model at a time.

    PYTHONPATH=src python benchmarks/bench_convert.py [--shapes gpt2-medium gpt2-xl] \
        [--verify-shapes gpt2-medium] [--work /tmp/bench-convert]

Writes ``benchmarks/results/convert_<cpu family>.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gpt2_dual import GPT2Config  # noqa: E402
from gpt2_dual._io import atomic_write_text  # noqa: E402
from gpt2_dual.checkpoint import loading, safetensors_io  # noqa: E402
from gpt2_dual.checkpoint.names import HF_PREFIX, is_backbone, params  # noqa: E402

CHILD = r"""
import json, sys, threading, time
from gpt2_dual.convert.conversion import convert
{imports}

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

peak, done = [rss()], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)

before = rss()
threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
convert(sys.argv[1], sys.argv[2], to=sys.argv[3], dtype=sys.argv[4] or None,
        verify=sys.argv[5] == "1")
seconds = time.perf_counter() - start
done.set()
print(json.dumps({{"seconds": seconds, "before": before, "peak": max(peak[0], rss())}}))
"""
#: What each run imports before measuring (so imports are not counted as conversion memory).
IMPORTS = {
    False: "import h5py, safetensors",
    True: "import h5py, safetensors, torch, tensorflow, gpt2_dual.pt, gpt2_dual.tf",
}
RUNS = (("hf", None), ("hf", "fp16"), ("tf-h5", None))


def write_random_checkpoint(folder: Path, preset: str) -> tuple[int, int]:
    """A random GPT2LMHeadModel checkpoint of ``preset``'s shape; (file bytes, largest tensor)."""
    config = GPT2Config.from_preset(preset)
    rng = np.random.default_rng(0)
    entries = []
    for row in params(config, "lm"):
        shape = row.shape(config)
        key = HF_PREFIX + row.canonical if is_backbone(row.canonical) else row.canonical
        get = lambda s=shape: (rng.standard_normal(s, dtype=np.float32) * 0.02)  # noqa: E731
        entries.append(safetensors_io.Entry(key, tuple(shape), "F32", get))
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_io.write_sharded(entries, folder, max_shard_size=10**12)
    loading.save_config(config, "GPT2LMHeadModel", "float32", folder)
    return sum(e.nbytes for e in entries), max(e.nbytes for e in entries)


def run(src: Path, dst: Path, to: str, dtype: str | None, verify: bool) -> dict:
    shutil.rmtree(dst, ignore_errors=True)
    code = CHILD.format(imports=IMPORTS[verify])
    args = [sys.executable, "-c", code, str(src), str(dst), to, dtype or "", "1" if verify else "0"]
    out = subprocess.run(args, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2",
                              "PATH": "/usr/bin:/bin"})  # fmt: skip
    shutil.rmtree(dst, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    return names[0] if names else platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["gpt2-medium", "gpt2-xl"])
    parser.add_argument("--verify-shapes", nargs="*", default=["gpt2-medium", "gpt2-xl"])
    parser.add_argument("--work", default="/tmp/bench-convert")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.work)
    rows = []
    for preset in args.shapes:
        src = work / preset
        size, largest = write_random_checkpoint(src, preset)
        runs = [(to, dtype, False) for to, dtype in RUNS]
        if preset in args.verify_shapes:
            runs.append(("hf", None, True))
        for to, dtype, verify in runs:
            result = run(src, work / f"{preset}-out", to, dtype, verify)
            extra = result["peak"] - result["before"]
            rows.append((preset, size, largest, to, dtype or "keep", verify, result["seconds"],
                         extra, result["peak"]))  # fmt: skip
            print(rows[-1], flush=True)
        shutil.rmtree(src)
    model = cpu_model()
    family = "amd-epyc" if "EPYC" in model else "intel-xeon" if "Xeon" in model else "other"
    lines = [
        f"# Conversion time and memory ({model}, {family})", "",
        f"`PYTHONPATH=src python benchmarks/bench_convert.py` on {time.strftime('%Y-%m-%d')}; "
        "random weights, float32 safetensors source; a fresh process per row, its resident "
        "memory (VmRSS, sampled every 5 ms) at its peak during the conversion above what it "
        "was just before (after imports).", "",
        "| shape | checkpoint | largest tensor | to | dtype | verified | time | extra peak memory "
        "| extra / largest tensor | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for preset, size, largest, to, dtype, verify, secs, extra, peak in rows:
        lines.append(
            f"| {preset} | {size / 1e9:.2f} GB | {largest / 1e6:.0f} MB | {to} | {dtype} | "
            f"{'yes' if verify else 'no'} | {secs:.1f} s | {extra / 1e6:.0f} MB | "
            f"{extra / largest:.2f} | {peak / 1e9:.2f} GB |"
        )
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"convert_{family}.md")
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
