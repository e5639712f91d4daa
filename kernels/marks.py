"""Per-portfolio lists of marked slots (the slots an event has yet to report).

Owns: ``mark_slots_nb`` (mark slots, each once, on its portfolio's list) and
``take_marks_nb`` (hand over and unmark the listed slots of chosen portfolios).
Runs on: the engine thread. Imports: numpy, numba, kernels.

Each portfolio's marked slots form an intrusive singly linked list: ``head[p]`` is
its first slot (-1: none), ``nxt[s]`` the slot after s (-1: end of list; UNMARKED:
s is on no list), ``count[p]`` its length. Marking is O(1) per slot and taking a
portfolio's marks costs what it holds, so an event flush that picks 32 portfolios
pays for their marks only, never for the marks of the portfolios still waiting.
"""
from .jit import kernel

UNMARKED = -2


@kernel
def mark_slots_nb(slots, owner, nxt, head, count):
    """Put each slot not yet marked on the list of ``owner[slot]``. Returns how many were new."""
    new = 0
    for j in range(slots.shape[0]):
        s = slots[j]
        if nxt[s] != UNMARKED:
            continue
        p = owner[s]
        nxt[s] = head[p]
        head[p] = s
        count[p] += 1
        new += 1
    return new


@kernel
def take_marks_nb(ps, nxt, head, count, out):
    """Write the marked slots of portfolios ``ps`` into ``out`` (sized sum(count[ps])) and unmark
    them; returns how many were written."""
    n = 0
    for j in range(ps.shape[0]):
        p = ps[j]
        s = head[p]
        while s >= 0:
            out[n] = s
            n += 1
            t = nxt[s]
            nxt[s] = UNMARKED
            s = t
        head[p] = -1
        count[p] = 0
    return n
