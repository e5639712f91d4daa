"""A set of slots marked since the last look, readable in time proportional to what was marked.

Owns: ``DirtySet``: a bitmap (is slot s marked?) plus the log of marks as they came, so
that listing the marked slots of a 10-million-slot book after a handful of trades costs
a handful, not a scan of 10 million flags. When marks outnumber 1/16 of the slots the
log is dropped and the listing scans the bitmap instead (cheaper by then, and memory
stays bounded).
Runs on: the engine thread (or whichever single thread owns the book). Imports: numpy.
"""
from __future__ import annotations

import numpy as np


class DirtySet:
    __slots__ = ("bits", "_log", "_n")

    def __init__(self, n: int = 0):
        self.bits = np.zeros(n, np.bool_)
        self._log: list[np.ndarray] | None = []
        self._n = 0

    def fit(self, n: int) -> None:
        """Cover slots below n (the book grew)."""
        if len(self.bits) < n:
            self.bits = np.concatenate([self.bits, np.zeros(max(n, 2 * len(self.bits)) - len(self.bits), np.bool_)])

    def mark(self, slots: np.ndarray) -> None:
        self.bits[slots] = True
        if self._log is not None:
            self._log.append(np.asarray(slots))
            self._n += len(slots)
            if self._n > len(self.bits) // 16:
                self._log = None

    def slots(self, below: int | None = None) -> np.ndarray:
        """The marked slots (below ``below``), sorted, int64. They stay marked."""
        if self._log is None:
            ds = np.flatnonzero(self.bits if below is None else self.bits[:below])
            if below is None:
                self._log, self._n = [ds], len(ds)  # back to logging: the log is complete again
            return ds
        if not self._log:
            return np.zeros(0, np.int64)
        cat = self._log[0] if len(self._log) == 1 else np.concatenate(self._log)
        if len(cat) <= 256:  # a few: a set is ~10x cheaper than np.unique's sort machinery
            ds = np.array(sorted(set(cat.tolist())), np.int64)
        else:
            ds = np.unique(cat.astype(np.int64))
        ds = ds[self.bits[ds]]
        self._log, self._n = [ds], len(ds)
        return ds if below is None else ds[ds < below]

    def clear(self, slots: np.ndarray) -> None:
        """Unmark these slots (their log entries fall away at the next ``slots``)."""
        self.bits[slots] = False

    def clear_all(self) -> None:
        self.bits[:] = False
        self._log, self._n = [], 0
