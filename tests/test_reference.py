"""Every head against transformers' own model, field by field, in float32 within ATOL.

transformers' model of each head is built with random weights in which every tensor
(LayerNorms and biases included) is perturbed with seeded noise, exported as a canonical numpy
state (the ``transformer.`` prefix stripped) and loaded into ours through the name table. Both
run the same inputs: a batch with right padding in one row, an attention mask, explicit
position ids (transformers does not derive them from the mask), token type ids, labels; then
hidden states and attentions; then a cached continuation; cross-attention with an encoder mask
where the config has it. transformers runs its eager attention, the one path that honours every
config flag (its sdpa path ignores ``scale_attn_weights`` and ``scale_attn_by_inverse_layer_idx``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from cases import ATOL, BATCH, HEADS, SEQ, assert_close, tiny_config
from frameworks import FRAMEWORKS
from gpt2_dual.checkpoint.names import to_canonical_key
from gpt2_dual.heads import HEAD_SPECS, multiple_choice_features

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PAD = 98  # pad_token_id; real token ids stay below it
PREFIX = 4  # tokens run before the cached continuation
ENCODER_LEN = 5
CACHED_HEADS = ("base", "lm", "double_heads", "sequence_classification")

#: name -> (config changes, heads it applies to; None = all)
CASES = {
    "default": ({}, None),
    "scaled_upcast": (
        dict(scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True),
        None,
    ),
    "relu": (dict(activation_function="relu"), ("lm", "token_classification")),
    "gelu": (dict(activation_function="gelu"), ("lm", "question_answering")),
    "silu": (dict(activation_function="silu"), ("lm", "sequence_classification")),
    "unscaled": (dict(scale_attn_weights=False), None),
    "untied": (dict(tie_word_embeddings=False), ("lm", "double_heads")),
    # torch's LayerNorm default eps equals GPT-2's 1e-5: another value shows it is passed on
    "eps": (dict(layer_norm_epsilon=1e-3), ("lm", "double_heads")),
    "cross": (dict(add_cross_attention=True), ("base", "lm")),
    **{
        f"summary_{kind}": (
            dict(summary_type=kind, summary_use_proj=False, summary_activation="tanh"),
            ("double_heads",),
        )
        for kind in ("last", "first", "mean")
    },
    "summary_cls_tanh": (dict(summary_activation="tanh"), ("double_heads",)),
    "summary_no_labels": (dict(summary_proj_to_labels=False), ("double_heads",)),
}
#: One (case, head) per feature family that TF also runs under XLA in every run (the rest of
#: the TF XLA cases need GPT2_DUAL_TF_XLA=1): scale flags with upcast, unscaled attention,
#: cross-attention, a summary over tokens. Pooling over (B, N, T) choices (``cls_index``, the
#: default) under XLA equals eager in ``tests/tf/test_models_tf.py::test_xla_equals_eager``.
XLA_EVERY_RUN = {
    ("scaled_upcast", "lm"),
    ("unscaled", "sequence_classification"),
    ("cross", "lm"),
    ("summary_mean", "double_heads"),
}
#: The same for the cached continuation: cross-attention cache, scale flags over choices.
XLA_EVERY_RUN_CACHED = {("cross", "lm"), ("scaled_upcast", "double_heads")}
PARAMS = [
    pytest.param(
        case,
        head,
        id=f"{case}-{head}",
        marks=[pytest.mark.xla_every_run] if (case, head) in XLA_EVERY_RUN else [],
    )
    for case, (_, heads) in CASES.items()
    for head in HEADS
    if heads is None or head in heads
]


# --------------------------------------------------------------------------- reference side
def reference_model(head: str, config, seed: int = 0):
    """transformers' ``head`` model (eager attention), every parameter perturbed, and its
    canonical numpy state."""
    hf_config = transformers.GPT2Config(**config.to_dict(), attn_implementation="eager")
    torch.manual_seed(seed)
    model = getattr(transformers, HEAD_SPECS[head].class_name)(hf_config).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():  # tied weights appear once
            p.add_(torch.from_numpy(rng.normal(0.0, 0.1, p.shape).astype(np.float32)))
    state = {}
    for key, tensor in model.state_dict().items():
        name = to_canonical_key(key)
        if name is None or (name == "lm_head.weight" and config.tie_word_embeddings):
            continue
        state[name] = tensor.numpy().copy()
    return model, state


def run_reference(model, **inputs) -> dict:
    args = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**args)
    return {k: v for k, v in out.items()}


def legacy_arrays(cache) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(layer[0].numpy(), layer[1].numpy()) for layer in cache.to_legacy_cache()]


def to_numpy(value):
    if isinstance(value, tuple):
        return tuple(to_numpy(v) for v in value)
    return value.numpy()


# --------------------------------------------------------------------------- inputs
def make_inputs(head: str, config, seed: int = 1) -> dict[str, np.ndarray]:
    """Inputs and labels of ``head``: right padding in one row, explicit positions."""
    rng = np.random.default_rng(seed)
    # transformers pools summary_type last/first/mean over axis 1, the choices of (B, N, T)
    # inputs; the two agree on (B, T) inputs (one sequence per row, no choice loss).
    choices = head == "double_heads" and config.summary_type == "cls_index"
    lead = (2, BATCH) if choices else (BATCH,)
    T = SEQ
    ids = rng.integers(0, PAD, size=(*lead, T))
    mask = np.ones((*lead, T), dtype=np.int64)
    padded_row = (0, 1) if choices else (1,)
    mask[(*padded_row, slice(T - 2, None))] = 0
    ids[mask == 0] = PAD
    inputs = dict(
        input_ids=ids,
        attention_mask=mask,
        # transformers does not fold (B, N, T) position ids for multiple choice: give (1, T).
        position_ids=np.broadcast_to(np.arange(T), (1, T) if len(lead) > 1 else ids.shape).copy(),
        token_type_ids=rng.integers(0, config.vocab_size, size=ids.shape),
    )
    lm_labels = np.where(mask == 1, ids, -100)
    if head == "lm":
        inputs["labels"] = lm_labels
    elif head == "double_heads":
        inputs.update(labels=lm_labels, mc_token_ids=mask.sum(-1) - 1)  # last real token
        if choices and multiple_choice_features(config) == 1:  # one score per choice
            inputs["mc_labels"] = rng.integers(0, BATCH, size=lead[:1])
    elif head == "sequence_classification":
        inputs["labels"] = rng.integers(0, config.num_labels, size=lead)
    elif head == "token_classification":
        inputs["labels"] = np.where(mask == 1, rng.integers(0, config.num_labels, ids.shape), -100)
    elif head == "question_answering":
        inputs["start_positions"] = np.array([1, 3, T + 3])  # T + 3: outside, not counted
        inputs["end_positions"] = np.array([2, 6, 4])
    if config.add_cross_attention:
        inputs["encoder_hidden_states"] = rng.normal(size=(BATCH, ENCODER_LEN, config.n_embd))
        inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"].astype(np.float32)
        enc_mask = np.ones((BATCH, ENCODER_LEN), dtype=np.int64)
        enc_mask[2, -2:] = 0
        inputs["encoder_attention_mask"] = enc_mask
    return inputs


def split(inputs: dict, start: int, stop: int) -> dict:
    """The token slice ``[start, stop)`` of per-token inputs (masks keep ``[0, stop)``)."""
    out = {}
    for key, value in inputs.items():
        if key in ("input_ids", "position_ids", "token_type_ids"):
            out[key] = value[..., start:stop]
        elif key == "attention_mask":
            out[key] = value[..., :stop]
        elif key in ("encoder_hidden_states", "encoder_attention_mask"):
            out[key] = value
    return out


# --------------------------------------------------------------------------- comparison
def assert_same_fields(ours: dict, ref: dict, what: str) -> None:
    fields = set(ours) - {"past_key_values"}
    assert fields == set(ref) - {"past_key_values"}, f"{what}: {sorted(ours)} vs {sorted(ref)}"
    for field in sorted(fields):
        if isinstance(ours[field], tuple):
            assert len(ours[field]) == len(ref[field]), f"{what}.{field}: tuple length"
            pairs = [
                (f"{field}[{i}]", a, b)
                for i, (a, b) in enumerate(zip(ours[field], ref[field], strict=True))
            ]
        else:
            pairs = [(field, ours[field], ref[field])]
        for name, a, b in pairs:
            b = to_numpy(b)
            # transformers keeps multiple-choice intermediates folded as (B * N, ...).
            assert_close(a, b.reshape(a.shape), "float32", f"{what}.{name}")


@pytest.fixture(scope="module")
def ours():
    """``ours(fw, backend, case, head, config, state)``: our model of a case, built once for the
    two tests below (both only run it; the cache of a continuation is the test's own). TF
    builds ``sdpa`` (XLA) only with GPT2_DUAL_TF_XLA=1, set per test: it is part of the key."""
    models = {}

    def get(fw, backend: str, case: str, head: str, config, state):
        key = (fw.name, backend, case, head, os.environ.get("GPT2_DUAL_TF_XLA"))
        if key not in models:
            models[key] = fw.build(head, config, state, attn_implementation=backend)
        return models[key]

    return get


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize(("case", "head"), PARAMS)
def test_matches_transformers(ours, fw, backend, case, head):
    changes, _ = CASES[case]
    config = tiny_config(pad_token_id=PAD, **changes)
    reference, state = reference_model(head, config)
    model = ours(fw, backend, case, head, config, state)
    inputs = make_inputs(head, config)
    if head not in ("base", "lm"):
        inputs.pop("encoder_hidden_states", None)
        inputs.pop("encoder_attention_mask", None)
    what = f"{fw.name}/{backend}/{case}/{head}"

    assert_same_fields(fw.run(model, **inputs), run_reference(reference, **inputs), what)
    if fw.name == "tf" and backend == "sdpa":
        # XLA: each flag set is a compile; with the flags, XLA equals eager (compared above)
        # in tests/tf/test_models_tf.py::test_xla_equals_eager
        return
    flags = dict(output_hidden_states=True, output_attentions=True)
    assert_same_fields(
        fw.run(model, **inputs, **flags), run_reference(reference, **inputs, **flags), what
    )


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize(
    ("case", "head"),
    [
        pytest.param(
            *p.values,
            id=p.id,
            marks=[pytest.mark.xla_every_run] if p.values in XLA_EVERY_RUN_CACHED else [],
        )
        for p in PARAMS
        if p.values[0] in ("default", "scaled_upcast", "cross") and p.values[1] in CACHED_HEADS
    ],
)
def test_cached_continuation_matches_transformers(ours, fw, backend, case, head):
    changes, _ = CASES[case]
    config = tiny_config(pad_token_id=PAD, **changes)
    reference, state = reference_model(head, config)
    model = ours(fw, backend, case, head, config, state)
    inputs = make_inputs(head, config)
    first, rest = split(inputs, 0, PREFIX), split(inputs, PREFIX, SEQ)
    what = f"{fw.name}/{backend}/{case}/{head}/continuation"

    got = fw.run(model, **first, use_cache=True)
    ref = run_reference(reference, **first, use_cache=True)
    for i, ((k, v), (rk, rv)) in enumerate(
        zip(
            fw.cache_arrays(got["past_key_values"]),
            legacy_arrays(ref["past_key_values"]),
            strict=True,
        )
    ):
        assert_close(k, rk, "float32", f"{what}: cached keys of layer {i}")
        assert_close(v, rv, "float32", f"{what}: cached values of layer {i}")
    got = fw.run(model, **rest, past_key_values=got["past_key_values"], use_cache=True)
    ref = run_reference(reference, **rest, past_key_values=ref["past_key_values"], use_cache=True)
    assert_same_fields(got, ref, what)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_layer_norm_epsilon_is_felt_in_the_output(fw):
    """The ``eps`` case above could pass with the epsilon ignored if the hidden variance
    dwarfed it: ours built with the default epsilon on the same weights must miss
    transformers' output by far more than ATOL."""
    config = tiny_config(pad_token_id=PAD, layer_norm_epsilon=1e-3)
    reference, state = reference_model("lm", config)
    inputs = make_inputs("lm", config)
    ref = run_reference(reference, **inputs)["logits"].numpy()
    assert_close(fw.run(fw.build("lm", config, state), **inputs)["logits"], ref, what="eps 1e-3")
    default = fw.build("lm", tiny_config(pad_token_id=PAD), state)
    assert np.abs(fw.run(default, **inputs)["logits"] - ref).max() > 100 * ATOL["float32"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(
    ("num_labels", "problem_type", "label_kind"),
    [
        (1, None, "float"),  # regression, inferred
        (3, None, "multi_hot"),  # multi-label, inferred from float labels
        (3, "multi_label_classification", "multi_hot"),
        (3, "single_label_classification", "int"),
        (2, "regression", "float2"),
    ],
)
def test_sequence_classification_losses_match_transformers(
    fw, num_labels, problem_type, label_kind
):
    config = tiny_config(pad_token_id=PAD, num_labels=num_labels, problem_type=problem_type)
    reference, state = reference_model("sequence_classification", config)
    model = fw.build("sequence_classification", config, state)
    inputs = make_inputs("sequence_classification", config)
    rng = np.random.default_rng(2)
    inputs["labels"] = {
        "float": rng.normal(size=BATCH).astype(np.float32),
        "float2": rng.normal(size=(BATCH, 2)).astype(np.float32),
        "multi_hot": rng.integers(0, 2, size=(BATCH, 3)).astype(np.float32),
        "int": rng.integers(0, 3, size=BATCH),
    }[label_kind]
    before = config.to_dict()
    assert_same_fields(
        fw.run(model, **inputs), run_reference(reference, **inputs), f"{fw.name}/{label_kind}"
    )
    assert config.to_dict() == before  # transformers writes problem_type; we never do


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_gpt2_vocabulary_logits_and_loss_match_transformers(fw):
    config = tiny_config(vocab_size=50257, n_positions=64, pad_token_id=50256)
    reference, state = reference_model("lm", config)
    model = fw.build("lm", config, state)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 50257, size=(2, 16))
    ids[0, 0], ids[1, -1] = 50256, 50255  # both ends of the vocabulary
    inputs = dict(input_ids=ids, labels=ids, use_cache=False)
    assert_same_fields(fw.run(model, **inputs), run_reference(reference, **inputs), "gpt2 vocab")
