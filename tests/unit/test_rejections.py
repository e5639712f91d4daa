"""Every reason code: the row is rejected with it, state is byte-for-byte untouched,
and the rest of the batch still applies."""
import math

import numpy as np
import pytest

from portfolio_state.daemon.book import Capacity
from portfolio_state.kernels import CashFlowType, PositionStatus, Reason, TradeKind
from tests.bookfactory import F64, I8, I32, I64, make_book, trade


def state_bytes(book):
    return {k: v.tobytes() for k, v in book.a._asdict().items()}


def assert_untouched(before, book):
    after = state_bytes(book)
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [], f"rejected row changed {changed}"


@pytest.fixture
def book():
    b = make_book()
    out, _ = trade(b, "P0", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    assert out["reason"] == Reason.OK
    out, _ = trade(b, "P1", "a", "AAPL", TradeKind.BUY, 100, 190.0)
    assert out["reason"] == Reason.OK
    return b


def reject_trade(book, kind, qty, price, fee=0.0, portfolio="P0", position="a", instrument="AAPL", slot=None):
    p = book.portfolio_ids.get(portfolio)
    s = slot if slot is not None else book.slot(p, position, book.instrument_ids.get(instrument))
    before = state_bytes(book)
    out, _ = book.apply_trades(np.array([kind], I8), np.array([p], I32), np.array([s], I32),
                               np.array([qty], F64), np.array([price], F64), np.array([fee], F64),
                               np.array([20], I64))
    assert_untouched(before, book)
    return Reason._fields[out[0]["reason"]]


@pytest.mark.parametrize("qty", [0.0, -5.0, math.nan, math.inf, -math.inf, 1e10])
def test_bad_quantity(book, qty):
    assert reject_trade(book, TradeKind.BUY, qty, 190.0) == "BAD_QUANTITY"


@pytest.mark.parametrize("price", [0.0, -1.0, math.nan, math.inf, 1e9])
def test_bad_price(book, price):
    assert reject_trade(book, TradeKind.BUY, 10, price) == "BAD_PRICE"


@pytest.mark.parametrize("fee", [-0.01, math.nan, math.inf])
def test_bad_fee(book, fee):
    assert reject_trade(book, TradeKind.BUY, 10, 190.0, fee=fee) == "BAD_FEE"


@pytest.mark.parametrize("ratio", [0.0, -2.0, math.nan])
def test_bad_split_ratio(book, ratio):
    assert reject_trade(book, TradeKind.SPLIT, ratio, 0.0) == "BAD_RATIO"


def test_bad_kind(book):
    assert reject_trade(book, 9, 10, 190.0) == "BAD_KIND"
    assert reject_trade(book, -1, 10, 190.0) == "BAD_KIND"


def test_unknown_portfolio(book):
    assert reject_trade(book, TradeKind.BUY, 10, 190.0, slot=0, portfolio="nope") == "UNKNOWN_PORTFOLIO"


def test_unknown_position_out_of_range_or_other_portfolio(book):
    assert reject_trade(book, TradeKind.BUY, 10, 190.0, slot=10**6) == "UNKNOWN_POSITION"
    other = book.slot_index[(1, "a")]
    assert reject_trade(book, TradeKind.BUY, 10, 190.0, slot=other) == "UNKNOWN_POSITION"


def test_unknown_and_mismatched_instrument_at_slot_lookup(book):
    assert book.slot(0, "new", book.instrument_ids.get("nope")) == -Reason.UNKNOWN_INSTRUMENT
    assert book.slot(0, "a", book.instrument_ids.get("MSFT")) == -Reason.INSTRUMENT_MISMATCH


def test_no_fx_rate(book):
    book.upsert_instrument("VOD", "GBP", "Telecom", "GB", "EQUITY")
    assert reject_trade(book, TradeKind.BUY, 10, 1.5, instrument="VOD", position="v") == "NO_FX_RATE"
    before = state_bytes(book)
    out = book.apply_cash_flows(np.array([0], I32), np.array([book.currency("GBP")], I32),
                                np.array([CashFlowType.DEPOSIT], I8), np.array([100.0]), np.array([1], I64))
    assert Reason._fields[out[0]["reason"]] == "NO_FX_RATE"
    assert_untouched(before, book)


def test_no_price_for_kinds_that_mark_without_a_trade_price(book):
    book.upsert_instrument("NEW", "USD", "Technology", "US", "EQUITY")
    assert reject_trade(book, TradeKind.ADJUST, 10, 0.0, instrument="NEW", position="n") == "NO_PRICE"


def test_overflow(book):
    assert reject_trade(book, TradeKind.BUY, 900_000_000, 99_999_999.0) == "OVERFLOW"
    out, _ = trade(book, "P0", "big", "MSFT", TradeKind.BUY, 900_000_000, 1.0)
    assert out["reason"] == Reason.OK
    assert reject_trade(book, TradeKind.BUY, 200_000_000, 1.0, position="big", instrument="MSFT") == "OVERFLOW"


def test_suspended(book):
    p, s = 0, book.slot_index[(0, "a")]
    assert book.set_status(np.array([p], I32), np.array([s], I32), np.array([PositionStatus.SUSPENDED], I8),
                           np.array([3], I64))[0] == Reason.OK
    assert reject_trade(book, TradeKind.SELL, 10, 190.0) == "SUSPENDED"


def test_long_only(book):
    assert reject_trade(book, TradeKind.SHORT, 10, 190.0, portfolio="P1") == "LONG_ONLY_SHORT"
    assert reject_trade(book, TradeKind.SELL, 101, 190.0, portfolio="P1") == "LONG_ONLY_OVERSELL"
    assert reject_trade(book, TradeKind.ADJUST, -101, 0.0, portfolio="P1") == "CROSSES_ZERO"
    assert reject_trade(book, TradeKind.ADJUST, -5, 0.0, portfolio="P1", position="z", instrument="MSFT") == "LONG_ONLY_SHORT"


def test_crosses_zero(book):
    assert reject_trade(book, TradeKind.ADJUST, -150, 0.0) == "CROSSES_ZERO"
    assert reject_trade(book, TradeKind.TRANSFER_OUT, 101, 0.0) == "CROSSES_ZERO"
    assert reject_trade(book, TradeKind.TRANSFER_OUT, 1, 0.0, position="flat", instrument="MSFT") == "CROSSES_ZERO"


def test_cash_flow_rejections(book):
    for kind, amount, p, ccy, want in [
        (CashFlowType.DEPOSIT, 0.0, 0, 0, "BAD_AMOUNT"),
        (CashFlowType.DEPOSIT, -5.0, 0, 0, "BAD_AMOUNT"),
        (CashFlowType.DEPOSIT, math.nan, 0, 0, "BAD_AMOUNT"),
        (CashFlowType.DEPOSIT, 0.004, 0, 0, "BAD_AMOUNT"),  # rounds to 0 cents
        (9, 5.0, 0, 0, "BAD_KIND"),
        (CashFlowType.DEPOSIT, 5.0, 77, 0, "UNKNOWN_PORTFOLIO"),
        (CashFlowType.DEPOSIT, 5.0, 0, 99, "NO_FX_RATE"),
        (CashFlowType.DEPOSIT, 1e16, 0, 0, "BAD_AMOUNT"),
    ]:
        before = state_bytes(book)
        out = book.apply_cash_flows(np.array([p], I32), np.array([ccy], I32), np.array([kind], I8),
                                    np.array([amount]), np.array([1], I64))
        assert Reason._fields[out[0]["reason"]] == want, (kind, amount, p, ccy)
        assert_untouched(before, book)


def test_tick_rejections(book):
    before = state_bytes(book)
    reason, n = book.apply_prices(np.array([99, 0, 0, 0], I32), np.array([10.0, math.nan, 0.0, -3.0]),
                                  np.ones(4, I64))
    assert [Reason._fields[r] for r in reason] == ["UNKNOWN_INSTRUMENT", "BAD_PRICE", "BAD_PRICE", "BAD_PRICE"]
    assert n == 0
    reason, n = book.apply_fx(np.array([0, 99, 1, 1], I32), np.array([1.1, 1.0, math.nan, -1.0]), np.ones(4, I64))
    assert all(Reason._fields[r] == "BAD_PRICE" for r in reason)  # pivot, unknown, NaN, negative
    assert_untouched(before, book)


def test_rejected_rows_do_not_stop_the_batch(book):
    p = 0
    s = book.slot_index[(0, "a")]
    out, _ = book.apply_trades(
        np.array([TradeKind.BUY, TradeKind.BUY, TradeKind.SELL], I8), np.array([p, p, p], I32),
        np.array([s, s, s], I32), np.array([10, math.nan, 5], F64), np.array([190.0, 190.0, 200.0], F64),
        np.zeros(3), np.array([30, 31, 32], I64))
    assert [Reason._fields[r] for r in out["reason"]] == ["OK", "BAD_QUANTITY", "OK"]
    assert book.a.positions[s]["qty"] == 105_000_000
    assert book.audit() == []


def test_bad_status_transitions(book):
    s = book.slot_index[(0, "a")]  # ACTIVE, 100 shares
    flat = book.slot(0, "flat", book.instrument_ids.get("MSFT"))  # FREE
    cases = [(s, PositionStatus.PENDING), (s, PositionStatus.CLOSED), (s, PositionStatus.ACTIVE),
             (flat, PositionStatus.ACTIVE), (flat, PositionStatus.SUSPENDED), (flat, PositionStatus.FREE), (s, 9)]
    for slot, to in cases:
        before = state_bytes(book)
        r = book.set_status(np.array([0], I32), np.array([slot], I32), np.array([to], I8), np.array([1], I64))
        assert Reason._fields[r[0]] == "BAD_STATUS", (slot, to)
        assert_untouched(before, book)
    r = book.set_status(np.array([5, 0], I32), np.array([s, 10**6], I32), np.array([1, 1], I8), np.ones(2, I64))
    assert [Reason._fields[x] for x in r] == ["UNKNOWN_PORTFOLIO", "UNKNOWN_POSITION"]


def test_book_level_errors():
    from portfolio_state.daemon.book import BookError

    b = make_book(Capacity())
    for call, code in [
        (lambda: b.currency("usd"), "BAD_CURRENCY"),
        (lambda: b.upsert_portfolio("", "USD"), "BAD_PORTFOLIO_ID"),
        (lambda: b.upsert_instrument("X" * 21), "BAD_INSTRUMENT_ID"),
        (lambda: b.upsert_instrument("X", multiplier=0), "BAD_MULTIPLIER"),
        (lambda: b.upsert_instrument("X", margin=(0.5, 0.2)), "BAD_MARGIN"),
        (lambda: b.upsert_instrument("X", sector=""), "BAD_CATEGORY"),
        (lambda: b.set_limit("nope", "SECTOR", "Technology", 0.3), "UNKNOWN_PORTFOLIO"),
        (lambda: b.set_limit("P0", "COLOUR", "red", 0.3), "BAD_EXPOSURE_TYPE"),
        (lambda: b.set_limit("P0", "SECTOR", "Nothing", 0.3), "UNKNOWN_CATEGORY"),
        (lambda: b.set_limit("P0", "SECTOR", "Technology", -1), "BAD_LIMIT"),
        (lambda: b.set_limit("P0", "INSTRUMENT", "nope", 0.1), "UNKNOWN_INSTRUMENT"),
    ]:
        with pytest.raises(BookError) as e:
            call()
        assert e.value.code == code
    trade(b, "P0", "a", "SAP", TradeKind.BUY, 10, 120.0)
    with pytest.raises(BookError) as e:
        b.upsert_portfolio("P0", "EUR")
    assert e.value.code == "BASE_CURRENCY_FIXED"
    with pytest.raises(BookError) as e:
        b.upsert_instrument("SAP", "USD", "Technology", "DE", "EQUITY")
    assert e.value.code == "CURRENCY_FIXED"


def test_a_slot_never_allocated_belongs_to_nobody(book):
    s = book.capacity["slots"] - 1
    assert s >= len(book.slot_ids)
    assert reject_trade(book, TradeKind.BUY, 10, 190.0, slot=s) == "UNKNOWN_POSITION"
    r = book.set_status(np.array([0], I32), np.array([s], I32), np.array([PositionStatus.PENDING], I8), np.ones(1, I64))
    assert Reason._fields[r[0]] == "UNKNOWN_POSITION"


def test_a_tick_that_would_overflow_a_holding_is_refused_whole(book):
    out, _ = trade(book, "P0", "huge", "MSFT", TradeKind.BUY, 900_000_000, 1.0)
    assert out["reason"] == Reason.OK
    out, _ = trade(book, "P0", "sap", "SAP", TradeKind.BUY, 1000, 120.0)  # an EUR holding in a USD portfolio
    assert out["reason"] == Reason.OK
    before = state_bytes(book)
    k = book.instrument_ids.get("MSFT")
    reason, n = book.apply_prices(np.array([k], I32), np.array([99_000_000.0]), np.ones(1, I64))
    assert Reason._fields[reason[0]] == "OVERFLOW" and n == 0
    assert_untouched(before, book)
    eur = book.currency("EUR")
    reason, n = book.apply_fx(np.array([eur], I32), np.array([1e12]), np.ones(1, I64))  # the SAP holding would overflow
    assert Reason._fields[reason[0]] == "OVERFLOW"
    assert_untouched(before, book)
    assert book.audit() == []


def test_a_trade_whose_holding_would_overflow_at_the_mark_price_is_refused(book):
    k = book.instrument_ids.get("XOM")
    book.apply_prices(np.array([k], I32), np.array([50_000_000.0]), np.ones(1, I64))  # marked very high
    assert reject_trade(book, TradeKind.BUY, 900_000_000, 1.0, position="x", instrument="XOM") == "OVERFLOW"


def test_flat_position_in_a_currency_without_rate_can_be_queried():
    from portfolio_state.daemon import queries as q

    b = make_book()
    b.upsert_instrument("VOD", "GBP", "Telecom", "GB", "EQUITY")  # no GBP rate
    s = b.slot(0, "v", b.instrument_ids.get("VOD"))
    assert b.set_status(np.array([0], I32), np.array([s], I32), np.array([PositionStatus.PENDING], I8),
                        np.ones(1, I64))[0] == Reason.OK
    (pos,) = q.positions(b, "P0")
    assert pos["status"] == "PENDING" and pos["cost_basis"] == 0.0


def test_tick_overflow_is_caught_at_large_fx_ratios_too():
    """An IDR-based portfolio holding USD converts at 16,000: a price well under the old shortcut's
    10,000-per-unit threshold still takes the holding past int64 cents in base currency."""
    from portfolio_state.daemon.book import Book

    b = Book()
    idr = b.currency("IDR")
    b.apply_fx(np.array([idr], I32), np.array([1 / 16_000]), np.ones(1, I64))
    b.upsert_instrument("X", "USD")
    b.upsert_portfolio("I", "IDR", "LONG_SHORT")
    b.apply_prices(np.array([0], I32), np.array([1.0]), np.ones(1, I64))
    out, _ = trade(b, "I", "x", "X", TradeKind.BUY, 900_000_000, 1.0)
    assert out["reason"] == Reason.OK
    before = state_bytes(b)
    # 9e8 units at 9,000 USD = 8.1e14 USD cents = 1.3e19 IDR cents: past int64, had it been applied
    reason, _ = b.apply_prices(np.array([0], I32), np.array([9_000.0]), np.ones(1, I64))
    assert Reason._fields[reason[0]] == "OVERFLOW"
    assert_untouched(before, b)


def test_a_long_batch_with_bad_rows_equals_the_same_rows_one_at_a_time():
    """The trade kernel requests each chunk's memory ahead of applying it (kernels/prefetch.py):
    a batch spanning many chunks, with indexes out of range in both directions and slots of
    other portfolios among good rows, gives the same rows and bytes as one row per call."""
    rng = np.random.default_rng(5)
    books = [make_book(), make_book()]
    names = ["AAPL", "MSFT", "XOM", "SAP", "7203", "ESZ6"]
    for b in books:
        for i, name in enumerate(names):
            trade(b, "P0", f"s{i}", name, TradeKind.BUY, 10, 100.0)  # every instrument has a price
        for p in ("P0", "P1", "P2"):
            for i, name in enumerate(names):
                b.slot(b.portfolio_ids.get(p), f"x{i}", b.instrument_ids.get(name))
    n = 300
    slots = np.array(sorted(books[0].slot_index.values()), I32)
    slot = rng.choice(slots, n).astype(I32)
    pf = books[0].a.positions["portfolio"][slot].astype(I32)
    bad = rng.random(n) < 0.2
    slot[bad] = rng.choice(np.array([-7, -1, 10**6, 2**31 - 1, slots[0]], I32), bad.sum())
    pf[rng.random(n) < 0.1] = rng.choice(np.array([-3, 2, 10**5], I32))
    kind = rng.choice(np.array([TradeKind.BUY, TradeKind.SELL, TradeKind.SHORT, TradeKind.COVER], I8), n)
    qty = rng.integers(1, 20, n).astype(F64)
    price = np.round(rng.uniform(50, 150, n), 2)
    fee = np.zeros(n)
    ts = np.arange(100, 100 + n, dtype=I64)
    whole, whole_ex = books[0].apply_trades(kind, pf, slot, qty, price, fee, ts)
    rows = [books[1].apply_trades(kind[i:i + 1], pf[i:i + 1], slot[i:i + 1], qty[i:i + 1], price[i:i + 1],
                                  fee[i:i + 1], ts[i:i + 1]) for i in range(n)]
    one = np.concatenate([r[0] for r in rows])
    for field in whole.dtype.names:  # field by field: concatenate leaves the record's padding unset
        assert whole[field].tobytes() == one[field].tobytes(), field
    assert whole_ex.tobytes() == np.concatenate([r[1] for r in rows]).tobytes()
    assert state_bytes(books[0]) == state_bytes(books[1])
    reasons = {Reason._fields[r] for r in whole["reason"]}
    assert {"OK", "UNKNOWN_POSITION", "UNKNOWN_PORTFOLIO"} <= reasons, reasons
    assert books[0].audit() == []
