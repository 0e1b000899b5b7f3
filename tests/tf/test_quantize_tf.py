"""Keras int8 quantization of the gpt2_dual.tf models (``model.quantize("int8")``).

The oracle is a numpy forward written here from the model's own variables: float kernels, or
Keras' int8 kernels and scales with Keras' rule (activations quantized per row, absmax to
+-127, int8 x int8 products divided by both scales). It is first checked against the float32
model, then the int8 model against it, head by head.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, tiny_config
from frameworks import random_state
from frameworks_tf import load_canonical_tf
from gpt2_dual.heads import HEAD_SPECS

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import gpt2_dual.tf as gtf  # noqa: E402
from gpt2_dual.errors import InvalidInputError  # noqa: E402
from gpt2_dual.tf import int8 as q  # noqa: E402
from gpt2_dual.tf.generate import compiled_programs  # noqa: E402
from gpt2_dual.tf.weights import load_canonical, to_canonical  # noqa: E402

#: Keras 3.15's saving calls ``np.array`` on TensorFlow 2.21 variables, whose ``__array__``
#: predates numpy 2's ``copy`` keyword; numpy warns. Not gpt2_dual code.
KERAS_SAVING = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
CONFIG = dict(pad_token_id=98, bos_token_id=97, eos_token_id=97)


def float_model(head: str = "lm", **changes):
    """A new float32 model with the tests' random canonical weights."""
    config = tiny_config(**{**CONFIG, **changes})
    model = getattr(gtf, HEAD_SPECS[head].class_name)(config)
    load_canonical_tf(model, random_state(config, head))
    return model


def int8_model(head: str = "lm", **kwargs):
    model = float_model(head)
    model.quantize("int8", **kwargs)
    return model


@functools.cache
def shared_float(head: str):
    """``float_model(head)``, one per head for the tests that only read it (forwards, saving)."""
    return float_model(head)


@functools.cache
def shared_int8(head: str):
    """``int8_model(head)``, one per head for the tests that only read it (forwards, saving,
    refusals that write nothing): one ``quantize`` per head, not one per test. Tests that
    compile, fit, export, load into or quantize a model make their own."""
    return int8_model(head)


@functools.cache
def ids_of(head: str) -> np.ndarray:
    """Ids without padding (pooling then reads the last token): ``(B, T)``, ``(B, 2, T)``."""
    lead = (BATCH, 2) if head == "double_heads" else (BATCH,)
    return np.random.default_rng(1).integers(0, 97, size=(*lead, SEQ)).astype(np.int32)


def _run(model, head: str) -> dict[str, np.ndarray]:
    """The head's output fields (no cache) for ``ids_of(head)``, as numpy."""
    kwargs = {} if head in ("question_answering", "token_classification") else {"use_cache": False}
    out = model(input_ids=ids_of(head), **kwargs)
    return {k: np.asarray(v) for k, v in out.items() if k != "past_key_values"}


# --------------------------------------------------------------------------- numpy oracle
def _absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras' AbsMaxQuantizer on the last axis: int values in [-127, 127] and the scale."""
    scale = 127.0 / (np.abs(x).max(-1, keepdims=True) + 1e-7)
    return np.clip(np.round(x * scale), -127, 127), scale


def _np(variable) -> np.ndarray:
    return variable.numpy().astype(np.float64)


def np_dense(layer, x: np.ndarray, act_quant: bool = True) -> np.ndarray:
    bias = _np(layer.bias) if layer.bias is not None else 0.0
    if not layer.quantization_mode:
        return x @ _np(layer.kernel) + bias
    kernel, kernel_scale = _np(layer.kernel), _np(layer.kernel_scale)  # (in, out) int8, (out,)
    if not act_quant:
        return x @ kernel / kernel_scale + bias
    xq, x_scale = _absmax(x)
    return xq @ kernel / (x_scale * kernel_scale) + bias


def np_rows(layer) -> np.ndarray:
    """The embedding table as the layer looks rows up: ``(V, C)``."""
    if not layer.quantization_mode:
        return _np(layer.embeddings)
    return _np(layer.embeddings) / _np(layer.embeddings_scale)[:, None]


def np_tied(wte, h: np.ndarray, act_quant: bool = True) -> np.ndarray:
    if not wte.quantization_mode:
        return h @ _np(wte.embeddings).T
    table, scale = _np(wte.embeddings), _np(wte.embeddings_scale)  # (V, C) int8, (V,)
    if not act_quant:
        return h @ table.T / scale
    hq, h_scale = _absmax(h)
    return hq @ table.T / (h_scale * scale)


def np_ln(layer, x: np.ndarray) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * _np(layer.gamma) + _np(layer.beta)


def np_gelu_new(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_block(block, x: np.ndarray, H: int, aq: bool) -> np.ndarray:
    B, T, C = x.shape
    qkv = np_dense(block.attn.c_attn, np_ln(block.ln_1, x), aq).reshape(B, T, 3, H, C // H)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # (B, H, T, D) each
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // H)
    scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    y = (probs / probs.sum(-1, keepdims=True)) @ v  # (B, H, T, D)
    x = x + np_dense(block.attn.c_proj, y.transpose(0, 2, 1, 3).reshape(B, T, C), aq)
    m = np_gelu_new(np_dense(block.mlp.c_fc, np_ln(block.ln_2, x), aq))
    return x + np_dense(block.mlp.c_proj, m, aq)


def np_forward(model, ids: np.ndarray, act_quant: bool = True) -> dict[str, np.ndarray]:
    """The head's output fields, in float64, from the model's variables."""
    head = type(model).head
    backbone = model if head == "base" else model.transformer
    flat = ids.reshape(-1, ids.shape[-1])  # (B [x N], T)
    x = np_rows(backbone.wte)[flat] + np_rows(backbone.wpe)[np.arange(flat.shape[1])]
    for block in backbone.h:
        x = np_block(block, x, model.config.n_head, act_quant)
    h = np_ln(backbone.ln_f, x).reshape(*ids.shape, -1)  # (..., T, C)
    if head == "base":
        return {"last_hidden_state": h}
    if head == "lm":
        return {"logits": np_tied(backbone.wte, h, act_quant)}
    if head == "double_heads":
        mc = np_dense(model.multiple_choice_head.summary, h[..., -1, :], act_quant)[..., 0]
        return {"logits": np_tied(backbone.wte, h, act_quant), "mc_logits": mc}
    if head == "question_answering":
        span = np_dense(model.qa_outputs, h, act_quant)
        return {"start_logits": span[..., 0], "end_logits": span[..., 1]}
    if head == "sequence_classification":
        return {"logits": np_dense(model.score, h[:, -1], act_quant)}
    return {"logits": np_dense(model.classifier, h, act_quant)}


def assert_fields(ours: dict, expected: dict, dtype: str, what: str) -> None:
    assert set(ours) == set(expected), (sorted(ours), sorted(expected))
    for name in sorted(expected):
        assert_close(ours[name], expected[name], dtype, f"{what}.{name}")


# --------------------------------------------------------------------------- what is quantized
def _main(layer):
    return layer.kernel if isinstance(layer, keras.layers.Dense) else layer.embeddings


@pytest.mark.parametrize("head", HEADS)
def test_every_dense_and_embedding_becomes_int8(head):
    """Layer by layer against the float twin (same build, not quantized): every Dense and
    Embedding is int8 with the float shape, no other layer is quantized."""
    model = shared_int8(head)
    kinds = (keras.layers.Dense, keras.layers.Embedding)
    pairs = list(zip(shared_float(head)._flatten_layers(), model._flatten_layers(), strict=True))
    shapes = {}
    for twin, layer in pairs:
        assert type(layer) is type(twin), (layer.name, twin.name)
        if type(twin) in kinds:
            shapes[id(layer)] = _main(twin).shape
            assert not twin.quantization_mode, twin.name
    for _, layer in pairs:
        if id(layer) in shapes:
            main = _main(layer)
            assert (layer.quantization_mode, main.dtype, main.shape) == (
                "int8",
                "int8",
                shapes[id(layer)],
            ), layer.name
        else:
            assert not getattr(layer, "quantization_mode", None), layer.name
    assert {id(layer) for layer in q.quantized_layers(model).values()} == set(shapes)


# --------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("head", HEADS)
def test_numpy_oracle_is_the_float_model(head):
    model = shared_float(head)
    assert_fields(_run(model, head), np_forward(model, ids_of(head)), "float32", f"{head} oracle")


@pytest.mark.parametrize("head", HEADS)
def test_int8_forward_is_keras_int8_rule(head):
    model = shared_int8(head)
    assert_fields(
        _run(model, head), np_forward(model, ids_of(head)), "keras_int8_rule", f"{head} int8"
    )


@pytest.mark.parametrize("head", HEADS)
def test_int8_forward_is_close_to_float32(head):
    expected = _run(shared_float(head), head)
    assert_fields(_run(shared_int8(head), head), expected, "keras_int8", f"{head} int8 vs float32")


def test_weight_only_config_follows_keras_rule():
    config = keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)
    model = int8_model("lm", config=config)
    expected = np_forward(model, ids_of("lm"), act_quant=False)
    assert_fields(_run(model, "lm"), expected, "keras_int8_rule", "weight-only int8")


def test_xla_and_predict_match_eager():
    model = int8_model("lm")
    eager = np.asarray(model(input_ids=ids_of("lm")).logits)
    for jit_compile in (True, False):  # predict with XLA and in graph mode
        model.compile(jit_compile=jit_compile)
        predicted = model.predict({"input_ids": ids_of("lm")}, verbose=0)["logits"]
        assert_close(predicted, eager, "keras_int8_rule", f"predict jit_compile={jit_compile}")


def test_tied_head_gradient_uses_the_dequantized_table():
    model = shared_int8("lm")
    wte = model.transformer.wte
    h = tf.constant(np.random.default_rng(2).normal(size=(2, 3, 32)), tf.float32)
    upstream = np.random.default_rng(3).normal(size=(2, 3, 99))
    with tf.GradientTape() as tape:
        tape.watch(h)
        loss = tf.reduce_sum(q.tied_logits(h, wte) * tf.constant(upstream, tf.float32))
    assert_close(tape.gradient(loss, h), upstream @ np_rows(wte), "float32", "d logits / d h")


@pytest.mark.parametrize("jit_compile", [True, False])
def test_greedy_generate_matches_a_no_cache_loop(jit_compile):
    model = shared_int8("lm")  # generate keeps its programs on the model; nothing else changes
    prompt = ids_of("lm")[:2, :5]
    got = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None,
                         pad_token_id=0, jit_compile=jit_compile)  # fmt: skip
    ids = prompt
    for _ in range(6):  # nanoGPT's loop: the whole sequence each step, no cache
        logits = np.asarray(model(input_ids=ids, use_cache=False).logits)[:, -1]
        ids = np.concatenate([ids, logits.argmax(-1)[:, None].astype(np.int32)], axis=1)
    np.testing.assert_array_equal(np.asarray(got), ids)


def test_fit_trains_the_float_weights_only():
    model = float_model("lm", n_layer=1)  # one block: a shorter XLA compile of the step
    model.quantize("int8")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = {v.path: v.numpy().copy() for v in model.weights}
    model.fit({"input_ids": ids_of("lm"), "labels": ids_of("lm")}, epochs=1, verbose=0)
    trainable = {v.path for v in model.trainable_weights}
    assert trainable and all(v.dtype != "int8" for v in model.trainable_weights)
    for v in model.weights:  # LayerNorms and biases move; int8 values and scales do not
        moved = not np.array_equal(v.numpy(), before[v.path])
        assert moved == (v.path in trainable), v.path


# --------------------------------------------------------------------------- saving
def _assert_same_weights(a, b) -> None:
    assert [v.path for v in a.weights] == [v.path for v in b.weights]
    for x, y in zip(a.weights, b.weights, strict=True):
        assert x.dtype == y.dtype, x.path
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@KERAS_SAVING
@pytest.mark.parametrize("head", ["lm", "sequence_classification"])
def test_keras_file_round_trip_is_bit_exact(head, tmp_path):
    model = shared_int8(head)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    _assert_same_weights(loaded, model)
    assert sorted(q.quantized_layers(loaded)) == sorted(q.quantized_layers(model))
    for name, value in _run(model, head).items():
        np.testing.assert_array_equal(_run(loaded, head)[name], value, err_msg=name)


@KERAS_SAVING
def test_save_weights_round_trip_is_bit_exact(tmp_path):
    model = shared_int8("lm")
    model.save_weights(tmp_path / "model.weights.h5")
    other = gtf.GPT2LMHeadModel(model.config)
    other.quantize("int8")  # Keras loads int8 weights into a model quantized the same way
    other.load_weights(tmp_path / "model.weights.h5")
    _assert_same_weights(other, model)
    np.testing.assert_array_equal(_run(other, "lm")["logits"], _run(model, "lm")["logits"])


@KERAS_SAVING
def test_float_model_cannot_load_int8_weights(tmp_path):
    shared_int8("lm").save_weights(tmp_path / "model.weights.h5")
    with pytest.raises(ValueError, match="Layer 'c_attn' expected 2 variables, but received 0"):
        gtf.GPT2LMHeadModel(tiny_config(**CONFIG)).load_weights(tmp_path / "model.weights.h5")


@KERAS_SAVING
def test_saved_model_export_serves_the_int8_logits(tmp_path):
    model = int8_model("lm")
    model.export(tmp_path / "served")
    served = tf.saved_model.load(str(tmp_path / "served"))
    ids = ids_of("lm")
    out = served.serve({"input_ids": tf.constant(ids), "attention_mask": tf.ones_like(ids)})
    assert_close(out["logits"], _run(model, "lm")["logits"], "keras_int8_rule", "export")


def _message(action: str, hint: str, layers: int = 10) -> str:
    return (
        f"{action} needs float weights, but GPT2LMHeadModel has {layers} int8 layers "
        f"(quantize() was called); {hint}"
    )


def _dequantize_hint(call: str) -> str:
    return (
        "pass dequantize=True for float weights rebuilt from the int8 ones (rounding "
        f"included), or keep the int8 model with model.save('model.keras') or save_weights "
        f"({call})"
    )


def test_save_pretrained_refuses_a_quantized_model(tmp_path):
    model = shared_int8("lm")
    with pytest.raises(q.QuantizedModelError) as caught:
        model.save_pretrained(tmp_path / "out")
    assert str(caught.value) == _message("save_pretrained", _dequantize_hint("save_pretrained"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(q.QuantizedModelError) as caught:
        to_canonical(model)
    assert str(caught.value) == _message("to_canonical", _dequantize_hint("to_canonical"))


def test_save_pretrained_dequantized_loads_the_int8_values(tmp_path):
    model = shared_int8("lm")
    model.save_pretrained(tmp_path / "out", dequantize=True)
    loaded = gtf.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    assert not q.quantized_layers(loaded)
    for path, layer in q.quantized_layers(model).items():
        main = "kernel" if isinstance(layer, keras.layers.Dense) else "embeddings"
        value = q._walk(loaded, path)
        expected = (np_rows(layer) if main == "embeddings"
                    else _np(layer.kernel) / _np(layer.kernel_scale))  # fmt: skip
        assert_close(getattr(value, main).numpy(), expected, "float32", path)
    state = to_canonical(model, dequantize=True)
    assert state["h.0.attn.c_attn.weight"].dtype == np.float32


def test_float_weight_operations_refuse_a_quantized_model():
    model = int8_model("lm")
    with pytest.raises(q.QuantizedModelError) as caught:
        load_canonical(model, random_state(model.config, "lm"))
    assert str(caught.value) == _message(
        "load_canonical", "load the weights into the float model, then quantize()"
    )
    with pytest.raises(q.QuantizedModelError) as caught:
        model.resize_token_embeddings(120)
    assert str(caught.value) == _message(
        "resize_token_embeddings", "resize the float model, then quantize()"
    )


# --------------------------------------------------------------------------- refusals
_WHY = {
    "int4": "Keras' int4 layers unpack their weights at every call (slower than float32 on "
    "CPU) and gpt2_dual's tied lm_head reads int8 rows only",
    "float8": "Keras' float8 is a training mode: it keeps the float32 kernels (no memory "
    "saved), quantizes at every call and does not cover Embedding layers",
    "gptq": "GPTQ needs a calibration dataset and a layer structure gpt2_dual does not provide",
    "awq": "AWQ needs a calibration dataset and a layer structure gpt2_dual does not provide",
    "int2": "not a Keras quantization mode",
    None: "not a Keras quantization mode",
}


@pytest.mark.parametrize("mode", list(_WHY))
def test_unsupported_modes_are_refused(mode):
    model = float_model("lm")
    with pytest.raises(InvalidInputError) as caught:
        model.quantize(mode)
    assert str(caught.value) == (
        f"quantize mode {mode!r} is not supported by gpt2_dual.tf models ({_WHY[mode]}); "
        "supported: 'int8'"
    )
    assert not q.quantized_layers(model)


def test_unsupported_config_is_refused():
    model = float_model("lm")
    with pytest.raises(InvalidInputError, match=r"^quantize mode 'int4' is not supported"):
        model.quantize(config=keras.quantizers.Int4QuantizationConfig())


def test_quantizing_twice_is_refused():
    model = int8_model("lm")
    with pytest.raises(q.QuantizedModelError) as caught:
        model.quantize("int8")
    assert str(caught.value) == (
        "GPT2LMHeadModel is already quantized (10 int8 layers); quantize a float model "
        "(build or load it again)"
    )


def test_filters_select_layers_by_name():
    model = int8_model("sequence_classification", filters="^c_attn$")
    assert sorted(q.quantized_layers(model)) == [
        "transformer.h.0.attn.c_attn",
        "transformer.h.1.attn.c_attn",
    ]
    model = int8_model("sequence_classification", filters=lambda layer: layer.name != "score")
    assert "score" not in q.quantized_layers(model) and len(q.quantized_layers(model)) == 10
    with pytest.raises(InvalidInputError) as caught:
        float_model("lm").quantize("int8", filters="ln_")
    assert str(caught.value) == (
        "quantize filters='ln_' select no Dense or Embedding layer of GPT2LMHeadModel"
    )


def test_quantize_drops_compiled_generate_programs():
    model = float_model("lm")
    # graph mode: its program is kept as an XLA one is, and compiles in a fraction of the time
    options = dict(
        max_new_tokens=2, do_sample=False, eos_token_id=None, pad_token_id=0, jit_compile=False
    )
    model.generate(ids_of("lm")[:1, :4], **options)
    assert compiled_programs(model)
    model.quantize("int8")
    assert not compiled_programs(model)


def test_a_quantized_model_predicts_under_xla_on_cpu():
    """TF's own int8 matmul (graph mode) is 3-5x slower than float32 on CPU: predict and
    evaluate of an int8 model take XLA whatever the CPU rule picks for float models."""
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the CPU rule applies on CPU-only machines")
    model = int8_model()
    model.compile(optimizer="sgd")
    assert model.jit_compile_for("forward") is True
    assert model.jit_compile_for("train") is True
    model.compile(optimizer="sgd", jit_compile=False)  # an explicit choice stays
    assert model.jit_compile_for("forward") is False


def test_keras_from_pretrained_refuses_bitsandbytes(tmp_path):
    from gpt2_dual import BitsAndBytesConfig

    shared_float("lm").save_pretrained(tmp_path)
    with pytest.raises(InvalidInputError) as info:
        gtf.GPT2LMHeadModel.from_pretrained(
            tmp_path, quantization_config=BitsAndBytesConfig(load_in_4bit=True)
        )
    assert str(info.value) == (
        "quantization_config= bitsandbytes is PyTorch only: load it with gpt2_dual.pt; in "
        "Keras, load the float checkpoint and call model.quantize('int8')"
    )
    config = __import__("json").loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True).to_dict()
    (tmp_path / "config.json").write_text(__import__("json").dumps(config))
    with pytest.raises(InvalidInputError) as info:
        gtf.GPT2LMHeadModel.from_pretrained(tmp_path)
    assert str(info.value) == (
        f"the checkpoint at {str(tmp_path)!r}, quantized with bitsandbytes is PyTorch only: "
        "load it with gpt2_dual.pt; in Keras, load the float checkpoint and call "
        "model.quantize('int8')"
    )
