"""The errors gpt2_dual raises for mistakes a user can fix, one family to catch.

Every class subclasses ``GPT2DualError`` and the builtin a Python user would catch for that
mistake, so ``except ValueError`` (or ``IndexError``, ``TypeError``, ``OSError``) keeps working
and ``except gpt2_dual.GPT2DualError`` catches them all. Messages name the argument or the
file, the value found and the limit. Errors are raised before any heavy work (a model is not
built, a file is not written) whenever the inputs allow.

- ``InvalidInputError`` (ValueError): a value out of its allowed set (a mask of 0/1 with a 2).
- ``InputTypeError`` (TypeError): the wrong kind of thing (float ids, a string for ids).
- ``OutOfRangeError`` (IndexError and ValueError): an index past its limit (a token id past
  ``vocab_size``, a sequence past ``n_positions``, a position id below 0).
- ``MalformedFileError`` (ValueError and OSError): a file that is not what its name says
  (invalid UTF-8 or JSON, the wrong structure, a corrupt tensor file); names the file.

More specific classes, all defined here:

- ``InputError`` (ValueError): inputs to a model call that the model cannot take (both
  frameworks; Keras passes it through unchanged).
- ``HubError`` (OSError) and its subclasses ``RepoNotFound``, ``RevisionNotFound``,
  ``FileNotFoundInRepo``, ``LocalFolderNotFound``, ``OfflineMiss``: a file or repo that could
  not be resolved.
- ``CheckpointError`` (ValueError): a state dict that does not fit the model.
- ``FormatError`` (ValueError): a path in no format gpt2_dual reads, or a format it cannot write.
- ``ConversionError`` (ValueError): a conversion whose cross-check failed (``report`` says where).
- ``QuantizedModelError`` (ValueError): a float-weight operation asked of a quantized model.
- ``RequestError`` (ValueError): a request the server (``gpt2_dual.serve``) refuses, with its
  HTTP status and OpenAI error type; ``QueueFullError`` (429) and ``EngineClosedError`` (503).
- ``TrainingError`` (RuntimeError): a training run that cannot start or go on (an output folder
  that holds another run, a loss that turned NaN, a checkpoint that cannot be resumed).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError", "ConversionError", "FileNotFoundInRepo", "FormatError", "GPT2DualError",
    "HubError", "InputError", "InputTypeError", "InvalidInputError", "LocalFolderNotFound",
    "EngineClosedError", "MalformedFileError", "OfflineMiss", "OutOfRangeError",
    "QuantizedModelError", "QueueFullError", "RepoNotFound", "RequestError", "RevisionNotFound",
    "TrainingError",
]  # fmt: skip


class GPT2DualError(Exception):
    """Base of every error gpt2_dual raises for a mistake the user can fix."""


class InvalidInputError(GPT2DualError, ValueError):
    """A value outside its allowed set; the message names the argument, value and limit."""


class InputTypeError(GPT2DualError, TypeError):
    """An argument of the wrong type or dtype; the message names it and what is accepted."""


class OutOfRangeError(GPT2DualError, IndexError, ValueError):
    """An index or size past its limit (token id, position, sequence length)."""


class MalformedFileError(GPT2DualError, ValueError, OSError):
    """A file that cannot be what its name says; the message names the file and the problem."""


class HubError(GPT2DualError, OSError):
    """Base error: a file or repo could not be resolved; the message names it and what to do."""


class RepoNotFound(HubError):
    """The Hub repo id is unknown, or the caller has no access to it (private or gated)."""


class RevisionNotFound(HubError):
    """The Hub repo exists but the branch, tag or commit asked for does not."""


class FileNotFoundInRepo(HubError, FileNotFoundError):
    """The repo (or local folder) exists, but the file does not."""


class LocalFolderNotFound(HubError, FileNotFoundError):
    """The argument looks like a local path (or is no valid repo id) and is not a folder."""


class OfflineMiss(HubError):
    """Offline (``HF_HUB_OFFLINE=1``, ``local_files_only=True``) or the Hub unreachable, and
    the file is not in the local Hub cache."""


class CheckpointError(GPT2DualError, ValueError):
    """A state dict does not fit the model: tensors missing, unexpected or of the wrong shape."""


class FormatError(GPT2DualError, ValueError):
    """A path is not in a format gpt2_dual reads, or a format cannot be written."""


class ConversionError(GPT2DualError, ValueError):
    """A conversion's cross-check failed; ``report`` says where."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class InputError(GPT2DualError, ValueError):
    """Invalid inputs to a model call; the message names the input, the value and the limit.

    Keras re-raises it unchanged: without the marker below it rewrites every exception raised
    inside ``call`` into a longer message with a dump of the call's arguments.
    """

    _keras_call_info_injected = True  # Keras' own "already explained" marker


class QuantizedModelError(GPT2DualError, ValueError):
    """An operation that reads or writes float weights was asked of a quantized model."""


#: OpenAI's error ``type`` for each HTTP status a server answers with.
ERROR_TYPES = {
    400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
    413: "RequestTooLargeError", 429: "RateLimitError", 503: "ServiceUnavailableError",
}  # fmt: skip


class RequestError(GPT2DualError, ValueError):
    """A request the server refuses: its HTTP status, OpenAI error type and offending field.

    Args:
        message: what is wrong, naming the field, the value and the limit.
        status: the HTTP status (400 unless said).
        param: the request field at fault, or None.
        type: OpenAI's error type; default from ``status`` (``ERROR_TYPES``).
        code: OpenAI's error code, or None.
    """

    default_status = 400

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        type: str | None = None,  # noqa: A002 (OpenAI's field name)
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.default_status if status is None else status
        self.param, self.code = param, code
        self.type = type or ERROR_TYPES.get(self.status, "BadRequestError")


class QueueFullError(RequestError):
    """The server's waiting queue is full (HTTP 429); retry later."""

    default_status = 429


class EngineClosedError(RequestError):
    """The engine is shutting down or stopped and admits no request (HTTP 503)."""

    default_status = 503


class TrainingError(GPT2DualError, RuntimeError):
    """A training run that cannot start or go on; the message names the folder or the step."""
