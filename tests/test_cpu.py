"""The float32 product path is chosen by what the CPU is (``gpt2_dual.cpu``), deterministically,
with the environment variable and ``use_onednn`` as overrides; both paths give transformers'
numbers. The expected paths, families and descriptions are written out as data (``CPUS``), from
the rules stated in ``gpt2_dual/cpu.py`` and README's "Speed on your CPU"."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt2_dual.cpu import (
    ENV_ONEDNN,
    ENV_TF_JIT,
    CpuInfo,
    cpu_info,
    float32_path,
    onednn_default,
    parse_cpuinfo,
    tf_forward_path,
    tf_jit_default,
)
from gpt2_dual.errors import InvalidInputError


def _x86(vendor_id: str, family: int, model: int | None, name: str, flags: str) -> str:
    """The first processor of a /proc/cpuinfo (and the start of a second)."""
    model_line = "" if model is None else f"model\t\t: {model}\n"
    return (f"processor\t: 0\nvendor_id\t: {vendor_id}\ncpu family\t: {family}\n{model_line}"
            f"model name\t: {name}\nstepping\t: 1\nflags\t\t: {flags}\n\n"
            f"processor\t: 1\nvendor_id\t: {vendor_id}\nmodel name\t: {name}\n")  # fmt: skip


AVX512 = "fpu sse2 avx avx2 fma avx512f avx512bw"
EPYC = _x86("AuthenticAMD", 25, 17, "AMD EPYC 9B14", f"{AVX512} avx512_bf16")
SAPPHIRE_RAPIDS = _x86("GenuineIntel", 6, 143, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
                       f"{AVX512} avx512_bf16 amx_bf16 amx_tile amx_int8")  # fmt: skip
GRAVITON = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""
NO_FLAGS = "none of avx2/avx512f/avx512_bf16/amx_tile/amx_bf16/fma/avx_ne_convert"

#: A CPU description -> what gpt2_dual.cpu makes of it, written out from the rules in
#: gpt2_dual/cpu.py and README's "Speed on your CPU": float32 products on oneDNN on AMD x86
#: ("onednn"), PyTorch's MKL on Intel x86 ("mkl"), PyTorch's own kernels elsewhere ("torch");
#: the microarchitecture from cpuid family and model, for the benchmark result files.
#: (id, cpuinfo, machine, family, float32 path, describe())
CPUS = [
    ("amd-epyc-zen4", EPYC, "x86_64", "amd-epyc-zen4", "onednn",
     "AMD EPYC 9B14 (AMD zen4, x86_64; avx2, avx512f, avx512_bf16, fma); float32 path: onednn"),
    ("amd-epyc-zen5", _x86("AuthenticAMD", 26, 2, "AMD EPYC 9B45", f"{AVX512} avx512_bf16"),
     "x86_64", "amd-epyc-zen5", "onednn",
     "AMD EPYC 9B45 (AMD zen5, x86_64; avx2, avx512f, avx512_bf16, fma); float32 path: onednn"),
    ("amd-epyc-zen2", _x86("AuthenticAMD", 23, 49, "AMD EPYC 7B12", "fpu sse2 avx avx2 fma"),
     "x86_64", "amd-epyc-zen2", "onednn",
     "AMD EPYC 7B12 (AMD zen2, x86_64; avx2, fma); float32 path: onednn"),
    ("amd-ryzen-zen3", _x86("AuthenticAMD", 25, 33, "AMD Ryzen 7 5800X 8-Core Processor",
                            "fpu sse2 avx avx2 fma"), "x86_64", "amd-ryzen-zen3", "onednn",
     "AMD Ryzen 7 5800X 8-Core Processor (AMD zen3, x86_64; avx2, fma); float32 path: onednn"),
    ("amd-ryzen-zen4", _x86("AuthenticAMD", 25, 97, "AMD Ryzen 9 7950X 16-Core Processor",
                            f"{AVX512} avx512_bf16"), "x86_64", "amd-ryzen-zen4", "onednn",
     "AMD Ryzen 9 7950X 16-Core Processor (AMD zen4, x86_64; avx2, avx512f, avx512_bf16, fma); "
     "float32 path: onednn"),
    ("amd-epyc-no-model-line", _x86("AuthenticAMD", 25, None, "AMD EPYC 9B14", AVX512),
     "x86_64", "amd-epyc", "onednn",
     "AMD EPYC 9B14 (AMD, x86_64; avx2, avx512f, fma); float32 path: onednn"),
    ("amd-epyc-unknown-model", _x86("AuthenticAMD", 25, 250, "AMD EPYC 9B14", AVX512),
     "x86_64", "amd-epyc", "onednn",
     "AMD EPYC 9B14 (AMD, x86_64; avx2, avx512f, fma); float32 path: onednn"),
    ("amd-32-bit", _x86("AuthenticAMD", 23, 1, "AMD EPYC 7601 32-Core Processor", "fpu sse2 avx"),
     "i686", "amd-epyc-zen1", "onednn",
     f"AMD EPYC 7601 32-Core Processor (AMD zen1, i686; {NO_FLAGS}); float32 path: onednn"),
    ("intel-xeon-sapphire-rapids", SAPPHIRE_RAPIDS, "x86_64", "intel-xeon-sapphire-rapids", "mkl",
     "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (Intel sapphire-rapids, x86_64; avx2, "
     "avx512f, avx512_bf16, amx_tile, amx_bf16, fma); float32 path: mkl"),
    ("intel-xeon-emerald-rapids", _x86("GenuineIntel", 6, 207, "INTEL(R) XEON(R) PLATINUM 8592+",
                                       f"{AVX512} avx512_bf16 amx_bf16 amx_tile"),
     "x86_64", "intel-xeon-emerald-rapids", "mkl",
     "INTEL(R) XEON(R) PLATINUM 8592+ (Intel emerald-rapids, x86_64; avx2, avx512f, "
     "avx512_bf16, amx_tile, amx_bf16, fma); float32 path: mkl"),
    ("intel-xeon-skylake-sp", _x86("GenuineIntel", 6, 85, "Intel(R) Xeon(R) Gold 6154 CPU @ "
                                   "3.00GHz", AVX512), "x86_64", "intel-xeon-skylake-sp", "mkl",
     "Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz (Intel skylake-sp, x86_64; avx2, avx512f, fma); "
     "float32 path: mkl"),
    ("intel-core-alder-lake", _x86("GenuineIntel", 6, 154, "12th Gen Intel(R) Core(TM) i7-1260P",
                                   "fpu sse2 avx avx2 fma avx_vnni"), "x86_64", "intel-core", "mkl",
     "12th Gen Intel(R) Core(TM) i7-1260P (Intel, x86_64; avx2, fma); float32 path: mkl"),
    ("other-x86-vendor", _x86("CentaurHauls", 7, 59, "ZHAOXIN KaiXian KX-U6780A@2.7GHz",
                              "fpu sse2 avx avx2 fma"), "x86_64", "unknown", "torch",
     "ZHAOXIN KaiXian KX-U6780A@2.7GHz (unknown, x86_64; avx2, fma); float32 path: torch"),
    ("other-vendor-n-core", _x86("HygonGenuine", 24, 1, "Hygon C86 7285 32-core Processor",
                                 "fpu sse2 avx avx2 fma"), "x86_64", "unknown", "torch",
     "Hygon C86 7285 32-core Processor (unknown, x86_64; avx2, fma); float32 path: torch"),
    ("arm-graviton", GRAVITON, "aarch64", "arm", "torch",
     f"0xd0c (ARM, aarch64; {NO_FLAGS}); float32 path: torch"),
]  # fmt: skip


@pytest.mark.parametrize(
    "text, machine, family, path, line", [row[1:] for row in CPUS], ids=[row[0] for row in CPUS]
)
def test_the_path_follows_from_the_cpu_description(text, machine, family, path, line):
    info = parse_cpuinfo(text, machine)
    assert (info.family, float32_path(info), info.describe()) == (family, path, line)
    assert parse_cpuinfo(text, machine) == info  # deterministic
    assert onednn_default(info, environ={}) is (path == "onednn")


#: TensorFlow's oneDNN on or off, purpose, compute dtype -> the path (README: XLA for float32
#: forwards and training steps, graph mode for bfloat16 forwards where TF's oneDNN is on).
@pytest.mark.parametrize(
    "onednn, purpose, dtype, path",
    [(True, "forward", "float32", "xla"), (True, "train", "float32", "xla"),
     (True, "forward", "bfloat16", "graph"), (True, "train", "bfloat16", "xla"),
     (False, "forward", "float32", "xla"), (False, "train", "float32", "xla"),
     (False, "forward", "bfloat16", "xla"), (False, "train", "bfloat16", "xla")],
)  # fmt: skip
def test_tensorflow_path_by_purpose_dtype_and_onednn(onednn, purpose, dtype, path):
    assert tf_forward_path(onednn, purpose, dtype) == path
    assert tf_jit_default(onednn, purpose, dtype, environ={}) is (path == "xla")
    assert tf_jit_default(onednn, purpose, dtype, environ={ENV_TF_JIT: "1"}) is True
    assert tf_jit_default(onednn, purpose, dtype, environ={ENV_TF_JIT: "0"}) is False


def test_tensorflow_rule_refuses_bad_values():
    with pytest.raises(InvalidInputError) as info:
        tf_jit_default(True, environ={ENV_TF_JIT: "on"})
    assert str(info.value) == "GPT2_DUAL_TF_JIT='on': use 1 (XLA) or 0 (graph mode)"
    with pytest.raises(ValueError) as info:
        tf_forward_path(True, "decode")
    assert str(info.value) == "purpose 'decode': use 'forward' or 'train'"


def keras_jit_choices(dtype: str) -> str:
    """What a Keras model's ``jit_compile`` resolves to, fresh, compiled with "auto", after a
    predict, and compiled with ``jit_compile=False``, as one line of words."""
    import tensorflow as tf

    from cases import tiny_config
    from gpt2_dual.tf import GPT2Model

    assert not tf.config.list_physical_devices("GPU")
    m = GPT2Model(tiny_config(), dtype=dtype)
    fresh = (m.jit_compile, m.jit_compile_for("forward"))
    m.compile(optimizer="sgd")
    auto = (m.jit_compile, m.jit_compile_for("forward"), m.get_compile_config()["jit_compile"])
    m.predict({"input_ids": tf.constant([[1, 2]])}, verbose=0)
    after_predict = m._jit_compile
    m.compile(optimizer="sgd", jit_compile=False)
    return " ".join(map(str, (*fresh, *auto, after_predict, m.jit_compile,
                              m.jit_compile_for("forward"))))  # fmt: skip


KERAS_JIT_ROWS = [
    ("float32", {}, "True True True True auto True False False"),
    ("bfloat16", {}, "True False True False auto True False False"),
    ("bfloat16", {ENV_TF_JIT: "1"}, "True True True True auto True False False"),
    ("float32", {ENV_TF_JIT: "0"}, "False False False False auto False False False"),
]  # fmt: skip


@pytest.mark.parametrize(
    "dtype, env, expected", KERAS_JIT_ROWS,
    ids=["float32", "bfloat16", "bfloat16-override", "override-off"],
)  # fmt: skip
def test_keras_auto_jit_compile_follows_the_rule_per_purpose(monkeypatch, dtype, env, expected):
    pytest.importorskip("tensorflow")
    from gpt2_dual.cpu import cpu_info

    if (dtype, env) == ("bfloat16", {}) and cpu_info().machine not in ("x86_64", "AMD64"):
        pytest.skip("the bfloat16 row is written for x86 TensorFlow builds (oneDNN on)")
    monkeypatch.delenv(ENV_TF_JIT, raising=False)  # the rule reads it at each call
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert keras_jit_choices(dtype).split() == expected.split()


def test_keras_auto_jit_compile_without_tensorflows_onednn():
    # TF_ENABLE_ONEDNN_OPTS is read once, when TensorFlow starts: a process of its own
    pytest.importorskip("tensorflow")
    clean = {k: v for k, v in os.environ.items()
             if k not in (ENV_TF_JIT, "TF_ENABLE_ONEDNN_OPTS")}  # fmt: skip
    code = "import sys; from test_cpu import keras_jit_choices; print(keras_jit_choices('bfloat16'))"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**clean, "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == "True True True True auto True False False".split()


def test_apple_silicon_and_unknown_cpus_keep_pytorchs_kernels():
    assert float32_path(CpuInfo("Apple", "arm", "arm64", ())) == "torch"
    assert float32_path(CpuInfo("unknown", "?", "x86_64", ())) == "torch"
    assert float32_path(CpuInfo("AMD", "AMD EPYC", "aarch64", ())) == "torch"


def test_the_environment_variable_overrides_the_rule():
    amd, intel = parse_cpuinfo(EPYC, "x86_64"), parse_cpuinfo(SAPPHIRE_RAPIDS, "x86_64")
    assert onednn_default(intel, environ={ENV_ONEDNN: "1"}) is True
    assert onednn_default(amd, environ={ENV_ONEDNN: "0"}) is False
    assert onednn_default(amd, environ={ENV_ONEDNN: ""}) is True
    with pytest.raises(InvalidInputError) as info:
        onednn_default(amd, environ={ENV_ONEDNN: "yes"})
    assert str(info.value) == "GPT2_DUAL_ONEDNN='yes': use 1 (oneDNN) or 0 (PyTorch's kernels)"


@pytest.mark.parametrize("value, expected", [("0", "False"), ("1", "True")])
def test_the_environment_variable_sets_the_default_of_a_new_process(value, expected):
    pytest.importorskip("torch")
    from gpt2_dual.pt.linear import onednn_available

    if not onednn_available():
        pytest.skip("no oneDNN in this torch build")
    code = "from gpt2_dual.pt import linear; print(linear._STATE['onednn'])"
    env = {**os.environ, ENV_ONEDNN: value}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out == expected


#: /proc/cpuinfo's vendor_id on x86 -> the float32 path (README's "Speed on your CPU").
X86_PATHS = {"AuthenticAMD": "onednn", "GenuineIntel": "mkl"}


def test_this_machine_gets_the_rules_default():
    """The rule applied to this machine, read here without gpt2_dual.cpu: its vendor_id."""
    pytest.importorskip("torch")
    from gpt2_dual.pt import linear

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("needs Linux /proc/cpuinfo")
    if ENV_ONEDNN in os.environ:
        pytest.skip(f"{ENV_ONEDNN} is set: the rule is overridden in this process")
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo.read_text(), re.MULTILINE)
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    expected = X86_PATHS.get(vendor[1], "torch") if x86 and vendor else "torch"
    assert float32_path(cpu_info()) == expected
    assert linear.onednn_by_default() is (expected == "onednn" and linear.onednn_available())


@pytest.mark.parametrize("onednn", [False, True], ids=["pytorch-kernels", "onednn"])
def test_both_paths_give_transformers_numbers(tmp_path, onednn):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cases import assert_close, tiny_config
    from frameworks import PT, random_state
    from gpt2_dual.pt import linear

    if onednn and not linear.onednn_available():
        pytest.skip("no oneDNN in this torch build")
    config = tiny_config()
    PT.build("lm", config, random_state(config, "lm")).save_pretrained(tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, config.vocab_size, (3, 7)))
    before = linear._STATE["onednn"]
    try:
        linear.use_onednn(onednn)
        ours = PT.load("lm", tmp_path)
        with torch.no_grad():
            assert_close(ours(input_ids=ids).logits.numpy(), theirs(input_ids=ids).logits.numpy())
    finally:
        linear.use_onednn(before)
