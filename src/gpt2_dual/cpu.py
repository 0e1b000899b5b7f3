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
from dataclasses import dataclass
from pathlib import Path

from gpt2_dual.errors import InvalidInputError

__all__ = ["ENV_ONEDNN", "CpuInfo", "cpu_info", "float32_path", "onednn_default"]

#: Environment variable that overrides the rule: "1" (oneDNN) or "0" (PyTorch's kernels).
ENV_ONEDNN = "GPT2_DUAL_ONEDNN"
#: Flags that matter for the kernels, as /proc/cpuinfo names them.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "fma")


@dataclass(frozen=True)
class CpuInfo:
    """A CPU, as far as kernel choices care.

    Attributes:
        vendor: ``"AMD"``, ``"Intel"``, ``"Apple"``, ``"ARM"`` or ``"unknown"``.
        model: the model name (``"AMD EPYC 9B14"``), or the platform's processor string.
        machine: ``platform.machine()`` (``"x86_64"``, ``"arm64"``, ...).
        flags: the ``FLAGS`` this CPU has.
    """

    vendor: str
    model: str
    machine: str
    flags: tuple[str, ...]

    @property
    def family(self) -> str:
        """A file-name-friendly CPU family for benchmark results (``"amd-epyc"``, ...)."""
        model = self.model.lower()
        for name in ("epyc", "ryzen", "xeon", "core"):
            if name in model:
                return f"{self.vendor.lower()}-{name}"
        return self.vendor.lower()

    def describe(self) -> str:
        """One line for benchmark tables: model, vendor, flags and the float32 path."""
        flags = ", ".join(self.flags) or "none of " + "/".join(FLAGS)
        return f"{self.model} ({self.vendor}, {self.machine}; {flags}); float32 path: " + (
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
    return CpuInfo(vendor, model, machine, tuple(f for f in FLAGS if f in present))


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
