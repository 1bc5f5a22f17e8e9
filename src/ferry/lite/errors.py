"""Errors of the lite runtime. It is copied onto devices alone, so it keeps its own small tree:

LiteError               base; ferry's `lite` backend turns these into ferry errors
├── UnsupportedOpError  the model uses ops (or versions of them) that have no kernel here
├── FormatError         the file is not a lite model, or it is truncated or damaged
└── LiteInputError      feeds do not match the model's inputs (name, dtype, rank)
"""

from __future__ import annotations


class LiteError(Exception):
    """Base of every error the lite runtime raises on purpose."""


class UnsupportedOpError(LiteError):
    """Raised at load time, listing every node whose op has no kernel."""


class FormatError(LiteError):
    """The compact file is malformed: bad magic, version, header or sizes."""


class LiteInputError(LiteError):
    """A feed is missing, unknown, or of the wrong dtype or rank."""
