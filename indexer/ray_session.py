"""Ray for the length of a `with` block, for the jobs that run on it (`embed --ray`'s, `index --embeddings
--ray`'s)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType

from xlsearch.engine.errors import BackendError


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[ModuleType]:
    """The `ray` module, joined for the block to the cluster at `address` ("" starts a Ray on this
    machine), unless this process runs a Ray already (a library user's, a test's): that one is used and
    left as it is. Ray's driver prints what its cluster reports (a worker died and its task is run again)
    on stdout, the command's JSON channel, from a thread of its own: stdout goes to stderr for the block,
    and the thread is stopped (ray.shutdown leaves the cluster, and stops a Ray this block started) before
    stdout is the command's again. BackendError where Ray is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401  (embed's engine: an install without it is refused here, as Ray's absence is)
    except ImportError:
        raise BackendError("`ray` needs Ray: pip install 'xlsearch[ray]'") from None
    joined = not ray.is_initialized()
    with contextlib.redirect_stdout(sys.stderr):
        if joined:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            yield ray
        finally:
            if joined:
                ray.shutdown()
