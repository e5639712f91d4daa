"""Open-addressing hash tables in plain arrays: int64 key + int32 aux -> int32 value.

Owns: the probe sequence and the batch kernels (``idtable_find_nb``,
``idtable_insert_nb``, ``idtable_setdefault_nb``, ``idtable_rehash_nb``) behind
the book's id maps (``daemon.idmaps``). Runs on: the engine thread. Imports:
numpy, numba, kernels.

Why arrays and not a dict (ADR 0022): ten million ``(portfolio, position_id) ->
slot`` entries in a Python dict are ~3.4 GB of small objects (a tuple, an int
and a dict entry each) on 4 KiB pages, and ``fork()`` for a checkpoint copies the
page tables of all of them. Three arrays of 16 bytes an entry are a few huge
pages and no objects.

A table of capacity ``2**bits`` keeps ``vals[i] = -1`` for an empty cell. Entry i
matches a query when ``keys[i] == key and aux[i] == aux``. A key's first cell is
``(key * GOLDEN mod 2**64) >> (64 - bits)`` (Fibonacci hashing, so keys that are
not random, such as packed (portfolio, instrument) pairs, still spread), then
cells follow linearly. Nothing is ever deleted, so a probe stops at the first
empty cell. ``daemon.idmaps`` repeats ``first_cell`` in Python for one-key reads;
a unit test holds the two equal.
"""
import numpy as np

from .jit import inline, kernel

#: 2**64 / golden ratio, odd: the multiplier of Fibonacci hashing
GOLDEN = 0x9E3779B97F4A7C15
EMPTY = -1


@inline
def _first_nb(key, shift):
    return np.int64((np.uint64(key) * np.uint64(GOLDEN)) >> np.uint64(shift))


@kernel
def idtable_first_nb(key, shift):
    """The first cell of ``key`` in a table of ``2**(64 - shift)`` cells (for the unit test)."""
    return _first_nb(key, shift)


@inline
def _find_nb(keys, aux, vals, shift, key, a):
    mask = keys.shape[0] - 1
    i = _first_nb(key, shift)
    while vals[i] != EMPTY:
        if keys[i] == key and aux[i] == a:
            return i
        i = (i + 1) & mask
    return -1 - i  # not found: -1 - the empty cell where it would go


@inline
def _put_nb(keys, aux, vals, shift, key, a, v):
    """Write (key, a) -> v into the first empty cell of key's probe sequence."""
    mask = keys.shape[0] - 1
    i = _first_nb(key, shift)
    while vals[i] != EMPTY:
        i = (i + 1) & mask
    keys[i] = key
    aux[i] = a
    vals[i] = v


@kernel
def idtable_find_nb(keys, aux, vals, shift, qkeys, qaux, out):
    """out[j] = the value of (qkeys[j], qaux[j]), or -1 when the table has none."""
    for j in range(qkeys.shape[0]):
        i = _find_nb(keys, aux, vals, shift, qkeys[j], qaux[j])
        out[j] = vals[i] if i >= 0 else EMPTY


@kernel
def idtable_insert_nb(keys, aux, vals, shift, qkeys, qaux, qvals):
    """Add each (qkeys[j], qaux[j]) -> qvals[j] in a new cell, without looking for an equal entry
    (the caller knows they are new, or wants every candidate kept, as the slot index does for
    two ids of one hash). The caller keeps the table at most 3/4 full."""
    for j in range(qkeys.shape[0]):
        _put_nb(keys, aux, vals, shift, qkeys[j], qaux[j], qvals[j])


@kernel
def idtable_setdefault_nb(keys, aux, vals, shift, qkeys, qaux, qvals, out):
    """dict.setdefault row by row: out[j] = the value held for (qkeys[j], qaux[j]), adding qvals[j]
    first when there is none (so a later row sees an earlier row's entry). Returns how many it added."""
    added = 0
    for j in range(qkeys.shape[0]):
        i = _find_nb(keys, aux, vals, shift, qkeys[j], qaux[j])
        if i < 0:
            i = -1 - i
            keys[i] = qkeys[j]
            aux[i] = qaux[j]
            vals[i] = qvals[j]
            added += 1
        out[j] = vals[i]
    return added


@kernel
def idtable_rehash_nb(okeys, oaux, ovals, keys, aux, vals, shift):
    """Move every entry of the old table into the new (empty, larger) one, in the old cells' order."""
    for c in range(okeys.shape[0]):
        if ovals[c] != EMPTY:
            _put_nb(keys, aux, vals, shift, okeys[c], oaux[c], ovals[c])
