"""What CPU this is, and which float32 matrix-product path suits it: decided by the machine.

PyTorch's own float32 GEMM on x86 is MKL's. MKL dispatches by vendor: AMD processors get its
AVX2 code even when they have AVX-512, so there oneDNN (which ships inside PyTorch and picks
kernels by instruction set) is faster; on Intel processors MKL's own AVX-512/AMX code is the
faster one. Measured (2 threads, gpt2-small fp32, random weights):

- AMD EPYC (AVX-512, bf16), ``benchmarks/results/gemm_cpu.md`` and ``pt_cpu.md``: oneDNN 63-66
  against MKL's 92-99 ms on the LM head's product; decoding 1.6x transformers on oneDNN.
- Intel Xeon (Sapphire Rapids, AVX-512 + AMX), as filed in issue 12: MKL forward 122 ms at
  1x128 and 3538 ms at 8x512 against oneDNN's 163 and 4612 ms.

The rule (``float32_path``): AMD x86 -> ``"onednn"``; Intel x86 -> ``"mkl"`` (PyTorch's own
kernels); anything else (Apple silicon, other ARM, unknown) -> ``"torch"`` (PyTorch's own
kernels, whatever its build uses there). ``GPT2_DUAL_ONEDNN=1`` or ``0`` in the environment
overrides the rule at import; ``gpt2_dual.pt.linear.use_onednn(True/False)`` overrides both at
run time. Reading ``/proc/cpuinfo`` costs well under a millisecond, once per process.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from gpt2_dual.errors import InvalidInputError

__all__ = [
    "ENV_ONEDNN",
    "ENV_TF_JIT",
    "BFLOAT16_NATIVE",
    "CpuInfo",
    "bfloat16_advice",
    "bfloat16_path",
    "cpu_info",
    "float32_path",
    "onednn_default",
    "tf_forward_path",
    "tf_jit_default",
]

#: Environment variable that overrides the rule: "1" (oneDNN) or "0" (PyTorch's kernels).
ENV_ONEDNN = "GPT2_DUAL_ONEDNN"
#: Environment variable that overrides the TensorFlow rule: "1" (XLA) or "0" (graph mode).
ENV_TF_JIT = "GPT2_DUAL_TF_JIT"
#: (vendor, cpuid family, first model, last model) -> microarchitecture, for result files.
UARCHES = (
    ("AMD", 23, 0x00, 0x2F, "zen1"), ("AMD", 23, 0x30, 0xFF, "zen2"),
    ("AMD", 25, 0x00, 0x0F, "zen3"), ("AMD", 25, 0x20, 0x5F, "zen3"),
    ("AMD", 25, 0x10, 0x1F, "zen4"), ("AMD", 25, 0x60, 0xAF, "zen4"),
    ("AMD", 26, 0x00, 0xFF, "zen5"),
    ("Intel", 6, 85, 85, "skylake-sp"), ("Intel", 6, 106, 106, "ice-lake-sp"),
    ("Intel", 6, 143, 143, "sapphire-rapids"), ("Intel", 6, 207, 207, "emerald-rapids"),
    ("Intel", 6, 173, 174, "granite-rapids"),
)  # fmt: skip
#: Flags that matter for the kernels, as /proc/cpuinfo names them.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "fma", "avx_ne_convert")

#: Product lines named in result-file families, by vendor and by whole word of the model name
#: (a "32-Core Processor" of another vendor is no Intel Core).
_PRODUCT_LINES = {"AMD": ("epyc", "ryzen"), "Intel": ("xeon", "core")}


@dataclass(frozen=True)
class CpuInfo:
    """A CPU, as far as kernel choices care.

    Attributes:
        vendor: ``"AMD"``, ``"Intel"``, ``"Apple"``, ``"ARM"`` or ``"unknown"``.
        model: the model name (``"AMD EPYC 9B14"``), or the platform's processor string.
        machine: ``platform.machine()`` (``"x86_64"``, ``"arm64"``, ...).
        flags: the ``FLAGS`` this CPU has.
        uarch: the microarchitecture from cpuid family and model (``"zen5"``,
            ``"sapphire-rapids"``), ``""`` when not known: one name can cover CPUs twice as
            fast as each other (a Zen 5 EPYC core does about twice a Zen 4's float32 FLOPs).
    """

    vendor: str
    model: str
    machine: str
    flags: tuple[str, ...]
    uarch: str = ""

    @property
    def family(self) -> str:
        """A file-name-friendly CPU family for benchmark results (``"amd-epyc-zen5"``, ...)."""
        words = re.findall(r"[a-z]+", self.model.lower())
        names = _PRODUCT_LINES.get(self.vendor, ())
        name = next((n for n in names if n in words), "")
        parts = (self.vendor.lower(), name, self.uarch)
        return "-".join(p for p in parts if p)

    def describe(self) -> str:
        """One line for benchmark tables: model, vendor, flags and the float32 path."""
        flags = ", ".join(self.flags) or "none of " + "/".join(FLAGS)
        kind = f"{self.vendor} {self.uarch}" if self.uarch else self.vendor
        return f"{self.model} ({kind}, {self.machine}; {flags}); float32 path: " + (
            float32_path(self)
        )


def parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    """A ``CpuInfo`` from the text of ``/proc/cpuinfo`` (first processor) and the machine."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    vendor_id = fields.get("vendor_id", "")
    vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}.get(vendor_id)
    if vendor is None:
        vendor = "ARM" if machine.lower() in ("aarch64", "arm64") else "unknown"
    model = fields.get("model name") or fields.get("Model") or fields.get("CPU part", "unknown")
    present = set(fields.get("flags", fields.get("Features", "")).split())
    flags = tuple(f for f in FLAGS if f in present)
    return CpuInfo(vendor, model, machine, flags, _uarch(vendor, fields))


def _uarch(vendor: str, fields: dict[str, str]) -> str:
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return ""
    for v, f, first, last, name in UARCHES:
        if (v, f) == (vendor, family) and first <= model <= last:
            return name
    return ""


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (``/proc/cpuinfo`` on Linux; the platform's strings elsewhere)."""
    machine = platform.machine()
    path = Path("/proc/cpuinfo")
    if path.is_file():
        try:
            return parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace"), machine)
        except OSError:
            pass
    processor = platform.processor() or machine
    if platform.system() == "Darwin" and machine == "arm64":
        return CpuInfo("Apple", processor, machine, ())
    vendor = "Intel" if "Intel" in processor else "AMD" if "AMD" in processor else "unknown"
    return CpuInfo(vendor, processor, machine, ())


def float32_path(info: CpuInfo) -> str:
    """``"onednn"`` for AMD x86, ``"mkl"`` for Intel x86, ``"torch"`` otherwise (see the
    module docstring for the measurements behind it)."""
    x86 = info.machine.lower() in ("x86_64", "amd64", "i686", "x86")
    if x86 and info.vendor == "AMD":
        return "onednn"
    if x86 and info.vendor == "Intel":
        return "mkl"
    return "torch"


def onednn_default(info: CpuInfo | None = None, environ: dict[str, str] | None = None) -> bool:
    """Whether CPU float32 products start on oneDNN: ``GPT2_DUAL_ONEDNN`` if set, else the
    rule.

    Raises:
        InvalidInputError: ``GPT2_DUAL_ONEDNN`` is set to something other than 0 or 1.
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_ONEDNN)
    if value is not None and value.strip() != "":
        if value.strip() not in ("0", "1"):
            raise InvalidInputError(
                f"{ENV_ONEDNN}={value!r}: use 1 (oneDNN) or 0 (PyTorch's kernels)"
            )
        return value.strip() == "1"
    return float32_path(info or cpu_info()) == "onednn"


def tf_forward_path(
    tf_onednn: bool, purpose: str = "forward", compute_dtype: str = "float32"
) -> str:
    """How ``gpt2_dual.tf`` runs compiled steps on a CPU-only machine: ``"xla"`` or
    ``"graph"`` (``tf.function`` without XLA), by ``purpose`` (``"forward"``: ``predict``,
    ``evaluate``; ``"train"``: ``fit``) and the model's compute dtype:

    - float32, both purposes: XLA. Keras' own "auto" picks graph mode on CPU; measured on a
      Zen 5 EPYC, 2 threads, gpt2-small LM (``benchmarks/results/tf_cpu_amd-epyc-zen5.md``),
      XLA runs the forward 1.13x graph mode at 1x128 and 1.09x at 8x512, and the training
      step (4x128) 1.24x.
    - bfloat16 forwards where TensorFlow's oneDNN kernels are on (x86 and Linux aarch64 builds,
      unless ``TF_ENABLE_ONEDNN_OPTS=0``): graph mode. XLA on CPU computes bf16 dots in
      float32 (0.8-0.9x float32) while oneDNN's bf16 GEMMs run 1.2-1.5x float32
      (``lowp_cpu_amd-epyc-zen5.md``). bf16 training keeps XLA (not measured apart).

    ``generate`` compiles its loop with XLA whatever the rule (``jit_compile=True``).

    Raises:
        ValueError: ``purpose`` is neither ``"forward"`` nor ``"train"``.
    """
    if purpose not in ("forward", "train"):
        raise ValueError(f"purpose {purpose!r}: use 'forward' or 'train'")
    bf16_forward = purpose == "forward" and compute_dtype == "bfloat16"
    return "graph" if tf_onednn and bf16_forward else "xla"


def tf_jit_default(
    tf_onednn: bool,
    purpose: str = "forward",
    compute_dtype: str = "float32",
    environ: dict[str, str] | None = None,
) -> bool:
    """``jit_compile`` that ``"auto"`` means for our Keras models on a CPU-only machine:
    ``GPT2_DUAL_TF_JIT`` (0 or 1) if set, else ``tf_forward_path(...) == "xla"``.

    Raises:
        InvalidInputError: ``GPT2_DUAL_TF_JIT`` is set to something other than 0 or 1.
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_TF_JIT, "").strip()
    if value:
        if value not in ("0", "1"):
            raise InvalidInputError(f"{ENV_TF_JIT}={value!r}: use 1 (XLA) or 0 (graph mode)")
        return value == "1"
    return tf_forward_path(tf_onednn, purpose, compute_dtype) == "xla"


#: ``bfloat16_path`` values where the CPU does bf16 arithmetic itself (the fast ones).
BFLOAT16_NATIVE = ("amx", "avx512_bf16")
_X86 = ("x86_64", "amd64", "i686", "x86")


def bfloat16_path(info: CpuInfo) -> str:
    """How bfloat16 matrix products run on this CPU, as PyTorch and TensorFlow pick kernels:

    - ``"amx"``: x86 with AMX-BF16 tiles (Intel Xeon from Sapphire Rapids on): oneDNN's AMX
      kernels.
    - ``"avx512_bf16"``: x86 with AVX-512 BF16 dot products (AMD Zen 4 and 5, Intel Cooper
      Lake): oneDNN's native bf16 kernels. Zen 5 EPYC, gpt2-small, against the fastest
      float32: PyTorch forward 1.6-1.9x, decoding 1.4-1.7x; Keras forward in graph mode
      1.2-1.55x, under XLA 0.8-0.95x (``benchmarks/results/lowp_cpu_amd-epyc-zen5.md``).
    - ``"avx512"``: x86 with AVX-512 but no bf16 arithmetic (Intel Skylake-SP to Ice Lake):
      oneDNN widens bf16 to float32 in registers (emulated: PyTorch forward 0.44-0.49x
      float32, decoding 0.9-1.0x).
    - ``"avx_ne_convert"``: x86 without AVX-512 but with AVX-NE-CONVERT (Intel Sierra Forest,
      Arrow Lake, Lunar Lake): oneDNN widens bf16 to float32 on AVX2 (not measured).
    - ``"none"``: any other x86 (AVX2 only): oneDNN offers PyTorch no bf16 GEMM and it falls
      back to its own kernels (emulated: forward 0.02-0.03x float32, decoding 0.09-0.15x).
    - ``"other"``: not x86 (Apple silicon, other ARM): not measured.

    The two slow kinds were emulated on the Zen 5 (``ONEDNN_MAX_CPU_ISA``,
    ``ATEN_CPU_CAPABILITY``: those CPUs' kernel choices, this core's timings);
    ``benchmarks/bench_lowp.py`` measures all of it.
    """
    if info.machine.lower() not in _X86:
        return "other"
    if "amx_bf16" in info.flags and "amx_tile" in info.flags:
        return "amx"
    if "avx512_bf16" in info.flags:
        return "avx512_bf16"
    if "avx512f" in info.flags:
        return "avx512"
    return "avx_ne_convert" if "avx_ne_convert" in info.flags else "none"


#: bf16 speed against float32 on the x86 kinds without bf16 arithmetic (PyTorch, gpt2-small,
#: emulated on a Zen 5 EPYC: ``benchmarks/results/lowp_cpu_amd-epyc-zen5.md``).
_BF16_SLOWDOWN = {
    "avx512": "a forward pass at about 0.45x float32's speed and decoding at about 0.9x",
    "none": "a forward pass at about 0.03x float32's speed and decoding at about 0.1x",
}


def bfloat16_advice(info: CpuInfo) -> str | None:
    """What to tell someone running a bfloat16 model on this CPU, or None where bf16 is the
    fast path (``BFLOAT16_NATIVE``) or not measured (``"avx_ne_convert"``, ``"other"``)."""
    path = bfloat16_path(info)
    if path not in _BF16_SLOWDOWN:
        return None
    return (
        f"bfloat16 on this CPU ({info.model}: no AVX-512 BF16 or AMX, bf16 path {path!r}) "
        f"runs {_BF16_SLOWDOWN[path]}; float32 is faster here "
        "(benchmarks/bench_lowp.py measures it)"
    )
