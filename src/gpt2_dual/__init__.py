"""gpt2_dual: GPT-2 for PyTorch and TensorFlow/Keras 3 from one neutral core.

The top-level package imports neither torch nor TensorFlow: ``gpt2_dual.pt`` and
``gpt2_dual.tf`` hold the framework models and are imported on demand.

Example:
    >>> from gpt2_dual import GPT2Config, GPT2TokenizerFast
    >>> tokenizer = GPT2TokenizerFast.from_pretrained("gpt2")  # bundled vocabulary offline
    >>> tokenizer("Hello world")["input_ids"]
    [15496, 995]
"""

from gpt2_dual.config import PRESETS, GPT2Config
from gpt2_dual.errors import (
    GPT2DualError,
    InputTypeError,
    InvalidInputError,
    MalformedFileError,
    OutOfRangeError,
)
from gpt2_dual.generation.config import GenerationConfig
from gpt2_dual.generation.streamers import TextIteratorStreamer, TextStreamer
from gpt2_dual.outputs import GenerateOutput
from gpt2_dual.quantization import BitsAndBytesConfig
from gpt2_dual.tokenizer.base import GPT2TokenizerBase
from gpt2_dual.tokenizer.encoding import BatchEncoding
from gpt2_dual.tokenizer.fast import GPT2TokenizerFast
from gpt2_dual.tokenizer.slow import GPT2Tokenizer

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``pipeline`` loads on first use (it imports a framework only when a pipeline is built).
    if name == "pipeline":
        from gpt2_dual.pipelines.factory import pipeline

        return pipeline
    raise AttributeError(f"module 'gpt2_dual' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "BatchEncoding",
    "BitsAndBytesConfig",
    "GPT2Config",
    "GPT2DualError",
    "GenerateOutput",
    "GenerationConfig",
    "GPT2Tokenizer",
    "GPT2TokenizerBase",
    "GPT2TokenizerFast",
    "InputTypeError",
    "InvalidInputError",
    "MalformedFileError",
    "OutOfRangeError",
    "TextIteratorStreamer",
    "TextStreamer",
    "__version__",
    "pipeline",
]
