"""The float32 product path is chosen by what the CPU is (``gpt2_dual.cpu``), deterministically,
with the environment variable and ``use_onednn`` as overrides; both paths give transformers'
numbers."""

from __future__ import annotations

import subprocess
import sys

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

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
"""
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize(
    "text, machine, vendor, family, flags, path",
    [
        (EPYC, "x86_64", "AMD", "amd-epyc-zen4", ("avx2", "avx512f", "avx512_bf16", "fma"), "onednn"),
        (SAPPHIRE_RAPIDS, "x86_64", "Intel", "intel-xeon-sapphire-rapids",
         ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "fma"), "mkl"),
        (GRAVITON, "aarch64", "ARM", "arm", (), "torch"),
    ],
    ids=["amd-epyc", "intel-sapphire-rapids", "arm-graviton"],
)  # fmt: skip
def test_the_path_follows_from_the_cpu_description(text, machine, vendor, family, flags, path):
    info = parse_cpuinfo(text, machine)
    assert (info.vendor, info.family, info.flags) == (vendor, family, flags)
    assert float32_path(info) == path
    assert parse_cpuinfo(text, machine) == info  # deterministic
    assert onednn_default(info, environ={}) == (path == "onednn")
    assert info.describe().endswith(f"float32 path: {path}")


ZEN5 = EPYC.replace("cpu family\t: 25\nmodel\t\t: 17", "cpu family\t: 26\nmodel\t\t: 2")


@pytest.mark.parametrize(
    "text, family",
    [(EPYC, "amd-epyc-zen4"), (ZEN5, "amd-epyc-zen5"),
     (EPYC.replace("model\t\t: 17\n", ""), "amd-epyc"),
     (EPYC.replace("model\t\t: 17", "model\t\t: 250"), "amd-epyc"),
     (SAPPHIRE_RAPIDS.replace("143", "207"), "intel-xeon-emerald-rapids")],
    ids=["zen4", "zen5", "no-model-line", "unknown-model", "emerald-rapids"],
)  # fmt: skip
def test_result_files_are_kept_per_microarchitecture(text, family):
    info = parse_cpuinfo(text, "x86_64")
    assert info.family == family
    kind = f"{info.vendor} {info.uarch}" if info.uarch else info.vendor
    assert info.describe().startswith(f"{info.model} ({kind}, x86_64; avx2")


@pytest.mark.parametrize(
    "onednn, purpose, dtype, path",
    [(True, "forward", "float32", "xla"), (True, "train", "float32", "xla"),
     (True, "forward", "bfloat16", "graph"), (False, "forward", "bfloat16", "xla"),
     (True, "train", "bfloat16", "xla"), (False, "forward", "float32", "xla")],
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


KERAS_JIT = """
import sys
import tensorflow as tf
from cases import tiny_config
from gpt2_dual.tf import GPT2Model
assert not tf.config.list_physical_devices("GPU")
m = GPT2Model(tiny_config(), dtype=sys.argv[1])
fresh = (m.jit_compile, m.jit_compile_for("forward"))
m.compile(optimizer="sgd")
auto = (m.jit_compile, m.jit_compile_for("forward"), m.get_compile_config()["jit_compile"])
m.predict({"input_ids": tf.constant([[1, 2]])}, verbose=0)
after_predict = m._jit_compile
m.compile(optimizer="sgd", jit_compile=False)
print(*fresh, *auto, after_predict, m.jit_compile, m.jit_compile_for("forward"))
"""


@pytest.mark.parametrize(
    "dtype, env, expected",
    [("float32", {}, "True True True True auto True False False"),
     ("bfloat16", {}, "True False True False auto True False False"),
     ("bfloat16", {ENV_TF_JIT: "1"}, "True True True True auto True False False"),
     ("bfloat16", {"TF_ENABLE_ONEDNN_OPTS": "0"}, "True True True True auto True False False"),
     ("float32", {ENV_TF_JIT: "0"}, "False False False False auto False False False")],
    ids=["float32", "bfloat16", "bfloat16-override", "bfloat16-tf-onednn-off", "override-off"],
)  # fmt: skip
def test_keras_auto_jit_compile_follows_the_rule_per_purpose(dtype, env, expected):
    pytest.importorskip("tensorflow")
    from gpt2_dual.cpu import cpu_info

    if (dtype, env) == ("bfloat16", {}) and cpu_info().machine not in ("x86_64", "AMD64"):
        pytest.skip("the bfloat16 row is written for x86 TensorFlow builds (oneDNN on)")
    clean = {k: v for k, v in __import__("os").environ.items()
             if k not in (ENV_TF_JIT, "TF_ENABLE_ONEDNN_OPTS")}  # fmt: skip
    tests = str(__import__("pathlib").Path(__file__).parent)
    run = subprocess.run([sys.executable, "-c", KERAS_JIT, dtype], env={**clean, **env, "PYTHONPATH": tests},
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == expected.split()


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


@pytest.mark.parametrize("value", ["0", "1"])
def test_the_environment_variable_sets_the_default_of_a_new_process(value):
    pytest.importorskip("torch")
    code = "from gpt2_dual.pt import linear; print(linear._STATE['onednn'])"
    env = {**__import__("os").environ, ENV_ONEDNN: value}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    from gpt2_dual.pt.linear import onednn_available

    assert out == str(value == "1" and onednn_available())


def test_this_machine_gets_the_rules_default():
    torch = pytest.importorskip("torch")  # noqa: F841
    from gpt2_dual.pt import linear

    expected = linear.onednn_available() and float32_path(cpu_info()) == "onednn"
    if ENV_ONEDNN not in __import__("os").environ:
        assert linear.onednn_by_default() == expected


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
