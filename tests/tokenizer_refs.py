"""Reference tokenizers and test texts for the tokenizer tests (and the benchmark).

The references are built offline from the bundled GPT-2 files: transformers 4.57's
``GPT2Tokenizer`` (pure Python) and ``GPT2TokenizerFast``, and tiktoken's ``Encoding`` made from
the same ranks (``tiktoken.get_encoding`` would download them).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import gpt2_dual

BUNDLED = Path(gpt2_dual.__file__).parent / "data" / "gpt2"
EOT = "<|endoftext|>"
#: tiktoken's GPT-2 (r50k_base) pattern.
TIKTOKEN_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def write_cut_vocabulary(folder: Path, merges: int, *, config: bool = False) -> Path:
    """GPT-2's files cut to its 256 byte tokens, its first ``merges`` merges and
    ``<|endoftext|>`` (with ``config``, its ``tokenizer_config.json`` too), written to
    ``folder``: files that load and save in milliseconds, for options and round trips where the
    vocabulary's size plays no part (the full vocabulary takes ~0.3 s to load, ~0.7 s to save)."""
    vocab = json.loads((BUNDLED / "vocab.json").read_text(encoding="utf-8"))
    kept_merges = (BUNDLED / "merges.txt").read_text(encoding="utf-8").splitlines()[1 : 1 + merges]
    kept = {t: i for t, i in vocab.items() if i < 256 + merges}
    assert list(kept)[256:] == [m.replace(" ", "") for m in kept_merges]
    kept[EOT] = len(kept)
    (folder / "vocab.json").write_text(json.dumps(kept, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *kept_merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if config:
        data = json.loads((BUNDLED / "tokenizer_config.json").read_text(encoding="utf-8"))
        data["added_tokens_decoder"] = {str(kept[EOT]): data["added_tokens_decoder"]["50256"]}
        (folder / "tokenizer_config.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding built offline from the bundled ``vocab.json``."""
    import tiktoken
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    vocab = json.loads((BUNDLED / "vocab.json").read_text(encoding="utf-8"))
    ranks = {bytes(byte_of[c] for c in tok): i for tok, i in vocab.items() if tok != EOT}
    return tiktoken.Encoding(
        name="gpt2_offline",
        pat_str=TIKTOKEN_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: vocab[EOT]},
    )


def hf_tokenizers(**kwargs):
    """transformers' (slow, fast) GPT-2 tokenizers loaded from the bundled folder."""
    from transformers import GPT2Tokenizer, GPT2TokenizerFast

    return (
        GPT2Tokenizer.from_pretrained(BUNDLED, **kwargs),
        GPT2TokenizerFast.from_pretrained(BUNDLED, **kwargs),
    )


_rng = random.Random(1234)
LONG_WORD = "".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5000))

#: id -> text; each one hits a different corner of GPT-2's pre-tokenizer or BPE.
TEXTS = {
    "empty": "",
    "prose": "The quick brown fox jumps over the lazy dog. Isn't it 5 o'clock already?",
    "code": 'def f(x):\n    """Doc."""\n    return {"a": [x ** 2, x // 3]}  # comment\n',
    "whitespace_runs": "a  b   c\n\n\n  d \t\t e      \n   ",
    "only_whitespace": "   \n\t  \n ",
    "leading_spaces": "    indented words",
    "tabs_crlf": "line1\r\nline2\r\n\tindented\r\n\r\n\t\tmore\tcols\there",
    "contractions": "I'm you're he's we've they'll I'd don't; I'M YOU'RE HE'S 'S 's ''s",
    "numbers": "3.14159 1,000,000 2024-01-01 0x1F 12345678901234567890 ½ ² ٣ 四",
    "emoji": "😀👍🏽 👨‍👩‍👧‍👦 🇯🇵 ok😀ok 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠜎𠜱",
    "combining": "e\u0301 a\u0300 n\u0303 Z\u0351\u0352\u0353 \u01c5 ﬁ",
    "cjk": "日本語のテキストです。中文文本，包括标点符号！",
    "korean": "한국어 텍스트입니다. 안녕하세요, 세계!",
    "multilingual": "Привет мир! مرحبا بالعالم שלום नमस्ते ภาษาไทย Ελληνικά",
    "unicode_spaces": "a\u00a0b\u3000c\u2028d\x85e\u2009f\u200bg\ufeffh",
    "control_chars": "\x00\x01\x1f\x7f bell\x07 esc\x1b[0m",
    "long_word": LONG_WORD,
    "long_repeat": "a" * 5000,
    "long_mixed": "x1-" * 1700,
    "endoftext": f"Hello{EOT}World {EOT} again{EOT}{EOT} <|endoftext|",
    "endoftext_only": EOT,
}

#: Pieces random texts are made of.
ATOMS = [
    *"abcxyzAQZ019.,;:!?-_()[]{}\"'/\\#@$%&*+=<>|~`^éñüßÅ中文한글😀\u00a0",
    *(" ", "  ", "\n", "\t", "\r\n", "e\u0301", "日本", "👍🏽", "hello", " world", "123", "4.5"),
    *("'s", "'S", "'ll", "'ve", "'re", "'d", "'m", "'t", EOT),
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` random strings of up to 40 atoms from a seeded RNG."""
    rng = random.Random(seed)
    return ["".join(rng.choices(ATOMS, k=rng.randint(0, 40))) for _ in range(n)]
