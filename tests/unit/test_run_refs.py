"""``run_refs_nb`` (kernels/runs.py) gives every trade row the reference values the NumPy
expression it replaced gave: same values, same dtypes, for held slots in three currencies, a
currency with no FX rate, unallocated slots, and slots out of the table (rejected rows)."""
import numpy as np
from portfolio_state.daemon.engine import _Run

from tests.bookfactory import I32, make_book


def numpy_refs(book, slot):
    """The expression _Run used before the kernel: the reference for this test."""
    a = book.a
    inst = a.positions["instrument"][np.clip(slot, 0, len(a.positions) - 1)]
    ins = a.instruments[inst]
    base = a.portfolios["base_ccy"][a.positions["portfolio"][np.clip(slot, 0, len(a.positions) - 1)]]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ins["currency"] == base, 1.0, a.fx[ins["currency"]] / a.fx[base])
    cats = np.stack([inst, ins["sector"], ins["country"], ins["currency"], ins["asset_class"]], axis=1)
    return inst, ins["price"], ins["multiplier"], ratio, cats


def test_run_refs_match_the_numpy_expression():
    book = make_book(n_portfolios=6)
    book.upsert_instrument("VOD", "GBP", "Telecom", "GB", "EQUITY")  # GBP has no FX rate: NaN ratios
    slots = [book.slot(p, f"x{p}-{k}", k) for p in range(6) for k in range(len(book.instrument_ids))]
    assert min(slots) >= 0
    rng = np.random.default_rng(11)
    n = len(book.a.positions)
    slot = np.concatenate([np.array(slots, I32), rng.integers(-3, n + 3, 500).astype(I32), np.array([0, -1, n], I32)])
    run = _Run(book, slot, None, None, 0.0)
    want = numpy_refs(book, slot)
    for name, got, exp in zip(("inst", "price", "mult", "ratio", "cats"),
                              (run.inst, run.price, run.mult, run.ratio, run.cats), want):
        assert got.dtype == exp.dtype and got.shape == exp.shape, name
        assert np.array_equal(got, exp, equal_nan=True), name
    held = run.ratio[: len(slots)]
    assert np.isnan(held).any() and (held == 1.0).any() and ((held != 1.0) & ~np.isnan(held)).any()


def test_an_empty_run_has_empty_refs():
    book = make_book()
    run = _Run(book, np.zeros(0, I32), None, None, 0.0)
    assert run.cats.shape == (0, 5) and len(run.ratio) == 0
