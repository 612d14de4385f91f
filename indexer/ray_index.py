"""Partial indexes made as Ray tasks (`index --embeddings DIR --ray`): each segment's rows go to a task
through Ray's object store, are added there to the trained index (sent once), and come back as the partial
index's bytes, in order. Nothing is read from the index's directory on a worker, so the cluster needs no
shared file system for this step; Ray runs a task whose worker dies again (its default: 3 retries)."""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Iterable, Iterator

import faiss
import numpy as np

from xlsearch.engine.ann.on_disk import Block, PartialMaker, partial_of
from xlsearch.engine.errors import BackendError

# Blocks sent ahead of the partial the driver waits for, per CPU of the cluster: enough to keep every CPU
# busy while the driver writes what came back, few enough that the driver holds only these blocks
IN_FLIGHT_PER_CPU = 2


def _add(trained: np.ndarray, first: int, vectors: np.ndarray) -> np.ndarray:
    return partial_of(faiss.deserialize_index(trained), first, vectors)


def partials_on_ray(address: str) -> PartialMaker:
    """A PartialMaker running on Ray: `address` "" starts a Ray on this machine, else joins that cluster."""
    try:
        import ray
    except ImportError:
        raise BackendError("`ray` needs Ray: pip install 'xlsearch[ray]'") from None

    def make(trained: faiss.Index, blocks: Iterable[Block]) -> Iterator[np.ndarray]:
        joined = not ray.is_initialized()  # else the caller's Ray (a library user's, a test's): left as it is
        # Ray's driver prints what its cluster reports on stdout, the command's JSON channel
        with contextlib.redirect_stdout(sys.stderr):
            if joined:
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
            try:
                add = ray.remote(num_cpus=1)(_add)
                shared = ray.put(faiss.serialize_index(trained))
                window = max(1, int(ray.cluster_resources().get("CPU", 1)) * IN_FLIGHT_PER_CPU)
                pending: deque = deque()
                for first, vectors in blocks:
                    pending.append(add.remote(shared, first, vectors))
                    if len(pending) >= window:
                        yield ray.get(pending.popleft())
                while pending:
                    yield ray.get(pending.popleft())
            finally:
                if joined:
                    ray.shutdown()

    return make
