"""How an index directory changes: only by a complete new version swapped in whole, by one writer at a
time. A version is built in a staging directory beside the index, fsynced, then renamed into place.
Every function here works on the index's real path: a symlink to an index is followed, never replaced,
and its writers share one lock with those of the real path.

A version moved aside is removed when no reader holds it. A reader holds its version's directory open
with a shared lock on it (engine.store.reader: its lease, taken before it reads anything, for as long as
it lives), and reads the files it needs when it first needs them; a version is removed only by whoever
holds that lock exclusively, so never under a reader. A version some reader still holds stays beside
the index (`.<name>.old-<time>-*`) until a later write, or a reader letting go of it, finds it free."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xlsearch.engine.errors import StorageError, XLSearchError

# Fault injection for the crash tests: `XLSEARCH_CRASH_AT=<point>` kills the process there with SIGKILL,
# as a power cut or the OOM killer would. Points: embedding, faiss, parquet, publish.
CRASH_ENV = "XLSEARCH_CRASH_AT"


class IndexBusyError(XLSearchError):
    """Another process is writing this index."""


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retired(target: Path) -> list[Path]:
    """Earlier versions moved aside, oldest first (their names start with the time they were; a name
    without one, from before readers' leases, counts as oldest): by a publish that may not have
    finished, or kept for their readers."""
    def moved_at(version: Path) -> tuple[int, str]:
        stamp = version.parent.name.split(".old-", 1)[1].split("-", 1)[0]
        return (int(stamp) if stamp.isdigit() and len(stamp) == 20 else 0), version.parent.name

    return sorted(target.parent.glob(f".{target.name}.old-*/{target.name}"), key=moved_at)


def _remove_unread(retired: Path, target: Path, writing: bool) -> None:
    """Remove a version moved aside (`retired`: the `.old-*` directory that holds it) unless a reader holds
    it. The exclusive lock is held while its files go, so a reader opening it meanwhile waits, then finds
    it gone. Without the writer lock (`writing`) a publish may be under way: an empty `.old-*` directory
    is then its own, about to receive the current version, and the newest version aside is the index
    itself while the publish is between its renames (or died there), so both stay (unless a writer's
    recovery has just renamed it back into place: then nothing is left in the directory to keep)."""
    try:
        fd = os.open(retired / target.name, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        if writing:
            shutil.rmtree(retired, ignore_errors=True)  # a publish that died before its first rename
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if writing or target.exists() or retired / target.name not in _retired(target)[-1:]:
            shutil.rmtree(retired, ignore_errors=True)
    except BlockingIOError:
        pass  # a reader holds it: a later write, or its last reader letting go, removes it
    finally:
        os.close(fd)


def real_path(target: Path) -> Path:
    """`target` with every symlink resolved (it need not exist yet). The lock is named after this path and
    a publish renames this directory: named after the link, a writer through `alias -> real` would hold a
    lock of its own and replace the link with a directory the real index never sees."""
    return Path(os.path.realpath(target))


def published(target: Path) -> Path:
    """Where the current version of `target` is: its real path, or, while a publish is between its two
    renames (or died there), the version it moved aside (still complete and valid)."""
    target = real_path(target)
    if not target.exists():
        survivors = _retired(target)
        if survivors:
            return survivors[-1]
    return target


def _recover(target: Path) -> None:
    """Under the writer lock: put back the version a dead publish left aside; drop dead staging dirs and
    the versions moved aside that no reader holds any more."""
    if not target.exists() and _retired(target):
        os.rename(_retired(target)[-1], target)
    for stale in target.parent.glob(f".{target.name}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)
    _remove_old_versions(target)


def _remove_old_versions(target: Path, writing: bool = True) -> None:
    """The versions moved aside that no reader holds; `writing`: under the writer lock (or in its publish)."""
    for old in target.parent.glob(f".{target.name}.old-*"):
        _remove_unread(old, target, writing)


def release_old_versions(target: Path) -> None:
    """What a process does when it lets go of a version (a reader switched to a newer one): the versions
    moved aside that no reader holds any more removed now rather than at the next write, unless the
    directory is read-only. Without the writer lock: a reader taking it, however briefly, turned away
    a writer that came at that moment (17 of 100 publishes beside three readers switching)."""
    target = real_path(target)
    if os.access(target.parent, os.W_OK):
        _remove_old_versions(target, writing=False)


@contextmanager
def writer_lock(target: Path) -> Iterator[None]:
    """Hold the index's writer lock (`.<name>.lock` beside its real path), or fail at once naming the holder."""
    target = real_path(target)
    path = target.parent / f".{target.name}.lock"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot write index {target}: {exc.strerror} ({exc.filename})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise IndexBusyError(f"is being written by another process ({holder})", field="index", value=target) from None
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started}))
        handle.flush()
        try:
            _recover(target)
            yield
            _remove_old_versions(target)  # the writer's own readers of the old version gone by now
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def new_staging(target: Path) -> Path:
    target = real_path(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))


@contextmanager
def staged_version(target: Path) -> Iterator[Path]:
    """A staging directory for the next version of `target`, published when the block ends. When the block
    fails the staging directory is removed and the previous version stays; an OSError becomes one line."""
    try:
        staging = new_staging(target)
    except OSError as exc:
        raise StorageError(f"cannot write index {target}: {exc.strerror} ({exc.filename})") from None
    try:
        yield staging
        publish(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"cannot write index {target}: {exc.strerror or exc} ({exc.filename or staging}); "
                           "the previous version is unchanged") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, target: Path) -> None:
    """Swap a complete staging directory in for `target`. A crash before the first rename leaves the old
    version in place; between the renames, `published` still finds it; after, the new one is there."""
    for name in os.listdir(staging):
        with open(staging / name, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(staging)
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{time.time_ns():020d}-", dir=target.parent))
        os.rename(target, retired / target.name)
    crash_point("publish")
    os.rename(staging, target)
    fsync_dir(target.parent)
    _remove_old_versions(target)
