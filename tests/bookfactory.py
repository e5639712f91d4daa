"""Small books for tests: a few currencies, instruments and portfolios, built one way; and
write-behind hand-offs of a few positions."""
import time

import numpy as np

from portfolio_state.daemon.book import Book, Capacity
from portfolio_state.kernels import CashFlowType
from portfolio_state.persistence.changes import ChangeSet, Positions

I8, I32, I64, F64 = np.int8, np.int32, np.int64, np.float64


def cols(*rows, dtypes):
    """Rows -> typed columns for a kernel call."""
    return [np.array(c, dtype=d) for c, d in zip(zip(*rows), dtypes)] if rows else [np.array([], d) for d in dtypes]


def make_book(capacity=Capacity(), shm_name=None, shm_dir="/dev/shm", n_portfolios=3, deposit=1_000_000.0):
    book = Book(capacity, shm_name=shm_name, shm_dir=shm_dir)
    eur = book.currency("EUR")
    jpy = book.currency("JPY")
    book.apply_fx(np.array([eur, jpy], I32), np.array([1.1, 0.0067]), np.array([1, 1], I64))
    book.upsert_instrument("AAPL", "USD", "Technology", "US", "EQUITY")
    book.upsert_instrument("MSFT", "USD", "Technology", "US", "EQUITY")
    book.upsert_instrument("XOM", "USD", "Energy", "US", "EQUITY")
    book.upsert_instrument("SAP", "EUR", "Technology", "DE", "EQUITY")
    book.upsert_instrument("7203", "JPY", "Consumer", "JP", "EQUITY")
    book.upsert_instrument("ESZ6", "USD", "Index", "US", "FUTURE", multiplier=50)
    types = ["LONG_SHORT", "LONG_ONLY", "LONG_SHORT"]
    bases = ["USD", "USD", "EUR"]
    for i in range(n_portfolios):
        p = book.upsert_portfolio(f"P{i}", bases[i % 3], types[i % 3])
        book.apply_cash_flows(np.array([p], I32), np.array([book.currency(bases[i % 3])], I32),
                              np.array([CashFlowType.DEPOSIT], I8), np.array([deposit]), np.array([1], I64))
    book.apply_prices(np.arange(len(book.instrument_ids), dtype=I32),
                      np.array([190.0, 410.0, 110.0, 120.0, 2500.0, 6000.0]), np.full(6, 1, I64))
    return book


def trade(book, portfolio_id, position_id, instrument_id, kind, qty, price=0.0, fee=0.0, ts=10):
    """One trade row through the batch kernel; returns (out row, exp_out row)."""
    p = book.portfolio_ids.get(portfolio_id)
    k = book.instrument_ids.get(instrument_id)
    s = book.slot(p, position_id, k) if p >= 0 else 0
    out, ex = book.apply_trades(np.array([kind], I8), np.array([p], I32), np.array([s], I32),
                                np.array([qty], F64), np.array([price], F64), np.array([fee], F64),
                                np.array([ts], I64))
    return out[0], ex[0]


def hand_off(seq: int, qty: dict[str, int], slots=None, weight: float = 0.01, old_qty=None) -> ChangeSet:
    """A write-behind hand-off covering journal record ``seq``: changed positions of P0 in AAPL,
    position id -> whole units, valued at 150 each; ``slots`` their book slots (None: not given),
    ``old_qty`` the units last handed off (default 0)."""
    ids = list(qty)
    n = len(ids)
    q = np.array([qty[i] for i in ids], I64) * 1_000_000
    mv = q // 10_000 * 150
    old = np.zeros(n, I64) if old_qty is None else np.array(old_qty, I64) * 1_000_000
    p = Positions(np.array(ids, dtype=object), np.array(["P0"] * n, dtype=object), np.array(["AAPL"] * n, dtype=object),
                  q, mv, mv, np.full(n, weight), np.ones(n, I8), np.full(n, time.time_ns(), I64), old,
                  np.zeros(n, I64) if old_qty is None else mv, np.zeros(n), np.ones(n, np.bool_),
                  None if slots is None else np.array(slots, I64))
    return ChangeSet(seq - 1, seq, time.time_ns(), positions=p)
