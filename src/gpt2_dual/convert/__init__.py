"""Checkpoint formats, the weight-name table, and conversions that cross-check themselves.

``convert(src, dst, to=...)`` converts between formats (``formats.FORMATS``), ``check(source)``
runs one checkpoint in both frameworks and compares, ``open_source`` reads any known format or
a Hub repo id. Imports no framework: each is imported by the step that needs it.
"""

from gpt2_dual.convert.conversion import ConversionError, check, convert, open_source
from gpt2_dual.convert.crosscheck import TOLERANCES, Report
from gpt2_dual.convert.formats import FORMATS, FormatError, Source

__all__ = [
    "FORMATS", "TOLERANCES", "ConversionError", "FormatError", "Report", "Source", "check",
    "convert", "open_source",
]  # fmt: skip
