"""GPT-2 attention: one module, one attention function, three backends, one masking rule.

Shapes: B batch, T new (query) tokens, S key positions (cached + new, or the static cache's
``S_max``, or the encoder's length for cross-attention), C ``n_embd``, H heads, D ``C // H``.

``Attention`` projects once (``c_attn``: ``(B, T, C) -> (B, T, 3C)``, a single fused matmul),
views the result as q, k, v ``(B, H, T, D)`` without copies, stores k and v in the cache,
runs ``attend`` and projects out with ``c_proj``. Cross-attention (``is_cross_attention``)
takes q from ``q_attn`` and k, v from ``c_attn`` (``C -> 2C``) of the encoder states; its keys
are recomputed on every call (they are not cached).

Backends (``attn_implementation``):

- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``; with no padding and no
  cache it runs with ``is_causal=True`` and no mask tensor (the fast kernels).
- ``"eager"``: the readable reference: scores, mask, float32 softmax, weighted sum. Also used
  for a call with ``output_attentions=True`` on any backend (the weights must exist), and
  when ``reorder_and_upcast_attn`` runs in float16/bfloat16 (q @ k^T in float32).
- ``"flash_attention_2"``: the ``flash_attn`` package (CUDA, float16/bfloat16); padded batches
  go through ``flash_attn_varlen_func`` on the unpadded tokens.

Masking rule (every backend): one boolean mask, True where a query may attend a key: the key
is not in the future (``key_pos <= query_pos``) and is a real token (``attention_mask``). A
query that would see no key at all (a padding query at the start of a left-padded row) sees
itself instead, so no row is fully masked and no NaN appears; every other row, padding
queries of right-padded rows included, is exactly transformers' mask. Eager fills masked
scores with ``finfo(dtype).min`` (never a -1e4 constant); sdpa takes the boolean mask. Softmax
runs in float32 under float16/bfloat16.

All three scale options of the config apply on every backend: ``scale_attn_weights``
(1/sqrt(D)), ``scale_attn_by_inverse_layer_idx`` (1/(layer_idx + 1)). transformers (4.57) only
honours them in its eager path; its sdpa path always scales by 1/sqrt(D).
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gpt2_dual.pt.cache import DynamicCache, StaticCache
from gpt2_dual.pt.linear import Conv1D

__all__ = ["ATTN_IMPLEMENTATIONS", "Attention", "AttentionMask", "attend", "causal_mask"]

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
FLASH_MISSING = (
    "attn_implementation='flash_attention_2' needs the flash-attn package "
    "(pip install 'gpt2_dual[flash]', CUDA only); use 'sdpa'"
)


def check_backend(name: str) -> str:
    """Validate an ``attn_implementation`` name; flash needs ``flash_attn`` importable.

    Raises:
        ValueError: unknown name. ImportError: flash requested without ``flash_attn``.
    """
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation={name!r} is not supported; choose one of {ATTN_IMPLEMENTATIONS}"
        )
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError(FLASH_MISSING)
    return name


class AttentionMask(NamedTuple):
    """Masking facts for one forward, built once by the model and shared by every layer.

    Attributes:
        dense: ``(B, 1, T, S)`` bool, True = may attend; None means plain causal attention
            with ``T == S``, or a single query that sees every key.
        keys: ``(B, S)`` bool, key slots holding real tokens (flash's unpadding); None = all.
        queries: ``(B, T)`` bool, real query tokens (flash's unpadding); None = all.
    """

    dense: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    queries: torch.Tensor | None = None


def causal_mask(
    key_ok: torch.Tensor | None,
    query_pos: torch.Tensor,
    key_length: int,
    *,
    dense: bool = True,
) -> AttentionMask:
    """The masking rule for self-attention.

    Args:
        key_ok: ``(B, S')`` bool, real tokens among the first ``S' <= S`` key slots (slots
            past ``S'`` are counted real: they are future slots, excluded by causality); None
            when nothing is padded.
        query_pos: ``(T,)`` int64, cache slot (= sequence position) of each new token.
        key_length: ``S``.
        dense: build ``AttentionMask.dense`` (not needed by flash unless weights are output).

    Returns:
        The ``AttentionMask``.
    """
    key_pos = torch.arange(key_length, device=query_pos.device)
    if key_ok is not None and key_ok.shape[-1] < key_length:
        key_ok = F.pad(key_ok, (0, key_length - key_ok.shape[-1]), value=True)
    mask = None
    if dense:
        mask = key_pos <= query_pos[:, None]  # (T, S), causal
        if key_ok is None:
            mask = mask[None, None]  # (1, 1, T, S)
        else:  # (B, 1, T, S): causal and real; a query that sees nothing sees itself
            mask = mask & key_ok[:, None, None, :]
            mask = mask | ((key_pos == query_pos[:, None]) & ~mask.any(-1, keepdim=True))
    filled = key_pos <= query_pos[-1]  # (S,), slots written up to the last new token
    keys = filled[None, :] if key_ok is None else key_ok & filled  # (1 | B, S)
    queries = None if key_ok is None else key_ok[:, query_pos]  # (B, T)
    return AttentionMask(mask, keys, queries)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionMask,
    *,
    backend: str = "sdpa",
    causal: bool = True,
    scale: float | None = None,
    dropout_p: float = 0.0,
    upcast: bool = False,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scaled dot-product attention.

    Args:
        q: ``(B, H, T, D)`` queries.
        k: ``(B, H, S, D)`` keys.
        v: ``(B, H, S, D)`` values.
        mask: the ``AttentionMask`` (see ``causal_mask``); ``AttentionMask()`` for none.
        backend: ``"eager"``, ``"sdpa"`` or ``"flash_attention_2"``.
        causal: self-attention (True) or cross-attention (False, no causal rule).
        scale: factor on q @ k^T (None: 1/sqrt(D)).
        dropout_p: dropout on the attention probabilities (0 in eval).
        upcast: compute q @ k^T and softmax in float32 (``reorder_and_upcast_attn``).
        need_weights: also return the probabilities (runs the eager math).

    Returns:
        ``(B, T, H * D)`` outputs, and ``(B, H, T, S)`` probabilities or None.
    """
    B, H, T, D = q.shape
    scale = D**-0.5 if scale is None else scale
    low_precision = q.dtype in (torch.float16, torch.bfloat16)
    if need_weights or backend == "eager" or (upcast and low_precision):
        y, weights = _eager(q, k, v, mask.dense, causal, scale, dropout_p, upcast)
    elif backend == "flash_attention_2":
        return _flash(q, k, v, mask, causal, scale, dropout_p).reshape(B, T, H * D), None
    else:
        is_causal = mask.dense is None and causal and T > 1  # then T == S
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.dense, dropout_p=dropout_p, is_causal=is_causal, scale=scale
        )
        weights = None
    return y.transpose(1, 2).reshape(B, T, H * D), weights


def _eager(q, k, v, dense, causal, scale, dropout_p, upcast):
    T, S = q.shape[-2], k.shape[-2]
    if upcast:  # transformers' _upcast_and_reordered_attn: fp32 scores, autocast off
        with torch.autocast(q.device.type, enabled=False):
            scores = torch.matmul(q.float(), k.float().transpose(-1, -2))
    else:
        scores = torch.matmul(q, k.transpose(-1, -2))  # (B, H, T, S)
    if scale != 1.0:
        scores = scores * scale
    if dense is None and causal and T > 1:
        dense = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    if dense is not None:
        scores = scores.masked_fill(~dense, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v), probs  # (B, H, T, D), (B, H, T, S)


def _flash(q, k, v, mask, causal, scale, dropout_p):
    """flash_attn on (B, T, H, D) layouts; padded batches run on the unpadded tokens."""
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(
            "attn_implementation='flash_attention_2' needs float16 or bfloat16 tensors on CUDA; "
            f"got {q.dtype} on {q.device.type}"
        )
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, T|S, H, D), last dim contiguous
    kw = dict(dropout_p=dropout_p, softmax_scale=scale, causal=causal)
    if mask.keys is None and mask.queries is None:
        # flash aligns the causal rule bottom-right, which is right for cached decoding.
        return flash_attn_func(q, k, v, **kw)
    B, T, H, D = q.shape
    S = k.shape[1]
    q_ok = mask.queries if mask.queries is not None else q.new_ones(B, T, dtype=torch.bool)
    k_ok = mask.keys.expand(B, S) if mask.keys is not None else k.new_ones(B, S, dtype=torch.bool)
    q_idx, cu_q, max_q = _unpad(q_ok)
    k_idx, cu_k, max_k = _unpad(k_ok)
    out = flash_attn_varlen_func(
        q.reshape(B * T, H, D)[q_idx],
        k.reshape(B * S, H, D)[k_idx],
        v.reshape(B * S, H, D)[k_idx],
        cu_q, cu_k, max_q, max_k, **kw,
    )  # fmt: skip
    y = q.new_zeros(B * T, H, D)  # padding queries get zeros
    y[q_idx] = out
    return y.view(B, T, H, D)


def _unpad(ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    lengths = ok.sum(-1, dtype=torch.int32)
    index = ok.flatten().nonzero().flatten()
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    return index, cu, int(lengths.max())


class Attention(nn.Module):
    """Multi-head self-attention (or cross-attention) of one GPT-2 block.

    Args:
        n_embd: model width ``C``.
        n_head: heads ``H``; ``C`` must be divisible by it.
        layer_idx: block index (cache slot, and ``scale_by_inverse_layer_idx``).
        attn_pdrop: dropout on attention probabilities.
        resid_pdrop: dropout on the output projection.
        scale_attn_weights: scale scores by 1/sqrt(D).
        scale_by_inverse_layer_idx: also scale scores by 1/(layer_idx + 1).
        reorder_and_upcast: compute q @ k^T and softmax in float32.
        is_cross_attention: attend to encoder states (adds ``q_attn``; ``c_attn`` is C -> 2C).
        backend: ``"eager"``, ``"sdpa"`` or ``"flash_attention_2"``.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        layer_idx: int = 0,
        attn_pdrop: float = 0.0,
        resid_pdrop: float = 0.0,
        scale_attn_weights: bool = True,
        scale_by_inverse_layer_idx: bool = False,
        reorder_and_upcast: bool = False,
        is_cross_attention: bool = False,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.layer_idx, self.is_cross_attention = layer_idx, is_cross_attention
        self.attn_pdrop, self.reorder_and_upcast = attn_pdrop, reorder_and_upcast
        self.backend = check_backend(backend)
        self.scale = (self.head_dim**-0.5 if scale_attn_weights else 1.0) / (
            layer_idx + 1 if scale_by_inverse_layer_idx else 1
        )
        self.c_attn = Conv1D(n_embd, (2 if is_cross_attention else 3) * n_embd)
        if is_cross_attention:
            self.q_attn = Conv1D(n_embd, n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(resid_pdrop)

    def forward(
        self,
        x: torch.Tensor,
        mask: AttentionMask,
        *,
        cache: DynamicCache | StaticCache | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend and project.

        Args:
            x: ``(B, T, C)`` normalised hidden states.
            mask: the forward's ``AttentionMask`` (the encoder's, for cross-attention).
            cache: self-attention cache to read and extend.
            encoder_hidden_states: ``(B, S, C)``, required for cross-attention.
            output_attentions: also return the ``(B, H, T, S)`` probabilities.

        Returns:
            ``(B, T, C)`` output and the probabilities or None.
        """
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        if self.is_cross_attention:
            q = self.q_attn(x).view(B, T, H, D).transpose(1, 2)
            S = encoder_hidden_states.shape[1]
            # (B, S, 2C) -> (2, B, H, S, D): views, no copy
            kv = self.c_attn(encoder_hidden_states).view(B, S, 2, H, D)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = self.c_attn(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
            if cache is not None:
                k, v = cache.update(self.layer_idx, k, v)  # (B, H, S, D)
        y, weights = attend(
            q, k, v, mask,
            backend=self.backend,
            causal=not self.is_cross_attention,
            scale=self.scale,
            dropout_p=self.attn_pdrop if self.training else 0.0,
            upcast=self.reorder_and_upcast,
            need_weights=output_attentions,
        )  # fmt: skip
        return self.resid_dropout(self.c_proj(y)), weights
