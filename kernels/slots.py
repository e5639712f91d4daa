"""Slot allocation and the slot lists (instrument -> slots, portfolio -> slots).

Owns: ``alloc_slots_nb`` (initialise new position slots and index them) and
``unmark_instrument_nb`` / ``remark_instrument_nb`` (take an instrument's
positions out of, and back into, every aggregate around a reference-data change).
Runs on: the engine thread. Imports: numpy, numba, kernels.

A slot list k is ``pool[start[k] : start[k] + len[k]]`` with room for ``cap[k]``.
A full list moves to the end of the pool with twice the room; when the pool
itself is full the kernel stops and returns, and the caller grows the pool
(``daemon.book``) and calls again from where it stopped.
"""
import numpy as np


from .enums import PositionStatus
from .fixedpoint import release_fence_nb
from .jit import inline, kernel
from .valuation import apply_mv_change_nb, mark_nb


@inline
def _append_nb(start, length, cap, pool, meta, cell, k, value):
    if length[k] == cap[k]:
        new_cap = max(4, 2 * cap[k])
        used = meta[cell]
        if used + new_cap > pool.shape[0]:
            return False
        src = start[k]
        for j in range(length[k]):  # a loop, not a slice: slices are views, and views need NRT
            pool[used + j] = pool[src + j]
        start[k] = used
        cap[k] = new_cap
        meta[cell] = used + new_cap
    pool[start[k] + length[k]] = value
    length[k] += 1
    return True


@kernel
def alloc_slots_nb(b, slots, portfolios, instruments, heads, meta_inst, meta_pf):
    """Initialise and index new slots; return how many rows were done.

    Row i makes slot ``slots[i]`` the position of ``portfolios[i]`` in
    ``instruments[i]``, with ``heads[i]`` the slot holding that (portfolio,
    instrument)'s INSTRUMENT exposure (itself for the first one). The slot is
    FREE (invisible) until a command on it is accepted.
    """
    for i in range(slots.shape[0]):
        s = slots[i]
        p = portfolios[i]
        k = instruments[i]
        if b.inst_len[k] == b.inst_cap[k] and b.meta[meta_inst] + max(4, 2 * b.inst_cap[k]) > b.inst_pool.shape[0]:
            return i
        if b.pf_len[p] == b.pf_cap[p] and b.meta[meta_pf] + max(4, 2 * b.pf_cap[p]) > b.pf_pool.shape[0]:
            return i
        pf = b.portfolios[p]
        pf.version += 1
        release_fence_nb()
        _append_nb(b.inst_start, b.inst_len, b.inst_cap, b.inst_pool, b.meta, meta_inst, k, s)
        _append_nb(b.pf_start, b.pf_len, b.pf_cap, b.pf_pool, b.meta, meta_pf, p, s)
        pos = b.positions[s]
        pos.portfolio = p
        pos.instrument = k
        pos.qty = 0
        pos.cost = 0
        pos.realized = 0
        pos.mv = 0
        pos.inst_exp = 0
        pos.updated_ns = 0
        pos.head = heads[i]
        pos.status = PositionStatus.FREE
        pf.n_slots += 1
        release_fence_nb()
        pf.version += 1
    return slots.shape[0]


@kernel
def unmark_instrument_nb(b, k):
    """Take every position of instrument k out of the aggregates (mv -> 0)."""
    start = b.inst_start[k]
    for j in range(b.inst_len[k]):
        s = b.inst_pool[start + j]
        if b.positions[s].mv != 0:
            pf = b.portfolios[b.positions[s].portfolio]
            pf.version += 1
            release_fence_nb()
            apply_mv_change_nb(b, s, np.int64(0))
            release_fence_nb()
            pf.version += 1


@kernel
def remark_instrument_nb(b, k):
    """Put every position of instrument k back, valued with its current reference data."""
    start = b.inst_start[k]
    for j in range(b.inst_len[k]):
        s = b.inst_pool[start + j]
        if b.positions[s].qty != 0:
            pf = b.portfolios[b.positions[s].portfolio]
            pf.version += 1
            release_fence_nb()
            apply_mv_change_nb(b, s, mark_nb(b, s))
            release_fence_nb()
            pf.version += 1
