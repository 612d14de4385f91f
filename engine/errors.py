"""Errors a user can act on. The CLI prints each as one line; the engine never prints or exits."""


class XLSearchError(Exception):
    """Base class: the message is complete and names the file, field or value at fault."""

    exit_code = 1


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
