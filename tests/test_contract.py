"""What every framework's models promise, written once over the FRAMEWORKS adapters.

Output types and fields, shapes per head, pooling against numpy oracles, left padding, cached
steps against one full forward (both cache kinds), input errors with exact messages, and the
config: never written by a forward, sizes locked, other fields live.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, TINY, assert_close, tiny_config
from frameworks import FRAMEWORKS, random_state
from gpt2_dual.heads import HEAD_SPECS
from gpt2_dual.outputs import OUTPUT_TYPES

PAD = 98  # pad_token_id; real ids stay below it
CACHED_HEADS = ("base", "lm", "double_heads", "sequence_classification")
N_CHOICES = 2
C, V, L, H = TINY["n_embd"], TINY["vocab_size"], TINY["num_labels"], TINY["n_head"]


def lead_of(head: str) -> tuple[int, ...]:
    return (N_CHOICES, BATCH) if head == "double_heads" else (BATCH,)


def batch(head: str = "lm", padding: str = "right", seed: int = 0):
    """Token ids and mask ``(*lead, SEQ)``; row 1 padded on ``padding``'s side."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, PAD, size=(*lead_of(head), SEQ))
    mask = np.ones_like(ids)
    if padding == "right":
        mask[..., 1, -2:] = 0
    elif padding == "left":
        mask[..., 1, :3] = 0
    ids[mask == 0] = PAD
    return ids, mask


def labels_for(head: str, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    if head in ("lm", "double_heads"):
        out = {"labels": np.where(mask == 1, ids, -100)}
        if head == "double_heads":
            out["mc_labels"] = rng.integers(0, BATCH, size=ids.shape[:1])
        return out
    if head == "sequence_classification":
        return {"labels": rng.integers(0, L, size=ids.shape[:1])}
    if head == "token_classification":
        return {"labels": np.where(mask == 1, rng.integers(0, L, size=ids.shape), -100)}
    if head == "question_answering":
        return {"start_positions": np.array([0, 2, 4]), "end_positions": np.array([1, 3, 6])}
    return {}


def build(fw, head: str, config=None, **kwargs):
    config = config or tiny_config(pad_token_id=PAD)
    return fw.build(head, config, random_state(config, head), **kwargs)


@pytest.fixture(scope="module")
def shared():
    """``shared(fw, head)``: ``build(fw, head)`` made once per framework and head, for the
    tests that only run it (a cache they make is their own; none changes the model or its
    config). ``shared(fw, "base")`` is every head's backbone (the pooling oracles read it):
    ``random_state`` draws each tensor from its name, so every head's state holds it."""
    models = {}

    def get(fw, head: str):
        if (fw.name, head) not in models:
            models[fw.name, head] = build(fw, head)
        return models[fw.name, head]

    return get


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("head", HEADS)
def test_output_type_and_fields_follow_the_flags_only(fw, shared, head):
    model = shared(fw, head)
    ids, mask = batch(head)
    cached = head in CACHED_HEADS
    variants = [
        ({}, {"past_key_values"} if cached else set()),
        (
            {"output_hidden_states": True},
            {"hidden_states"} | ({"past_key_values"} if cached else set()),
        ),
        ({"output_attentions": True}, {"attentions"} | ({"past_key_values"} if cached else set())),
        (
            labels_for(head, ids, mask),
            ({"loss"} if head != "base" else set())
            | ({"mc_loss"} if head == "double_heads" else set())
            | ({"past_key_values"} if cached else set()),
        ),
    ]
    if cached:
        variants.append(({"use_cache": False}, set()))
    for flags, extra in variants:
        out = fw.call(model, input_ids=ids, attention_mask=mask, **flags)
        assert type(out) is OUTPUT_TYPES[head], flags
        assert set(out.keys()) == set(HEAD_SPECS[head].outputs) | extra, flags


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("head", HEADS)
def test_shapes(fw, shared, head):
    model = shared(fw, head)
    ids, mask = batch(head)
    lead, T = lead_of(head), SEQ
    out = fw.run(
        model, input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
    )
    expected = {
        "base": {"last_hidden_state": (*lead, T, C)},
        "lm": {"logits": (*lead, T, V)},
        "double_heads": {"logits": (*lead, T, V), "mc_logits": lead},
        "question_answering": {"start_logits": (*lead, T), "end_logits": (*lead, T)},
        "sequence_classification": {"logits": (*lead, L)},
        "token_classification": {"logits": (*lead, T, L)},
    }[head]
    for field, shape in expected.items():
        assert out[field].shape == shape, field
    assert [h.shape for h in out["hidden_states"]] == [(*lead, T, C)] * (TINY["n_layer"] + 1)
    assert [a.shape for a in out["attentions"]] == [(*lead, H, T, T)] * TINY["n_layer"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_one_token_without_cache_runs_quietly(fw, shared):
    # pytest turns warnings into errors: Keras' softmax warned on a one-key axis here
    model = shared(fw, "sequence_classification")
    assert fw.run(model, input_ids=np.array([[5]]), use_cache=False)["logits"].shape == (1, L)


# --------------------------------------------------------------------------- pooling oracles
def _backbone(fw, config, state):
    base_state = {k: v for k, v in state.items() if k.split(".")[0] in ("wte", "wpe", "h", "ln_f")}
    return fw.build("base", config, base_state)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("padding", ["right", "left", "none"])
def test_sequence_pooling_matches_numpy_oracle(fw, shared, padding):
    state = random_state(tiny_config(pad_token_id=PAD), "sequence_classification")
    model = shared(fw, "sequence_classification")
    ids, mask = batch("sequence_classification", padding)
    hidden = fw.run(shared(fw, "base"), input_ids=ids, attention_mask=mask)["last_hidden_state"]
    last = np.array([np.flatnonzero(row != PAD).max() for row in ids])  # right-most real token
    expected = hidden[np.arange(len(ids)), last] @ state["score.weight"].T
    got = fw.run(model, input_ids=ids, attention_mask=mask)["logits"]
    assert_close(got, expected, "float32", f"pooled logits, {padding} padding")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("given", [True, False])
def test_multiple_choice_pooling_matches_numpy_oracle(fw, shared, given):
    state = random_state(tiny_config(pad_token_id=PAD), "double_heads")
    model = shared(fw, "double_heads")
    ids, mask = batch("double_heads")
    hidden = fw.run(shared(fw, "base"), input_ids=ids, attention_mask=mask)[
        "last_hidden_state"
    ]  # (B, N, T, C)
    index = mask.sum(-1) - 1 if given else np.full(ids.shape[:-1], SEQ - 1)
    pooled = np.take_along_axis(hidden, index[..., None, None], axis=-2)[..., 0, :]
    w, b = state["multiple_choice_head.summary.weight"], state["multiple_choice_head.summary.bias"]
    expected = (pooled @ w.T + b)[..., 0]
    inputs = dict(input_ids=ids, attention_mask=mask, mc_token_ids=index if given else None)
    assert_close(fw.run(model, **inputs)["mc_logits"], expected, "float32", "mc_logits")


#: summary_type x projection/activation variants of the multiple-choice head
SUMMARIES = [
    ("last", {}),
    ("first", {}),
    ("mean", {}),
    ("cls_index", {}),
    ("mean", dict(summary_use_proj=False, summary_activation="tanh")),  # (B, N, C) out
    ("first", dict(summary_proj_to_labels=False, summary_activation="tanh")),  # C features
]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(
    ("kind", "changes"), SUMMARIES, ids=[f"{k}-{'-'.join(c) or 'proj1'}" for k, c in SUMMARIES]
)
def test_multiple_choice_summary_pools_over_tokens_numpy_oracle(fw, shared, kind, changes):
    """(B, N, T) inputs: every summary_type pools each choice over its tokens (README: a
    documented difference from transformers, which pools over the choice axis there)."""
    config = tiny_config(pad_token_id=PAD, summary_type=kind, **changes)
    state = random_state(config, "double_heads")
    model = fw.build("double_heads", config, state)
    ids, mask = batch("double_heads", "none")
    hidden = fw.run(shared(fw, "base"), input_ids=ids)["last_hidden_state"]
    index = np.random.default_rng(4).integers(0, SEQ, size=ids.shape[:-1])  # (B, N)
    pooled = {
        "last": hidden[..., -1, :],
        "first": hidden[..., 0, :],
        "mean": hidden.mean(axis=-2),
        "cls_index": np.take_along_axis(hidden, index[..., None, None], axis=-2)[..., 0, :],
    }[kind]
    if config.summary_use_proj:
        w, b = (
            state["multiple_choice_head.summary.weight"],
            state["multiple_choice_head.summary.bias"],
        )
        pooled = pooled @ w.T + b
    expected = np.tanh(pooled) if config.summary_activation == "tanh" else pooled
    if expected.shape[-1] == 1:
        expected = expected[..., 0]
    inputs = dict(input_ids=ids, mc_token_ids=index if kind == "cls_index" else None)
    got = fw.run(model, **inputs)["mc_logits"]
    assert_close(got, expected, "float32", f"mc_logits, summary_type={kind} {changes}")


# --------------------------------------------------------------------------- padding and cache
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(
    "backend", ["eager", pytest.param("sdpa", marks=pytest.mark.xla_every_run)]
)
def test_left_padded_row_equals_the_row_unpadded(fw, shared, backend):
    """The left-padded row of a batch run with ``backend`` equals the row alone, unpadded, in
    eager attention (the same weights)."""
    eager = shared(fw, "lm")
    model = eager if backend == "eager" else build(fw, "lm", attn_implementation=backend)
    ids, mask = batch("lm", "left")
    row = ids[1, 3:][None]  # the real tokens of the left-padded row
    alone = fw.run(eager, input_ids=row, use_cache=True)
    batched = fw.run(model, input_ids=ids, attention_mask=mask, use_cache=True)
    assert_close(batched["logits"][1, 3:], alone["logits"][0], "float32", "prompt logits")
    nxt = np.array([[5], [7], [9]])
    alone = fw.run(eager, input_ids=nxt[1:2], past_key_values=alone["past_key_values"])
    mask = np.concatenate([mask, np.ones((BATCH, 1), dtype=mask.dtype)], axis=1)
    batched = fw.run(
        model, input_ids=nxt, attention_mask=mask, past_key_values=batched["past_key_values"]
    )
    assert_close(batched["logits"][1], alone["logits"][0], "float32", "next-token logits")


def _compare_step(head, step, full, start, stop, last, what):
    if head == "base":
        pairs = [("last_hidden_state", full["last_hidden_state"][..., start:stop, :])]
    elif head in ("lm", "double_heads"):
        pairs = [("logits", full["logits"][..., start:stop, :])]
        if head == "double_heads" and last:  # default mc token: the last position
            pairs.append(("mc_logits", full["mc_logits"]))
    else:
        pairs = [("logits", full["logits"])] if last else []  # pooled: the last real token
    for field, expected in pairs:
        assert_close(step[field], expected, "float32", f"{what} {field}[{start}:{stop}]")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("padding", ["none", "right", "left"])
@pytest.mark.parametrize("head", CACHED_HEADS)
def test_cached_steps_equal_one_full_forward(fw, shared, kind, padding, head):
    model = shared(fw, head)
    ids, mask = batch(head, padding)
    masked = padding != "none"
    full = fw.run(model, input_ids=ids, attention_mask=mask if masked else None, use_cache=False)
    past = fw.new_cache(model, kind, math.prod(ids.shape[:-1]), SEQ + 2)
    steps = [(0, 3), (3, 4), (4, SEQ)]
    for start, stop in steps:
        step = fw.run(
            model,
            input_ids=ids[..., start:stop],
            attention_mask=mask[..., :stop] if masked else None,
            past_key_values=past,
            use_cache=True,
        )
        past = step["past_key_values"]
        last = stop == SEQ
        _compare_step(head, step, full, start, stop, last, f"{kind}/{padding}/{head}")
    assert [k.shape[-2] for k, _ in fw.cache_arrays(past)] == [SEQ] * TINY["n_layer"]


# --------------------------------------------------------------------------- errors
ERRORS = [
    (
        dict(input_ids=np.array([[1, 99, 2]])),
        r"input_ids\[0, 1\] = 99 is out of range: ids must be in \[0, vocab_size=99\)",
    ),
    (
        dict(input_ids=np.array([[1, 2], [3, -1]])),
        r"input_ids\[1, 1\] = -1 is out of range: ids must be in \[0, vocab_size=99\)",
    ),
    (
        dict(input_ids=np.ones((1, 25), dtype=np.int64)),
        r"sequence length 25 \(0 cached \+ 25 new tokens\) exceeds n_positions=24",
    ),
    (
        dict(
            input_ids=np.ones((1, 3), dtype=np.int64),
            inputs_embeds=np.zeros((1, 3, 32), np.float32),
        ),
        "You cannot specify both input_ids and inputs_embeds at the same time",
    ),
    (dict(), "You have to specify either input_ids or inputs_embeds"),
    (
        dict(
            input_ids=np.ones((2, 3), dtype=np.int64),
            attention_mask=np.ones((2, 4), dtype=np.int64),
        ),
        r"attention_mask has shape \(2, 4\); expected \(2, 3\) \(batch, 0 cached \+ 3 new tokens\)",
    ),
    (
        dict(input_ids=np.ones((1, 3), dtype=np.int64), token_type_ids=np.array([[0, 120, 1]])),
        r"token_type_ids\[0, 1\] = 120 is out of range: ids must be in \[0, vocab_size=99\)",
    ),
    (
        dict(
            input_ids=np.ones((1, 3), dtype=np.int64),
            encoder_hidden_states=np.zeros((1, 2, 32), np.float32),
        ),
        "encoder_hidden_states were given but the model has no cross-attention; build it with config.add_cross_attention=True",
    ),
]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("inputs", "message"), ERRORS)
def test_input_errors(fw, shared, inputs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        fw.run(shared(fw, "base"), **inputs)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_encoder_mask_shape_is_checked(fw):
    config = tiny_config(add_cross_attention=True)
    model = fw.build("lm", config, random_state(config, "lm"))
    inputs = dict(
        input_ids=np.ones((2, 3), dtype=np.int64),
        encoder_hidden_states=np.zeros((2, 5, 32), np.float32),
    )
    with pytest.raises(
        ValueError,
        match=r"^encoder_attention_mask has shape \(2, 4\); expected \(2, 5\) \(batch, encoder length\)$",
    ):
        fw.run(model, **inputs, encoder_attention_mask=np.ones((2, 4), dtype=np.int64))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_cached_length_past_n_positions_is_an_error(fw, shared):
    model = shared(fw, "lm")
    past = fw.run(model, input_ids=np.ones((1, 20), dtype=np.int64))["past_key_values"]
    with pytest.raises(
        ValueError,
        match=r"^sequence length 25 \(20 cached \+ 5 new tokens\) exceeds n_positions=24$",
    ):
        fw.run(model, input_ids=np.ones((1, 5), dtype=np.int64), past_key_values=past)
    with pytest.raises(
        ValueError,
        match=r"attention_mask has shape \(1, 3\); expected \(1, 21\) \(batch, 20 cached \+ 1 new tokens\)",
    ):
        fw.run(
            model,
            input_ids=np.ones((1, 1), dtype=np.int64),
            attention_mask=np.ones((1, 3), dtype=np.int64),
            past_key_values=past,
        )


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_sequence_classification_needs_pad_token_for_batches(fw):
    config = tiny_config()
    model = fw.build(
        "sequence_classification", config, random_state(config, "sequence_classification")
    )
    ids, _ = batch("sequence_classification", "none")
    with pytest.raises(
        ValueError, match=r"^Cannot handle batch sizes > 1 if no padding token is defined\.$"
    ):
        fw.run(model, input_ids=ids)
    assert fw.run(model, input_ids=ids[:1])["logits"].shape == (1, L)  # one row is fine


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("head", HEADS)
def test_forward_never_writes_the_config(fw, head):
    config = tiny_config(pad_token_id=PAD)
    model = fw.build(head, config, random_state(config, head))
    ids, mask = batch(head)
    before = config.to_dict()
    fw.run(model, input_ids=ids, attention_mask=mask, **labels_for(head, ids, mask))
    assert config.to_dict() == before


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("head", HEADS)
def test_config_sizes_are_locked_by_the_model(fw, head):
    config = tiny_config(pad_token_id=PAD)
    fw.build(head, config)
    name = HEAD_SPECS[head].class_name
    with pytest.raises(
        AttributeError,
        match=rf"GPT2Config.n_embd cannot change after a model was built from this config \({name}\)",
    ):
        config.n_embd = 64
    config.pad_token_id = 0  # not a size: assignable after building


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pad_token_id_set_after_building_takes_effect(fw):
    config = tiny_config()
    state = random_state(config, "sequence_classification")
    model = fw.build("sequence_classification", config, state)
    ids, mask = batch("sequence_classification", "right")
    config.pad_token_id = PAD  # the usual `model.config.pad_token_id = tokenizer.eos_token_id`
    got = fw.run(model, input_ids=ids, attention_mask=mask)["logits"]
    hidden = fw.run(_backbone(fw, config, state), input_ids=ids, attention_mask=mask)[
        "last_hidden_state"
    ]
    assert_close(got[1], hidden[1, SEQ - 3] @ state["score.weight"].T, "float32", "row 1")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_reorder_cache_takes_rows_in_order(fw, shared, kind):
    model = shared(fw, "lm")
    ids, _ = batch("lm")
    cache = fw.run(model, input_ids=ids, past_key_values=fw.new_cache(model, kind, BATCH, SEQ))[
        "past_key_values"
    ]
    before = [(k.copy(), v.copy()) for k, v in fw.cache_arrays(cache)]  # PT reorders in place
    order = [2, 0, 0]
    if fw.name == "tf":
        cache.reorder_cache(np.array(order))
    else:
        import torch

        cache.reorder_cache(torch.tensor(order, device=model.device))
    for (k, v), (k0, v0) in zip(fw.cache_arrays(cache), before, strict=True):
        np.testing.assert_array_equal(k, k0[order])
        np.testing.assert_array_equal(v, v0[order])
