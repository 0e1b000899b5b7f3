"""peft (LoRA and its other tuners) on gpt2_dual.pt models, with nothing to call.

peft handles GPT-2's ``c_attn``, ``c_proj`` and ``c_fc`` by recognising transformers'
``Conv1D`` (``isinstance(module, transformers.pytorch_utils.Conv1D)``), weight ``(in, out)``,
which it adapts as a linear layer with ``fan_in_fan_out=True``. gpt2_dual's ``Conv1D`` has that
very layout but, importing no transformers, is not that class. ``register()`` makes it a
subclass of transformers' ``Conv1D``, for every model already built and to come, so that
``peft.get_peft_model``, ``PeftModel.from_pretrained``, ``merge_and_unload`` and peft's
``"all-linear"`` target see gpt2_dual models exactly as they see transformers' GPT-2 (same
module names, so an adapter saved from one loads into the other). gpt2_dual's own product
(``Conv1D.forward``) is kept.

``import gpt2_dual.pt`` arranges ``register()`` by itself (``register_on_import``): at once if
``transformers.pytorch_utils`` (the module defining that ``Conv1D``) is already imported, else
the moment it is imported; peft imports it as it is imported, so by the time
``get_peft_model`` looks at a model, the class is registered, whichever of peft and gpt2_dual
came first. Neither peft nor transformers is imported for it. Calling ``register()`` yourself
still works (it does nothing the second time).

This route was chosen over peft's per-config ``LoraConfig._register_custom_module``: that is
experimental API, covers LoRA only, and a config read back by ``PeftModel.from_pretrained``
does not carry it, so every reload would need it again.

Example:
    >>> from peft import LoraConfig, get_peft_model  # doctest: +SKIP
    >>> from gpt2_dual.pt import GPT2LMHeadModel  # doctest: +SKIP
    >>> config = LoraConfig(target_modules=["c_attn"], fan_in_fan_out=True)  # doctest: +SKIP
    >>> model = get_peft_model(GPT2LMHeadModel.from_pretrained("gpt2"), config)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
from typing import Any

from gpt2_dual.pt.linear import Conv1D

logger = logging.getLogger(__name__)

__all__ = ["is_registered", "register", "register_on_import"]

#: The module that defines transformers' ``Conv1D``.
TRANSFORMERS_CONV1D_MODULE = "transformers.pytorch_utils"


def register() -> None:
    """Make gpt2_dual's ``Conv1D`` a subclass of ``transformers.pytorch_utils.Conv1D`` (once;
    later calls do nothing), so that peft adapts it as it adapts transformers' GPT-2.

    Raises:
        ImportError: transformers is not installed (peft depends on it).
    """
    from transformers.pytorch_utils import Conv1D as TransformersConv1D

    if issubclass(Conv1D, TransformersConv1D):
        return
    Conv1D.__bases__ = (TransformersConv1D,)
    logger.info("gpt2_dual.pt Conv1D is now a subclass of transformers' Conv1D (peft support)")


def is_registered() -> bool:
    """Whether ``register()`` has run in this process (without importing transformers)."""
    return any(
        base.__module__ == TRANSFORMERS_CONV1D_MODULE and base.__name__ == "Conv1D"
        for base in Conv1D.__mro__[1:]
    )


def register_on_import() -> None:
    """``register()`` now if transformers' ``Conv1D`` module is imported, else right after it
    is (an import hook on that one module; it leaves once it has run)."""
    if TRANSFORMERS_CONV1D_MODULE in sys.modules:
        _register_quietly()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


def _register_quietly() -> None:
    """``register()``; a failure is logged, never raised into someone else's import."""
    try:
        register()
    except Exception as error:  # noqa: BLE001 - transformers' own import must not fail here
        logger.warning("gpt2_dual.pt could not register its Conv1D for peft: %r", error)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds ``transformers.pytorch_utils`` through the other finders and wraps its loader so
    that ``register()`` runs once the module has executed; every other name is left to them."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != TRANSFORMERS_CONV1D_MODULE:
            return None
        for finder in [f for f in sys.meta_path if f is not self]:
            find = getattr(finder, "find_spec", None)
            spec = None if find is None else find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _LoaderThenRegister(spec.loader, self)
        return spec


class _LoaderThenRegister(importlib.abc.Loader):
    """A module's own loader, then ``register()``; the rest of the loader's API passes
    through."""

    def __init__(self, loader: Any, finder: _RegisterAfterImport) -> None:
        self._loader, self._finder = loader, finder

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        _register_quietly()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
