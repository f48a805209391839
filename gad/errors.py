"""The one error type the user is told about in a sentence.

Every error caused by the user's input (a config, a file, a model path, an option, a missing key,
a run folder) derives from :class:`UserError`. ``gad.cli.main`` prints such an error as one line
naming the input and exits 2; any other exception is a bug and is shown as a traceback (exit 1).
Library callers can catch ``UserError`` the same way.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message names the input (file:line: field, option, path) and what is wrong."""


class InputNotFound(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not what it should be)."""
