"""Sets of slots marked since the last look, readable in time proportional to what was marked.

Owns: ``PortfolioMarks``: marked slots listed per portfolio (the event builder takes the
marks of the portfolios it reports and pays for those only). ``DirtySet``: a bitmap (is slot s marked?) plus the log of marks as they came, so
that listing the marked slots of a 10-million-slot book after a handful of trades costs
a handful, not a scan of 10 million flags. When marks outnumber 1/16 of the slots the
log is dropped and the listing scans the bitmap instead (cheaper by then, and memory
stays bounded).
Runs on: the engine thread (or whichever single thread owns the book). Imports: numpy.
"""
from __future__ import annotations

import numpy as np

from portfolio_state.kernels.marks import UNMARKED, mark_slots_nb, take_marks_nb


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


class PortfolioMarks:
    """Marked slots kept on one list per portfolio (kernels/marks.py): ``mark`` is O(1) per slot,
    ``take(ps)`` hands over and unmarks the slots of portfolios ``ps`` in time proportional to
    what they hold, and ``portfolios()`` lists the portfolios with marks in O(portfolios)."""
    __slots__ = ("nxt", "head", "count")

    def __init__(self, slots: int = 0, portfolios: int = 0):
        self.nxt = np.full(slots, UNMARKED, np.int64)
        self.head = np.full(portfolios, -1, np.int64)
        self.count = np.zeros(portfolios, np.int64)

    def fit(self, slots: int, portfolios: int) -> None:
        """Cover slots below ``slots`` and portfolios below ``portfolios`` (the book grew)."""
        if len(self.nxt) < slots:
            self.nxt = np.concatenate([self.nxt, np.full(max(slots, 2 * len(self.nxt)) - len(self.nxt), UNMARKED, np.int64)])
        if len(self.head) < portfolios:
            grow = max(portfolios, 2 * len(self.head)) - len(self.head)
            self.head = np.concatenate([self.head, np.full(grow, -1, np.int64)])
            self.count = np.concatenate([self.count, np.zeros(grow, np.int64)])

    def mark(self, slots: np.ndarray, owner: np.ndarray) -> int:
        """Mark ``slots`` (``owner[s]``: the portfolio of slot s). Returns how many were not marked yet."""
        if not len(slots):
            return 0
        return mark_slots_nb(np.ascontiguousarray(slots, np.int64), owner, self.nxt, self.head, self.count)

    def portfolios(self) -> np.ndarray:
        """The portfolios with marked slots, ascending."""
        return np.flatnonzero(self.count)

    def take(self, ps: np.ndarray) -> np.ndarray:
        """The marked slots of portfolios ``ps``, ascending; they are unmarked."""
        ps = np.ascontiguousarray(ps, np.int64)
        out = np.empty(int(self.count[ps].sum()), np.int64)
        take_marks_nb(ps, self.nxt, self.head, self.count, out)
        out.sort()
        return out

    def clear_all(self) -> None:
        self.nxt[:] = UNMARKED
        self.head[:] = -1
        self.count[:] = 0
