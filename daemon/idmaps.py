"""The book's two big id maps, kept in arrays instead of Python dicts (ADR 0022).

Owns: ``SlotIndex`` ((portfolio, position_id) -> slot) and ``HeadIndex``
((portfolio, instrument) -> the slot holding its INSTRUMENT exposure), over the
array tables of ``kernels.idtable``. Runs on: the engine thread (the book's
owner). Imports: numpy, kernels.

``SlotIndex`` keys a cell by Python's ``hash((portfolio, position_id))`` and the
portfolio, and stores the slot; the id itself stays where it already is, in the
book's ``slot_ids`` list, and every hit is checked against it. So two ids with
one 64-bit hash are both kept and told apart, never confused. The hash is only
valid within a process (``PYTHONHASHSEED``), which is why the index is never
written: a checkpoint carries ``slot_ids``, and ``Book.from_state`` rebuilds it.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from portfolio_state.kernels.idtable import (
    EMPTY,
    GOLDEN,
    idtable_find_nb,
    idtable_insert_nb,
    idtable_rehash_nb,
    idtable_setdefault_nb,
)

_M64 = (1 << 64) - 1
#: below this many keys a batch is looked up key by key (a kernel call costs ~1 us)
_BATCH_MIN = 16


def _bits_for(entries: int, bits: int) -> int:
    """The fewest bits, at least ``bits``, whose table holds ``entries`` at most 3/4 full."""
    while (3 << bits) // 4 < entries:
        bits += 1
    return bits


class _Table:
    """int64 key + int32 aux -> int32 value; at most 3/4 full, doubled when it would be more."""

    def __init__(self, expected: int = 0) -> None:
        self._alloc(_bits_for(expected, 10))
        self.count = 0

    def _alloc(self, bits: int) -> None:
        n = 1 << bits
        self.keys = np.zeros(n, np.int64)
        self.aux = np.zeros(n, np.int32)
        self.vals = np.full(n, EMPTY, np.int32)
        self.shift, self.mask = 64 - bits, n - 1
        # one-key reads index memoryviews: ~40 ns an element against ~100 for a NumPy scalar
        self._k, self._a, self._v = memoryview(self.keys), memoryview(self.aux), memoryview(self.vals)

    def reserve(self, more: int) -> None:
        need = self.count + more
        if 4 * need <= 3 * len(self.vals):
            return
        old = self.keys, self.aux, self.vals
        self._alloc(_bits_for(need, 64 - self.shift))
        idtable_rehash_nb(*old, self.keys, self.aux, self.vals, self.shift)

    def first(self, key: int) -> int:
        return ((key & _M64) * GOLDEN & _M64) >> self.shift

    def insert(self, keys: np.ndarray, aux: np.ndarray, vals: np.ndarray) -> None:
        self.reserve(len(keys))
        idtable_insert_nb(self.keys, self.aux, self.vals, self.shift, keys, aux, vals)
        self.count += len(keys)

    def setdefault(self, keys: np.ndarray, aux: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """Row by row, the value held for (keys[j], aux[j]), adding vals[j] first when there is none."""
        self.reserve(len(keys))
        out = np.empty(len(keys), np.int32)
        self.count += idtable_setdefault_nb(self.keys, self.aux, self.vals, self.shift, keys, aux, vals, out)
        return out

    def find(self, keys: np.ndarray, aux: np.ndarray) -> np.ndarray:
        out = np.empty(len(keys), np.int32)
        idtable_find_nb(self.keys, self.aux, self.vals, self.shift, keys, aux, out)
        return out

    def occupied(self) -> np.ndarray:
        return np.flatnonzero(self.vals != EMPTY)

    def nbytes(self) -> int:
        return self.keys.nbytes + self.aux.nbytes + self.vals.nbytes


class _Index:
    """What both indexes read alike: ``[key]`` (KeyError when absent), ``len``, ``nbytes``; ``t`` is the table."""

    t: _Table

    def __getitem__(self, key):
        s = self.get(key)
        if s is None:
            raise KeyError(key)
        return s

    def __len__(self) -> int:
        return self.t.count

    def nbytes(self) -> int:
        return self.t.nbytes()


class SlotIndex(_Index):
    """(portfolio index, position_id) -> slot, checked against ``ids`` (the book's ``slot_ids``).

    Reads like the dict it replaces: ``get``, ``[]``, ``in``, ``len``, ``items``, ``values``;
    ``[key] = slot`` and ``update`` add keys that are not there yet (a slot is never moved)."""

    def __init__(self, ids: list[str], expected: int = 0) -> None:
        self.ids = ids
        self.t = _Table(expected)

    # ---------------------------------------------------------------- one key
    def get(self, key: tuple[int, str], default=None):
        h = hash(key)
        p, pid = key
        t = self.t
        k, a, v, ids, mask = t._k, t._a, t._v, self.ids, t.mask
        i = t.first(h)
        while (s := v[i]) != EMPTY:
            if k[i] == h and a[i] == p and ids[s] == pid:
                return s
            i = (i + 1) & mask
        return default

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: tuple[int, str], slot: int) -> None:
        if self.get(key) is not None:
            raise ValueError(f"{key!r} already has a slot")  # slots are never moved or reused
        self.update([(key, slot)])

    # ---------------------------------------------------------------- many keys
    def update(self, pairs: Iterable[tuple[tuple[int, str], int]]) -> None:
        """Add keys that are not in the index (the caller has looked them up)."""
        pairs = list(pairs)
        if not pairs:
            return
        self.t.insert(np.fromiter((hash(k) for k, _ in pairs), np.int64, len(pairs)),
                      np.fromiter((k[0] for k, _ in pairs), np.int32, len(pairs)),
                      np.fromiter((s for _, s in pairs), np.int32, len(pairs)))

    def find(self, portfolios: list[int], position_ids: list[str]) -> np.ndarray:
        """The slot of each (portfolios[j], position_ids[j]), -1 where there is none (int32)."""
        n = len(position_ids)
        if not isinstance(position_ids, list):
            position_ids = list(position_ids)
        if n < _BATCH_MIN or not self.ids:
            get = self.get
            return np.array([get((p, pid), -1) for p, pid in zip(portfolios, position_ids)], np.int32)
        out = self.t.find(np.array(list(map(hash, zip(portfolios, position_ids))), np.int64),
                          np.array(portfolios, np.int32))
        ids = self.ids
        slots = out.tolist()
        # every hit's id, compared in one C-level list compare (a -1 reads the last id: harmless, the
        # loop below only checks hits); a mismatch is a new position or, rarely, a shared hash
        if list(map(ids.__getitem__, slots)) != position_ids:
            for j, (s, pid) in enumerate(zip(slots, position_ids)):
                if s >= 0 and ids[s] != pid:  # a second id with the same hash: look it up in full
                    out[j] = self.get((portfolios[j], pid), -1)
        return out

    def rebuild(self, owners: np.ndarray) -> None:
        """Index every slot with an id (``owners[s]``: its portfolio), as after ``from_state``."""
        ids = self.ids
        live = [s for s, ident in enumerate(ids) if ident]
        self.t = _Table(len(live))
        if live:
            own = np.asarray(owners, np.int32)[live]
            self.t.insert(np.fromiter((hash((p, ids[s])) for p, s in zip(own.tolist(), live)), np.int64, len(live)),
                          own, np.asarray(live, np.int32))

    def items(self) -> Iterator[tuple[tuple[int, str], int]]:
        t, ids = self.t, self.ids
        cells = t.occupied()
        slots = t.vals[cells]
        order = np.argsort(slots, kind="stable")
        for p, s in zip(t.aux[cells][order].tolist(), slots[order].tolist()):
            yield (p, ids[s]), s

    def values(self) -> list[int]:
        return np.sort(self.t.vals[self.t.occupied()]).tolist()


class HeadIndex(_Index):
    """(portfolio, instrument) -> head slot. The key packs both indexes, so it is exact."""

    def __init__(self, expected: int = 0) -> None:
        self.t = _Table(expected)

    @staticmethod
    def _keys(portfolios, instruments) -> np.ndarray:
        return (np.asarray(portfolios, np.int64) << 32) | np.asarray(instruments, np.int64)

    def setdefault(self, portfolios: np.ndarray, instruments: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Row by row, the head of (portfolios[j], instruments[j]), ``candidates[j]`` when it had none."""
        return self.t.setdefault(self._keys(portfolios, instruments), np.zeros(len(portfolios), np.int32),
                                 np.asarray(candidates, np.int32))

    def rebuild(self, portfolios: np.ndarray, instruments: np.ndarray, slots: np.ndarray) -> None:
        self.t = _Table(len(slots))
        self.t.insert(self._keys(portfolios, instruments), np.zeros(len(slots), np.int32), np.asarray(slots, np.int32))

    def get(self, key: tuple[int, int], default=None):
        out = self.t.find(self._keys([key[0]], [key[1]]), np.zeros(1, np.int32))[0]
        return default if out == EMPTY else int(out)

    def items(self) -> Iterator[tuple[tuple[int, int], int]]:
        t = self.t
        cells = t.occupied()
        keys = t.keys[cells]
        for p, k, s in zip((keys >> 32).tolist(), (keys & 0xFFFFFFFF).tolist(), t.vals[cells].tolist()):
            yield (p, k), s
