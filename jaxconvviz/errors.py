"""The library's own errors: bad input that a caller can fix.

Every check of user input raises one of these. They subclass the builtin
the caller would expect (``ValueError``, ``TypeError``, ``FileNotFoundError``),
so ``except ValueError`` keeps working, and they share :class:`JaxConvVizError`
so the command line can tell an expected user error (one line, exit 2) from a
bug (a traceback): a plain ``ValueError`` raised deep inside NumPy or JAX is
not the user's fault and is never hidden behind a tidy message.
"""

from __future__ import annotations

__all__ = [
    "JaxConvVizError",
    "InputError",
    "InputTypeError",
    "MissingFileError",
    "InputWarning",
]


class JaxConvVizError(Exception):
    """Base of the errors jaxconvviz raises on purpose about its input."""


class InputError(JaxConvVizError, ValueError):
    """An argument has a bad value; the message names the argument, the value
    and what is accepted."""


class InputTypeError(JaxConvVizError, TypeError):
    """An argument has the wrong type; the message names both types."""


class MissingFileError(JaxConvVizError, FileNotFoundError):
    """A file the caller named (or that a step needs, such as downloaded
    weights) is not there; the message says how to get it."""


class InputWarning(UserWarning):
    """Input that works but is probably not what the caller meant (a tiny
    image upsampled, pixels that look scaled to [0, 1]); the message says
    what was expected."""
