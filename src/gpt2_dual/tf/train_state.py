"""The files of ``TrainStep.save_state`` (``gpt2_dual.tf.train_step``) and their helpers.

``optimizer.safetensors`` holds the optimizer's variables (main process) and
``rng_state_<rank>.safetensors`` each process's Dropout ``SeedGenerator`` states; both keyed by
position and carrying ``{"step", "optimizer"}`` as metadata. ``pt/train_state.py`` is the
PyTorch half.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from safetensors import safe_open

from gpt2_dual.errors import TrainingError

__all__ = [
    "OPTIMIZER_FILE", "RNG_FILE", "fit_arrays", "read_state_file", "seed_states",
    "variable_arrays",
]  # fmt: skip

#: ``save_state``'s files: the optimizer (main process), each process's random state.
OPTIMIZER_FILE, RNG_FILE = "optimizer.safetensors", "rng_state_{rank}.safetensors"


def seed_states(model: Any) -> list[Any]:
    """Every Dropout ``SeedGenerator`` state of the model, in a fixed order."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def variable_arrays(variables: list[Any]) -> dict[str, np.ndarray]:
    """Variables as arrays keyed by position (Keras' auto-numbered names differ between runs)."""
    return {f"{i:05d}": np.asarray(v.value.numpy()) for i, v in enumerate(variables)}


def read_state_file(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors) of a state file, or TrainingError naming it."""
    try:
        with safe_open(str(path), framework="np") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: cannot read the saved training state ({exc})") from None


def fit_arrays(path: Path, variables: list[Any], arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``arrays`` in variable order, cast to the variables' dtypes, if they fit them."""
    values = [arrays[k] for k in sorted(arrays)]
    shapes = [tuple(v.shape) for v in variables]
    if [a.shape for a in values] != shapes:
        raise TrainingError(
            f"{path}: {len(values)} saved arrays do not fit this run's {len(shapes)} "
            f"variables (shapes {[a.shape for a in values][:4]}... vs {shapes[:4]}...)"
        )
    return [
        a.astype(keras.backend.standardize_dtype(v.dtype))
        for a, v in zip(values, variables, strict=True)
    ]
