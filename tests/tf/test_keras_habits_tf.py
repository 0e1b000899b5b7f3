"""What Keras (and transformers-TF) users do with a model without reading our docs: compile with
a Keras loss and metrics and fit on ``(x, y)``, ``predict``, ``to_tuple()``, positional lists,
``resize_token_embeddings``, ``num_parameters``, ``set_input_embeddings``, and ``.keras`` files
in a new process.

Numbers are checked against the same model in the same process (or the PyTorch model on the
same canonical weights), with tolerances from ``tests/cases.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cases import BATCH, HEADS, SEQ, assert_close, tiny_config
from frameworks import PT, has, random_state
from frameworks_tf import TF
from gpt2_dual.heads import HEAD_SPECS
from gpt2_dual.outputs import OUTPUT_TYPES

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402

import gpt2_dual.tf as gpt  # noqa: E402
from gpt2_dual.tf.inputs import POSITIONAL_ORDER  # noqa: E402

#: Keras 3.15's saving calls ``np.array`` on TensorFlow 2.21 variables, whose ``__array__``
#: predates numpy 2's ``copy`` keyword; numpy warns. Not gpt2_dual code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

PAD = 98
CHOICES = 2
ROWS = 8  # training rows: two batches of 4
#: Config changes of the training tests: one block (how many is not what they test; each block
#: adds ops to every eager step and to every trace)
TRAIN = dict(n_layer=1)
needs_torch = pytest.mark.skipif(
    not has("torch"), reason="comparison with gpt2_dual.pt needs torch"
)


def _config(**changes):
    return tiny_config(pad_token_id=PAD, **changes)


def _sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _xy(head: str, rows: int = ROWS, seed: int = 3) -> tuple[dict, object]:
    """``(x, y)`` with ``y`` in the layout of the head's main output (``training.py``);
    learnable from ``x``, so a few steps lower the loss."""
    rng = np.random.default_rng(seed)
    if head == "double_heads":
        ids = rng.integers(0, PAD, (rows, CHOICES, SEQ + 1), dtype=np.int32)
        x = {
            "input_ids": ids[..., :-1],
            "mc_token_ids": np.full((rows, CHOICES), SEQ - 1, np.int32),
        }
        return x, (ids[..., 1:], (ids[:, 0, 0] % CHOICES).astype(np.int32))
    ids = rng.integers(0, PAD, (rows, SEQ + 1), dtype=np.int32)
    if head == "lm":  # next-token targets, shifted here as KerasHub's preprocessors do
        return {"input_ids": ids[:, :-1]}, ids[:, 1:]
    ids = ids[:, :-1]
    x = {"input_ids": ids}
    if head == "question_answering":
        start = (ids[:, 0] % (SEQ - 1)).astype(np.int32)
        return x, (start, start + 1)
    if head == "sequence_classification":
        return x, (ids[:, 0] % 3).astype(np.int32)
    return x, (ids % 3).astype(np.int32)  # token classification


def _data(x, y, source: str):
    """``fit``/``evaluate`` arguments: a ``tf.data`` dataset of ``(x, y)`` batches, or numpy."""
    if source == "tf.data":
        return {"x": tf.data.Dataset.from_tensor_slices((x, y)).batch(4)}
    return {"x": x, "y": y, "batch_size": 4}


# --------------------------------------------------------------------------- compile and fit
KERAS_LOSS_HEADS = ("lm", "sequence_classification", "token_classification",
                    "question_answering", "double_heads")  # fmt: skip


def _accuracy_names(head: str) -> list[str]:
    fields = HEAD_SPECS[head].outputs
    return ["accuracy"] if len(fields) == 1 else [f"{f}_accuracy" for f in fields]


@pytest.mark.parametrize("head", KERAS_LOSS_HEADS)
def test_compile_with_a_keras_loss_and_accuracy(head):
    """Two epochs on ``tf.data``, then one on numpy arrays, one model: the loss goes down
    across all three, accuracy is reported, and both sources evaluate alike (eagerly, for
    speed; the traced steps are tested below)."""
    keras.utils.set_random_seed(0)
    model = gpt.build(head, _config(**TRAIN))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce(), metrics=["accuracy"],
                  run_eagerly=True)  # fmt: skip
    x, y = _xy(head)
    losses = []
    for source, epochs in (("tf.data", 2), ("numpy", 1)):
        history = model.fit(**_data(x, y, source), epochs=epochs, shuffle=False, verbose=0).history
        losses += history["loss"]
        for name in _accuracy_names(head):
            assert all(0.0 <= a <= 1.0 for a in history[name]), (name, history)
    assert losses[-1] < 0.9 * losses[0], losses
    results = [model.evaluate(**_data(x, y, s), verbose=0, return_dict=True)
               for s in ("tf.data", "numpy")]  # fmt: skip
    assert sorted(results[0]) == sorted(history), (results[0], history)
    for name, value in results[0].items():
        assert_close(results[1][name], value, what=f"evaluate {name}, numpy vs tf.data")
    assert type(model(x).to_output()) is OUTPUT_TYPES[head]  # calls still return the type


@pytest.mark.parametrize(
    ("head", "jit_compile"), [("sequence_classification", "auto"), ("question_answering", False)]
)
def test_compiled_loss_and_metrics_in_traced_steps(head, jit_compile):
    """``fit`` and ``evaluate`` in compiled steps: the default ("auto": XLA on a CPU-only
    machine, as users get it) for the one-output head; graph mode for the two-output head
    (the same trace, without an XLA compile of seconds; XLA fit equals graph-mode fit in
    ``test_keras_tf.py``)."""
    keras.utils.set_random_seed(0)
    model = gpt.build(head, _config(**TRAIN))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce(), metrics=["accuracy"],
                  jit_compile=jit_compile)  # fmt: skip
    x, y = _xy(head)
    history = model.fit(**_data(x, y, "tf.data"), epochs=3, shuffle=False, verbose=0).history
    assert history["loss"][-1] < 0.9 * history["loss"][0], history["loss"]
    result = model.evaluate(**_data(x, y, "tf.data"), verbose=0, return_dict=True)
    assert set(_accuracy_names(head)) <= set(result), result


def test_keras_accuracy_is_the_accuracy_of_the_logits():
    model = gpt.GPT2ForTokenClassification(_config())
    model.compile(optimizer="sgd", loss=_sparse_ce(), metrics=["accuracy"], run_eagerly=True)
    x, y = _xy("token_classification")
    got = model.evaluate(x, y, batch_size=ROWS, verbose=0, return_dict=True)
    logits = np.asarray(model(x).logits)
    assert_close(got["accuracy"], np.mean(logits.argmax(-1) == y), what="accuracy")
    per_token = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    assert_close(got["loss"], np.mean(per_token), what="loss")


def test_qa_loss_weights_give_transformers_span_loss():
    model = gpt.GPT2ForQuestionAnswering(_config())
    model.compile(
        optimizer="sgd", loss=_sparse_ce(), loss_weights=[0.5, 0.5], run_eagerly=True
    )  # one loss, 2 outputs
    x, (start, end) = _xy("question_answering")
    got = model.evaluate(x, (start, end), batch_size=ROWS, verbose=0, return_dict=True)
    own = model({**x, "start_positions": start, "end_positions": end}).loss
    assert_close(got["loss"], np.asarray(own), what="Keras' weighted sum vs span_loss")
    by_name = model.evaluate(x, {"start_positions": start, "end_positions": end},
                             batch_size=ROWS, verbose=0, return_dict=True)  # fmt: skip
    assert_close(by_name["loss"], got["loss"], what="y keyed by label names")


def test_one_output_of_the_double_heads_alone():
    keras.utils.set_random_seed(0)
    model = gpt.GPT2DoubleHeadsModel(_config(**TRAIN))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=_sparse_ce(),
                  metrics={"mc_logits": ["accuracy"]}, run_eagerly=True)  # fmt: skip
    x, (_, mc_labels) = _xy("double_heads")
    history = model.fit(x, {"mc_logits": mc_labels}, batch_size=4, epochs=3, verbose=0).history
    assert history["loss"][-1] < 0.9 * history["loss"][0] and "accuracy" in history, history
    mc_logits = np.asarray(model(x).mc_logits)
    losses = keras.losses.sparse_categorical_crossentropy(mc_labels, mc_logits, from_logits=True)
    got = model.evaluate(x, {"mc_labels": mc_labels}, batch_size=ROWS, verbose=0, return_dict=True)
    assert_close(got["loss"], np.mean(losses), what="mc loss alone")


def test_own_loss_metrics_read_the_labels_in_the_inputs():
    """No compiled loss: the model's loss, and metrics against its (shifted) labels, in a
    traced step (graph mode: the labels' shift and weights are traced ops)."""
    model = gpt.GPT2LMHeadModel(_config())
    model.compile(optimizer="sgd", metrics=["accuracy"], weighted_metrics=["accuracy"],
                  jit_compile=False)  # fmt: skip
    x, _ = _xy("lm")
    labels = x["input_ids"].copy()
    labels[:, -3:] = -100  # not counted: only weighted_metrics can skip them
    got = model.evaluate({**x, "labels": labels}, batch_size=ROWS, verbose=0, return_dict=True)
    out = model({**x, "labels": labels})
    hits = np.asarray(out.logits)[:, :-1].argmax(-1) == labels[:, 1:]  # position t -> t + 1
    counted = labels[:, 1:] != -100
    assert_close(got["loss"], np.asarray(out.loss), what="own loss")
    assert_close(got["weighted_accuracy"], hits[counted].mean(), what="weighted accuracy")
    assert_close(got["accuracy"], (hits & counted).mean(), what="accuracy, -100 as misses")


@pytest.mark.parametrize(
    ("head", "compile_args", "y", "match"),
    [
        ("sequence_classification", {"loss": "sparse_categorical_crossentropy"}, None,
         "compiled with a loss but got no targets"),
        ("double_heads", {"loss": "sparse_categorical_crossentropy"}, "mc",
         r"two outputs \['logits', 'mc_logits'\]: pass y as a pair"),
        ("double_heads", {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
         {"mc_logits": "mc"}, r"metrics=\{'mc_logits': \[...\]\}"),
        ("question_answering", {"loss": "sparse_categorical_crossentropy"}, {"start": "mc"},
         r"y has keys \['start'\]; the outputs are \['start_logits', 'end_logits'\]"),
    ],
)  # fmt: skip
def test_unusable_targets_are_refused_with_the_form_to_use(head, compile_args, y, match):
    """Eagerly: the checks are Python in the step's loss and metrics, the same in a traced
    step, which would first cost a trace."""
    model = gpt.build(head, _config())
    model.compile(optimizer="sgd", run_eagerly=True, **compile_args)
    x, _ = _xy(head, rows=4)
    mc = np.zeros(4, np.int32)
    y = {k: mc for k in y} if isinstance(y, dict) else (mc if y == "mc" else None)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, verbose=0)


# --------------------------------------------------------------------------- predict, to_tuple
@pytest.mark.parametrize("head", HEADS)
def test_predict_returns_the_main_outputs(head):
    """Eagerly, for speed: compiled ``predict`` is in ``test_keras_tf.py`` (on ``tf.data``)
    and ``test_models_tf.py`` (XLA)."""
    model = gpt.build(head, _config())
    model.compile(run_eagerly=True)
    x, _ = _xy(head)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)
    expected = model(x)
    for got in (model.predict(dataset, verbose=0), model.predict(x, batch_size=4, verbose=0)):
        assert sorted(got) == sorted(HEAD_SPECS[head].outputs), sorted(got)  # no cache, no loss
        for field in HEAD_SPECS[head].outputs:
            assert_close(got[field], np.asarray(expected[field]), what=f"predict {field}")
            assert got[field] is getattr(got, field)


@pytest.mark.parametrize("head", HEADS)
def test_to_tuple_and_index_as_on_the_pytorch_side(head):
    model = gpt.build(head, _config())
    x, _ = _xy(head)
    out = model(x, output_hidden_states=True)
    reference = out.to_output()  # the PyTorch side's dataclass holding the same tensors
    assert [id(v) for v in out.to_tuple()] == [id(v) for v in reference.to_tuple()]
    assert out[0] is reference[0] and out[-1] is reference[-1]
    assert [id(v) for v in out[1:]] == [id(v) for v in reference.to_tuple()[1:]]
    first = "last_hidden_state" if head == "base" else HEAD_SPECS[head].outputs[0]
    assert out[0] is out[first]  # no labels: the main output comes first


def test_to_tuple_starts_with_the_loss_when_labels_are_given():
    model = gpt.GPT2ForSequenceClassification(_config())
    x, y = _xy("sequence_classification")
    out = model({**x, "labels": y})
    assert out.to_tuple()[:2] == (out.loss, out.logits) and out[0] is out.loss


# --------------------------------------------------------------------------- positional lists
def _signature_order(module: str, class_name: str) -> tuple[str, ...]:
    """Argument names of ``class_name.call``/``forward`` in transformers' source (read, not
    imported: its TF models pull in tf_keras)."""
    root = Path(importlib.util.find_spec("transformers").submodule_search_locations[0])
    tree = ast.parse((root / "models" / "gpt2" / f"{module}.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    fn = next(
        n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in ("call", "forward")
    )
    return tuple(a.arg for a in fn.args.args[1:])


@pytest.mark.skipif(
    not has("transformers"), reason="reads transformers' source; needs transformers"
)
def test_positional_order_is_transformers_order():
    tf_module, pt_module = "modeling_tf_gpt2", "modeling_gpt2"
    for head, (module, cls) in {
        "base": (tf_module, "TFGPT2Model"),
        "lm": (tf_module, "TFGPT2LMHeadModel"),
        "double_heads": (tf_module, "TFGPT2DoubleHeadsModel"),
        "sequence_classification": (tf_module, "TFGPT2ForSequenceClassification"),
        "token_classification": (pt_module, "GPT2ForTokenClassification"),
        "question_answering": (pt_module, "GPT2ForQuestionAnswering"),
    }.items():
        assert POSITIONAL_ORDER[head] == _signature_order(module, cls), head


@pytest.mark.parametrize("head", HEADS)
def test_positional_list_equals_keywords(head):
    model = gpt.build(head, _config())
    x, _ = _xy(head, rows=BATCH)
    ids = x["input_ids"]
    mask = np.ones_like(ids)
    mask[0, ..., -2:] = 0
    keywords = {"input_ids": ids, "attention_mask": mask}
    values = [None] * len(POSITIONAL_ORDER[head])
    for name, value in {**keywords, "mc_token_ids": x.get("mc_token_ids")}.items():
        if name in POSITIONAL_ORDER[head]:
            values[POSITIONAL_ORDER[head].index(name)] = value
    values = values[: max(i for i, v in enumerate(values) if v is not None) + 1]
    expected = (
        model(**keywords, mc_token_ids=x["mc_token_ids"])
        if head == "double_heads"
        else model(**keywords)
    )
    for form in (
        values,
        tuple(values),
        [tf.constant(v) if v is not None else None for v in values],
    ):
        got = model(form)
        for field in HEAD_SPECS[head].outputs:
            assert_close(
                np.asarray(got[field]), np.asarray(expected[field]), what=f"{head}.{field}"
            )


def test_transformers_idiom_and_token_id_lists_still_work():
    model = gpt.GPT2LMHeadModel(_config())
    ids = np.array([[5, 6, 7], [8, 9, 10]], np.int32)
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.int32)
    expected = np.asarray(model(input_ids=ids, attention_mask=mask).logits)
    assert_close(np.asarray(model([ids, None, mask]).logits), expected, what="[ids, None, mask]")
    assert_close(np.asarray(model([ids]).logits), np.asarray(model(ids).logits), what="[ids]")
    # token ids as Python lists, or as a list of 1-D rows, are ids, not the positional form
    assert_close(
        np.asarray(model([[5, 6, 7], [8, 9, 10]]).logits),
        np.asarray(model(ids).logits),
        what="lists",
    )
    assert_close(
        np.asarray(model([ids[0], ids[1]]).logits), np.asarray(model(ids).logits), what="rows"
    )
    with pytest.raises(TypeError, match=r"\['head_mask'\] given in the positional list"):
        model([ids, None, mask, None, None, np.ones((4, 2))])
    with pytest.raises(TypeError, match="got 17 positional inputs"):
        model([ids] + [None] * 16)


# --------------------------------------------------------------------------- embeddings
def _lm(tie: bool, state: bool = False):
    config = _config(tie_word_embeddings=tie)
    return TF.build("lm", config, random_state(config, "lm") if state else None)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_resize_token_embeddings_keeps_the_old_tokens(tie):
    keras.utils.set_random_seed(0)
    model = _lm(tie, state=True)
    ids = np.array([[5, 6, 7, 97]], np.int32)
    before = np.asarray(model(ids).logits)  # (1, T, 99)
    old_rows = np.asarray(model.transformer.wte.embeddings)
    weights_before = [v.path for v in model.weights]
    wte = model.resize_token_embeddings(99 + 250, mean_resizing=False)
    assert wte is model.get_input_embeddings() and wte.embeddings.shape == (349, 32)
    assert model.config.vocab_size == 349
    assert [v.path for v in model.weights] == weights_before  # same order and names
    rows = np.asarray(wte.embeddings)
    np.testing.assert_array_equal(rows[:99], old_rows)
    std = model.config.initializer_range
    assert abs(rows[99:].std() / std - 1) < 0.1 and abs(rows[99:].mean()) < 0.1 * std
    after = np.asarray(model(ids).logits)
    assert after.shape == (1, 4, 349)
    assert_close(after[..., :99], before, what="logits of the old tokens")
    if tie:
        assert model.lm_head is None and model.get_output_embeddings() is wte
        wte.embeddings.assign(rows[::-1])  # the logits follow wte: still tied
        hidden = np.asarray(model.transformer(ids).last_hidden_state)
        assert_close(np.asarray(model(ids).logits), hidden @ rows[::-1].T, what="tied")
        wte.embeddings.assign(rows)
    else:
        kernel = np.asarray(model.lm_head.kernel)
        assert kernel.shape == (32, 349) and abs(kernel[:, 99:].std() / std - 1) < 0.1
    model.resize_token_embeddings(60)  # shrinking keeps the first rows
    np.testing.assert_array_equal(np.asarray(model.transformer.wte.embeddings), rows[:60])
    assert model(ids[:, :3]).logits.shape == (1, 3, 60) and model.config.vocab_size == 60


def test_resize_rounding_mean_rows_and_refusals(tmp_path):
    model = _lm(True, state=True)
    assert model.resize_token_embeddings() is model.get_input_embeddings()  # nothing to do
    model.resize_token_embeddings(100, pad_to_multiple_of=64)
    assert model.config.vocab_size == 128
    model.resize_token_embeddings(None, pad_to_multiple_of=48)
    assert model.config.vocab_size == 144
    rows = np.asarray(model.transformer.wte.embeddings)
    mean = rows[:99].mean(0)  # transformers' default: new rows around the old rows' mean
    assert np.abs(rows[99:] - mean).max() < 1e-3
    for bad in ({"new_num_tokens": 0}, {"new_num_tokens": 1.5}, {"pad_to_multiple_of": True}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            model.resize_token_embeddings(**bad)
    model.save(tmp_path / "resized.keras")
    loaded = keras.models.load_model(tmp_path / "resized.keras")
    ids = np.array([[5, 140, 7]], np.int32)
    assert loaded.config.vocab_size == 144
    assert_close(np.asarray(loaded(ids).logits), np.asarray(model(ids).logits), what="reloaded")


def test_resized_model_trains_after_compiling_again(caplog):
    model = _lm(False)
    model.compile(optimizer="adam", loss=_sparse_ce(), run_eagerly=True)
    x, y = _xy("lm", rows=4)
    model.fit(x, y, epochs=1, verbose=0)
    model.resize_token_embeddings(120)
    assert "compile it again before fit" in caplog.text
    model.compile(optimizer="adam", loss=_sparse_ce(), metrics=["accuracy"], run_eagerly=True)
    history = model.fit(x, np.where(y == 0, 119, y), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


@needs_torch
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_resize_matches_pytorch(tie):
    config = _config(tie_word_embeddings=tie)
    state = random_state(config, "lm")
    tf_model, pt_model = TF.build("lm", config, state), PT.build("lm", config.copy(), state)
    for args in ((130, None), (131, 8), (50, None)):
        a = tf_model.resize_token_embeddings(*args, mean_resizing=False)
        b = pt_model.resize_token_embeddings(*args, mean_resizing=False)
        assert tuple(a.embeddings.shape) == tuple(b.weight.shape)
        assert tf_model.config.vocab_size == pt_model.config.vocab_size
        assert tf_model.num_parameters() == pt_model.num_parameters()
    ids = np.array([[5, 6, 7, 49]], np.int64)
    got = np.asarray(tf_model(ids).logits)
    assert_close(got, PT.run(pt_model, input_ids=ids)["logits"], what="logits after resizing")


@needs_torch
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("head", HEADS)
def test_num_parameters_equal_pytorch(head, tie):
    config = _config(tie_word_embeddings=tie)
    tf_model, pt_model = gpt.build(head, config), PT.build(head, config.copy())
    for flags in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        assert tf_model.num_parameters(**flags) == pt_model.num_parameters(**flags), flags
    tf_model.get_input_embeddings().trainable = False  # frozen embeddings, both sides
    pt_model.get_input_embeddings().weight.requires_grad_(False)
    for flags in ({}, {"only_trainable": True}):
        assert tf_model.num_parameters(**flags) == pt_model.num_parameters(**flags), flags


def test_set_input_embeddings():
    model = _lm(True, state=True)
    ids = np.array([[5, 6, 7]], np.int32)
    new = keras.layers.Embedding(99, 32, name="wte")
    model.set_input_embeddings(new)
    assert model.get_input_embeddings() is new and model.get_output_embeddings() is new
    assert [v.path for v in model.weights][0] == "transformer/wte/embeddings"
    hidden = np.asarray(model.transformer(ids).last_hidden_state)
    assert_close(np.asarray(model(ids).logits), hidden @ np.asarray(new.embeddings).T, what="tied")
    assert sum(v is new.embeddings for v in model.weights) == 1  # the old one is not tracked
    with pytest.raises(ValueError, match="output_dim=32"):
        model.set_input_embeddings(keras.layers.Embedding(99, 16))
    with pytest.raises(ValueError, match="keras.layers.Embedding"):
        model.set_input_embeddings(keras.layers.Dense(32))


# --------------------------------------------------------------------------- .keras files
def test_compiled_model_file_keeps_loss_metrics_and_optimizer(tmp_path):
    model = gpt.GPT2ForQuestionAnswering(_config())
    model.compile(optimizer="adam", loss=_sparse_ce(), loss_weights=[0.5, 0.5],
                  metrics=["accuracy"], run_eagerly=True)  # fmt: skip
    x, y = _xy("question_answering", rows=4)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "compiled.keras")
    loaded = keras.models.load_model(tmp_path / "compiled.keras")
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 1
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert_close(got[name], value, what=f"reloaded {name}")


def test_keras_file_in_a_new_process_needs_gpt2_dual_tf_imported(tmp_path):
    gpt.GPT2ForSequenceClassification(_config()).save(tmp_path / "model.keras")
    script = textwrap.dedent(f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import warnings
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import keras
        path = {str(tmp_path / "model.keras")!r}
        try:
            keras.models.load_model(path)
        except TypeError as error:
            assert "Could not locate class 'GPT2ForSequenceClassification'" in str(error), error
        else:
            raise AssertionError("Keras found the class without gpt2_dual.tf")
        import gpt2_dual.tf
        model = keras.models.load_model(path)
        assert type(model) is gpt2_dual.tf.GPT2ForSequenceClassification
        print("ok")
    """)
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    assert "import gpt2_dual.tf" in gpt.GPT2PreTrainedModel.__doc__  # the documented way
