"""One optimizer step of ``gpt2-dual train --framework tf``: GPT2LMHeadModel, a Keras
optimizer, ``tf.distribute``. Shapes: A micro-batches, B rows each (this process), T tokens.

Distribution: ``TF_CONFIG`` set -> ``MultiWorkerMirroredStrategy`` (ring collectives; created
before TensorFlow runs anything); else ``MirroredStrategy`` over several GPUs, else the default
strategy (``tf/distributed.py``). Each process passes its own micro-batches; local replicas
split their rows.

Each replica runs the forward and backward passes of every micro-batch (XLA by
``gpt2_dual.cpu.tf_jit_default``'s training rule on CPUs, always on GPUs) and the gradients of
``loss / (A * replicas)`` are summed over replicas in one all-reduce (the loss riding along);
then the global norm, ``torch.nn.utils.clip_grad_norm_``'s factor
``min(max_norm / (norm + 1e-6), 1)``, and the optimizer, which takes the gradients reduced
(``_Reduced``: Keras' ``global_clipnorm`` would clip each replica's own). The learning rate is
the optimizer's variable, set from ``lr_at(step)`` before each step: one trace per (A, B, T).

Optimizers as transformers' Trainer sets them up, no decay on biases and LayerNorm weights
(``ln_*``): ``adamw`` is Keras AdamW (decoupled decay ``w -= lr * wd * w`` before the update,
as ``torch.optim.AdamW``) with torch's epsilon (``_AdamW``); ``sgd`` is Keras SGD with the same
decoupled decay, i.e. ``torch.optim.SGD`` (no weight_decay) after ``p.mul_(1 - lr * wd)``, not
torch's L2 term. With momentum, Keras keeps the rate inside the buffer (torch's at a constant
rate only). Dropout draws from each layer's Keras ``SeedGenerator``: ``save_state`` keeps their
states per process (``tf/train_state.py``: the files). Every replica starts from one seed,
as torchrun ranks do under transformers' ``set_seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from safetensors.numpy import save_file

from gpt2_dual.checkpoint import hf
from gpt2_dual.cpu import tf_jit_default
from gpt2_dual.errors import InvalidInputError, TrainingError
from gpt2_dual.tf.distributed import make_strategy, process_rank, read_cluster
from gpt2_dual.tf.heads import GPT2LMHeadModel
from gpt2_dual.tf.train_state import (
    OPTIMIZER_FILE,
    RNG_FILE,
    fit_arrays,
    read_state_file,
    seed_states,
    variable_arrays,
)
from gpt2_dual.tf.training import tf_onednn_enabled
from gpt2_dual.tf.weights import load_canonical

logger = logging.getLogger(__name__)

__all__ = ["StepResult", "TrainStep", "process_rank"]

OPTIMIZERS = ("adamw", "sgd")
DTYPES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # --dtype -> Keras policy


@dataclass
class StepResult:
    """What one optimizer step reports: ``loss``, the mean over the whole global batch (all
    processes and micro-batches); ``grad_norm``, the global L2 norm of the gradient before
    clipping; ``learning_rate``, the rate this step used."""

    loss: float
    grad_norm: float
    learning_rate: float


def _jit(purpose: str, compute_dtype: str) -> bool:
    """XLA with GPUs (Keras' rule); on a CPU-only machine the CPU rule for ``purpose``."""
    if any(d.device_type != "CPU" for d in tf.config.list_physical_devices()):
        return True
    return tf_jit_default(tf_onednn_enabled(), purpose, compute_dtype)


def _no_decay(variable: Any) -> bool:
    """transformers' rule: biases and LayerNorm weights (``ln_*`` layers) are not decayed."""
    return variable.name == "bias" or any(p.startswith("ln_") for p in variable.path.split("/"))


class _Reduced:
    """Takes gradients already summed over replicas and clipped (Keras would sum them again)."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class _SGD(_Reduced, keras.optimizers.SGD):
    """Keras SGD (decoupled weight decay) on reduced gradients."""


class _AdamW(_Reduced, keras.optimizers.AdamW):
    """Keras AdamW on reduced gradients, with ``torch.optim.AdamW``'s update: epsilon is added
    to ``sqrt(v / (1 - beta2^t))`` (Keras adds it to ``sqrt(v)``, 30x larger at the first
    step, which moves weights whose gradient is nearly 0 differently)."""

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr, g = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        correction1 = 1 - ops.power(ops.cast(self.beta_1, dtype), t)
        correction2 = 1 - ops.power(ops.cast(self.beta_2, dtype), t)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, (g - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(g) - v) * (1 - self.beta_2))
        denom = ops.sqrt(v) / ops.sqrt(correction2) + self.epsilon
        self.assign_sub(variable, (lr / correction1) * m / denom)


class TrainStep:
    """The optimizer step of GPT2LMHeadModel on TensorFlow (module docstring: the rules).

    Args:
        load_model: builds the gpt2_dual.tf GPT2LMHeadModel (in the strategy's scope, under
            the global dtype policy of ``dtype``: leave the model's dtype to it).
        optimizer: ``"adamw"`` or ``"sgd"``.
        lr_at: learning rate of optimizer step ``step`` (0-based).
        weight_decay: decoupled decay of every weight but biases and LayerNorm weights.
        adam_beta1, adam_beta2, adam_epsilon: AdamW's; momentum: SGD's.
        max_grad_norm: clip the global gradient norm to this; None or 0: no clipping.
        dtype: ``"float32"``, or ``"bfloat16"`` (Keras ``mixed_bfloat16``: float32 weights).
        gradient_checkpointing: recompute blocks in the backward pass (refused while the
            gpt2_dual.tf models lack ``gradient_checkpointing_enable``).
        seed: ``keras.utils.set_random_seed`` before the model is built.
        fsdp: PyTorch only (refused when True).

    Raises:
        InvalidInputError: an unknown optimizer or dtype, ``fsdp``, ``gradient_checkpointing``,
            a malformed ``TF_CONFIG``, or a model built with another dtype policy.

    Example:
        >>> load = lambda: GPT2LMHeadModel.from_pretrained("gpt2")
        >>> step = TrainStep(load, lr_at=lambda s: 5e-5)  # doctest: +SKIP
        >>> step([ids]).loss  # ids: (B, T) token ids  # doctest: +SKIP
    """

    def __init__(
        self,
        load_model: Callable[[], Any],
        *,
        optimizer: str = "adamw",
        lr_at: Callable[[int], float],
        weight_decay: float = 0.0,
        adam_beta1: float = 0.9,
        adam_beta2: float = 0.999,
        adam_epsilon: float = 1e-8,
        momentum: float = 0.0,
        max_grad_norm: float | None = 1.0,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        seed: int = 42,
        fsdp: bool = False,
    ) -> None:
        _check_options(optimizer, dtype, gradient_checkpointing, fsdp)
        cluster = read_cluster()
        self.strategy = make_strategy(cluster)  # first: collectives are set up at startup
        self.rank, self.world_size = cluster or (0, 1)
        self.is_main, self.step, self.lr_at, self._kind = self.rank == 0, 0, lr_at, optimizer
        self._local = self.strategy.num_replicas_in_sync // self.world_size
        keras.utils.set_random_seed(seed)
        with self.strategy.scope():
            self.model = _load(load_model, DTYPES[dtype])
            if gradient_checkpointing:
                self.model.gradient_checkpointing_enable()
            adam = (adam_beta1, adam_beta2, adam_epsilon)
            self.optimizer = _make_optimizer(optimizer, weight_decay, adam, momentum)
            variables = self.model.trainable_variables
            self.optimizer.exclude_from_weight_decay(var_list=list(filter(_no_decay, variables)))
            self.optimizer.build(variables)
        compute = self.model.dtype_policy.compute_dtype
        self._train_fn = self._make_train_fn(_jit("train", compute), max_grad_norm or None)
        self._nll_fn = tf.function(_nll_sum(self.model), jit_compile=_jit("forward", compute))
        self._barrier_fn = tf.function(lambda: self.strategy.run(_all_reduce_one))
        logger.info(
            "tf train step: %s, %d replicas, process %d of %d", type(self.strategy).__name__,
            self.strategy.num_replicas_in_sync, self.rank, self.world_size,
        )  # fmt: skip

    # ----------------------------------------------------------------- the step
    def __call__(self, micro_batches: Sequence[np.ndarray]) -> StepResult:
        """Run one optimizer step; ``step`` goes up by one.

        Args:
            micro_batches: this process's A micro-batches, each ``(B, T)`` integer token ids
                (all of one shape; B divisible by the process's replicas).

        Returns:
            ``StepResult`` of the global batch.

        Raises:
            InvalidInputError: no micro-batch, shapes that differ, or non-integer ids.
        """
        ids = self._stack(micro_batches)  # (A, B, T)
        lr = float(self.lr_at(self.step))
        self.optimizer.learning_rate = lr  # assigns the variable: no retrace
        loss, norm = self._train_fn(self._distribute(ids))
        self.step += 1
        return StepResult(loss=float(loss), grad_norm=float(norm), learning_rate=lr)

    def _stack(self, micro_batches: Sequence[np.ndarray]) -> np.ndarray:
        arrays = [np.asarray(m) for m in micro_batches]
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) != 1 or len(shapes[0]) != 2 or shapes[0][0] % self._local:
            raise InvalidInputError(
                f"micro_batches: need one or more (B, T) arrays of one shape, B divisible by "
                f"{self._local} (the replicas of this process); got shapes {shapes}"
            )
        if any(not np.issubdtype(a.dtype, np.integer) for a in arrays):
            raise InvalidInputError("micro_batches: token ids must be integers")
        return np.stack(arrays).astype(np.int32)

    def _distribute(self, ids: np.ndarray) -> Any:
        """Each local replica's share of the rows of ``ids`` ``(A, B, T)``."""
        b = ids.shape[1] // self._local

        def part(ctx: tf.distribute.InputContext) -> tf.Tensor:
            i = ctx.replica_id_in_sync_group % self._local
            return tf.constant(ids[:, i * b : (i + 1) * b])

        return self.strategy.experimental_distribute_values_from_function(part)

    def _make_train_fn(self, jit: bool, max_norm: float | None) -> Callable[[Any], Any]:
        variables, replicas = self.model.trainable_variables, self.strategy.num_replicas_in_sync
        grads_fn = tf.function(_grads(self.model, variables), jit_compile=jit)

        def replica_step(ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            loss, grads = grads_fn(ids, tf.constant(replicas, tf.float32))
            if replicas > 1:
                ctx = tf.distribute.get_replica_context()
                loss, grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, (loss, grads))
            norm = tf.linalg.global_norm(grads)
            if max_norm is not None:
                grads = [g * tf.minimum(max_norm / (norm + 1e-6), 1.0) for g in grads]
            self.optimizer.apply(grads, variables)
            return loss, norm

        def step(ids: Any) -> tuple[tf.Tensor, tf.Tensor]:
            out = self.strategy.run(replica_step, args=(ids,))
            return tuple(self.strategy.experimental_local_results(t)[0] for t in out)

        # One device: the whole step in one XLA program; else collectives outside XLA.
        return tf.function(step, jit_compile=jit if replicas == 1 else None)

    # ----------------------------------------------------------------- evaluation
    def loss_only(self, ids: np.ndarray) -> tuple[float, int]:
        """``(sum of token NLLs, number of predicted tokens B * (T - 1))`` of ``ids``
        ``(B, T)``, without dropout or gradients, on this process only (the caller reduces)."""
        ids = np.asarray(ids, np.int32)
        total = self._nll_fn(tf.constant(ids))
        return float(total), int(ids.shape[0] * (ids.shape[1] - 1))

    # ----------------------------------------------------------------- state
    def save_state(self, folder: Path) -> None:
        """Write what continues the run bit for bit, the weights aside: the optimizer's
        variables and ``step`` (main process, ``optimizer.safetensors``) and this process's
        dropout random state (``rng_state_<rank>.safetensors``)."""
        meta = {"step": str(self.step), "optimizer": self._kind}
        if self.is_main:
            save_file(
                variable_arrays(self.optimizer.variables), str(Path(folder) / OPTIMIZER_FILE), meta
            )
        rng_file = Path(folder) / RNG_FILE.format(rank=self.rank)
        save_file(variable_arrays(seed_states(self.model)), str(rng_file), meta)

    def load_state(self, folder: Path) -> None:
        """Restore what ``save_state`` wrote (after the weights: ``load_weights``); nothing is
        assigned unless both files fit.

        Raises:
            TrainingError: a file is missing or unreadable, or does not fit this run (another
                optimizer, other variables, another step in the two files).
        """
        paths = (Path(folder) / OPTIMIZER_FILE, Path(folder) / RNG_FILE.format(rank=self.rank))
        targets = (self.optimizer.variables, seed_states(self.model))
        (meta, opt), (rng_meta, rng) = read_state_file(paths[0]), read_state_file(paths[1])
        if meta.get("optimizer") != self._kind or meta.get("step") != rng_meta.get("step"):
            raise TrainingError(
                f"{folder}: optimizer {meta.get('optimizer')!r} at step {meta.get('step')}, "
                f"random state at step {rng_meta.get('step')}; this run uses {self._kind!r}"
            )
        values = fit_arrays(paths[0], targets[0], opt) + fit_arrays(paths[1], targets[1], rng)
        for variable, value in zip(targets[0] + targets[1], values, strict=True):
            variable.assign(value)
        self.step = int(meta["step"])

    def save_model(self, folder: Path) -> None:
        """``model.save_pretrained(folder)`` (transformers' layout) on the main process."""
        if self.is_main:
            self.model.save_pretrained(folder)

    def load_weights(self, folder: Path) -> None:
        """Load the weights of a checkpoint folder (transformers' layout) into the model."""
        found = hf.find_checkpoint(folder, formats=("safetensors",), local_files_only=True)
        load_canonical(self.model, hf.SafetensorsReader(found.files))

    def barrier(self) -> None:
        """Wait until every process gets here (a one-number all-reduce)."""
        if self.world_size > 1:
            self._barrier_fn()

    def close(self) -> None:
        """Nothing to release in TensorFlow (the strategy lives with the process)."""


def _check_options(optimizer: str, dtype: str, checkpointing: bool, fsdp: bool) -> None:
    if optimizer not in OPTIMIZERS:
        raise InvalidInputError(f"--optimizer {optimizer!r}: use one of {list(OPTIMIZERS)}")
    if dtype not in DTYPES:
        raise InvalidInputError(f"--dtype {dtype!r}: use one of {list(DTYPES)}")
    if fsdp:
        raise InvalidInputError("--fsdp is PyTorch only; with --framework tf leave it out")
    if checkpointing and not hasattr(GPT2LMHeadModel, "gradient_checkpointing_enable"):
        raise InvalidInputError(
            "--gradient-checkpointing: gpt2_dual.tf models cannot recompute their blocks yet; "
            "leave it out with --framework tf, or use --framework pt"
        )


def _load(load_model: Callable[[], Any], policy: str) -> Any:
    """``load_model()`` under the global dtype policy ``policy`` (restored after)."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = load_model()
    finally:
        keras.config.set_dtype_policy(saved)
    if model.dtype_policy.name != policy:
        raise InvalidInputError(
            f"load_model built a model with dtype policy {model.dtype_policy.name!r}; the run "
            f"needs {policy!r} (leave the model's dtype to the global policy)"
        )
    return model


def _all_reduce_one() -> tf.Tensor:
    return tf.distribute.get_replica_context().all_reduce("SUM", tf.ones(()))


def _make_optimizer(kind: str, weight_decay: float, adam: tuple, momentum: float) -> Any:
    if kind == "adamw":
        b1, b2, eps = adam
        return _AdamW(0.0, weight_decay, beta_1=b1, beta_2=b2, epsilon=eps, name="adamw")
    decay = weight_decay or None
    return _SGD(learning_rate=0.0, momentum=momentum, weight_decay=decay, name="sgd")


def _grads(model: Any, variables: list[Any]) -> Callable[[tf.Tensor, tf.Tensor], Any]:
    """``(ids (A, b, T), replicas) -> (loss, grads)``: this replica's share of the step's mean
    loss and its gradients, summed over the A micro-batches in a loop."""

    def grads_fn(ids: tf.Tensor, replicas: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        scale = 1.0 / (tf.cast(tf.shape(ids)[0], tf.float32) * replicas)

        def body(i, loss, acc):
            with tf.GradientTape() as tape:
                out = model(input_ids=ids[i], labels=ids[i], use_cache=False, training=True)
                part = out.loss * scale
            grads = tape.gradient(part, variables)
            acc = [a + tf.convert_to_tensor(g) for a, g in zip(acc, grads, strict=True)]
            return i + 1, loss + part, acc

        zeros = [tf.zeros(v.shape, v.dtype) for v in variables]
        _, loss, acc = tf.while_loop(
            lambda i, *_: i < tf.shape(ids)[0], body, (tf.constant(0), tf.constant(0.0), zeros)
        )
        return loss, acc

    return grads_fn


def _nll_sum(model: Any) -> Callable[[tf.Tensor], tf.Tensor]:
    def nll_sum(ids: tf.Tensor) -> tf.Tensor:
        logits = model(input_ids=ids, use_cache=False, training=False).logits[:, :-1]
        logits = tf.cast(logits, tf.float32)
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(ids[:, 1:], logits))

    return nll_sum
