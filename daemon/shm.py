"""Shared-memory arena: the book's arrays as files in a tmpfs, published by a header.

Owns: ``Arena`` (writer side: create a generation of arrays, publish it, retire
the previous one), ``attach`` (reader side: map the published generation
read-only) and the append-only name logs that let a reader map ids to indexes.
Runs on: the engine thread (writer) or any process (reader). Imports: numpy, stdlib.

Layout under ``directory`` (default /dev/shm) for arena ``name``:
  {name}.header          JSON: schema, generation, and per array its file, dtype, shape
  {name}.g{gen}.{array}  raw array bytes, mapped with mmap
  {name}.names.{kind}    append-only "index<TAB>id" lines (portfolio, instrument, slot, ...)
Growth writes generation g+1, copies, atomically renames the new header into
place, sets every old portfolio's seqlock to MOVED (-1, odd forever) so a reader
on the old mapping retries and re-attaches, and unlinks the old files (mappings
already open stay valid, POSIX semantics).
"""
import json
import mmap
import os

import numpy as np

from .hugepages import advise_huge

MOVED = -1


def _map(path, nbytes, writable):
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, max(nbytes, 1), prot=mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))
    finally:
        os.close(fd)
    if writable:
        # granted only where the tmpfs allows huge pages (shmem_enabled advise/within_size/always)
        advise_huge(mm)
    return mm


class Arena:
    """Writer side. One instance per book; never shared between threads."""

    def __init__(self, name: str, directory: str = "/dev/shm"):
        self.name = name
        self.directory = directory
        self.generation = 0
        self._files: list[str] = []
        self._name_logs: dict[str, object] = {}

    def _path(self, suffix: str) -> str:
        return os.path.join(self.directory, f"{self.name}.{suffix}")

    def allocate(self, field: str, dtype: np.dtype, shape: tuple) -> np.ndarray:
        """A zeroed array of the *next* generation, backed by a new file."""
        path = self._path(f"g{self.generation + 1}.{field}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, max(nbytes, 1))
        finally:
            os.close(fd)
        self._pending = getattr(self, "_pending", [])
        self._pending.append(path)
        return np.ndarray(shape, dtype=dtype, buffer=_map(path, nbytes, True))

    def publish(self, arrays: dict, schema_version: int, extra: dict) -> None:
        """Make the allocated generation current, then retire the previous one."""
        self.generation += 1
        header = {
            "schema_version": schema_version,
            "generation": self.generation,
            "arrays": {
                k: {"file": os.path.basename(self._path(f"g{self.generation}.{k}")),
                    "dtype": np.lib.format.dtype_to_descr(a.dtype), "shape": list(a.shape)}
                for k, a in arrays.items()
            },
            **extra,
        }
        tmp = self._path("header.tmp")
        with open(tmp, "w") as f:
            json.dump(header, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path("header"))
        old, self._files = self._files, self._pending
        self._pending = []
        for path in old:
            os.unlink(path)

    def log_name(self, kind: str, index: int, ident: str) -> None:
        f = self._name_logs.get(kind)
        if f is None:
            f = self._name_logs[kind] = open(self._path(f"names.{kind}"), "a", encoding="utf-8")
        f.write(f"{index}\t{ident}\n")
        f.flush()  # names are rare next to updates; a reader must see them at once

    def close(self, unlink: bool = True) -> None:
        for f in self._name_logs.values():
            f.close()
        self._name_logs.clear()
        if unlink:
            for path in self._files + [self._path("header")] + [
                self._path(f"names.{k}") for k in ("portfolio", "instrument", "slot", "currency")
            ]:
                if os.path.exists(path):
                    os.unlink(path)
            self._files = []


def read_header(name: str, directory: str = "/dev/shm") -> dict:
    with open(os.path.join(directory, f"{name}.header")) as f:
        return json.load(f)


def attach(name: str, directory: str = "/dev/shm") -> tuple[dict, dict]:
    """Map the current generation read-only: (header, {array name: ndarray})."""
    header = read_header(name, directory)
    arrays = {}
    for k, spec in header["arrays"].items():
        dtype = np.lib.format.descr_to_dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buf = _map(os.path.join(directory, spec["file"]), nbytes, False)
        arrays[k] = np.ndarray(shape, dtype=dtype, buffer=buf)
    return header, arrays


class NameLog:
    """Reader side of one append-only name log: tails new lines on refresh()."""

    def __init__(self, name: str, kind: str, directory: str = "/dev/shm"):
        self.path = os.path.join(directory, f"{name}.names.{kind}")
        self.by_id: dict[str, int] = {}
        self.by_index: dict[int, str] = {}
        self._offset = 0

    def refresh(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next refresh
        for line in data[:end].decode("utf-8").splitlines():
            idx, ident = line.split("\t", 1)
            self.by_id[ident] = int(idx)
            self.by_index[int(idx)] = ident
        self._offset += end
