"""Micro-batching for `xlsearch serve`: the queries of concurrent requests embedded together."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Job:
    queries: list[str]
    future: Future = field(default_factory=Future)


class QueryBatcher:
    """One thread owns the embedder (the model, its cache connection): requests hand it their queries
    and wait for their rows. Whatever waits when it becomes free goes into its next call together, up to
    `max_texts` (a lone query is never held back for company), so 16 clients cost a few model calls
    rather than 16 in turn. A request that gives up (its deadline) before its call starts is dropped
    unembedded. Searching is not done here: it runs in the requests' own threads, in parallel."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], max_texts: int) -> None:
        self._embed = embed
        self._max_texts = max_texts
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._held: list[_Job | None] = []  # what did not fit into the last call (a job, or close's None): next
        # a daemon: a model call still running when the server exits must not keep the process alive
        self._thread = threading.Thread(target=self._run, name="xlsearch-query-batcher", daemon=True)
        self._thread.start()

    def submit(self, queries: list[str]) -> Future:
        """A future of the queries' raw vectors, one row each, in order; cancel it to give up."""
        job = _Job(list(queries))
        self._jobs.put(job)
        return job.future

    def close(self) -> None:
        """Stop after the jobs already submitted."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            first = self._held.pop() if self._held else self._jobs.get()
            if first is None:
                return
            batch = [first] if first.future.set_running_or_notify_cancel() else []
            size = len(first.queries)
            while size < self._max_texts:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None or size + len(job.queries) > self._max_texts:
                    self._held.append(job)
                    break
                if job.future.set_running_or_notify_cancel():
                    batch.append(job)
                    size += len(job.queries)
            if batch:
                self._answer(batch)

    def _answer(self, batch: list[_Job]) -> None:
        try:
            rows = self._embed([query for job in batch for query in job.queries])
        except Exception as exc:  # whatever the embedder raises belongs to a request, never to this thread
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
            else:  # one request's refused query must not fail the others: each alone, to tell whose it is
                for job in batch:
                    self._answer([job])
            return
        start = 0
        for job in batch:
            job.future.set_result(rows[start:start + len(job.queries)])
            start += len(job.queries)
