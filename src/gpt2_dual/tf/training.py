"""Keras training habits: ``compile`` losses and metrics, ``fit``/``evaluate`` and ``predict``.

Shapes: B batch, N choices, T tokens, C ``n_embd``, V ``vocab_size``, L ``num_labels``.

``model(x)`` always returns the head's ``ModelOutputDict``. What Keras' ``compile`` machinery
sees of it is the head's main output (``keras_view``: the fields of
``HEAD_SPECS[head].outputs``), one tensor, or a tuple for the two-output heads; the cache is
never part of it. Two ways to train:

- **The model's own loss** (``compile(optimizer)`` without ``loss``): the labels go into the
  input dict (``labels``, ``mc_labels``, ``start_positions``/``end_positions``) and ``fit``
  minimizes the loss the model computes (``loss + mc_loss`` for the double heads). Compiled
  metrics compare those labels with the outputs they score (``label_targets``).
- **A Keras loss** (``compile(optimizer, loss=..., metrics=[...])``, ``fit(x, y)``): ``y`` has
  the layout of the main output, as for any Keras model:

  - ``GPT2Model``: ``last_hidden_state`` (B, T, C); ``y`` (B, T, C).
  - ``GPT2LMHeadModel``: ``logits`` (B, T, V); ``y`` (B, T), the token *after* each position
    (shift the ids yourself, as KerasHub's preprocessors do).
  - ``GPT2ForSequenceClassification``: ``logits`` (B, L); ``y`` (B,) class ids.
  - ``GPT2ForTokenClassification``: ``logits`` (B, T, L); ``y`` (B, T) class ids.
  - ``GPT2ForQuestionAnswering``: ``(start_logits, end_logits)``, each (B, T); ``y``
    ``(start_positions, end_positions)``, each (B,).
  - ``GPT2DoubleHeadsModel``: ``(logits, mc_logits)``, (B, N, T, V) and (B, N); ``y``
    ``(lm_targets (B, N, T), mc_labels (B,))``.

  A two-output head gets one loss per output: a single loss serves both, a list or a dict
  keyed by field name (``{"start_logits": ..., "end_logits": ...}``) picks per output, and
  Keras sums them (``loss_weights=[0.5, 0.5]`` gives transformers' span-loss mean). ``y`` is a
  pair, or a dict keyed by output (or label) name; a dict naming one output trains that one
  alone (``y = {"mc_logits": mc_labels}``, with ``metrics={"mc_logits": [...]}``). A single
  tensor is refused: it would not say which output it scores. A flat metrics list
  (``metrics=["accuracy"]``) applies to every output (reported as ``start_logits_accuracy``,
  ...), as tf.keras 2 did. Sample weights (padding) go to the loss and to
  ``weighted_metrics``, as in Keras.

``predict`` returns the main output fields in the head's ``ModelOutputDict`` (no cache, no
loss): ``model.predict(ds)["logits"]``, as with transformers' TF models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from gpt2_dual.heads import HEAD_SPECS
from gpt2_dual.tf.losses import IGNORE_INDEX
from gpt2_dual.tf.outputs import ModelOutputDict, make_output

__all__ = ["LABEL_INPUTS", "KerasTrainingMixin", "keras_view", "label_targets"]

#: The input holding the targets of each output field (transformers' TF label-to-output map).
LABEL_INPUTS = {
    "logits": "labels",
    "mc_logits": "mc_labels",
    "start_logits": "start_positions",
    "end_logits": "end_positions",
}


#: The output field each label input scores (``y`` dicts may use either name).
_OUTPUT_OF = {label: field for field, label in LABEL_INPUTS.items()}


def keras_view(head: str, y: Any, outputs: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(y, y_pred)`` as Keras' compiled loss and metrics see them: the main output tensor
    for a one-output head; for a two-output head a tuple of both outputs in
    ``HEAD_SPECS[head].outputs`` order, or, when ``y`` is a dict naming one of them, dicts of
    that one (``{"mc_logits": mc_labels}``; label names such as ``mc_labels`` work too).

    Raises:
        ValueError: ``y`` of a two-output head is not a pair or a dict of output names.
    """
    fields = HEAD_SPECS[head].outputs
    if len(fields) == 1:
        return y, outputs[fields[0]]
    if isinstance(y, Mapping):
        y = {_OUTPUT_OF.get(k, k): v for k, v in y.items()}
        unknown = sorted(set(y) - set(fields))
        if unknown:
            raise ValueError(
                f"y has keys {unknown}; the outputs are {list(fields)} (or their labels "
                f"{[LABEL_INPUTS[f] for f in fields]})"
            )
        if len(y) < len(fields):
            return y, {f: outputs[f] for f in fields if f in y}
        y = [y[f] for f in fields]
    elif not (isinstance(y, list | tuple) and len(y) == len(fields)):
        raise ValueError(
            f"the model has two outputs {list(fields)}: pass y as a pair in that order, or as a "
            f"dict keyed by output name (one of them alone: {{{fields[-1]!r}: ...}})"
        )
    return tuple(y), tuple(outputs[f] for f in fields)


def label_targets(head: str, x: Any, outputs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """``(y, y_pred, sample_weight)`` for compiled metrics when the labels are in the inputs,
    laid out as ``keras_view`` lays out ``y``.

    Language-model labels are shifted (position t is scored against ``labels[..., t + 1]``, the
    last position dropped) as the model's own loss does; labels equal to ``-100`` get sample
    weight 0 (``weighted_metrics`` skip them; plain metrics, as in Keras, ignore weights).

    Raises:
        ValueError: the inputs hold no labels of any output.
    """
    fields = HEAD_SPECS[head].outputs
    x = x if isinstance(x, Mapping) else {}
    present = [f for f in fields if LABEL_INPUTS.get(f) in x]
    if not present:
        raise ValueError(
            f"compiled metrics compare labels with {list(fields)}, but the inputs have none of "
            f"{[LABEL_INPUTS.get(f, f) for f in fields]}; put them into the input dict, or pass "
            "targets as y with compile(loss=...)"
        )
    ys, preds, weights = {}, {}, {}
    for field in present:
        labels, pred = ops.convert_to_tensor(x[LABEL_INPUTS[field]]), outputs[field]
        if field == "logits" and head in ("lm", "double_heads"):
            labels, pred = labels[..., 1:], pred[..., :-1, :]  # next-token targets
        counted = labels != IGNORE_INDEX
        ys[field] = ops.where(counted, labels, ops.zeros_like(labels))
        preds[field] = pred
        weights[field] = ops.cast(counted, "float32")
    if len(fields) == 1:
        return ys[fields[0]], preds[fields[0]], weights[fields[0]]
    if len(present) < len(fields):
        return ys, preds, weights
    return tuple(tuple(part[f] for f in fields) for part in (ys, preds, weights))


def _per_output(metrics: Any, fields: tuple[str, ...]) -> Any:
    """A flat metrics list applied to every output field (``{field: metrics}``)."""
    if isinstance(metrics, list | tuple) and not any(
        isinstance(m, list | tuple | Mapping) for m in metrics
    ):
        return {field: list(metrics) for field in fields}
    return metrics


def tf_onednn_enabled() -> bool:
    """Whether this TensorFlow runs its oneDNN kernels (built with them, and
    ``TF_ENABLE_ONEDNN_OPTS`` not 0)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a private module; its absence means no way to tell
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


@contextmanager
def _jit_for(model: Any, purpose: str) -> Iterator[None]:
    """Inside, ``model.jit_compile`` is the one for ``purpose`` (Keras reads it when it builds
    its step functions)."""
    saved = model._jit_compile
    if model._jit_auto and not model.run_eagerly:
        model._jit_compile = model.jit_compile_for(purpose)
    try:
        yield
    finally:
        model._jit_compile = saved


class KerasTrainingMixin:
    """``compile``, ``compute_loss``, ``compute_metrics`` and ``predict_step`` of the
    gpt2_dual.tf models (the module docstring has the rules); mixed into
    ``GPT2PreTrainedModel``."""

    head: str

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs Keras' losses and metrics see (``HEAD_SPECS[head].outputs``):
        the keys of a per-output ``loss``/``metrics`` dict."""
        return list(HEAD_SPECS[self.head].outputs)

    def compile(
        self,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        loss_weights: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        """Keras' ``compile``; for a two-output head a flat ``metrics`` or
        ``weighted_metrics`` list applies to both outputs, and so does a single ``loss`` given
        with per-output ``loss_weights``."""
        fields = HEAD_SPECS[self.head].outputs
        given = (metrics, weighted_metrics)
        if len(fields) > 1:
            metrics = _per_output(metrics, fields)
            weighted_metrics = _per_output(weighted_metrics, fields)
            single = loss is not None and not isinstance(loss, list | tuple | Mapping)
            if single and isinstance(loss_weights, Mapping):
                loss = {f: loss for f in fields}
            elif single and isinstance(loss_weights, list | tuple):
                loss = [loss] * len(fields)
        self._metrics_broadcast = (metrics, weighted_metrics) != given
        self._jit_auto = kwargs.get("jit_compile", "auto") == "auto"
        super().compile(
            optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
            weighted_metrics=weighted_metrics, **kwargs,
        )  # fmt: skip
        if self._jit_auto:  # saved as "auto", so a reloaded model applies the rule again
            self._compile_config.config["jit_compile"] = "auto"

    #: Whether ``jit_compile`` was left "auto" (then forwards and training steps each get
    #: their own CPU rule); False once ``compile`` is given True or False.
    _jit_auto = True

    def _resolve_auto_jit_compile(self) -> bool:
        """``jit_compile="auto"`` for training steps (``fit``): Keras' rule with a GPU, TPU
        or distribution strategy; on a CPU-only machine ``gpt2_dual.cpu.tf_jit_default``."""
        return self._auto_jit("train")

    def jit_compile_for(self, purpose: str) -> bool:
        """Whether ``purpose`` (``"train"``: ``fit``; ``"forward"``: ``predict``,
        ``evaluate``) runs under XLA: ``compile``'s ``jit_compile`` when given; with "auto",
        Keras' rule (XLA) with a GPU, TPU or distribution strategy, and on a CPU-only machine
        the CPU rule for that purpose (``gpt2_dual.cpu.tf_forward_path``; ``GPT2_DUAL_TF_JIT``
        overrides it)."""
        return self._auto_jit(purpose) if self._jit_auto else bool(self.jit_compile)

    def _auto_jit(self, purpose: str) -> bool:
        devices = tf.config.list_physical_devices()
        if any(d.device_type != "CPU" for d in devices) or self._distribute_strategy:
            return super()._resolve_auto_jit_compile()
        from gpt2_dual.cpu import tf_jit_default
        from gpt2_dual.tf.int8 import quantized_layers

        if quantized_layers(self):  # TF's own int8 matmul is 3-5x slower than float32 here
            return True
        compute = self.dtype_policy.compute_dtype
        return tf_jit_default(tf_onednn_enabled(), purpose, compute)

    def make_predict_function(self, force: bool = False) -> Any:
        with _jit_for(self, "forward"):
            return super().make_predict_function(force)

    def make_test_function(self, force: bool = False) -> Any:
        with _jit_for(self, "forward"):
            return super().make_test_function(force)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compile again from a ``.keras`` file's compile config (Keras skips a custom
        ``compile`` otherwise); the optimizer is built so its saved state can be loaded."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        """``fit``/``evaluate`` loss: the compiled Keras loss on ``keras_view`` against ``y``,
        or, compiled without a loss, the model's own (labels in the input dict).

        Raises:
            ValueError: a compiled loss without ``y``; no compiled loss and no labels in the
                inputs, or ``y`` or sample weights given to the model's own loss.
        """
        name = type(self).__name__
        if self.loss is not None:
            if y is None:
                raise ValueError(
                    f"{name} was compiled with a loss but got no targets: pass them as y "
                    "(fit(x, y)), or compile without loss= to use the labels in the input dict"
                )
            if isinstance(y_pred, Mapping):
                y, y_pred = keras_view(self.head, y, y_pred)
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if y is not None or sample_weight is not None:
            raise ValueError(
                f"{name} computes its own loss from the labels in its input dict; pass "
                "{'input_ids': ..., 'labels': ...} as x without y or sample weights, or "
                "compile(loss=...) to train on y with a Keras loss"
            )
        terms = [y_pred[k] for k in ("loss", "mc_loss") if k in y_pred]
        if not terms:
            raise ValueError(
                f"{name} got no labels: put them into the input dict ('labels'), or "
                "compile(loss=...) and pass targets as y"
            )
        loss = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        for extra in self.losses:  # regularizers, add_loss
            loss = loss + ops.cast(extra, loss.dtype)
        # Keras sums gradients over replicas: each replica contributes its share of the mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> dict[str, Any]:
        """Compiled metrics on ``keras_view`` against ``y``, or against the labels in the
        input dict when there is no ``y`` (``label_targets``).

        Raises:
            ValueError: targets of one output of a two-output head with a flat metrics list
                (it was given to both outputs): metrics must then name that output.
        """
        if isinstance(y_pred, Mapping) and getattr(self, "_compile_metrics", None) is not None:
            if y is None:
                y, y_pred, sample_weight = label_targets(self.head, x, y_pred)
            else:
                y, y_pred = keras_view(self.head, y, y_pred)
            if isinstance(y_pred, Mapping) and getattr(self, "_metrics_broadcast", False):
                (field,) = y_pred
                raise ValueError(
                    f"{type(self).__name__} got targets for {field!r} only, but its metrics "
                    f"were given for both outputs; compile with metrics={{{field!r}: [...]}}"
                )
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def predict_step(self, data: Any) -> ModelOutputDict:
        """The main output fields (``HEAD_SPECS[head].outputs``) of one batch, without the
        cache and the loss."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        out = self(x, training=False)
        return make_output(self.head, **{f: out[f] for f in HEAD_SPECS[self.head].outputs})
