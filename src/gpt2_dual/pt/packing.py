"""oneDNN-packed weights: copies of ``Conv1D``/``Linear`` CPU weights in oneDNN's blocked
layout, which ``gpt2_dual.pt.linear.linear`` reads for inference products.

A copy is oneDNN's reorder of the weight's ``(N, K)`` matrix (``Conv1D``'s ``(K, N)`` weight
transposed) for products of about ``rows`` rows (M, oneDNN's hint).

``pack_weights`` makes the copies and ``using_packed`` makes them active (``linear`` looks a
weight up in ``gpt2_dual.pt.linear._PACKED`` and uses its copy when no gradient is needed);
``packed_weights`` does both for a model's layers. The products are the same; only oneDNN's
summation order may differ. bfloat16 weights are packed where the CPU has bf16 math
(``bf16_packing_available``); float32 weights where the CPU rule runs float32 products on
oneDNN (``gpt2_dual.cpu``: AMD x86).

``generate`` decodes on packed weights (``packed_weights(model.modules(), rows,
keep_on=model)``, rows = batch x beams): packed for ``PACK_HINT`` rows at ``PACK_ROWS`` rows or
more, for one row below that. Kept packs: the copies stay on the model (``model.__dict__``)
for the next call, since packing gpt2-small takes 0.3 s, more than a 64-token call saves; a
weight that changes is repacked, a model that moves or changes dtype drops them, and
``drop_kept_packs(model)`` frees them. The price is a second copy of the weights in memory.
The serving slots (``gpt2_dual.pt.slots``) pack once for ``PACK_HINT`` rows and hold their
own copies.

This module sits above ``gpt2_dual.pt.linear``: it needs the layer classes and the oneDNN
switch, while ``linear`` only reads the registry of active copies, which it owns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from gpt2_dual.pt.linear import _PACKED, _STATE, Conv1D, Linear, onednn_available

__all__ = [
    "PACK_HINT",
    "PACK_ROWS",
    "bf16_packing_available",
    "drop_kept_packs",
    "pack_weights",
    "packed_weights",
    "using_packed",
]


#: Products of at least this many rows read float32 weights packed for ``PACK_HINT`` rows;
#: fewer rows read weights packed for one row, where the copies are kept between calls
#: (``packed_weights(keep_on=model)``; packing them per call costs more than it saves).
PACK_ROWS = 4
PACK_HINT = 16
#: Where ``packed_weights(keep_on=model)`` keeps a model's packed copies (``model.__dict__``).
_KEPT = "_gpt2_dual_kept_packs"


def bf16_packing_available() -> bool:
    """Whether oneDNN can pack bf16 weights here: the op exists and the CPU has bf16 math."""
    ops = torch.ops.mkldnn
    return (
        onednn_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_is_mkldnn_bf16_supported")
        and bool(ops._is_mkldnn_bf16_supported())
    )


def pack_weights(
    modules: Iterable[nn.Module], *, rows: int = 1, float32: bool = False
) -> dict[int, tuple[Tensor, Tensor]]:
    """oneDNN-packed copies of the CPU weights of these ``Conv1D``/``Linear`` layers, for
    inference products of about ``rows`` rows (``using_packed`` makes ``linear`` read them).

    bfloat16 weights are packed where ``bf16_packing_available()``. float32 weights only with
    ``float32=True`` and where the float32 products run on oneDNN (the CPU rule): packed for
    16 rows, the products of a batched decode step on a 2-core AMD EPYC (Zen 4) take 22-33%
    less time than on the plain layout (c_fc 0.54 against 0.70 ms, the LM head 7.5 against
    11.2 ms; ``benchmarks/bench_serve.py``), while for one row packing gains nothing.

    Returns:
        ``id(weight) -> (weight, packed)``; empty where nothing can be packed.
    """
    packs: dict[int, tuple[Tensor, Tensor]] = {}
    ok = {torch.bfloat16} if bf16_packing_available() else set()
    if float32 and _STATE["onednn"] and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        ok.add(torch.float32)
    if not ok:
        return packs
    for module in modules:
        weight = getattr(module, "weight", None)
        plain = isinstance(module, Conv1D | Linear) and not (
            module._forward_hooks or module._forward_pre_hooks
        )
        if not plain or weight is None or weight.dtype not in ok or weight.device.type != "cpu":
            continue
        w = weight.detach() if isinstance(module, Linear) else weight.detach().t()
        packs[id(weight)] = (weight, torch.ops.mkldnn._reorder_linear_weight(w, rows))
    return packs


@contextmanager
def using_packed(packs: dict[int, tuple[Tensor, Tensor]]) -> Iterator[int]:
    """Inside, inference products of the packed layers read their packed copies (the same
    products; only oneDNN's summation order may differ). Yields how many are active."""
    added = [key for key in packs if key not in _PACKED]
    _PACKED.update({key: packs[key] for key in added})
    try:
        yield len(added)
    finally:
        for key in added:
            _PACKED.pop(key, None)


@contextmanager
def packed_weights(
    modules: Iterable[nn.Module], rows: int = 1, *, keep_on: nn.Module | None = None
) -> Iterator[int]:
    """Inside, inference products of these ``Conv1D``/``Linear`` layers read oneDNN-packed
    copies of their CPU weights: bfloat16 weights always (where the CPU has bf16 math),
    float32 weights where the CPU rule runs float32 on oneDNN, when the products have at least
    ``PACK_ROWS`` rows or ``keep_on`` is given. Without ``keep_on`` the copies are made on
    entry and freed on exit; with it they stay on ``keep_on`` (the model) for the next call,
    until a weight changes (repacked then) or ``drop_kept_packs(model)``.

    float32, one row, kept (what ``generate`` does): greedy gpt2-small at batch 1 on a 2-core
    AMD EPYC (Zen 4) decodes at 46 against 37.6 tokens/s on the plain weights (interleaved),
    though an isolated product gains little: in a decode step, between the other operations,
    the packed layout streams from memory faster. Packing gpt2-small takes 0.3 s, more than a
    64-token call saves, hence kept. The price is one more copy of the weights in memory.

    A one-row decode step is a matrix-vector product per layer that reads every weight once:
    packed in oneDNN's blocked layout, bf16 weights stream at 55 GB/s against 20 for the plain
    layouts (``benchmarks/bench_generate.py``, AMD EPYC with AVX-512 BF16); float32 gains
    nothing there. Batched steps gain in float32 too (``pack_weights``). Costs one more copy of
    those weights while active and ~0.1 s per 250 MB to pack. Gradients never use the copies.

    Args:
        modules: the layers (``model.modules()``).
        rows: rows of the products to come (batch x beams in ``generate``).
        keep_on: the model to keep the packed copies on between calls, or None.

    Yields:
        How many weights were packed.
    """
    batched = rows >= PACK_ROWS
    hint, float32 = (PACK_HINT if batched else 1), (batched or keep_on is not None)
    if keep_on is None:
        packs = pack_weights(modules, rows=hint, float32=float32)
    else:
        packs = _kept_packs(keep_on, list(modules), hint, float32)
    with using_packed(packs) as count:
        yield count


def _kept_packs(
    owner: nn.Module, modules: list[nn.Module], hint: int, float32: bool
) -> dict[int, tuple[Tensor, Tensor]]:
    """``pack_weights`` of ``modules``, kept on ``owner`` and reused while every packed weight
    is the same tensor, unchanged (its version counter and storage); one set at a time."""
    weights = [m.weight for m in modules if isinstance(m, Conv1D | Linear)]
    key = (hint, float32, _STATE["onednn"],
           tuple((id(w), w._version, w.data_ptr()) for w in weights))  # fmt: skip
    kept = owner.__dict__.get(_KEPT)
    if kept is not None and kept[0] == key:
        return kept[1]
    owner.__dict__.pop(_KEPT, None)  # free the old copies before making new ones
    packs = pack_weights(modules, rows=hint, float32=float32)
    owner.__dict__[_KEPT] = (key, packs)
    return packs


def drop_kept_packs(owner: nn.Module) -> None:
    """Free the packed copies ``packed_weights(keep_on=owner)`` keeps (a model that moves or
    changes dtype drops them; the next ``generate`` packs again)."""
    owner.__dict__.pop(_KEPT, None)
