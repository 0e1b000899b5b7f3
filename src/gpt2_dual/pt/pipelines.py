"""The PyTorch side of ``gpt2_dual.pipeline``: load, place, one forward pass, ``generate``.

``gpt2_dual.tf.pipelines`` has the same functions; the pipelines themselves are neutral
(``gpt2_dual.pipelines.base``) and pass numpy arrays in and get numpy arrays back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import gpt2_dual.pt as gpt

__all__ = ["device_scope", "forward", "generate", "load", "place"]

_OUTPUTS = ("logits", "start_logits", "end_logits")


def torch_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device``: -1 is the CPU, an int k is ``cuda:k``; None stays None.

    Raises:
        ValueError: not an int, a device string or a ``torch.device``.
    """
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        device = torch.device("cpu") if device < 0 else torch.device("cuda", device)
    elif isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device={device!r} is not a torch device: {err}") from None
    elif not isinstance(device, torch.device):
        raise ValueError(f"device must be an int, a string or a torch.device; got {device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: this PyTorch sees no CUDA device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r}: PyTorch sees {torch.cuda.device_count()} GPU(s)")
    return device


def torch_dtype(dtype: Any) -> torch.dtype | str | None:
    """``dtype`` as a torch dtype ("float16" -> ``torch.float16``); None and "auto" stay.

    Raises:
        ValueError: a name that is not a floating torch dtype.
    """
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    value = getattr(torch, str(dtype), None) if isinstance(dtype, str) else None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(
            "dtype must be a floating torch dtype or its name (float32, float16, bfloat16) or "
            f"'auto'; got {dtype!r}"
        )
    return value


def load(
    class_name: str,
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    device: Any = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """``class_name.from_pretrained(path)`` in eval mode, with ``dtype`` on ``device``
    (``dtype`` None: ``from_pretrained``'s default, ``"auto"``, as transformers 5's pipelines)."""
    cls = getattr(gpt, class_name)
    device = torch_device(device)
    if dtype is not None:
        kwargs["dtype"] = torch_dtype(dtype)
    return cls.from_pretrained(path, device=device, **kwargs).eval()


def place(model: torch.nn.Module, *, dtype: Any = None, device: Any = None) -> torch.nn.Module:
    """A model object moved to ``device`` and cast to ``dtype`` (when given), in eval mode."""
    dtype, device = torch_dtype(dtype), torch_device(device)
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def device_scope(device: Any) -> Callable[[], contextlib.AbstractContextManager]:
    """Nothing to enter: a torch model runs where its parameters are (see ``place``)."""
    torch_device(device)
    return contextlib.nullcontext


def forward(
    model: torch.nn.Module, input_ids: np.ndarray, attention_mask: np.ndarray
) -> dict[str, np.ndarray]:
    """The model on ``(B, T)`` ids and mask; its logits fields as float32 numpy arrays."""
    device = model.device
    with torch.inference_mode():
        out = model(
            input_ids=torch.as_tensor(input_ids, device=device),
            attention_mask=torch.as_tensor(attention_mask, device=device),
        )
    return {
        name: getattr(out, name).float().cpu().numpy()
        for name in _OUTPUTS
        if getattr(out, name, None) is not None
    }


def generate(
    model: torch.nn.Module, input_ids: np.ndarray, attention_mask: np.ndarray, **kwargs: Any
) -> np.ndarray:
    """``model.generate`` on a numpy prompt; the ``(R, T + n)`` ids as int64 numpy."""
    out = model.generate(
        input_ids=torch.as_tensor(input_ids, device=model.device),
        attention_mask=torch.as_tensor(attention_mask, device=model.device),
        **kwargs,
    )
    out = getattr(out, "sequences", out)
    return out.cpu().numpy().astype(np.int64)
