"""bfloat16 on CPU: the bf16-path rule as a function of the CPU description, the one warning
on CPUs without bf16 arithmetic, and bf16 forwards of both frameworks against their float32."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cases import BATCH, SEQ, assert_close, tiny_config
from frameworks import PT, has, random_state
from gpt2_dual import cpu
from gpt2_dual.cpu import BFLOAT16_NATIVE, CpuInfo, bfloat16_advice, bfloat16_path, parse_cpuinfo


def _cpuinfo(vendor_id: str, model: str, flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: {vendor_id}\nmodel name\t: {model}\nflags\t\t: {flags}\n"


BASE = "fpu sse2 avx avx2 fma"
ZEN5 = _cpuinfo("AuthenticAMD", "AMD EPYC 9B45", f"{BASE} avx512f avx512bw avx512_bf16")
ZEN3 = _cpuinfo("AuthenticAMD", "AMD Ryzen 7 5800X 8-Core Processor", BASE)
SAPPHIRE_RAPIDS = _cpuinfo(
    "GenuineIntel", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
    f"{BASE} avx512f avx512_bf16 amx_bf16 amx_tile amx_int8",
)  # fmt: skip
COOPER_LAKE = _cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Gold 6348H", f"{BASE} avx512f avx512_bf16")
SKYLAKE_SP = _cpuinfo("GenuineIntel", "Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz", f"{BASE} avx512f")
ALDER_LAKE = _cpuinfo("GenuineIntel", "12th Gen Intel(R) Core(TM) i7-1260P", f"{BASE} avx_vnni")
LUNAR_LAKE = _cpuinfo(
    "GenuineIntel",
    "Intel(R) Core(TM) Ultra 7 258V",
    f"{BASE} avx_vnni avx_vnni_int8 avx_ne_convert",
)
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm sve\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    "text, machine, path",
    [(ZEN5, "x86_64", "avx512_bf16"), (SAPPHIRE_RAPIDS, "x86_64", "amx"),
     (COOPER_LAKE, "x86_64", "avx512_bf16"), (SKYLAKE_SP, "x86_64", "avx512"),
     (ZEN3, "x86_64", "none"), (ALDER_LAKE, "x86_64", "none"),
     (LUNAR_LAKE, "x86_64", "avx_ne_convert"), (GRAVITON3, "aarch64", "other")],
    ids=["zen5", "sapphire-rapids", "cooper-lake", "skylake-sp", "zen3", "alder-lake",
         "lunar-lake", "graviton3"],
)  # fmt: skip
def test_the_bfloat16_path_follows_from_the_cpu_description(text, machine, path):
    info = parse_cpuinfo(text, machine)
    assert bfloat16_path(info) == path
    assert bfloat16_path(parse_cpuinfo(text, machine)) == path  # deterministic
    advice = bfloat16_advice(info)  # only where measured slow: not native, other, unmeasured
    assert (advice is None) == (path not in ("avx512", "none"))


def test_the_advice_names_the_cpu_and_the_measured_cost():
    skylake, zen3 = parse_cpuinfo(SKYLAKE_SP, "x86_64"), parse_cpuinfo(ZEN3, "x86_64")
    assert bfloat16_advice(skylake) == (
        "bfloat16 on this CPU (Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz: no AVX-512 BF16 or "
        "AMX, bf16 path 'avx512') runs a forward pass at about 0.45x float32's speed and "
        "decoding at about 0.9x; float32 is faster here (benchmarks/bench_lowp.py measures it)"
    )
    assert bfloat16_advice(zen3) == (
        "bfloat16 on this CPU (AMD Ryzen 7 5800X 8-Core Processor: no AVX-512 BF16 or AMX, bf16 "
        "path 'none') runs a forward pass at about 0.03x float32's speed and decoding at about "
        "0.1x; float32 is faster here (benchmarks/bench_lowp.py measures it)"
    )
    assert bfloat16_advice(CpuInfo("Apple", "Apple M2", "arm64", ())) is None


def test_the_rule_agrees_with_pytorchs_own_bf16_detection_on_this_cpu():
    torch = pytest.importorskip("torch")
    from gpt2_dual.pt.linear import onednn_available
    from gpt2_dual.pt.packing import bf16_packing_available

    path = bfloat16_path(cpu.cpu_info())
    if path == "other" or not onednn_available():
        pytest.skip(f"bf16 path {path!r}: PyTorch's detection is not compared there")
    # oneDNN's bf16 GEMM (and the packed decode weights) exactly where the rule says bf16
    # runs on oneDNN (native, or widened to float32); PyTorch's own kernels on "none".
    onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert onednn_bf16 == (path != "none")
    assert bf16_packing_available() == (path != "none")


BF16_PRODUCTS = """
import torch
from cases import tiny_config
from gpt2_dual.pt import GPT2LMHeadModel
model = GPT2LMHeadModel(tiny_config()).eval().to(torch.bfloat16)
with torch.inference_mode():
    model(torch.arange(5)[None])
"""


def test_bf16_products_run_on_onednns_native_bf16_kernels_where_the_rule_says_so():
    pytest.importorskip("torch")
    path = bfloat16_path(cpu.cpu_info())
    if path not in BFLOAT16_NATIVE:
        pytest.skip(f"bf16 path {path!r}: no native bf16 kernels on this CPU")
    tests = str(Path(__file__).parent)
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "PYTHONPATH": tests}
    run = subprocess.run(
        [sys.executable, "-c", BF16_PRODUCTS], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    kernels = [line.split(",")[6] for line in run.stdout.splitlines()
               if line.startswith("onednn_verbose") and ",exec,cpu,matmul," in line]  # fmt: skip
    native = "avx512_core_amx" if path == "amx" else "avx512_core_bf16"
    # Four Conv1D products per block and the LM head, every one a native bf16 kernel.
    assert len(kernels) == 4 * tiny_config().n_layer + 1, run.stdout[-2000:]
    assert all(k.endswith(native) for k in kernels), kernels


# --------------------------------------------------------------------------- PyTorch
def _state(config, scale=0.5):
    """The tests' random weights at half scale: logits of magnitude ~2, the range the
    bfloat16 tolerance row is for."""
    return {
        name: (1 + (v - 1) * scale if ".ln_" in f".{name}" and name.endswith(".weight")
               else v * scale)
        for name, v in random_state(config, "lm").items()
    }  # fmt: skip


def _ids(config):
    return np.random.default_rng(0).integers(0, config.vocab_size, (BATCH, SEQ))


@pytest.fixture
def bf16_warning(monkeypatch, caplog):
    """A fresh process's state for the one-time bf16 check, and the records it logs."""
    pytest.importorskip("torch")
    from gpt2_dual.pt import linear

    monkeypatch.setitem(linear._STATE, "bf16_checked", False)
    caplog.set_level(logging.WARNING, logger=linear.__name__)
    return caplog


def _bf16_forward(config):
    import torch

    model = PT.build("lm", config, _state(config)).to(torch.bfloat16)
    return PT.run(model, input_ids=_ids(config))["logits"]


@pytest.mark.parametrize("text", [SKYLAKE_SP, ZEN3], ids=["skylake-sp", "zen3"])
def test_bf16_on_a_cpu_without_bf16_arithmetic_warns_once(monkeypatch, bf16_warning, text):
    info = parse_cpuinfo(text, "x86_64")
    monkeypatch.setattr(cpu, "cpu_info", lambda: info)
    config = tiny_config()
    _bf16_forward(config)
    _bf16_forward(config)
    assert [r.getMessage() for r in bf16_warning.records] == [bfloat16_advice(info)]


@pytest.mark.parametrize("text", [ZEN5, SAPPHIRE_RAPIDS], ids=["zen5", "sapphire-rapids"])
def test_bf16_on_a_cpu_with_bf16_arithmetic_is_silent(monkeypatch, bf16_warning, text):
    monkeypatch.setattr(cpu, "cpu_info", lambda: parse_cpuinfo(text, "x86_64"))
    _bf16_forward(tiny_config())
    assert bf16_warning.records == []


def test_float32_never_runs_the_bf16_check(bf16_warning):
    from gpt2_dual.pt import linear

    config = tiny_config()
    PT.run(PT.build("lm", config, _state(config)), input_ids=_ids(config))
    assert linear._STATE["bf16_checked"] is False


def test_pt_bf16_forward_is_close_to_float32():
    torch = pytest.importorskip("torch")
    config = tiny_config()
    model = PT.build("lm", config, _state(config))
    expected = PT.run(model, input_ids=_ids(config))["logits"]
    low = model.to(torch.bfloat16)
    out = PT.call(low, input_ids=_ids(config)).logits
    assert out.dtype == torch.bfloat16
    assert_close(out.float().numpy(), expected, "bfloat16", "pt bf16 logits")


# --------------------------------------------------------------------------- TensorFlow
def _tf_logits(config, policy: str, jit_compile: bool | None):
    import tensorflow as tf

    from frameworks_tf import TF

    model = TF.build("lm", config.copy(), _state(config), dtype=policy)
    ids = tf.constant(_ids(config), tf.int32)
    if jit_compile is None:
        out = model(ids)["logits"]
    else:
        out = tf.function(lambda: model(ids)["logits"], jit_compile=jit_compile)()
    return out


@pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow")
@pytest.mark.parametrize("policy", ["bfloat16", "mixed_bfloat16"])
@pytest.mark.parametrize("jit_compile", [None, False, True], ids=["eager", "graph", "xla"])
def test_tf_bf16_forward_is_close_to_float32(policy, jit_compile):
    config = tiny_config()
    expected = np.asarray(_tf_logits(config, "float32", None))
    out = _tf_logits(config, policy, jit_compile)
    assert out.dtype.name == "bfloat16"
    assert_close(np.asarray(out, np.float32), expected, "bfloat16", f"tf {policy} logits")


@pytest.mark.skipif(not (has("tensorflow") and has("torch")), reason="needs torch and tensorflow")
def test_pt_and_tf_bf16_agree():
    import torch

    config = tiny_config()
    pt = PT.call(PT.build("lm", config, _state(config)).to(torch.bfloat16), input_ids=_ids(config))
    tf_logits = np.asarray(_tf_logits(config, "bfloat16", False), np.float32)
    assert_close(pt.logits.float().numpy(), tf_logits, "bfloat16", "pt vs tf bf16 logits")
