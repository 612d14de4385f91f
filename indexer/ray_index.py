"""The out-of-core build's segment steps as Ray tasks (`index --embeddings DIR --ray`), each segment's
result handed back in order, a few segments in flight per CPU of the cluster:

- partial indexes: a segment's rows go to a task through Ray's object store, are added there to the
  trained index (sent once), and come back as the partial index's bytes: no shared file system needed;
- neighbourhoods: a task opens the staged index and segments by path and searches one segment's rows
  against the whole index: the version's staging directory must be one path on every node (a shared
  file system), as `embed --ray`'s output directory must.

Ray runs a task whose worker dies again (its default: 3 retries); results are the same as in one process."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType

import faiss
import numpy as np

from xlsearch.engine.ann.on_disk import Block, partial_of
from xlsearch.engine.store.out_of_core import NeighbourJob, segment_neighbours
from xlsearch.indexer.ray_session import ray_session

# Segments sent ahead of the result the driver waits for, per CPU of the cluster: enough to keep every
# CPU busy while the driver takes what came back, few enough that the driver holds only these segments
IN_FLIGHT_PER_CPU = 2


def _partial(trained: np.ndarray, first: int, vectors: np.ndarray) -> np.ndarray:
    return partial_of(faiss.deserialize_index(trained), first, vectors)


def _neighbours(job: NeighbourJob, number: int) -> tuple[np.ndarray, np.ndarray]:
    index, rows = job.opened()
    return segment_neighbours(job, index, rows, number)


@contextmanager
def on_ray(address: str) -> Iterator[OnRay]:
    """A SegmentRunner on Ray for the block (indexer.ray_session: `address` "" starts a Ray on this
    machine, else joins that cluster)."""
    with ray_session(address) as ray:
        yield OnRay(ray)


class OnRay:
    """A SegmentRunner whose steps are tasks of the Ray `ray` has joined."""

    def __init__(self, ray: ModuleType) -> None:
        self.ray = ray

    def partials(self, trained: faiss.Index, blocks: Iterable[Block]) -> Iterator[np.ndarray]:
        shared = self.ray.put(faiss.serialize_index(trained))
        task = self.ray.remote(num_cpus=1)(_partial)
        return self._in_order(lambda block: task.remote(shared, *block), blocks)

    def neighbourhoods(self, job: NeighbourJob) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        shared = self.ray.put(job)
        task = self.ray.remote(num_cpus=1)(_neighbours)
        return self._in_order(lambda number: task.remote(shared, number), range(len(job.segments)))

    def _in_order(self, submit: Callable, items: Iterable) -> Iterator:
        window = max(1, int(self.ray.cluster_resources().get("CPU", 1)) * IN_FLIGHT_PER_CPU)
        pending: deque = deque()
        for item in items:
            pending.append(submit(item))
            if len(pending) >= window:
                yield self.ray.get(pending.popleft())
        while pending:
            yield self.ray.get(pending.popleft())
