"""Inverted lists on disk: FAISS's recipe for indexes larger than memory. A trained, empty IVF index is
copied once per shard of rows; each copy takes its shard's codes (a partial index); the partial indexes'
lists are merged into one file of lists (OnDiskInvertedLists, `.ivfdata`) beside the index file; a search
memory-maps that file and reads the pages of the lists it probes, so a cold query on 10M rows costs about
what it costs on 100k.

FAISS records the lists' file by the path it was written at (the staging directory, renamed by publish).
An index is therefore opened without its lists, which are then mapped read-only from the file beside it in
the version being read (FAISS's own IO_FLAG_ONDISK_SAME_DIR does the same, but prints to stdout on every
open and cannot be combined with mapping the rest of the index)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss

LISTS_SUFFIX = ".ivfdata"


def trained_of(index_file: Path) -> faiss.Index:
    """The trained index in `index_file` with no rows (its lists not read): what an update's partial
    index of new rows starts from, and the merge's destination."""
    index = faiss.read_index(str(index_file), faiss.IO_FLAG_SKIP_IVF_DATA)
    ivf = faiss.extract_index_ivf(index)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns them now
    ivf.ntotal = index.ntotal = 0
    return index


def read_partial(path: Path) -> faiss.Index:
    """A partial index written by faiss.write_index, its lists memory-mapped rather than read."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP)


def merged_on_disk(trained: faiss.Index, parts: list[faiss.Index], lists_file: Path) -> faiss.Index:
    """`trained` (empty) holding every row of `parts` (IVF indexes of the same training, row ids as
    added), their lists merged in order into `lists_file`. Rows keep their ids; within a list, the rows of
    the first part come first, as adding the parts' rows in order to one index would place them."""
    ivf = faiss.extract_index_ivf(trained)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(lists_file))
    sources = faiss.InvertedListsPtrVector()
    for part in parts:
        sources.push_back(faiss.extract_index_ivf(part).invlists)
    with _c_stdout_silenced():  # the merge prints "resizing <file> to <n> bytes" on stdout, JSON's channel
        total = lists.merge_from_multiple(sources.data(), sources.size(), False)
    trained.ntotal = ivf.ntotal = total
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns them now
    return trained


def open_on_disk(index_file: Path) -> faiss.Index:
    """The index in `index_file`, its lists mapped read-only from the file of the same name with
    LISTS_SUFFIX beside it (written by merged_on_disk, whatever path it was written at)."""
    index = faiss.read_index(str(index_file), faiss.IO_FLAG_SKIP_IVF_DATA)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    lists.filename = str(lists_file_of(index_file))
    lists.read_only = True
    lists.do_mmap()
    return index


def lists_file_of(index_file: Path) -> Path:
    return Path(index_file).with_suffix(LISTS_SUFFIX)


@contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """File descriptor 1 pointed at /dev/null meanwhile, C's stdio buffer flushed on both sides."""
    import ctypes  # here: building on disk needs it, opening an index does not

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
