"""Encode throughput of GPT-2 tokenizers: gpt2_dual's two, tiktoken, transformers' two.

All five encode the same corpus (a seeded mix of generated English prose, Python source from
the standard library, and multilingual snippets), (a) one ~2 KB document per call and (b) in
batches of documents. Throughput is MB/s of UTF-8 input, best of ``--repeats`` runs after a
warm-up pass (BPE caches are warm for every tokenizer). Before timing, the script checks that
all five give the same ids on every document.

Run:
    python benchmarks/bench_tokenizer.py            # writes benchmarks/results/tokenizer.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import gpt2_dual
from gpt2_dual._io import atomic_write_text
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer

BUNDLED = Path(gpt2_dual.__file__).parent / "data" / "gpt2"
RESULTS = Path(__file__).parent / "results" / "tokenizer.md"
EOT = "<|endoftext|>"

WORDS = (
    "the of and to in is was for that with as on by at from his her they this which be are "
    "have had not but all were when there can one an more some time would into very after "
    "first people made about only years over new most world could city between during "
    "government system number state university school music history company water however "
    "research language model data network training learning results analysis human small "
    "large important different public national general international development century "
    "example process children family power support service program market energy science "
    "information community because although several another without against through around"
).split()
MULTILINGUAL = [
    "Привет, как дела? Сегодня хорошая погода.",
    "日本語の文章はスペースを使わずに書かれます。",
    "中文文本通常不使用空格分隔单词，例如这句话。",
    "한국어 문장은 띄어쓰기를 사용합니다. 감사합니다!",
    "مرحبا بالعالم، هذا نص عربي قصير.",
    "Ελληνικά κείμενα με τόνους: καλημέρα σας.",
    "Der Straßenverkehr in München ist heute ruhig.",
    "Le café de la gare ouvre à 7 h, n'est-ce pas ?",
    "नमस्ते दुनिया, यह एक छोटा वाक्य है।",
    "Emoji 😀👍🏽🎉 and symbols ∑∫√ ≠ ≤ — “quotes”.",
]


def prose(rng: random.Random, n_bytes: int) -> str:
    """English-like text: sentences of words from ``WORDS`` with numbers and punctuation."""
    out, size = [], 0
    while size < n_bytes:
        words = rng.choices(WORDS, k=rng.randint(6, 24))
        words[0] = words[0].capitalize()
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(1, 2025)))
        if rng.random() < 0.2:
            words[rng.randrange(len(words))] += rng.choice(["'s", ",", ";", ":"])
        sentence = " ".join(words) + rng.choice([".", ".", ".", "?", "!"])
        sentence += "\n\n" if rng.random() < 0.15 else " "
        out.append(sentence)
        size += len(sentence)
    return "".join(out)


def python_source(rng: random.Random, n_bytes: int) -> str:
    """Python source files from the standard library (a seeded sample)."""
    stdlib = Path(os.__file__).parent
    files = sorted(stdlib.glob("*.py"))
    rng.shuffle(files)
    out, size = [], 0
    for path in files:
        if size >= n_bytes:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        out.append(text)
        size += len(text.encode("utf-8"))
    return "".join(out)[:n_bytes]


def multilingual(rng: random.Random, n_bytes: int) -> str:
    out, size = [], 0
    while size < n_bytes:
        snippet = rng.choice(MULTILINGUAL) + rng.choice([" ", "\n", f" {EOT} "])
        out.append(snippet)
        size += len(snippet.encode("utf-8"))
    return "".join(out)


def build_docs(total_mb: float, doc_bytes: int, seed: int) -> list[str]:
    """Documents of about ``doc_bytes`` bytes: 50% prose, 30% code, 20% multilingual."""
    rng = random.Random(seed)
    total = int(total_mb * 1e6)
    parts = [
        prose(rng, total // 2),
        python_source(rng, total * 3 // 10),
        multilingual(rng, total // 5),
    ]
    docs = []
    for text in parts:
        step = max(1, doc_bytes * len(text) // len(text.encode("utf-8")))  # chars per doc
        docs.extend(text[i : i + step] for i in range(0, len(text), step))
    rng.shuffle(docs)
    return docs


def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding built offline from the bundled vocabulary."""
    import tiktoken

    from gpt2_dual.tokenizer.vocab import BYTE_DECODER

    vocab = json.loads((BUNDLED / "vocab.json").read_text(encoding="utf-8"))
    ranks = {bytes(BYTE_DECODER[c] for c in t): i for t, i in vocab.items() if t != EOT}
    pattern = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding(
        "gpt2_offline", pat_str=pattern, mergeable_ranks=ranks, special_tokens={EOT: vocab[EOT]}
    )


def contenders() -> dict[str, tuple[Callable, Callable]]:
    """name -> (encode one text, encode a list of texts)."""
    import transformers

    transformers.logging.set_verbosity_error()
    hf_slow = transformers.GPT2Tokenizer.from_pretrained(BUNDLED)
    hf_fast = transformers.GPT2TokenizerFast.from_pretrained(BUNDLED)
    pure = GPT2Tokenizer.from_pretrained(BUNDLED)
    fast = GPT2TokenizerFast.from_pretrained(BUNDLED)
    enc = tiktoken_gpt2()
    return {
        "gpt2_dual GPT2Tokenizer": (pure.encode, lambda b: pure(b)["input_ids"]),
        "gpt2_dual GPT2TokenizerFast": (fast.encode, lambda b: fast(b)["input_ids"]),
        "tiktoken": (
            lambda t: enc.encode(t, allowed_special="all"),
            lambda b: enc.encode_batch(b, allowed_special="all"),
        ),
        "transformers GPT2Tokenizer": (hf_slow.encode, lambda b: hf_slow(b)["input_ids"]),
        "transformers GPT2TokenizerFast": (hf_fast.encode, lambda b: hf_fast(b)["input_ids"]),
    }


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(docs: list[str], batch_size: int, repeats: int) -> dict[str, tuple[float, ...]]:
    """name -> (single-document MB/s, batch MB/s, first-pass MB/s), best of ``repeats``.

    The first pass (fresh tokenizer, cold BPE caches, one document per call) is timed once and
    doubles as the warm-up and the check that all give the same ids. The contenders then take
    turns within each repeat, so a slow spell of a shared machine does not fall on one only.
    """
    megabytes = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    batches = [docs[i : i + batch_size] for i in range(0, len(docs), batch_size)]
    funcs = contenders()
    reference, first = None, {}
    for name, (one, many) in funcs.items():
        start = time.perf_counter()
        ids = [one(d) for d in docs]
        first[name] = time.perf_counter() - start
        reference = reference or ids
        if ids != reference or [i for b in batches for i in many(b)] != reference:
            raise SystemExit(f"{name} gives different ids from the others")
    best = {name: [float("inf"), float("inf")] for name in funcs}
    for _ in range(repeats):
        for name, (one, many) in funcs.items():
            best[name][0] = min(best[name][0], seconds(lambda one=one: [one(d) for d in docs]))
            best[name][1] = min(best[name][1], seconds(lambda m=many: [m(b) for b in batches]))
    results = {
        n: (megabytes / t[0], megabytes / t[1], megabytes / first[n]) for n, t in best.items()
    }
    for name, (single, batch, cold) in results.items():
        sys.stdout.write(f"{name}: {single:.2f} single, {batch:.2f} batch, {cold:.2f} cold MB/s\n")
    return results


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(results: dict[str, tuple[float, ...]], docs: list[str], args: argparse.Namespace) -> str:
    counterpart = {
        "gpt2_dual GPT2Tokenizer": "transformers GPT2Tokenizer",
        "gpt2_dual GPT2TokenizerFast": "transformers GPT2TokenizerFast",
    }
    size = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    lines = [
        "# GPT-2 tokenizer encode throughput",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Corpus: {size:.2f} MB of UTF-8 in {len(docs)} documents of about {args.doc_bytes} bytes "
        f"(seed {args.seed}): 50% generated English prose, 30% Python standard-library source, "
        f"20% multilingual snippets (with `{EOT}`). All five tokenizers give identical ids on it.",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs "
        f"({len(os.sched_getaffinity(0))} usable, load average {os.getloadavg()[0]:.1f} at the "
        f"end of the run); Python {platform.python_version()}; "
        + ", ".join(
            f"{p} {version(p)}"
            for p in ("tokenizers", "tiktoken", "transformers", "regex", "gpt2_dual")
        ),
        "",
        f"MB/s of input, best of {args.repeats} runs (the five take turns in each run) after "
        "a warm-up pass. Single: one "
        f"`encode(doc)` per document. Batch: {args.batch_size} documents per call "
        "(`tokenizer(docs)` / tiktoken `encode_batch`). The ratio 'vs transformers' compares "
        "each gpt2_dual class with its transformers counterpart (pure Python with "
        "`GPT2Tokenizer`, Rust-backed with `GPT2TokenizerFast`). The pure-Python tokenizers "
        "cache BPE results per word, so their timed runs have warm caches; the last column "
        "is the first pass of a fresh tokenizer over the corpus (timed once, one document "
        "per call).",
        "",
        "| tokenizer | single MB/s | batch MB/s | single vs transformers | batch vs transformers "
        "| single vs tiktoken | batch vs tiktoken | first pass MB/s (cold caches) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    tik = results["tiktoken"]
    for name, (single, batch, cold) in results.items():
        ref = results.get(counterpart.get(name, ""))
        vs_hf = [f"{single / ref[0]:.2f}x", f"{batch / ref[1]:.2f}x"] if ref else ["", ""]
        lines.append(
            f"| {name} | {single:.2f} | {batch:.2f} | {vs_hf[0]} | {vs_hf[1]} | "
            f"{single / tik[0]:.2f}x | {batch / tik[1]:.2f}x | {cold:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=4.0, help="corpus size (MB)")
    parser.add_argument("--doc-bytes", type=int, default=2000, help="document size (bytes)")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per batch call")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    docs = build_docs(args.size_mb, args.doc_bytes, args.seed)
    results = measure(docs, args.batch_size, args.repeats)
    text = report(results, docs, args)
    atomic_write_text(args.output, text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
