"""The idempotency window: which keys were applied, with what body and what reply.

Owns: ``IdempotencyWindow``, a bounded FIFO map key -> (body digest, reply).
Runs on: the engine thread. Imports: stdlib.

A repeat of a known key with the same body digest gets the stored reply and
changes nothing; with a different digest it is a KEY_CONFLICT. The oldest keys
are forgotten first once ``size`` is reached (size it to cover the longest
client retry horizon).

A value is (digest, reply), or an object whose ``entry(key)`` builds that pair when asked:
replay stores one such object per journal record for all its keys (daemon/engine.py
``_Replayed``), so a million replayed keys cost a dict entry each and nothing more.

A plain dict plus a deque of keys in arrival order, not an OrderedDict: recovery
puts a million entries, and OrderedDict's per-entry links cost ~1 µs each there
(measured: 1.0 s of a 2.9 s recovery), a dict and a deque ~0.1 µs.
"""
from __future__ import annotations

from collections import deque
from itertools import repeat, starmap
from operator import itemgetter


class Deferred:
    """Base of the window values that stand for many keys: ``keys`` lists them, ``entry(key)``
    builds one key's (digest, reply); ``position`` finds a key, indexing them on first use."""

    __slots__ = ()

    def position(self, key: str) -> int:
        ix = self._ix
        if ix is None:
            ix = self._ix = dict(zip(self.keys, range(len(self.keys))))
        return ix[key]


def _pair(key: str, v):
    return v if type(v) is tuple else v.entry(key)


class IdempotencyWindow:
    __slots__ = ("size", "_d", "_order")

    def __init__(self, size: int):
        self.size = size
        self._d: dict[str, tuple[int, object]] = {}
        self._order: deque[str] = deque()  # each key in _d once, oldest first

    def get(self, key: str):
        v = self._d.get(key)
        return v if v is None else _pair(key, v)

    def put(self, key: str, digest: int, reply) -> None:
        self._put(key, (digest, reply))

    def _put(self, key: str, v) -> None:
        d = self._d
        if key not in d:
            self._order.append(key)
        d[key] = v
        if len(d) > self.size:
            self._trim()

    def put_many(self, keys, values) -> None:
        """put() of many (replay and checkpoint load): C-level updates, then the oldest trimmed.
        ``values``: (digest, reply) pairs, or objects with ``entry(key)`` (see the module)."""
        d = self._d
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        if len(set(keys)) == len(keys) and self.holds_none(keys):  # all new (the usual case), in C
            d.update(zip(keys, values))
            self._order.extend(keys)
            if len(d) > self.size:
                self._trim()
            return
        for k, v in zip(keys, values):  # known or repeated keys: one by one, exactly
            self._put(k, v)

    def _trim(self) -> None:
        """Forget the oldest keys beyond ``size``, in C (``starmap`` calls ``popleft``, ``map``
        deletes): replay puts ten million keys through a window of a million, and a Python loop
        of popleft + del was ~20% of that replay (py-spy)."""
        n = len(self._d) - self.size
        if n > 0:
            deque(map(self._d.__delitem__, starmap(self._order.popleft, repeat((), n))), maxlen=0)

    def holds_none(self, keys) -> bool:
        """No key of ``keys`` is in the window (checked in C)."""
        return self._d.keys().isdisjoint(keys)

    def clear(self) -> None:
        self._d.clear()
        self._order.clear()

    def __len__(self) -> int:
        return len(self._d)

    def items(self):
        """(key, (digest, reply)) oldest first: the dict's own order is the deque's (a key enters
        both at once and leaves both at once)."""
        return ((k, _pair(k, v)) for k, v in self._d.items())

    def raw_items(self) -> list:
        """[(key, value)] oldest first, values as stored (see the module): a copy cheap enough
        for the engine thread; ``entries`` turns it into what ``items`` gives, elsewhere."""
        return list(self._d.items())


def entries(raw: list) -> list:
    """``raw_items`` as (key, (digest, reply)) pairs (on a checkpoint writer's thread)."""
    if set(map(type, map(itemgetter(1), raw))) <= {tuple}:  # the live case, checked in C
        return raw
    return [(k, _pair(k, v)) for k, v in raw]
