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
import threading

import numpy as np

NPY_MAGIC = b"\x93NUMPY"


class SegmentFile:
    """One segment file of a version, opened through the reader's directory (whose lease keeps it), then
    mapped read-only when first asked for."""

    def __init__(self, directory_fd: int, name: str, size: int) -> None:
        """File `name` of the directory open as `directory_fd`; `size` is what the manifest says it holds
        (ValueError when it holds another)."""
        self.name = name
        self._fd = os.open(name, os.O_RDONLY, dir_fd=directory_fd)
        actual = os.fstat(self._fd).st_size
        if actual != size:
            self.close()
            raise ValueError(f"it has {actual} bytes, the manifest says {size}")
        self._mapping: mmap.mmap | None = None
        self._lock = threading.Lock()

    def mapping(self) -> mmap.mmap:
        with self._lock:
            if self._mapping is None:
                self._mapping = mmap.mmap(self._fd, 0, prot=mmap.PROT_READ)
                self.close()
            return self._mapping

    def close(self) -> None:
        """The descriptor closed (a mapping made stays valid)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
