"""EventBuilder: capped flushes take portfolios round robin, never starve one, cost what they report."""
import msgspec
import numpy as np

from portfolio_state.daemon.events import EventBuilder
from portfolio_state.kernels import TradeKind
from portfolio_state.transport import messages as m
from tests.bookfactory import make_book, trade

DEC = msgspec.msgpack.Decoder(m.PortfolioStateUpdatedEvent)


def buy(book, eb, p, position="a", instrument="AAPL", qty=1.0):
    out, _ = trade(book, f"P{p}", position, instrument, TradeKind.BUY, qty, price=190.0)
    assert out["reason"] == 0
    s = book.slot(book.portfolio_ids.get(f"P{p}"), position, book.instrument_ids.get(instrument))
    eb.note_trades(np.array([s]), np.array([True]))


def flush(eb, **kw):
    """{portfolio id: decoded event} of one flush."""
    events = eb.flush(kw.get("max_events", 0), kw.get("max_positions", 0))
    return {topic.decode(): DEC.decode(body) for topic, body in events}


def test_capped_flushes_go_round_robin_and_no_portfolio_waits_longer_than_its_turn():
    book = make_book(n_portfolios=12)
    eb = EventBuilder(book)
    for p in range(12):
        buy(book, eb, p)
    assert set(flush(eb, max_events=5)) == {f"P{p}" for p in range(5)} and eb.backlog == 7
    for p in range(5):  # the first five change again: they wait their turn behind the seven
        buy(book, eb, p)
    assert set(flush(eb, max_events=5)) == {f"P{p}" for p in range(5, 10)}
    assert set(flush(eb, max_events=5)) == {"P10", "P11", "P0", "P1", "P2"}
    assert set(flush(eb, max_events=5)) == {"P3", "P4"} and eb.backlog == 0
    assert flush(eb, max_events=5) == {}
    # under constant change every portfolio is reported once every ceil(12 / 5) = 3 flushes
    last = {}
    for f in range(12):
        for p in range(12):
            buy(book, eb, p)
        for pid in flush(eb, max_events=5):
            assert f - last.get(pid, -1) <= 3
            last[pid] = f
    assert len(last) == 12


def test_a_position_cap_bounds_each_flush_but_the_first_portfolio_always_goes():
    book = make_book(n_portfolios=3)
    eb = EventBuilder(book)
    for pos in ("a", "b", "c"):
        buy(book, eb, 0, pos)
        buy(book, eb, 1, pos)
    buy(book, eb, 2)
    first = flush(eb, max_positions=4)
    assert list(first) == ["P0"] and eb.backlog == 2
    assert sorted(c.position_id for c in first["P0"].position_changes) == ["a", "b", "c"]
    second = flush(eb, max_positions=4)
    assert set(second) == {"P1", "P2"} and eb.backlog == 0
    assert len(second["P1"].position_changes) == 3 and len(second["P2"].position_changes) == 1
    for pos in ("a", "b", "c"):  # more than the cap in one portfolio: reported alone, whole
        buy(book, eb, 1, pos)
    assert [len(e.position_changes) for e in flush(eb, max_positions=2).values()] == [3]
    assert flush(eb, max_positions=2) == {}


def test_marks_are_consumed_once_and_sequences_count_per_portfolio():
    book = make_book(n_portfolios=2)
    eb = EventBuilder(book)
    buy(book, eb, 0, qty=2.0)
    buy(book, eb, 0, qty=3.0)
    ev = flush(eb)["P0"]
    assert ev.sequence == 1 and len(ev.position_changes) == 1
    c = ev.position_changes[0]
    assert (c.old_quantity, c.new_quantity) == (0.0, 5.0)
    assert flush(eb) == {}
    buy(book, eb, 0)
    ev = flush(eb)["P0"]
    assert ev.sequence == 2 and ev.position_changes[0].old_quantity == 5.0
