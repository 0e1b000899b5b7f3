"""Progress of long steps: a tqdm bar on a terminal, nothing when stderr is piped."""

from __future__ import annotations

import sys
from typing import Any


class Steps:
    """Call with a step's description as it starts; ``close()`` at the end.

    Args:
        name: the bar's label.
        total: the number of steps expected (the bar tolerates more or fewer).
    """

    def __init__(self, name: str, total: int) -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=name, unit="step", leave=False, file=sys.stderr)
        self._started = False

    def __call__(self, what: str) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(what, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.close()
            self._bar = None


def quiet_tensorflow_import(verbose: bool) -> None:
    """Import TensorFlow now with its C++ start-up and device-probing messages (CUDA, oneDNN)
    kept off stderr, which ``TF_CPP_MIN_LOG_LEVEL`` no longer silences; ``verbose`` keeps them.
    Does nothing when TensorFlow is missing or already imported."""
    import importlib.util
    import os

    if verbose or "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing logs happen here
    finally:
        os.dup2(saved, 2)
        os.close(saved)


#: Formats whose readers run TensorFlow (the others read with h5py or safetensors alone).
TF_READ_FORMATS = ("keras", "openai")


def source_needs_tensorflow(src: str) -> bool:
    """Whether reading ``src`` will import TensorFlow (a Keras file or OpenAI's release)."""
    from gpt2_dual.convert import formats

    try:
        return formats.detect(src) in TF_READ_FORMATS
    except (OSError, ValueError):
        return False  # not a local checkpoint: the reader will say what is wrong
