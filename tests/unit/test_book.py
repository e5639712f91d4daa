"""Book behaviour by example: position statuses, money arithmetic by hand, FX,
reference-data changes, limits, growth, and the audit invariant after each."""
import weakref

import numpy as np

from portfolio_state.daemon import queries as q
from portfolio_state.daemon.book import Book, Capacity
from portfolio_state.kernels import CashFlowType, PositionStatus, Reason, TradeKind
from tests.bookfactory import I8, I32, I64, make_book, trade


def status(book, pid, pos):
    s = book.slot_index[(book.portfolio_ids.get(pid), pos)]
    return int(book.a.positions[s]["status"])


def set_status(book, pid, pos, to):
    p = book.portfolio_ids.get(pid)
    s = book.slot_index.get((p, pos))
    if s is None:
        s = book.slot(p, pos, book.instrument_ids.get("AAPL"))
    return int(book.set_status(np.array([p], I32), np.array([s], I32), np.array([to], I8), np.array([9], I64))[0])


def test_every_status_is_reachable_with_its_meaning():
    b = make_book()
    assert set_status(b, "P0", "x", PositionStatus.PENDING) == Reason.OK
    assert status(b, "P0", "x") == PositionStatus.PENDING
    assert [p["status"] for p in q.positions(b, "P0")] == ["PENDING"]
    assert q.state(b, "P0")["position_count"] == 0
    trade(b, "P0", "x", "AAPL", TradeKind.BUY, 10, 190.0)
    assert status(b, "P0", "x") == PositionStatus.ACTIVE
    assert q.state(b, "P0")["position_count"] == 1
    trade(b, "P0", "x", "AAPL", TradeKind.SELL, 10, 191.0)
    assert status(b, "P0", "x") == PositionStatus.CLOSED
    assert q.positions(b, "P0") == [] and len(q.positions(b, "P0", include_closed=True)) == 1
    trade(b, "P0", "x", "AAPL", TradeKind.BUY, 5, 190.0)
    assert status(b, "P0", "x") == PositionStatus.ACTIVE
    assert set_status(b, "P0", "x", PositionStatus.SUSPENDED) == Reason.OK
    out, _ = trade(b, "P0", "x", "AAPL", TradeKind.SELL, 5, 190.0)
    assert out["reason"] == Reason.SUSPENDED
    b.apply_prices(np.array([0], I32), np.array([200.0]), np.array([11], I64))  # still revalued
    assert q.positions(b, "P0")[0]["market_value"] == 1000.0
    assert set_status(b, "P0", "x", PositionStatus.ACTIVE) == Reason.OK
    assert status(b, "P0", "x") == PositionStatus.ACTIVE
    assert set_status(b, "P0", "y", PositionStatus.PENDING) == Reason.OK
    assert set_status(b, "P0", "y", PositionStatus.CLOSED) == Reason.OK  # announcement withdrawn
    assert status(b, "P0", "y") == PositionStatus.CLOSED
    assert b.audit() == []


def test_rejected_first_trade_leaves_slot_invisible():
    b = make_book()
    out, _ = trade(b, "P0", "ghost", "AAPL", TradeKind.BUY, 0, 190.0)
    assert out["reason"] == Reason.BAD_QUANTITY
    assert status(b, "P0", "ghost") == PositionStatus.FREE
    assert q.positions(b, "P0", include_closed=True) == []


def test_long_round_trip_by_hand():
    b = make_book()
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.BUY, 100, 190.10, fee=1.25)
    assert (out["cost"], out["realized"], out["cash_impact"]) == (1_901_000, -125, -1_901_125)
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.SELL, 30, 200.0)
    # cost removed pro rata: 1,901,000 * 30/100 = 570,300; proceeds 600,000
    assert (out["cost"], out["realized"], out["qty"]) == (1_330_700, 29_700, 70_000_000)
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.SELL, 100, 210.0)  # through zero: short 30 @ 210
    assert out["qty"] == -30_000_000
    assert out["realized"] == 70 * 21_000 - 1_330_700
    assert out["cost"] == -630_000
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.COVER, 30, 200.0)
    assert (out["qty"], out["cost"], out["realized"]) == (0, 0, 30_000)
    cash = q.cash(b, "P0")["USD"]
    # realized: 297.00 + (1,470,000 - 1,330,700)/100 + 300.00 - 1.25 fee
    assert cash == 1_000_000 + 297.0 + 1_393.0 + 300.0 - 1.25
    assert q.state(b, "P0")["total_value"] == cash
    assert b.audit() == []


def test_adjust_transfer_split():
    b = make_book()
    trade(b, "P0", "a", "AAPL", TradeKind.BUY, 100, 150.0)
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.SPLIT, 4, 0.0)
    assert (out["qty"], out["cost"]) == (400_000_000, 1_500_000)
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.TRANSFER_OUT, 100, 0.0)
    assert (out["qty"], out["cost"], out["realized"], out["cash_impact"]) == (300_000_000, 1_125_000, 0, 0)
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.TRANSFER_IN, 100, 40.0)
    assert (out["qty"], out["cost"], out["cash_impact"]) == (400_000_000, 1_525_000, 0)
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.ADJUST, 2.5, 0.0)
    assert (out["qty"], out["cost"], out["cash_impact"]) == (402_500_000, 1_525_000, 0)
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.ADJUST, -402.5, 0.0)
    assert (out["qty"], out["cost"], out["realized"]) == (0, 0, -1_525_000)
    assert b.audit() == []


def test_future_multiplier_and_margin():
    b = make_book()
    out, _ = trade(b, "P0", "f", "ESZ6", TradeKind.BUY, 2, 6000.25)
    assert out["cost"] == 2 * 6000.25 * 50 * 100
    b.apply_prices(np.array([b.instrument_ids.get("ESZ6")], I32), np.array([6010.0]), np.array([12], I64))
    pos = q.positions(b, "P0")[0]
    assert pos["market_value"] == 601_000.0 and pos["unrealized_pnl"] == 975.0
    m = q.margin(b, "P0")
    assert m["initial_margin"] == 60_100.0 and m["maintenance_margin"] == 48_080.0
    # long-only portfolios carry no margin; buying power is available cash
    trade(b, "P1", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    m1 = q.margin(b, "P1")
    assert m1["initial_margin"] == 0 and m1["buying_power"] == q.state(b, "P1")["available_cash"] == 981_000.0


def test_reg_t_short_and_buying_power():
    b = make_book()
    trade(b, "P0", "s", "XOM", TradeKind.SHORT, 1000, 110.0)
    st, m = q.state(b, "P0"), q.margin(b, "P0")
    assert st["invested_value"] == -110_000 and st["total_value"] == 1_000_000
    assert st["leverage_ratio"] == 0.11
    assert m["initial_margin"] == 55_000 and m["maintenance_margin"] == 33_000
    assert m["excess_liquidity"] == 967_000 and m["buying_power"] == 2 * 945_000
    assert st["available_cash"] == 945_000


def test_eur_base_portfolio_and_fx_ticks():
    b = make_book()  # P2 is EUR based, 1,000,000 EUR deposited
    out, _ = trade(b, "P2", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    assert out["reason"] == Reason.OK
    st = q.state(b, "P2")
    # 19,000 USD = 19,000 / 1.1 EUR; the USD cash debit converts at the same ratio
    assert st["invested_value"] == round(1_900_000 / 1.1) / 100
    eur = b.currency("EUR")
    b.apply_fx(np.array([eur], I32), np.array([1.2]), np.array([13], I64))  # EUR strengthens
    st = q.state(b, "P2")
    assert st["invested_value"] == round(1_900_000 / 1.2) / 100
    assert q.cash(b, "P2") == {"EUR": 1_000_000.0, "USD": -19_000.0}
    assert st["cash_balance"] == 1_000_000 + round(-1_900_000 / 1.2) / 100
    # a USD portfolio holding SAP moves with EUR too
    trade(b, "P0", "s", "SAP", TradeKind.BUY, 10, 120.0)
    b.apply_fx(np.array([eur], I32), np.array([1.25]), np.array([14], I64))
    assert q.positions(b, "P0")[0]["market_value"] == 1500.0
    assert b.audit() == []


def test_exposures_limits_and_changes():
    b = make_book()
    b.set_limit("P0", "SECTOR", "Technology", 0.10)
    b.upsert_portfolio("P0", "USD", "LONG_SHORT", instrument_limit=0.05)
    b.set_limit("P0", "INSTRUMENT", "MSFT", 0.02)
    out, ex = trade(b, "P0", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    assert ex[1, 0] == 0 and abs(ex[1, 1] - 0.019) < 1e-12  # SECTOR Technology 0 -> 1.9%
    assert ex[3, 0] == 1.0 and ex[3, 1] == 1.0  # CURRENCY USD stays 100% (cash became stock)
    trade(b, "P0", "m", "MSFT", TradeKind.BUY, 100, 410.0)
    e = q.exposures(b, "P0")
    tech = e["SECTOR"][0]
    assert tech["category"] == "Technology" and tech["limit_percentage"] == 0.10
    assert abs(tech["utilization"] - 0.6 / 1.0) < 1e-12
    by_inst = {x["category"]: x for x in e["INSTRUMENT"]}
    assert by_inst["AAPL"]["limit_percentage"] == 0.05 and by_inst["MSFT"]["limit_percentage"] == 0.02
    assert abs(by_inst["MSFT"]["utilization"] - 0.041 / 0.02) < 1e-12


def test_two_positions_in_one_instrument_share_instrument_exposure():
    b = make_book()
    trade(b, "P0", "lot1", "AAPL", TradeKind.BUY, 100, 190.0)
    trade(b, "P0", "lot2", "AAPL", TradeKind.SHORT, 30, 190.0)
    e = q.exposures(b, "P0")["INSTRUMENT"]
    assert [(x["category"], x["exposure_value"]) for x in e] == [("AAPL", 70 * 190.0)]
    assert b.audit() == []


def test_reference_data_change_moves_exposure_and_margin():
    b = make_book()
    trade(b, "P0", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    b.upsert_instrument("AAPL", "USD", "Hardware", "US", "EQUITY", margin=(0.3, 0.2, 0.3, 0.2))
    e = {x["category"]: x["exposure_value"] for x in q.exposures(b, "P0")["SECTOR"]}
    assert e == {"Hardware": 19_000.0}
    assert q.margin(b, "P0")["initial_margin"] == 5_700.0
    b.upsert_portfolio("P0", "USD", "LONG_ONLY")
    assert q.margin(b, "P0")["initial_margin"] == 0.0
    b.upsert_portfolio("P0", "USD", "LONG_SHORT")
    assert q.margin(b, "P0")["initial_margin"] == 5_700.0
    assert b.audit() == []


def test_capacity_grows_without_losing_anything():
    b = Book(Capacity(portfolios=2, slots=4, instruments=2, currencies=2, sectors=2, countries=2, asset_classes=2))
    for c in ("EUR", "GBP", "JPY", "CHF"):
        k = b.currency(c)
        b.apply_fx(np.array([k], I32), np.array([1.0 + k / 10]), np.array([1], I64))
    for i in range(40):
        b.upsert_instrument(f"I{i}", ("USD", "EUR", "GBP")[i % 3], f"S{i % 7}", f"C{i % 5}", f"A{i % 3}")
    for p in range(9):
        b.upsert_portfolio(f"P{p}", ("USD", "EUR")[p % 2])
        b.apply_cash_flows(np.array([p], I32), np.array([p % 3], I32), np.array([CashFlowType.DEPOSIT], I8),
                           np.array([1e6]), np.array([1], I64))
    b.apply_prices(np.arange(40, dtype=I32), np.linspace(10, 400, 40), np.ones(40, I64))
    for n in range(300):
        p = n % 9
        out, _ = trade(b, f"P{p}", f"pos{n % 120}", f"I{n % 40}", TradeKind.BUY, 1 + n % 7, 10.0 + n)
        assert out["reason"] in (Reason.OK, ) or n % 120 != n, out
    cap = b.capacity
    assert cap["portfolios"] >= 9 and cap["slots"] >= 120 and cap["instruments"] >= 40 and cap["sectors"] >= 7
    assert b.audit() == []
    assert sum(len(q.positions(b, f"P{p}")) for p in range(9)) == len(b.slot_ids)


def test_export_into_reused_buffers_skips_unchanged_slot_lists_and_copies_changed_ones():
    """A checkpoint's copy reuses the last one's buffers; the slot lists are copied again only
    when a slot was allocated since (else the buffers already hold them)."""
    from portfolio_state.daemon.book import SLOT_LIST_ARRAYS

    book = make_book()
    trade(book, "P0", "a", "AAPL", TradeKind.BUY, 10, 190.0)
    first, _ = book.export_state()
    marker = first["inst_pool"][-1] = -12345  # a value the book never holds there
    trade(book, "P0", "a", "AAPL", TradeKind.BUY, 5, 191.0)  # no new slot
    again, _ = book.export_state(first)
    assert again["inst_pool"] is first["inst_pool"] and again["inst_pool"][-1] == marker  # not copied
    assert again["positions"].tobytes() == book.a.positions.tobytes()
    trade(book, "P1", "b", "MSFT", TradeKind.BUY, 5, 300.0)  # a new slot: the lists change
    third, _ = book.export_state(again)
    for k in SLOT_LIST_ARRAYS:
        assert third[k].tobytes() == getattr(book.a, k).tobytes(), k
    other, _ = book.export_state({k: v.copy() for k, v in third.items()})  # buffers it did not fill
    for k in SLOT_LIST_ARRAYS:
        assert other[k].tobytes() == getattr(book.a, k).tobytes(), k
    held = weakref.ref(other["inst_pool"])
    del other
    assert held() is None  # the book remembers the buffers it filled without keeping them alive


def test_slots_in_bulk_give_what_one_call_per_row_gives():
    # new, repeated, existing, mismatched and undefined-instrument rows: the same slots, reasons,
    # positions array, id map and allocation log as Book.slot row by row
    rng = np.random.default_rng(4)
    for trial in range(20):
        one, bulk = make_book(), make_book()
        for b in (one, bulk):
            b.slot(0, "old", 0)
            b.alloc_log = []
        n_ins = len(one.instrument_ids)
        rows = [(int(rng.integers(0, 3)), f"x{int(rng.integers(0, 12))}", int(rng.integers(-1, n_ins + 1)))
                for _ in range(int(rng.integers(0, 30)))] + [(0, "old", int(rng.integers(0, 2)))]
        rows = [r for r in rows if r[2] >= 0]  # the engine never asks for a negative instrument
        want = [one.slot(*r) for r in rows]
        assert bulk.slots(rows) == want, trial
        assert np.array_equal(bulk.a.positions.view(np.uint8), one.a.positions.view(np.uint8))
        assert dict(bulk.slot_index.items()) == dict(one.slot_index.items()) and bulk.slot_ids == one.slot_ids
        assert bulk.alloc_log == one.alloc_log


def test_a_checkpoint_that_lists_its_heads_restores_them():
    """Checkpoints written before the head map was derived carry it as [[portfolio, instrument, slot]]."""
    b = make_book()
    for pos, inst in (("a", "AAPL"), ("b", "AAPL"), ("c", "MSFT")):
        trade(b, "P0", pos, inst, TradeKind.BUY, 1, 100.0)
    arrays, meta = b.export_state()
    want = dict(b.heads.items())
    assert len(want) == 2
    for listed in ([[p, k, s] for (p, k), s in want.items()], []):
        again = Book.from_state(arrays, {**meta, "heads": listed})
        assert dict(again.heads.items()) == (want if listed else {})
