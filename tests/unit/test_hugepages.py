"""The book's anonymous arrays share one huge-page mapping: zeroed, aligned, disjoint."""
import numpy as np

from portfolio_state.daemon.book import Book, Capacity
from portfolio_state.daemon.hugepages import HUGE, HugeArena
from portfolio_state.kernels.layout import position_dt


def test_arrays_are_zeroed_aligned_and_disjoint():
    specs = {"a": (np.int64, (1000,)), "b": (position_dt, (333,)), "c": (np.float64, (7, 3)), "d": (np.int8, (5,))}
    h = HugeArena(specs)
    first = min(x.ctypes.data for x in h.arrays.values())
    assert first % HUGE == 0
    spans = []
    for name, (dt, shape) in specs.items():
        x = h[name]
        assert x.dtype == np.dtype(dt) and x.shape == shape and x.flags.writeable and x.flags.c_contiguous
        assert x.ctypes.data % 64 == 0
        assert not x.view(np.uint8).any()
        spans.append((x.ctypes.data, x.ctypes.data + x.nbytes))
    spans.sort()
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))
    for i, x in enumerate(h.arrays.values()):  # writing one array leaves the others zero
        x.view(np.uint8)[...] = i + 1
    for i, x in enumerate(h.arrays.values()):
        assert (x.view(np.uint8) == i + 1).all()


def test_a_book_outlives_growth_on_its_arrays():
    book = Book(Capacity(portfolios=2, slots=4, instruments=2))
    before = book.a.positions
    for i in range(40):
        book.upsert_portfolio(f"P{i}", "USD", "LONG_SHORT")
    assert book.a.positions is not before and book.capacity["portfolios"] >= 40
    assert book.a.positions.ctypes.data != before.ctypes.data
    assert book.audit() == []


def test_collapse_after_a_fork_keeps_every_byte():
    """A child shares the mapping, the parent writes (splitting huge pages copy-on-write), the child
    exits, the parent collapses: the contents are the parent's writes, whatever the kernel grants."""
    import os

    h = HugeArena({"x": (np.int64, (3 * HUGE // 8,))})  # three huge pages
    x = h["x"]
    x[:] = np.arange(len(x))
    pid = os.fork()
    if pid == 0:
        os._exit(0 if x[12345] == 12345 else 1)
    x[::1000] = -1  # every 8 KB: copy-on-write while the child may still map the pages
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert h.collapse() in (True, False)
    want = np.arange(len(x))
    want[::1000] = -1
    assert np.array_equal(x, want)
    assert Book(Capacity(portfolios=2, slots=4, instruments=2)).collapse_huge() in (True, False)


def test_release_pages_drops_whole_pages_only():
    """release_pages zeroes the whole pages inside the range and leaves the partial pages at its ends."""
    import mmap

    from portfolio_state.daemon.hugepages import release_pages

    page = mmap.PAGESIZE
    h = HugeArena({"x": (np.uint8, (8 * page,))})
    x = h["x"]
    x[:] = 7
    release_pages(x.ctypes.data + 100, 5 * page)  # whole pages 1..4 of the range [100, 5 pages + 100)
    assert (x[:page] == 7).all()
    assert (x[page:5 * page] == 0).all()
    assert (x[5 * page:] == 7).all()
    release_pages(x.ctypes.data + 1, 10)  # no whole page: nothing
    assert (x[:page] == 7).all()


def test_a_forked_child_releasing_pages_leaves_the_parent_intact():
    """The child gives back pages it shares with the parent: the parent's contents stay, and the
    parent can write them after (in place, the copy-on-write being over)."""
    import os

    from portfolio_state.daemon.hugepages import release_pages

    h = HugeArena({"x": (np.int64, (2 * HUGE // 8,))})
    x = h["x"]
    x[:] = np.arange(len(x))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        release_pages(x.ctypes.data, x.nbytes)
        os.write(w, b"1" if not x.any() else b"0")
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"  # the child's view is gone
    os.close(r)
    os.waitpid(pid, 0)
    assert np.array_equal(x, np.arange(len(x)))
    x[::1000] = -1
    assert (x[::1000] == -1).all() and x[1] == 1
