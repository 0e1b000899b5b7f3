"""TensorFlow-only behaviour of the models: backend check, activations, parity with gpt2_dual.pt on
the same random canonical state, XLA on and off, the fixed-size cache under XLA, mixed
precision, output dicts, cache values and head details."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, tiny_config
from frameworks import PT, has, random_state
from frameworks_tf import TF
from gpt2_dual._config_checks import ACTIVATIONS
from gpt2_dual.errors import InputError, InvalidInputError
from gpt2_dual.heads import FORMULAS, multiple_choice_features
from gpt2_dual.outputs import OUTPUT_TYPES

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import gpt2_dual.tf as gtf  # noqa: E402
from gpt2_dual.tf import layers  # noqa: E402
from gpt2_dual.tf.generate import compile_decode, prefill  # noqa: E402

PAD = 98
CACHED_HEADS = ("base", "lm", "double_heads", "sequence_classification")
needs_torch = pytest.mark.skipif(not has("torch"), reason="parity with gpt2_dual.pt needs torch")


@functools.cache
def model_of(head: str = "lm", **changes):
    """A TF model with the tests' random canonical weights (shared: do not mutate)."""
    config = tiny_config(pad_token_id=PAD, **changes)
    return TF.build(head, config, random_state(config, head))


def half_scale_state(config, head: str) -> dict:
    """The random state with its deviations from 0 (LayerNorm weights: from 1) halved: logits
    of magnitude ~2, the range the low-precision tolerance rows are for (as the PT tests)."""
    return {
        name: (1 + (v - 1) / 2 if name.split(".")[-2].startswith("ln_") and "weight" in name
               else v / 2)
        for name, v in random_state(config, head).items()
    }  # fmt: skip


def inputs_of(head: str, config, *, padding: str = "right", seed: int = 1) -> dict:
    """Ids, mask and labels of ``head``: row 1 padded on ``padding``'s side."""
    rng = np.random.default_rng(seed)
    lead = (BATCH, 2) if head == "double_heads" else (BATCH,)
    ids = rng.integers(0, PAD, size=(*lead, SEQ))
    mask = np.ones_like(ids)
    mask[1, ..., -2:] = 0 if padding == "right" else 1
    mask[1, ..., :2] = 0 if padding == "left" else 1
    ids[mask == 0] = PAD
    out = dict(input_ids=ids, attention_mask=mask)
    real = np.where(mask == 1, ids, -100)
    if head == "lm":
        out["labels"] = real
    elif head == "double_heads":
        out.update(labels=real, mc_token_ids=mask.sum(-1) - 1)
        if multiple_choice_features(config) == 1:
            out["mc_labels"] = rng.integers(0, 2, size=BATCH)
    elif head == "sequence_classification":
        out["labels"] = rng.integers(0, config.num_labels, size=BATCH)
    elif head == "token_classification":
        out["labels"] = np.where(mask == 1, rng.integers(0, config.num_labels, ids.shape), -100)
    elif head == "question_answering":
        out.update(start_positions=np.array([1, 3, SEQ + 2]), end_positions=np.array([2, 6, 4]))
    if config.add_cross_attention and head in ("base", "lm"):
        out["encoder_hidden_states"] = rng.normal(size=(BATCH, 5, config.n_embd)).astype("float32")
        out["encoder_attention_mask"] = np.array([[1] * 5, [1] * 5, [1, 1, 1, 0, 0]])
    return out


def assert_same(ours: dict, expected: dict, dtype: str, what: str) -> None:
    """Every field but the cache, tuples element by element."""
    fields = set(ours) - {"past_key_values"}
    assert fields == set(expected) - {"past_key_values"}, (sorted(ours), sorted(expected))
    for field in sorted(fields):
        if isinstance(ours[field], tuple):
            pairs = list(zip(ours[field], expected[field], strict=True))
        else:
            pairs = [(ours[field], expected[field])]
        for i, (a, b) in enumerate(pairs):
            assert_close(np.asarray(a, np.float32), b, dtype, f"{what}.{field}[{i}]")


def numpy_of(out) -> dict:
    return {
        k: tuple(np.asarray(x) for x in v) if isinstance(v, tuple) else np.asarray(v)
        for k, v in out.items()
        if k != "past_key_values"
    }


# --------------------------------------------------------------------------- backend, build
OTHER_BACKENDS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(not has(module), reason=f"keras' {name} backend needs {module}"),
    )
    for name, module in (("torch", "torch"), ("jax", "jax"), ("numpy", "scipy"))
]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_another_keras_backend_is_a_clear_import_error(backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    code = "import gpt2_dual; print('core ok'); import gpt2_dual.tf"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout.strip() == "core ok"
    assert done.stderr.strip().splitlines()[-1] == (
        f"ImportError: gpt2_dual.tf needs Keras on the TensorFlow backend, but Keras runs the "
        f"'{backend}' backend; set KERAS_BACKEND=tensorflow before keras is first imported (or "
        "use gpt2_dual.pt)"
    )


def test_build_by_head_name_creates_every_weight():
    model = gtf.build("question_answering", tiny_config())
    assert type(model) is gtf.GPT2ForQuestionAnswering and model.built
    assert tuple(model.transformer.h[1].attn.c_attn.kernel.shape) == (32, 96)
    with pytest.raises(KeyError, match="unknown head 'qa'; choose one of"):
        gtf.build("qa", tiny_config())


@pytest.mark.parametrize("init", [0.02, 0.05])
def test_initialization_follows_transformers(init):
    """Init statistics within 6 standard errors of the intended std (relative standard error
    of a sample std: 1/sqrt(2n)); LayerNorms take config.layer_norm_epsilon."""
    keras.utils.set_random_seed(0)
    config = tiny_config(
        n_embd=64,
        n_layer=4,
        n_head=4,
        vocab_size=500,
        initializer_range=init,
        layer_norm_epsilon=1e-3,
    )
    model = gtf.GPT2LMHeadModel(config)
    block = model.transformer.h[0]
    for variable, std in [
        (model.transformer.wte.embeddings, init),
        (model.transformer.wpe.embeddings, init),
        (block.attn.c_attn.kernel, init),
        (block.mlp.c_fc.kernel, init),
        (block.mlp.c_proj.kernel, init / np.sqrt(2 * 4)),
        (block.attn.c_proj.kernel, init / np.sqrt(2 * 4)),
    ]:
        value = np.asarray(variable)
        assert abs(value.std() / std - 1) < 6 / np.sqrt(2 * value.size), (value.shape, std)
        assert abs(value.mean()) < 6 * std / np.sqrt(value.size), (value.shape, std)
    assert not np.any(np.asarray(block.attn.c_attn.bias)) and np.all(
        np.asarray(block.ln_1.gamma) == 1
    )
    assert block.ln_1.epsilon == model.transformer.ln_f.epsilon == 1e-3


def test_untied_lm_head_is_its_own_weight():
    tied = gtf.GPT2LMHeadModel(tiny_config())
    assert tied.lm_head is None and tied.get_output_embeddings() is tied.transformer.wte
    model = gtf.GPT2LMHeadModel(tiny_config(tie_word_embeddings=False))
    assert tuple(model.lm_head.kernel.shape) == (32, 99)
    assert model.get_output_embeddings() is model.lm_head
    assert model.get_input_embeddings() is model.transformer.wte


# --------------------------------------------------------------------------- activations
def test_every_config_activation_is_implemented():
    assert set(layers.ACTIVATIONS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_transformers(name):
    torch = pytest.importorskip("torch")
    from transformers.activations import ACT2FN

    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-12, 12, 4001), rng.normal(size=4000) * 3]).astype("float32")
    expected = ACT2FN[name](torch.from_numpy(x)).numpy()
    assert_close(np.asarray(layers.activation(name)(tf.constant(x))), expected, "float32", name)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(
        InvalidInputError, match=r"^unknown activation 'gelu2'; choose one of \['gelu', "
    ):
        layers.activation("gelu2")


def test_every_formula_has_a_keras_op():
    assert set(layers._OPS) == set(FORMULAS)


@pytest.mark.parametrize("num_labels", [1, 3])
@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "bool", "float32"])
def test_loss_choice_is_the_input_check_s(num_labels, dtype):
    """The loss follows the rule the shared input check applied (``heads.problem_type_for``)."""
    from gpt2_dual._input_checks import problem_type
    from gpt2_dual.tf.losses import problem_type_for

    config = tiny_config(num_labels=num_labels)
    labels = tf.zeros(2, dtype=dtype)
    assert problem_type_for(num_labels, labels) == problem_type(config, np.dtype(dtype).kind)


# --------------------------------------------------------------------------- parity with pt
PARITY = {
    "default": ({}, HEADS),
    "scaled_upcast": (
        dict(scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True),
        HEADS,
    ),
    "unscaled_relu": (
        dict(scale_attn_weights=False, activation_function="relu"),
        ("lm", "token_classification"),
    ),
    "untied": (dict(tie_word_embeddings=False), ("lm", "double_heads")),
    "cross": (dict(add_cross_attention=True), ("base", "lm")),
    "summary_mean_tanh": (
        dict(summary_type="mean", summary_use_proj=False, summary_activation="tanh"),
        ("double_heads",),
    ),
    "summary_first": (dict(summary_type="first"), ("double_heads",)),
    "summary_no_labels": (
        dict(summary_proj_to_labels=False, summary_activation="tanh"),
        ("double_heads",),
    ),
    "regression": (dict(num_labels=1), ("sequence_classification",)),
}


@needs_torch
@pytest.mark.parametrize(
    ("case", "head"), [(c, h) for c, (_, heads) in PARITY.items() for h in heads]
)
def test_pytorch_and_tensorflow_agree_on_the_same_checkpoint(case, head):
    changes = PARITY[case][0]
    config = tiny_config(pad_token_id=PAD, **changes)
    state = random_state(config, head)
    pt_model, tf_model = PT.build(head, config, state), TF.build(head, config.copy(), state)
    inputs = inputs_of(head, config, padding="left" if case == "default" else "right")
    if case == "regression":
        inputs["labels"] = np.array([0.5, -1.0, 2.0], np.float32)
    flags = dict(output_hidden_states=True, output_attentions=True)
    assert_same(
        TF.run(tf_model, **inputs, **flags), PT.run(pt_model, **inputs, **flags), "float32", case
    )


@needs_torch
@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("head", CACHED_HEADS)
def test_pytorch_and_tensorflow_caches_agree(kind, head):
    config = tiny_config(pad_token_id=PAD)
    state = random_state(config, head)
    inputs = inputs_of(head, config)
    inputs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    rows = int(np.prod(inputs["input_ids"].shape[:-1]))
    results = {}
    for fw, model in (
        (PT, PT.build(head, config, state)),
        (TF, TF.build(head, config.copy(), state)),
    ):
        past = fw.new_cache(model, kind, rows, SEQ + 1)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        first = fw.run(
            model, input_ids=ids[..., :4], attention_mask=mask[..., :4], past_key_values=past
        )
        rest = fw.run(
            model,
            input_ids=ids[..., 4:],
            attention_mask=mask,
            past_key_values=first["past_key_values"],
        )
        results[fw.name] = fw.cache_arrays(rest["past_key_values"]), numpy_of(rest)
    (arrays, out), (expected_arrays, expected) = results["tf"], results["pt"]
    for i, ((k, v), (ek, ev)) in enumerate(zip(arrays, expected_arrays, strict=True)):
        assert_close(k, ek, "float32", f"{kind} keys of layer {i}")
        assert_close(v, ev, "float32", f"{kind} values of layer {i}")
    assert_same(out, expected, "float32", f"{kind}/{head} continuation")


# --------------------------------------------------------------------------- XLA
#: Heads compiled by ``test_xla_equals_eager`` (seconds each): every head's own code under XLA.
#: ``base`` runs inside ``lm`` (the backbone, with the same hidden states and attentions);
#: ``token_classification`` is a Dense over every position (as ``question_answering``'s) and
#: the cross-entropy of the LM loss without its shift.
XLA_HEADS = ("lm", "sequence_classification", "question_answering", "double_heads")


@pytest.mark.parametrize("head", XLA_HEADS)
def test_xla_equals_eager(head):
    model = model_of(head)
    inputs = inputs_of(head, model.config)
    flags = dict(output_hidden_states=True, output_attentions=True)
    if head in CACHED_HEADS:
        flags["use_cache"] = False
    eager = numpy_of(model(**inputs, **flags))
    xla = tf.function(lambda x: model(x, **flags), jit_compile=True)(inputs)
    assert type(xla) is type(model(**inputs))  # the output dict type survives tf.function
    assert_same(numpy_of(xla), eager, "float32", f"{head} under XLA")


@functools.cache
def _lm_under_xla():
    """``model_of("lm")`` without cache under XLA: one compile for the three paddings (the mask
    is an input; each test traces, if first, with its ``ROW_BLOCK`` of 3)."""
    model = model_of("lm")
    return tf.function(lambda x: model(x, use_cache=False), jit_compile=True)


@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_causal_attention_in_row_blocks_equals_one_block(monkeypatch, padding):
    """A whole sequence's causal attention runs in blocks of ``ROW_BLOCK`` query rows (128 in
    use; 3 here, SEQ = 7: two full blocks and a short one): the outputs of one block, eager and
    under XLA, padded rows (a left-padded query that sees only itself) included."""
    from gpt2_dual.tf import attention

    model = model_of("lm")
    inputs = inputs_of("lm", model.config, padding="left" if padding == "none" else padding)
    if padding == "none":
        inputs["attention_mask"] = np.ones_like(inputs["attention_mask"])
    whole = numpy_of(model(inputs, use_cache=False))  # SEQ < 2 * ROW_BLOCK: one block
    calls = []
    one_block = attention._attend
    monkeypatch.setattr(attention, "ROW_BLOCK", 3)
    monkeypatch.setattr(attention, "_attend", lambda *a, **k: calls.append(1) or one_block(*a, **k))
    blocked = numpy_of(model(inputs, use_cache=False))
    assert len(calls) == 3 * model.config.n_layer
    assert_same(blocked, whole, "float32", f"row blocks, {padding} padding")
    xla = _lm_under_xla()
    assert_same(numpy_of(xla(inputs)), whole, "float32", f"row blocks under XLA, {padding} padding")
    assert xla.experimental_get_tracing_count() == 1  # traced with ROW_BLOCK = 3, never again


def test_compiled_predict_equals_eager():
    model = TF.build("lm", tiny_config(pad_token_id=PAD), random_state(tiny_config(), "lm"))
    model.compile(jit_compile=True)
    inputs = inputs_of("lm", model.config)
    del inputs["labels"]
    got = model.predict(inputs, batch_size=BATCH, verbose=0)
    assert_close(got["logits"], np.asarray(model(**inputs).logits), "float32", "predict")
    assert sorted(got) == ["logits"]  # predict returns the main output, no cache


@pytest.mark.parametrize("padding", ["none", "left"])
def test_fixed_size_cache_decodes_under_xla_without_retracing(padding):
    model = model_of("lm")
    ids, mask = (
        inputs_of("lm", model.config, padding="left")[k] for k in ("input_ids", "attention_mask")
    )
    if padding == "none":
        mask = np.ones_like(mask)
        ids = np.where(ids == PAD, 7, ids)
    full = np.asarray(model(input_ids=ids, attention_mask=mask).logits)
    width = np.concatenate([mask, np.ones((BATCH, 3), mask.dtype)], axis=1)  # (B, S_max)
    cache = gtf.StaticCache(model.config, BATCH, SEQ + 3)
    step_mask = width if padding == "left" else None
    logits, cache = tf.function(prefill, jit_compile=True)(
        model, ids[:, :3], cache, attention_mask=step_mask
    )
    assert_close(logits, full[:, 2], "float32", "prefill")
    step = compile_decode(model)
    for t in range(3, SEQ):
        logits, cache = step(ids[:, t : t + 1], cache, attention_mask=step_mask)
        assert_close(logits, full[:, t], "float32", f"step {t}")
    assert step.experimental_get_tracing_count() == 1
    assert int(cache.lengths[0]) == SEQ and cache.keys[0].shape == (BATCH, 4, SEQ + 3, 8)


def test_dynamic_cache_under_xla_equals_full_forward():
    model = model_of("lm")
    ids = inputs_of("lm", model.config)["input_ids"][:1]  # row 0: no padding
    full = np.asarray(model(input_ids=ids).logits)
    call = tf.function(lambda i, c: model(input_ids=i, past_key_values=c), jit_compile=True)
    out = call(ids[:, :4], None)
    out = call(ids[:, 4:], out.past_key_values)
    assert isinstance(out.past_key_values, gtf.DynamicCache)
    assert_close(out.logits, full[:, 4:], "float32", "continuation under XLA")


# --------------------------------------------------------------------------- mixed precision
def test_attention_softmax_runs_in_float32_under_bfloat16():
    from gpt2_dual.tf.attention import AttentionMask, attend

    rng = np.random.default_rng(0)
    q, k, v = (tf.constant(rng.normal(size=(2, 3, 6, 8)) * 2, tf.bfloat16) for _ in range(3))
    y, probs = attend(q, k, v, AttentionMask(), need_weights=True)
    assert y.dtype == probs.dtype == tf.bfloat16
    scores = tf.matmul(q, k, transpose_b=True) * tf.cast(8**-0.5, tf.bfloat16)  # bf16 scores
    causal = np.tril(np.ones((6, 6), bool))
    masked = tf.where(causal, tf.cast(scores, tf.float32), np.finfo(np.float32).min)
    expected = tf.cast(tf.nn.softmax(masked), tf.bfloat16)  # float32 softmax, rounded once
    np.testing.assert_array_equal(np.asarray(probs, np.float32), np.asarray(expected, np.float32))


@pytest.mark.parametrize("upcast", [False, True])
def test_mixed_bfloat16_policy_is_close_to_float32_with_float32_loss(upcast):
    config = tiny_config(pad_token_id=PAD, reorder_and_upcast_attn=upcast)
    state = half_scale_state(config, "lm")
    reference = TF.build("lm", config, state)
    model = TF.build("lm", config.copy(), state, dtype="mixed_bfloat16")
    attn = model.transformer.h[0].attn
    assert (attn.c_attn.compute_dtype, attn.c_attn.kernel.dtype) == ("bfloat16", "float32")
    inputs = inputs_of("lm", config)
    out = model(**inputs, output_attentions=True)
    assert out.logits.dtype == tf.bfloat16 and out.attentions[0].dtype == tf.bfloat16
    assert out.loss.dtype == tf.float32
    expected = numpy_of(reference(**inputs, output_attentions=True))
    assert_same(numpy_of(out), expected, "bfloat16", f"mixed_bfloat16 upcast={upcast}")


# --------------------------------------------------------------------------- outputs and caches
def test_outputs_are_dicts_with_attribute_access():
    model = model_of("lm")
    ids = inputs_of("lm", model.config)["input_ids"]
    out = model(ids, use_cache=False)
    assert isinstance(out, dict) and sorted(out) == ["logits"]
    assert out.logits is out["logits"] and out.loss is None and out.hidden_states is None
    with pytest.raises(AttributeError, match="CausalLMOutputDict has no field 'logit'"):
        out.logit  # noqa: B018
    typed = out.to_output()
    assert type(typed) is OUTPUT_TYPES["lm"] and typed.logits is out.logits
    flat = keras.tree.flatten(out)
    assert len(flat) == 1 and flat[0] is out.logits
    mapped = keras.tree.map_structure(lambda t: t, out)
    assert type(mapped) is type(out) and mapped.logits is out.logits


def test_a_cache_passed_in_is_never_changed():
    model = model_of("lm")
    ids = inputs_of("lm", model.config)["input_ids"]
    cache = gtf.StaticCache(model.config, BATCH, SEQ)
    out = model(ids[:, :4], past_key_values=cache)
    assert int(cache.lengths[0]) == 0 and not np.any(np.asarray(cache.keys[0]))
    assert out.past_key_values is not cache and int(out.past_key_values.lengths[0]) == 4
    dynamic = model(ids[:, :4]).past_key_values
    again = model(ids[:, 4:], past_key_values=dynamic).past_key_values
    assert dynamic.get_seq_length() == 4 and again.get_seq_length() == SEQ


def test_legacy_tuples_are_accepted():
    model = model_of("lm")
    ids = inputs_of("lm", model.config)["input_ids"]
    legacy = model(ids[:, :4]).past_key_values.to_legacy_cache()
    out = model(ids[:, 4:], past_key_values=legacy)
    assert isinstance(out.past_key_values, gtf.DynamicCache)
    assert_close(out.logits, np.asarray(model(ids).logits)[:, 4:], "float32", "legacy cache")
    stacked = tuple(tf.stack([k, v]) for k, v in legacy)  # transformers' TF format (2, B, H, S, D)
    assert_close(
        model(ids[:, 4:], past_key_values=stacked).logits, out.logits, "float32", "stacked"
    )
    with pytest.raises(
        TypeError, match="past_key_values must be a DynamicCache, a StaticCache or a tuple"
    ):
        model(ids, past_key_values="cache")


def test_static_cache_takes_a_full_length_mask():
    model = model_of("lm")
    inputs = inputs_of("lm", model.config)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    full_mask = np.concatenate([mask, np.zeros((BATCH, 5), mask.dtype)], 1)  # (B, S_max)
    cache = gtf.StaticCache(model.config, BATCH, SEQ + 5)
    first = model(ids[:, :4], attention_mask=full_mask, past_key_values=cache)
    out = model(ids[:, 4:], attention_mask=full_mask, past_key_values=first.past_key_values)
    assert out.past_key_values.get_seq_length() == SEQ
    expected = np.asarray(model(ids, attention_mask=mask).logits)[:, 4:]
    assert_close(out.logits, expected, "float32", "static cache, (B, S_max) mask")
    cache = out.past_key_values
    cache.reset()
    assert cache.get_seq_length() == 0


def test_static_cache_errors():
    model = model_of("lm")
    config, ids = model.config, np.ones((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"^StaticCache max_length=30 exceeds n_positions=24$"):
        gtf.StaticCache(config, 2, 30)
    with pytest.raises(ValueError, match=r"^the StaticCache holds 3 rows; the input has 2$"):
        model(ids, past_key_values=gtf.StaticCache(config, 3, 8))
    with pytest.raises(ValueError, match=r"^the StaticCache is bfloat16; the model is float32$"):
        model(ids, past_key_values=gtf.StaticCache(config, 2, 8, dtype="bfloat16"))
    cache = model(ids, past_key_values=gtf.StaticCache(config, 2, 4)).past_key_values
    with pytest.raises(
        ValueError,
        match=r"^the StaticCache holds max_length=4 positions; 3 cached \+ 2 new tokens do not fit$",
    ):
        model(ids[:, :2], past_key_values=cache)


def test_use_cache_none_reads_the_config():
    config = tiny_config()
    model = gtf.GPT2LMHeadModel(config)
    ids = np.ones((1, 3), np.int64)
    assert model(ids).past_key_values is not None
    config.use_cache = False
    assert model(ids).past_key_values is None
    assert model(ids, use_cache=True).past_key_values is not None


# --------------------------------------------------------------------------- head details
def test_logits_to_keep():
    model = model_of("lm")
    ids = inputs_of("lm", model.config)["input_ids"]
    assert_close(
        model(ids, logits_to_keep=2).logits,
        np.asarray(model(ids).logits)[:, -2:],
        "float32",
        "last 2",
    )
    with pytest.raises(
        InputError, match="^labels need the logits of every position; leave logits_to_keep=0$"
    ):
        model(ids, labels=ids, logits_to_keep=1)


def test_inputs_embeds_equal_input_ids(caplog):
    from gpt2_dual.heads import _warn_once

    model = model_of("sequence_classification")
    ids = inputs_of("sequence_classification", model.config)["input_ids"][:, :5]  # no padding
    _warn_once.cache_clear()
    expected = model(ids).logits
    with caplog.at_level(logging.WARNING, logger="gpt2_dual.heads"):
        got = model(inputs_embeds=model.transformer.wte(ids)).logits
    assert_close(got, expected, "float32", "inputs_embeds")
    assert "GPT2ForSequenceClassification cannot see padding in inputs_embeds" in caplog.text


def test_question_answering_loss_ignores_positions_outside_the_input():
    model = model_of("question_answering")
    ids = inputs_of("question_answering", model.config)["input_ids"]
    out = model(ids, start_positions=[1, 2, 3], end_positions=[2, 3, 4])
    outside = model(ids, start_positions=[1, 2, 50], end_positions=[2, 3, 50])
    first_two = model(ids[:2], start_positions=[1, 2], end_positions=[2, 3])
    assert float(out.loss) != float(outside.loss) and np.isfinite(float(out.loss))
    assert_close(outside.loss, first_two.loss, "float32", "row 3 ignored")


def test_call_forms_agree():
    model = model_of("lm")
    inputs = inputs_of("lm", model.config)
    by_keyword = np.asarray(model(**inputs).logits)
    assert_close(model(inputs).logits, by_keyword, "float32", "one dict")
    assert_close(
        model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits,
        by_keyword,
        "float32",
        "ids first",
    )
    assert_close(
        model(inputs["input_ids"].tolist(), attention_mask=inputs["attention_mask"]).logits,
        by_keyword,
        "float32",
        "lists",
    )
    with pytest.raises(
        TypeError, match=r"\['labels'\] given both in the input dict and as keywords"
    ):
        model(inputs, labels=inputs["labels"])
