"""One optimizer step of a GPT-2 language model, on one process or many (DDP, FSDP2).

``TrainStep`` is the PyTorch half of ``gpt2-dual train`` (``gpt2_dual.tf.train_step`` is the
Keras half, with the same names). The driver (``gpt2_dual.train``) hands it each step's
micro-batches of token ids and a callable giving each step's learning rate.

Semantics, chosen to match transformers' ``Trainer`` (and, for SGD, Keras):
- the loss of a step is the mean over its micro-batches of the model's mean next-token loss,
  averaged over processes; the optimizer sees its gradient (DDP/FSDP2 average the processes');
- weight decay applies to every parameter but biases and LayerNorm parameters (transformers'
  ``get_decay_parameter_names``);
- ``adamw`` is ``torch.optim.AdamW``, fused (20x faster than its default loop on CPU for GPT-2
  small); ``sgd`` is ``torch.optim.SGD`` with *decoupled* weight decay, as in Keras:
  ``p -= lr * weight_decay * p`` before the update (``torch.optim.SGD``'s own adds
  ``weight_decay * p`` to the gradient). Momentum is torch's: ``buf = m * buf + g; p -= lr * buf``;
- gradients are clipped by their global L2 norm; the norm before clipping is returned;
- ``dtype="bfloat16"`` is mixed precision: float32 weights and optimizer state, the forward
  pass under ``torch.autocast`` in bfloat16.

Distribution comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, nccl on CUDA. A process group that already
exists is used as it is (and left alone by ``close``). ``pt/distributed.py`` reads the
environment and sets up the group; ``pt/train_state.py`` holds ``save_state``'s files.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gpt2_dual.errors import InvalidInputError, TrainingError
from gpt2_dual.pt.distributed import init_distributed, process_rank
from gpt2_dual.pt.train_state import (
    OPTIMIZER_FILE,
    RNG_FILE,
    SCHEDULER_FILE,
    read_state_file,
    rekey,
    state_dict_api,
)

__all__ = ["OPTIMIZERS", "StepResult", "TrainStep", "decay_parameter_names", "process_rank"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass
class StepResult:
    """What one optimizer step reports."""

    loss: float  # mean loss over the whole global batch (all processes, all micro-batches)
    grad_norm: float  # global L2 norm of the gradient before clipping
    learning_rate: float  # learning rate used by this step


def decay_parameter_names(model: nn.Module) -> set[str]:
    """transformers' rule: every parameter but those of LayerNorm modules and biases."""
    norms = {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if isinstance(module, nn.LayerNorm)
        for name, _ in module.named_parameters(recurse=False)
    }
    return {n for n, _ in model.named_parameters() if n not in norms and "bias" not in n.lower()}


class TrainStep:
    """The optimizer step of a ``gpt2_dual.pt.GPT2LMHeadModel`` (see the module docstring).

    Args:
        load_model: builds the model (on CPU); called after the process group and the seed.
        optimizer: ``"adamw"`` or ``"sgd"``.
        lr_at: the learning rate of optimizer step ``step`` (0-based).
        weight_decay: decoupled weight decay (not on biases and LayerNorm parameters).
        adam_beta1, adam_beta2, adam_epsilon: AdamW's.
        momentum: SGD's (torch's convention).
        max_grad_norm: clip the global gradient norm to this; None or 0: no clipping.
        dtype: ``"float32"`` or ``"bfloat16"`` (mixed: float32 weights, bfloat16 autocast).
        gradient_checkpointing: recompute each block in the backward pass.
        seed: ``torch.manual_seed`` before ``load_model`` (the same on every process).
        fsdp: shard with FSDP2 (``fully_shard`` per block, then the root); ignored on one
            process.

    Raises:
        InvalidInputError: an unknown ``optimizer`` or ``dtype``.
    """

    def __init__(
        self,
        load_model: Callable[[], nn.Module],
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
        if optimizer not in OPTIMIZERS:
            raise InvalidInputError(f"--optimizer {optimizer!r} is not one of {OPTIMIZERS}")
        if dtype not in _DTYPES:
            raise InvalidInputError(f"--dtype {dtype!r} is not one of {tuple(_DTYPES)}")
        self.rank, self.world_size, local_rank, self._owns_group = init_distributed()
        self.is_main = self.rank == 0
        self.step = 0
        self.lr_at = lr_at
        self.max_grad_norm = max_grad_norm or None
        self.fsdp = fsdp and self.world_size > 1
        self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        self._autocast_dtype = _DTYPES[dtype]
        torch.manual_seed(seed)
        model = load_model().to(device=self.device, dtype=torch.float32)  # float32 master weights
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self._model_class = type(model)  # FSDP2 swaps in a subclass of its own
        self.model, self._wrapped = model, self._wrap(model)
        self.model.train()
        decay = decay_parameter_names(self.model)  # after fully_shard: its DTensors
        named = sorted(self.model.named_parameters(), key=lambda item: item[0] not in decay)
        self._param_names, self._params = [n for n, _ in named], [p for _, p in named]
        split = len(decay)  # decayed parameters first, as transformers' groups
        groups = [{"params": self._params[:split]}, {"params": self._params[split:]}]
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        self._sgd_decay = None
        if optimizer == "adamw":
            groups[0]["weight_decay"], groups[1]["weight_decay"] = weight_decay, 0.0
            self.optimizer = torch.optim.AdamW(
                groups, lr=lr_at(0), betas=(adam_beta1, adam_beta2), eps=adam_epsilon, **fused
            )
        else:
            self.optimizer = torch.optim.SGD(groups, lr=lr_at(0), momentum=momentum, **fused)
            if weight_decay and split:
                self._sgd_decay = (self._params[:split], weight_decay)
        self._closed = False

    # ----------------------------------------------------------------- setup
    def _wrap(self, model: nn.Module) -> nn.Module:
        """DDP, FSDP2 (in place: ``model`` itself is sharded) or nothing."""
        if self.world_size == 1:
            return model
        if not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    # ----------------------------------------------------------------- the step
    def __call__(self, micro_batches: Sequence[np.ndarray]) -> StepResult:
        """One optimizer step over this process's micro-batches.

        Args:
            micro_batches: the gradient-accumulation micro-batches, each ``(B, T)`` token ids
                (the same B and T in each, and on every process).

        Returns:
            The step's ``StepResult`` (loss and gradient norm of the global batch).

        Raises:
            InvalidInputError: no micro-batch, or micro-batches that are not ``(B, T)`` arrays
                of one shape.
        """
        batches = self._tensors(micro_batches)
        lr = float(self.lr_at(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for i, ids in enumerate(batches):
            with self._gradient_sync(i == len(batches) - 1):
                with self._autocast():
                    loss = self._wrapped(ids, labels=ids, use_cache=False).loss
                (loss / len(batches)).backward()
            total += loss.detach()
        total /= len(batches)
        work = dist.all_reduce(total, async_op=True) if self.world_size > 1 else None
        norm = self._clip()
        if self._sgd_decay is not None:
            params, weight_decay = self._sgd_decay
            with torch.no_grad():
                torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if work is not None:
            work.wait()
            total /= self.world_size
        loss_value, norm_value = torch.stack([total, norm.to(total)]).tolist()  # the one sync
        return StepResult(loss=loss_value, grad_norm=norm_value, learning_rate=lr)

    def _tensors(self, micro_batches: Sequence[np.ndarray]) -> list[torch.Tensor]:
        shapes = {np.shape(ids) for ids in micro_batches}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise InvalidInputError(
                f"micro_batches must be one or more (B, T) arrays of one shape, got shapes "
                f"{[np.shape(ids) for ids in micro_batches]}"
            )
        return [
            torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(self.device, non_blocking=True)
            for ids in micro_batches
        ]

    @contextlib.contextmanager
    def _gradient_sync(self, sync: bool) -> Iterator[None]:
        """Let the processes average the gradients only on the last micro-batch."""
        if self.world_size == 1:
            yield
        elif self.fsdp:
            self.model.set_requires_gradient_sync(sync)
            yield
        else:
            with contextlib.nullcontext() if sync else self._wrapped.no_sync():
                yield

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _clip(self) -> torch.Tensor:
        """Global gradient norm before clipping (clipped in place when asked); no host sync."""
        grads = [p.grad for p in self._params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self._params, self.max_grad_norm, norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: DTensor

    # ----------------------------------------------------------------- evaluation
    def loss_only(self, ids: np.ndarray) -> tuple[float, int]:
        """Summed next-token NLL of ``ids`` ``(B, T)`` in eval mode (no dropout, no gradient),
        on this process only; with FSDP2 every process must call it (the weights are gathered).

        Returns:
            ``(sum of the B * (T - 1) token losses, B * (T - 1))``.
        """
        (ids_t,) = self._tensors([ids])
        self.model.eval()
        try:
            # FSDP2 gathers weights into tensors it reuses in training: no inference tensors.
            with torch.no_grad() if self.fsdp else torch.inference_mode(), self._autocast():
                logits = self.model(ids_t, use_cache=False).logits  # (B, T, V)
                nll = nn.functional.cross_entropy(
                    logits[:, :-1].float().flatten(0, 1), ids_t[:, 1:].flatten(), reduction="sum"
                )
        finally:
            self.model.train()
        return float(nll), int(ids_t[:, 1:].numel())

    # ----------------------------------------------------------------- state
    def save_state(self, folder: Path) -> None:
        """Write what continues the run bit for bit, but the weights (``save_model``):
        ``optimizer.pt`` and ``scheduler.pt`` (main process) and ``rng_state_<rank>.pth``
        (each process). With FSDP2 a collective: every process calls it."""
        folder = Path(folder)
        optimizer = self._optimizer_state()
        if self.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(optimizer, folder / OPTIMIZER_FILE)
            lrs = [group["lr"] for group in self.optimizer.param_groups]
            scheduler = {"last_epoch": self.step, "_step_count": self.step + 1, "_last_lr": lrs,
                         "lr_lambdas": [None] * len(lrs)}  # fmt: skip
            torch.save(scheduler, folder / SCHEDULER_FILE)
        self.barrier()  # the folder exists
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, folder / RNG_FILE.format(rank=self.rank))

    def load_state(self, folder: Path) -> None:
        """Inverse of ``save_state`` (call it after ``load_weights``).

        Raises:
            TrainingError: a file is missing or does not fit this model and optimizer.
        """
        folder = Path(folder)
        optimizer = read_state_file(folder / OPTIMIZER_FILE)
        scheduler = read_state_file(folder / SCHEDULER_FILE)
        try:
            self._load_optimizer_state(optimizer)
            self.step = int(scheduler["last_epoch"])
        except (KeyError, ValueError, TypeError, IndexError) as error:
            raise TrainingError(f"cannot resume from {folder}: {error}") from error
        rng_path = folder / RNG_FILE.format(rank=self.rank)
        if not rng_path.is_file():  # more processes than the run that saved it
            logger.warning("%s is missing: dropout will not repeat the saved run", rng_path)
            return
        rng = read_state_file(rng_path)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _optimizer_state(self) -> dict | None:
        """``optimizer.state_dict()`` layout (parameters by index) on the main process; under
        FSDP2 the full state is gathered (a collective) and re-keyed from names to indices."""
        if not self.fsdp:
            return self.optimizer.state_dict()
        api = state_dict_api()
        options = api.StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = api.get_optimizer_state_dict(self.model, self.optimizer, options=options)
        if not self.is_main:
            return None
        index = {name: i for i, name in enumerate(self._param_names)}
        return rekey(full, index.__getitem__)

    def _load_optimizer_state(self, state: dict) -> None:
        if not self.fsdp:
            self.optimizer.load_state_dict(state)
            return
        api = state_dict_api()
        full = rekey(state, self._param_names.__getitem__)
        options = api.StateDictOptions(full_state_dict=True)
        api.set_optimizer_state_dict(self.model, self.optimizer, full, options=options)

    # ----------------------------------------------------------------- weights
    def save_model(self, folder: Path) -> None:
        """``save_pretrained(folder)`` on the main process (transformers' layout). With FSDP2
        the full weights are gathered first: every process calls it."""
        if not self.fsdp:
            if self.is_main:
                self.model.save_pretrained(folder)
            return
        api = state_dict_api()
        options = api.StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = api.get_model_state_dict(self.model, options=options)
        if self.is_main:
            with torch.device("meta"):  # no initialization: every tensor is assigned
                plain = self._model_class(
                    self.model.config.copy(), attn_implementation=self.model.attn_implementation
                )
            plain.load_state_dict(state, assign=True)
            plain.tie_weights()
            plain.save_pretrained(folder)

    def load_weights(self, folder: Path) -> None:
        """Copy the weights of a ``save_model`` folder into the live model (every process)."""
        state = self._model_class.from_pretrained(folder, dtype=torch.float32).state_dict()
        if not self.fsdp:
            self.model.load_state_dict(state)
            return
        api = state_dict_api()
        api.set_model_state_dict(
            self.model, state, options=api.StateDictOptions(full_state_dict=True)
        )

    # ----------------------------------------------------------------- processes
    def barrier(self) -> None:
        """Wait for every process (nothing on one process)."""
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Release the wrapped model and optimizer, then destroy the process group this
        ``TrainStep`` created (gloo aborts the process when a group dies during interpreter
        shutdown). With FSDP2 ``model`` is released too (its weights are shards). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._owns_group:
            return
        self._wrapped = self.optimizer = self._params = self._sgd_decay = None
        if self.fsdp:
            self.model = None
        gc.collect()  # DDP's reducer sits in reference cycles
        dist.barrier()
        dist.destroy_process_group()
