"""The model-loading flags ``generate`` and ``serve`` share: ``--framework``, ``--dtype``,
``--load-in-4bit`` / ``--load-in-8bit`` (bitsandbytes, PyTorch only) and ``--device``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_loading_flags", "loading_options"]


def add_loading_flags(parser: argparse.ArgumentParser) -> None:
    """Add the four loading flags to a subcommand's parser."""
    parser.add_argument(
        "--framework", choices=("pt", "tf"), help="default: pt if torch is installed"
    )
    parser.add_argument("--dtype", help="float32, float16, bfloat16 or auto")
    bits = parser.add_mutually_exclusive_group()
    bits.add_argument(
        "--load-in-4bit", action="store_true",
        help="bitsandbytes NF4 weights, double-quantized (pt only; needs gpt2_dual[bnb])",
    )  # fmt: skip
    bits.add_argument(
        "--load-in-8bit", action="store_true",
        help="bitsandbytes LLM.int8() weights (pt only; needs gpt2_dual[bnb])",
    )  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, cuda:0, gpu:0 or a device index")


def loading_options(args: argparse.Namespace) -> dict[str, Any]:
    """``framework``, ``dtype``, ``device`` and ``model_kwargs`` as ``pipeline`` takes them.

    Raises:
        ValueError: a bitsandbytes flag with ``--framework tf``.
    """
    options = {"framework": args.framework, "dtype": args.dtype, "model_kwargs": {}}
    options.update(_quantization(args))
    options["device"] = _device(args.device)
    return options


def _quantization(args: argparse.Namespace) -> dict[str, Any]:
    """Options for ``--load-in-4bit``/``--load-in-8bit`` (none without them): the model card's
    settings (NF4, double quantization, float16 compute), the layers kept in full precision in
    float16 unless ``--dtype`` says otherwise (transformers 4's rule)."""
    if not (args.load_in_4bit or args.load_in_8bit):
        return {}
    flag = "--load-in-4bit" if args.load_in_4bit else "--load-in-8bit"
    if args.framework == "tf":
        raise ValueError(f"{flag} is bitsandbytes quantization, PyTorch only: use --framework pt")
    from gpt2_dual.quantization import BitsAndBytesConfig

    if args.load_in_4bit:
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype="float16",
        )  # fmt: skip
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {
        "framework": "pt",
        "dtype": args.dtype or "float16",
        "model_kwargs": {"quantization_config": config},
    }


def _device(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value
