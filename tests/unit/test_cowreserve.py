"""The copy-on-write reserve: filled, it is resident; released, its pages are the kernel's again
and the mapping stays for the next fill; its size follows the setting (ADR 0023)."""
import mmap

from portfolio_state.daemon.cowreserve import CowReserve, reserve_bytes


def test_fill_release_fill():
    r = CowReserve(8 << 20)
    try:
        assert not r.held and r.resident_bytes() == 0
        assert r.fill() and r.held and r.resident_bytes() == 8 << 20
        assert r.fill()  # a second fill is a no-op
        r.release()
        assert not r.held and r.resident_bytes() == 0
        r.release()  # and so is a second release
        assert r.fill() and r.resident_bytes() == 8 << 20
    finally:
        r.close()
    assert not r.held and r.resident_bytes() == 0


def test_an_empty_reserve_does_nothing():
    r = CowReserve(0)
    assert not r.fill() and not r.held
    r.release()
    r.close()


def test_size_from_the_setting():
    page = mmap.PAGESIZE
    assert reserve_bytes(0, 10 << 30) == 0
    assert reserve_bytes(64, 10 << 30) == 64 << 20
    assert reserve_bytes(-1, 8 << 20) == 1 << 20
    assert reserve_bytes(-1, 8 * page + 8) % page == 0 and reserve_bytes(-1, 8 * page + 8) == 2 * page
