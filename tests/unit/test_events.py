"""EventBuilder: capped flushes take portfolios round robin, never starve one, cost what they report;
every event is the book at its flush, in the bytes msgspec writes."""
import time

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


def test_exposure_changes_equal_the_book_and_the_previous_event():
    """Every exposure change of every event, against the book read directly at the flush: new =
    exposure / total_value, old = the new of the previous event that carried it (0 before any),
    limit and utilization as set (NaN without a limit), and every category of every traded
    instrument reported. Limits of every kind, a per-instrument one, and a portfolio with no
    value (total_value 0: percentages 0)."""
    from portfolio_state.kernels import EXPOSURE_TYPE_NAMES

    book = make_book(n_portfolios=4)
    book.set_limit("P0", "SECTOR", "Technology", 0.4)
    book.set_limit("P0", "INSTRUMENT", "AAPL", 0.05)
    book.set_limit("P2", "CURRENCY", "EUR", 0.5)
    book.set_limit("P2", "GEOGRAPHIC", "DE", 0.3)
    book.set_limit("P0", "ASSET_CLASS", "EQUITY", 0.9)
    book.a.portfolios["inst_limit"][book.portfolio_ids.get("P2")] = 0.2
    book.upsert_portfolio("Z", "USD", "LONG_SHORT")  # no cash: buying at the mark leaves total_value at 0
    a = book.a
    eb = EventBuilder(book)
    rng = np.random.default_rng(11)
    zero_seen = 0
    instruments = ["AAPL", "MSFT", "XOM", "SAP", "7203", "ESZ6"]
    axes = {"SECTOR": (book.sector_ids, a.exp_sector, a.lim_sector),
            "GEOGRAPHIC": (book.country_ids, a.exp_country, a.lim_country),
            "CURRENCY": (book.currency_ids, a.exp_currency, a.lim_currency),
            "ASSET_CLASS": (book.asset_class_ids, a.exp_asset, a.lim_asset)}
    published = {}
    checked = 0
    for _ in range(25):
        traded = set()
        for _ in range(int(rng.integers(1, 6))):
            p = int(rng.integers(0, 4))
            k = instruments[int(rng.integers(0, len(instruments)))]
            kind = TradeKind.BUY if p == 3 or rng.random() < 0.6 else TradeKind.SELL
            out, _ = trade(book, f"P{p}", f"{k}-pos", k, kind, float(rng.integers(1, 20)), price=100.0)
            if out["reason"] == 0:
                s = book.slot(p, f"{k}-pos", book.instrument_ids.get(k))
                eb.note_trades(np.array([s]), np.array([True]))
                traded.add((f"P{p}", k))
        out, _ = trade(book, "Z", "z", "AAPL", TradeKind.BUY, 1.0, price=190.0)
        assert out["reason"] == 0
        eb.note_trades(np.array([book.slot(book.portfolio_ids.get("Z"), "z", book.instrument_ids.get("AAPL"))]),
                       np.array([True]))
        traded.add(("Z", "AAPL"))
        events = flush(eb)
        for pid, ev in events.items():
            p = book.portfolio_ids.get(pid)
            pf = a.portfolios[p]
            total = float(pf["cash_base"] + pf["long_mv"] + pf["short_mv"])
            seen = set()
            for c in ev.exposure_changes:
                if c.exposure_type == "INSTRUMENT":
                    k = book.instrument_ids.get(c.category)
                    value = a.positions["inst_exp"][book.heads[(p, k)]]
                    limit = book.instrument_limits.get((p, k), pf["inst_limit"])
                else:
                    ids, vals, lims = axes[c.exposure_type]
                    value, limit = vals[p, ids.get(c.category)], lims[p, ids.get(c.category)]
                new = value / total if total else 0.0
                assert c.new_percentage == new
                assert c.old_percentage == published.get((pid, c.exposure_type, c.category), 0.0)
                assert c.change == c.new_percentage - c.old_percentage
                assert c.limit_percentage == limit or (np.isnan(limit) and np.isnan(c.limit_percentage))
                if limit > 0:
                    assert c.utilization == abs(new) / limit
                else:
                    assert np.isnan(c.utilization)
                published[(pid, c.exposure_type, c.category)] = c.new_percentage
                seen.add((c.exposure_type, c.category))
                checked += 1
            zero_seen += total == 0
            for tpid, k in traded:
                if tpid == pid:
                    assert ("INSTRUMENT", k) in seen and {t for t, _ in seen} == set(EXPOSURE_TYPE_NAMES)
    assert checked > 200 and zero_seen == 25


def test_every_event_is_the_book_at_the_flush_in_the_bytes_msgspec_writes():
    """Each event, written by the compiled encoder, against plain-Python formulas over the book
    read at the flush: event id and sequence, timestamp, the portfolio state (leverage inf when
    total_value <= 0, last_updated to the microsecond), and every position change (old quantity
    the previous event's, change type, weight 0 when total_value is 0), slots ascending. And the
    bytes are exactly what msgspec writes for the decoded Structs: field order, the smallest
    integer, string and array forms (UTF-8 ids, names past 31 and 255 bytes, more than 15 changes
    in an event), float64 everywhere. The first flush outgrows a tiny buffer."""
    from portfolio_state.kernels.enums import QTY_SCALE
    from portfolio_state.kernels.views import leverage
    from portfolio_state.persistence.changes import change_type

    book = make_book(n_portfolios=3)
    long_pid = "ü" * 20 + "-a-portfolio-id-past-31-bytes"
    book.upsert_portfolio(long_pid, "EUR", "LONG_SHORT")  # no cash: its total_value goes negative on fees
    odd = "Ω" * 20  # 40 bytes
    book.upsert_instrument(odd, "USD", "€" * 100, "CH", "BOND")
    book.apply_prices(np.array([book.instrument_ids.get(odd)], np.int32), np.array([99.5]), np.array([1], np.int64))
    book.set_limit("P0", "SECTOR", "€" * 100, 0.25)
    a = book.a
    eb = EventBuilder(book)
    eb._buf = np.empty(8, np.uint8)
    rng = np.random.default_rng(17)
    instruments = ["AAPL", "MSFT", "XOM", "SAP", "7203", "ESZ6", odd]
    pids = ["P0", "P1", "P2", long_pid]
    published, seqs, checked = {}, {}, 0
    seen = {"types": set(), "over 15": False, "inf": False, "long name": False}
    t0 = 1_764_000_000_000_000_000
    def deal(pid, position, k, kind, qty, price, fee=0.0):
        out, _ = trade(book, pid, position, k, kind, qty, price=price, fee=fee,
                       ts=t0 + rnd * 10**9 + int(rng.integers(0, 10**9)))
        if out["reason"] == 0:
            p = book.portfolio_ids.get(pid)
            s = book.slot(p, position, book.instrument_ids.get(k))
            eb.note_trades(np.array([s]), np.array([True]))
            marked.setdefault(p, set()).add(s)

    for rnd in range(30):
        marked = {}
        for _ in range(int(rng.integers(1, 40))):
            k = instruments[int(rng.integers(0, len(instruments)))]
            deal(pids[int(rng.integers(0, 4))],
                 f"{k}-{int(rng.integers(0, 6))}-é" if rng.random() < 0.5 else f"pos-{int(rng.integers(0, 30))}", k,
                 TradeKind.BUY if rng.random() < 0.55 else TradeKind.SELL, float(rng.integers(1, 50)) / 4,
                 float(rng.integers(50, 300)), float(rng.integers(0, 3)))
        if rnd in (5, 6):  # twenty positions opened in one event, then closed in the next
            for i in range(20):
                deal("P1", f"bulk-{i}", "XOM", TradeKind.BUY if rnd == 5 else TradeKind.SELL, 3.0, 100.0)
        if rnd == 7:  # bought and sold back between two events: no quantity change
            deal("P0", "flip", "MSFT", TradeKind.BUY, 2.0, 400.0)
            deal("P0", "flip", "MSFT", TradeKind.SELL, 2.0, 400.0)
        if rnd % 3 == 0:
            book.apply_prices(np.arange(len(book.instrument_ids), dtype=np.int32),
                              rng.uniform(50, 300, len(book.instrument_ids)), np.full(len(book.instrument_ids), 2, np.int64))
        before = np.datetime_as_string(np.datetime64(time.time_ns(), "ns"), unit="ms") + "Z"
        events = eb.flush()
        after = np.datetime_as_string(np.datetime64(time.time_ns(), "ns"), unit="ms") + "Z"
        assert {book.portfolio_ids.get(t.decode()) for t, _ in events} >= set(marked)
        for topic, body in events:
            ev = DEC.decode(body)
            assert msgspec.msgpack.encode(ev) == body
            p = book.portfolio_ids.get(topic.decode())
            pf = a.portfolios[p]
            seqs[p] = seqs.get(p, 0) + 1
            assert (ev.sequence, ev.event_id) == (seqs[p], f"{eb.run}-{p}-{seqs[p]}")
            assert before <= ev.timestamp <= after and len(ev.timestamp) == len(before)
            cash, lmv, smv = int(pf["cash_base"]), int(pf["long_mv"]), int(pf["short_mv"])
            tv = cash + lmv + smv
            st = ev.portfolio_state
            updated = int(pf["updated_ns"])
            assert st == m.PortfolioStatePayload(
                topic.decode(), tv / 100, cash / 100, (lmv + smv) / 100, leverage(lmv - smv, tv), int(pf["position_count"]),
                np.datetime_as_string(np.datetime64(updated, "ns"), unit="us") + "Z" if updated else None)
            want = []
            for s in sorted(marked.get(p, ())):
                old, new, mv = published.get(s, 0), int(a.positions["qty"][s]), int(a.positions["mv"][s])
                want.append(m.PositionChangePayload(
                    book.slot_ids[s], book.instrument_ids.ids[int(a.positions["instrument"][s])], old / QTY_SCALE,
                    new / QTY_SCALE, (new - old) / QTY_SCALE, mv / 100, mv / float(tv) if tv else 0.0,
                    change_type(old, new)))
                published[s] = new
            assert ev.position_changes == want
            checked += len(want)
            seen["types"] |= {c.change_type for c in want}
            seen["over 15"] |= len(want) > 15
            seen["inf"] |= st.leverage_ratio == float("inf")
            seen["long name"] |= any(c.category == "€" * 100 for c in ev.exposure_changes)
    assert checked > 300 and len(eb._buf) > 8
    assert seen == {"types": {"OPEN", "INCREASE", "DECREASE", "CLOSE", "REVERSE", "STATUS"}, "over 15": True,
                    "inf": True, "long name": True}


def test_a_flush_that_outgrows_the_buffer_more_than_once_still_writes_every_event():
    """Two small events, then one of 200 positions, into an 8-byte buffer: the first estimate of the
    size needed covers the small ones only, so the buffer grows again; every event decodes whole."""
    book = make_book(n_portfolios=3)
    eb = EventBuilder(book)
    eb._buf = np.empty(8, np.uint8)
    buy(book, eb, 0)
    buy(book, eb, 1)
    for i in range(200):
        buy(book, eb, 2, f"pos-{i}")
    events = eb.flush()
    assert [t for t, _ in events] == [b"P0", b"P1", b"P2"]
    decoded = [DEC.decode(body) for _, body in events]
    assert [len(e.position_changes) for e in decoded] == [1, 1, 200]
    assert all(msgspec.msgpack.encode(e) == body for e, (_, body) in zip(decoded, events))


def test_prepare_encodes_every_id_the_book_holds_before_the_first_flush():
    book = make_book(n_portfolios=3)
    eb = EventBuilder(book)
    buy(book, eb, 0)
    eb.prepare()
    names = (book.portfolio_ids.ids, book.slot_ids, book.instrument_ids.ids, book.sector_ids.ids,
             book.country_ids.ids, book.currency_ids.ids, book.asset_class_ids.ids)
    assert [p.n for p in eb._pools] == [len(x) for x in names] and all(p.n for p in eb._pools)
    assert set(flush(eb)) == {"P0"}
