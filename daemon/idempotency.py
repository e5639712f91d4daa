"""The idempotency window: which keys were applied, with what body and what reply.

Owns: ``IdempotencyWindow``, a bounded FIFO map key -> (body digest, reply).
Runs on: the engine thread. Imports: stdlib.

A repeat of a known key with the same body digest gets the stored reply and
changes nothing; with a different digest it is a KEY_CONFLICT. The oldest keys
are forgotten first once ``size`` is reached (size it to cover the longest
client retry horizon).
"""
from __future__ import annotations

from collections import OrderedDict


class IdempotencyWindow:
    __slots__ = ("size", "_d")

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[str, tuple[int, object]] = OrderedDict()

    def get(self, key: str):
        return self._d.get(key)

    def put(self, key: str, digest: int, reply) -> None:
        self._d[key] = (digest, reply)
        if len(self._d) > self.size:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)

    def items(self):
        return self._d.items()
