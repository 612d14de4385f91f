"""Errors a user can act on, in the library's own terms: what is wrong, and the parameter (`field`) and
value it is about. Parameter names inside a message are marked `like_this`, so that each interface can
name them its own way: the CLI as flags (--index-type), the HTTP API as its fields. The engine never
prints or exits."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePath

_MARKED = re.compile(r"`([a-z][a-z_]*)`")


def _shown(value: object) -> str:
    return str(value) if isinstance(value, (PurePath, int, float)) else repr(value)


class XLSearchError(Exception):
    """Base class: the message is complete and names the file, field or value at fault."""

    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value

    def render(self, name: Callable[[str], str] = lambda field: field) -> str:
        """The whole message, with each parameter called what `name` makes of it: 'field value: message'."""
        text = _MARKED.sub(lambda match: name(match.group(1)), self.message)
        if self.field is None:
            return text
        lead = name(self.field) if self.value is None else f"{name(self.field)} {_shown(self.value)}"
        return f"{lead}: {text}"

    def __str__(self) -> str:
        return self.render()


class InputError(XLSearchError):
    """Bad user input: a missing file, an unreadable corpus, an unknown option value."""

    exit_code = 2


class IndexMismatchError(InputError):
    """The index on disk does not fit what was asked of it (model, dimension, format)."""


class StorageError(XLSearchError):
    """The index could not be written (disk full, permission denied, file too large); the previous
    version is untouched."""


class BackendError(XLSearchError):
    """The embedding service failed or answered something we cannot use."""
