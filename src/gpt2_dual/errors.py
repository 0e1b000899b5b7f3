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

Older, more specific classes are part of the family: ``convert.loading.CheckpointError``,
``convert.formats.FormatError``, ``hub.HubError`` (and its subclasses), ``tf.inputs.InputError``.
"""

from __future__ import annotations

__all__ = [
    "GPT2DualError",
    "InputTypeError",
    "InvalidInputError",
    "MalformedFileError",
    "OutOfRangeError",
]


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
