"""Framework adapters: the only place the contract and reference tests touch a framework's API.

Each adapter is numpy in, numpy out, so one test body serves every framework:

- ``build(head, config, state=None, **kwargs) -> model``: the head's model (class named by
  ``HEAD_SPECS``), in inference mode, loaded from a canonical numpy state when given.
- ``call(model, **inputs)``: numpy arrays in, the model's own output object out.
- ``run(model, **inputs) -> dict``: numpy arrays in; every output field that is set comes back
  as a numpy array (``hidden_states``/``attentions``/``cross_attentions`` as tuples of them),
  except ``past_key_values``, which stays the framework's own object, to be passed back as is.
- ``new_cache(model, kind, batch_size, max_length)``: ``None`` for ``"dynamic"`` (the model
  makes one), a preallocated cache for ``"static"``.
- ``cache_arrays(cache) -> list[(k, v)]``: the written part of a cache, ``(B, H, S, D)`` each.
- ``load(head, folder) -> model``: the head's ``from_pretrained(folder)``.
- ``generate(model, input_ids, attention_mask=None, **kwargs)``: numpy prompt in; numpy ids
  out, or a ``GenerateOutput`` whose tensors are numpy (``past_key_values`` dropped).

The TF adapter (added with gpt2_dual.tf) implements the same four calls.
"""

from __future__ import annotations

import importlib.util
import zlib
from typing import Any

import numpy as np
import pytest

from gpt2_dual.checkpoint.names import BACKBONE_ATTR, canonical_shapes, is_backbone, params
from gpt2_dual.heads import HEAD_SPECS

_OPAQUE = ("past_key_values",)


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class PT:
    """gpt2_dual.pt through numpy."""

    name = "pt"

    @staticmethod
    def build(head: str, config, state: dict[str, np.ndarray] | None = None, **kwargs) -> Any:
        import gpt2_dual.pt as gpt

        model = getattr(gpt, HEAD_SPECS[head].class_name)(config, **kwargs).eval()
        if state is not None:
            load_canonical_pt(model, state)
        return model

    @staticmethod
    def call(model, **inputs) -> Any:
        """The model's own output object for numpy inputs."""
        import torch

        args = {k: _to_torch(v, model.device) for k, v in inputs.items()}
        with torch.no_grad():
            return model(**args)

    @staticmethod
    def run(model, **inputs) -> dict[str, Any]:
        out = PT.call(model, **inputs)
        return {k: (v if k in _OPAQUE else _to_numpy(v)) for k, v in out.items()}

    @staticmethod
    def new_cache(model, kind: str, batch_size: int, max_length: int) -> Any:
        from gpt2_dual.pt import StaticCache

        if kind == "dynamic":
            return None
        return StaticCache(
            model.config, batch_size, max_length, dtype=model.dtype, device=model.device
        )

    @staticmethod
    def cache_arrays(cache) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(_to_numpy(k), _to_numpy(v)) for k, v in cache]

    @staticmethod
    def load(head: str, folder) -> Any:
        import gpt2_dual.pt as gpt

        return getattr(gpt, HEAD_SPECS[head].class_name).from_pretrained(folder)

    @staticmethod
    def generate(model, input_ids, attention_mask=None, **kwargs) -> Any:

        args = {"input_ids": _to_torch(input_ids, model.device)}
        if attention_mask is not None:
            args["attention_mask"] = _to_torch(attention_mask, model.device)
        return generated_numpy(model.generate(**args, **kwargs), lambda t: t.cpu().numpy())


def generated_numpy(out: Any, to_numpy) -> Any:
    """``generate``'s result with numpy arrays (scores and logits as float32)."""
    from gpt2_dual.outputs import GenerateOutput

    if not isinstance(out, GenerateOutput):
        return to_numpy(out)
    fields = {}
    for name in ("sequences", "sequences_scores", "beam_indices"):
        value = getattr(out, name)
        fields[name] = None if value is None else to_numpy(value)
    for name in ("scores", "logits"):
        value = getattr(out, name)
        fields[name] = None if value is None else tuple(to_numpy(v) for v in value)
    return GenerateOutput(**fields)


def _to_torch(value: Any, device) -> Any:
    import torch

    if not isinstance(value, np.ndarray):
        return value
    tensor = torch.from_numpy(np.ascontiguousarray(value))
    if value.dtype.kind in "iu":
        tensor = tensor.long()
    elif value.dtype.kind == "f":
        tensor = tensor.float()
    return tensor.to(device)


def _to_numpy(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return tuple(_to_numpy(v) for v in value)
    return value.detach().float().cpu().numpy()


def load_canonical_pt(model, state: dict[str, np.ndarray]) -> None:
    """Fill a gpt2_dual.pt model from a canonical numpy state by walking the name table.

    Strict both ways: every table row must be in ``state`` and every key of ``state`` must be
    a row; every parameter of the model must be filled. (Part B's ``pt.weights.load_canonical``
    does this in the library; this test-side walk keeps the reference tests independent of it.)
    """
    import torch

    rows = params(model.config, type(model).head)
    assert set(state) == {r.canonical for r in rows}, (
        f"missing {sorted({r.canonical for r in rows} - set(state))}, "
        f"unexpected {sorted(set(state) - {r.canonical for r in rows})}"
    )
    filled = set()
    for row in rows:
        path = row.pt
        if type(model).head != "base" and is_backbone(row.canonical):
            path = f"{BACKBONE_ATTR}.{path}"
        param = model.get_parameter(path)
        value = torch.from_numpy(np.ascontiguousarray(state[row.canonical]))
        assert tuple(value.shape) == tuple(param.shape), f"{row.canonical}: {value.shape}"
        with torch.no_grad():
            param.copy_(value)
        filled.add(id(param))
    model.tie_weights()
    left = [n for n, p in model.named_parameters() if id(p) not in filled]
    assert not left, f"parameters not in the table: {left}"


class PTCuda(PT):
    """gpt2_dual.pt on the GPU: the same calls, the model moved to CUDA, TF32 off (float32
    means float32, so the CPU tolerance table applies)."""

    name = "pt-cuda"

    @staticmethod
    def build(head: str, config, state: dict[str, np.ndarray] | None = None, **kwargs) -> Any:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return PT.build(head, config, state, **kwargs).to("cuda")


def _has_cuda() -> bool:
    if not has("torch"):
        return False
    import torch

    return torch.cuda.is_available()


def _tf_adapter() -> Any:
    from frameworks_tf import TF

    return TF


FRAMEWORKS = [
    pytest.param(PT, id="pt", marks=pytest.mark.skipif(not has("torch"), reason="no torch")),
    pytest.param(
        PTCuda,
        id="pt-cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not _has_cuda(), reason="no CUDA device")],
    ),
    pytest.param(
        _tf_adapter() if has("tensorflow") else None,
        id="tf",
        marks=pytest.mark.skipif(not has("tensorflow"), reason="no tensorflow"),
    ),
]


def random_state(config, head: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A canonical numpy state for ``head`` with non-symmetric random values.

    Each tensor is drawn from its own generator seeded by (seed, name), so the backbone part is
    identical across heads: a head model and ``GPT2Model`` built from the same seed share it.
    LayerNorm weights are around 1, everything else around 0.
    """
    state = {}
    for name, shape in canonical_shapes(config, head).items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        value = rng.normal(0.0, 0.2, shape).astype(np.float32)
        if ".ln_" in f".{name}" and name.endswith(".weight"):
            value += 1.0
        state[name] = value
    return state
