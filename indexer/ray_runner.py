"""An embedding job on Ray Data: a read task per input file (its parts, less those already published), an
actor pool that embeds a part at a time, and a write task per shard. The stages are embed_parts' own
functions; Ray adds placement, parallelism and retries, by its defaults: a read or write task whose
worker dies is run again (up to 3 times), a dead embedding actor is restarted and its part given again
(a shard's writer links it into place only when whole, so a retry never duplicates rows)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from xlsearch.engine.errors import XLSearchError
from xlsearch.indexer.embed_parts import embed_part, read_parts, write_part
from xlsearch.indexer.embed_job import JobPlan
from xlsearch.indexer.ray_session import ray_session
from xlsearch.indexer.shard_files import ShardRecord

# Read and write tasks ask for no CPU: they are light beside the model, and on a 2-core machine two
# embedding actors hold both CPUs, which would leave them none and the pipeline stalled.
_LIGHT = 0
# A part goes from stage to stage as one row: its pickle (chunks with their documents) or its shard
_PAYLOAD = "payload"


@dataclass(frozen=True)
class _Failed:
    """An engine error a stage met (a corpus it cannot read, inputs refused past the limit, a full disk),
    carried to the driver as a row and raised there as it was raised: an exception raised in a worker
    reaches the driver wrapped by Ray Data, its type and message lost."""

    kind: type
    message: str
    field: str | None
    value: object

    @classmethod
    def of(cls, exc: XLSearchError) -> dict:
        return {_PAYLOAD: pickle.dumps(cls(type(exc), exc.message, exc.field, exc.value))}

    def error(self) -> XLSearchError:
        return self.kind(self.message, field=self.field, value=self.value)


def _read(item: dict, plan: JobPlan, done: frozenset[str]) -> Iterator[dict]:
    try:
        for part in read_parts(item["number"], item["corpus"], plan.fields, plan.policy, plan.shard_documents, done):
            yield {_PAYLOAD: pickle.dumps(part)}
    except XLSearchError as exc:
        yield _Failed.of(exc)


class _Embed:
    """One embedding actor: its own embedder (model, server connections, cache connection)."""

    def __init__(self, plan: JobPlan, threads: int | None) -> None:
        if threads:  # the local model's threads: the CPUs this actor was given
            os.environ["OMP_NUM_THREADS"] = str(threads)
        self.plan = plan
        self.embedder = plan.spec.create()

    def __call__(self, row: dict) -> dict:
        part = pickle.loads(row[_PAYLOAD])
        if isinstance(part, _Failed):
            return row
        try:
            return {_PAYLOAD: pickle.dumps(embed_part(self.embedder, part, self.plan.window, self.plan.limit, self.plan.strict))}
        except XLSearchError as exc:
            return _Failed.of(exc)


def _write(row: dict, directory: str) -> dict:
    embedded = pickle.loads(row[_PAYLOAD])
    if isinstance(embedded, _Failed):
        return row
    try:
        return {_PAYLOAD: pickle.dumps((write_part(Path(directory), embedded), embedded.failed_servers))}
    except XLSearchError as exc:
        return _Failed.of(exc)


def _pool(plan: JobPlan, actors: int | None, cpus: float) -> tuple[int, float, int | None]:
    """(actors, CPUs each, model threads each): the local model runs on CPU, an actor per CPU of one
    thread; the openai backend waits on servers, an actor per server each holding `concurrency`
    requests in flight, on a fraction of a CPU."""
    if (plan.spec.backend or "local") == "local":
        return actors or max(1, int(cpus)), 1, 1
    return actors or max(1, len(plan.spec.endpoints)), 0.25, None


def run_on_ray(plan: JobPlan, directory: Path, done: frozenset[str], address: str, actors: int | None,
               progress: Callable[[int], None]) -> Iterator[tuple[ShardRecord, dict[str, str]]]:
    """run_in_process's twin on Ray: `address` "" starts a Ray on this machine, else joins that cluster
    (the output directory must be one path on every node: a shared file system)."""
    with ray_session(address) as ray:
        yield from _embedded(ray, plan, directory, done, actors, progress)


def _embedded(ray: ModuleType, plan: JobPlan, directory: Path, done: frozenset[str], actors: int | None,
              progress: Callable[[int], None]) -> Iterator[tuple[ShardRecord, dict[str, str]]]:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    count, cpus, threads = _pool(plan, actors, ray.cluster_resources().get("CPU", 1))
    items = [{"number": number, "corpus": corpus} for number, corpus in plan.inputs]
    dataset = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(_read, fn_kwargs={"plan": plan, "done": done}, num_cpus=_LIGHT)
        .map(_Embed, fn_constructor_kwargs={"plan": plan, "threads": threads},
             compute=ray.data.ActorPoolStrategy(size=count), num_cpus=cpus)
        .map(_write, fn_kwargs={"directory": str(directory)}, num_cpus=_LIGHT)
    )
    for row in dataset.iter_rows():
        done_or_failed = pickle.loads(row[_PAYLOAD])
        if isinstance(done_or_failed, _Failed):
            raise done_or_failed.error()
        record, failed_servers = done_or_failed
        progress(record.rows + len(record.rejects))
        yield record, failed_servers

