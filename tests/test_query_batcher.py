"""serve's micro-batching, in-process with the real model: queries waiting at the same moment go into one
model call, each request gets its own rows, a request that gave up is never embedded, and one request's
refused query fails that request only. The first call is held on an event until the others wait."""

import threading

import numpy as np
import pytest

from xlsearch.cli.batching import QueryBatcher
from xlsearch.engine.errors import InputError

QUERIES = ["weather walk", "train delay", "password reset", "museum opening", "Regen", "雨伞", "電車", "marathon"]


class Recorded:
    """The real model's embed_queries, with each call's texts recorded and the first held until `go`."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder
        self.calls: list[list[str]] = []
        self.first_arrived = threading.Event()
        self.go = threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.first_arrived.set()
            self.go.wait()
        if any("REFUSED" in text for text in texts):  # as a server refusing one input answers
            raise InputError("the server refused a query: 'REFUSED'")
        return self.embedder.embed_queries(texts)


@pytest.fixture
def recorded(local_embedder):
    return Recorded(local_embedder)


def test_waiting_queries_are_embedded_together_and_each_request_gets_its_rows(recorded, local_embedder):
    batcher = QueryBatcher(recorded, max_texts=64)
    first = batcher.submit(["first"])
    recorded.first_arrived.wait()
    waiting = [batcher.submit([q]) for q in QUERIES[:5]] + [batcher.submit(QUERIES[5:])]
    given_up = batcher.submit(["nobody waits for this"])
    assert given_up.cancel()
    recorded.go.set()
    rows = [f.result(timeout=120) for f in waiting]
    first.result(timeout=120)
    batcher.close()
    assert recorded.calls == [["first"], QUERIES]  # one call for all that waited; the cancelled one never sent
    expected = local_embedder.embed_queries(QUERIES)
    np.testing.assert_allclose(np.vstack(rows), expected, atol=1e-5)
    assert [len(r) for r in rows] == [1, 1, 1, 1, 1, 3]


def test_a_call_never_exceeds_the_limit_and_a_refused_query_fails_its_request_only(recorded):
    batcher = QueryBatcher(recorded, max_texts=4)
    first = batcher.submit(["first"])
    recorded.first_arrived.wait()
    good = [batcher.submit(QUERIES[:3]), batcher.submit(QUERIES[3:5])]
    bad = batcher.submit(["REFUSED"])
    after = batcher.submit(QUERIES[5:6])
    recorded.go.set()
    assert [len(f.result(timeout=120)) for f in good] == [3, 2] and len(after.result(timeout=120)) == 1
    with pytest.raises(InputError, match="REFUSED"):
        bad.result(timeout=120)
    first.result(timeout=120)
    batcher.close()
    assert all(len(call) <= 4 for call in recorded.calls)
    # QUERIES[:3] alone (the next would pass 4); then the rest together, refused; then each alone
    assert recorded.calls[1:] == [QUERIES[:3], QUERIES[3:5] + ["REFUSED"] + QUERIES[5:6],
                                  QUERIES[3:5], ["REFUSED"], QUERIES[5:6]]
