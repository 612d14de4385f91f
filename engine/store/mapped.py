"""A version's segment files, opened when a reader first reads them, mapped, and parsed.

A reader holds its version's directory open with a shared lock (its lease: engine.store.reader), and a
writer removes a version only while no reader holds it, so a segment's files can wait until they are
needed. Before, a reader opened, mapped and parsed every segment at open (np.load of the vectors by
name, a Parquet footer, a checksum of the small metadata file): 870 ms of a cold open of 500 segments
(500,000 rows in shards of 1,000, this project's 2-core VM), 12 ms now. Opening a file still costs about
30 us there, so even opening every file at open took 34 ms of it. A vectors file's header is checked
against the shape the manifest gives, without np.load."""

from __future__ import annotations

import ast
import mmap
import os

import numpy as np
import pyarrow as pa

NPY_MAGIC = b"\x93NUMPY"


def mapped_file(directory_fd: int, name: str, size: int) -> mmap.mmap:
    """File `name` of the directory open as `directory_fd` (whose lease keeps it), mapped read-only;
    `size` is what the manifest says it holds (ValueError when it holds another). The mapping holds the
    data: the descriptor is closed at once."""
    fd = os.open(name, os.O_RDONLY, dir_fd=directory_fd)
    try:
        actual = os.fstat(fd).st_size
        if actual != size:
            raise ValueError(f"it has {actual} bytes, the manifest says {size}")
        return mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


def arrow_mapped_file(directory_fd: int, name: str, size: int) -> pa.MemoryMappedFile:
    """As mapped_file, for pyarrow (a segment's metadata file): mapped by Arrow itself. A buffer over a
    Python mmap is released by whichever Arrow thread drops it last, which must take the GIL; when that
    happened as the process exited, the thread ended inside Arrow's code and the process aborted
    ("terminate called without an active exception", SIGABRT: 7 of 120 `xlsearch query` runs, two at a
    time on this project's 2-core VM)."""
    mapped = pa.memory_map(f"/proc/self/fd/{directory_fd}/{name}")
    actual = mapped.size()
    if actual != size:
        mapped.close()
        raise ValueError(f"it has {actual} bytes, the manifest says {size}")
    return mapped


def vectors_of(mapping: mmap.mmap, rows: int, dim: int) -> np.ndarray:
    """The (rows, dim) float32 array of a mapped .npy file that np.save wrote (ValueError when its header
    says otherwise)."""
    if mapping[:6] != NPY_MAGIC or mapping[6] not in (1, 2, 3):
        raise ValueError("not a .npy file")
    length_bytes = 2 if mapping[6] == 1 else 4
    start = 8 + length_bytes
    offset = start + int.from_bytes(mapping[8:start], "little")
    text = mapping[start:offset].decode("latin1")
    wanted = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
    if text.rstrip() != f"{wanted}"[:-1] + ", }":  # np.save's own words for it; else parsed, as np.load would
        try:
            header = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            raise ValueError("its .npy header cannot be read") from None
        if not isinstance(header, dict) or {key: header.get(key) for key in wanted} != wanted:
            raise ValueError(f"its header says {header!r:.120}, expected float32 of shape {(rows, dim)}")
    if len(mapping) != offset + rows * dim * 4:
        raise ValueError(f"it holds {len(mapping) - offset} bytes of vectors, expected {rows * dim * 4}")
    return np.ndarray((rows, dim), np.float32, buffer=mapping, offset=offset)
