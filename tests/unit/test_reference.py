"""The kernels against the Decimal reference model (tests/reference_model.py).

Every command goes to a Book and to the model; reason codes are compared row by
row, quantities, cash, cost and realized P&L to the unit, FX-converted values
within their rounding bounds (tests/reference_harness.py says exactly what),
and ``book.audit()`` must stay empty. Three drivers: a Hypothesis state machine
(shrinks a failure to a short command list), a long seeded random run through
the batch APIs, and a determinism check (same log -> same bytes).
Reproducing a failure: Hypothesis prints the steps and a ``@reproduce_failure`` blob
(``pytest --hypothesis-seed=N`` pins its seed); the seeded runs print their seed and
``PSTATE_SEED=N`` replays them. ``PSTATE_RANDOM_OPS`` and ``PSTATE_HYPOTHESIS_EXAMPLES``
scale the runs up for a soak.
Runs on: the test process. Imports: numpy, hypothesis, portfolio_state, tests.
"""
import math
import os
import random
import time
from decimal import Decimal

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from portfolio_state.daemon import queries as q
from portfolio_state.kernels import PositionStatus, Reason, TradeKind
from tests.reference_harness import (
    FAR,
    FX_LEVEL,
    INSTRUMENTS,
    PORTFOLIOS,
    PRICE_LEVEL,
    Harness,
    book_bytes,
    replay,
)
from tests.reference_model import QTY_Q

NAN, INF = math.nan, math.inf
# Specials: rejected values, dust, and sizes and prices at the edge of the money range (which
# the kernels must refuse exactly where the model does). Otherwise generators grow holdings
# only additively (sizes relative to a holding only reduce it) and split big ones down, so
# that most of a run is spent in ordinary states rather than in OVERFLOW rejections.
SPECIAL_QTY = (0.0, -1.0, NAN, INF, -INF, 1e-7, 4e-7, 2e9, 1e9)
SPLIT_RATIOS = (2.0, 3.0, 0.5, 1.5, 0.333333, 10.0, 0.1, 1e-6, 1e4, 0.0, -1.0, NAN, 2e9)
REVERSE_SPLITS = (0.5, 0.333333, 0.1, 1e-6)
SPECIAL_PRICE = (NAN, 0.0, -5.0, INF, 1e-10, 2e8, 5e6, 1e7)
SPECIAL_FEE = (-0.01, NAN, INF, -0.001, 0.004, 2e15)
SPECIAL_AMOUNT = (0.0, -5.0, NAN, INF, 2e15, 0.001)
BAD_KINDS = (8, -1)
STATUS_TARGETS = (PositionStatus.ACTIVE, PositionStatus.PENDING, PositionStatus.CLOSED, PositionStatus.SUSPENDED,
                  PositionStatus.FREE, 7)


def seed_from_env() -> int:
    """PSTATE_SEED=<n> replays a run; otherwise a fresh seed, printed with every failure."""
    return int(os.environ.get("PSTATE_SEED") or random.SystemRandom().randrange(2**32))


def new_harness(label, deep=False, record=False, fx=None):
    h = Harness(label=label, deep=deep, record=record)
    h.setup(fx=fx)
    for pid, _, _ in PORTFOLIOS:
        for iid in ("AAPL", "SAP", "ESZ6", "7203"):
            h.slot(pid, f"{iid}-1", iid)
    h.slot("US-LS", "AAPL-2", "AAPL")  # two positions sharing one INSTRUMENT exposure
    h.slot("EU-LS", "SAP-2", "SAP")
    return h


# ====================================================================== Hypothesis state machine
def dec_float(lo, hi, places):
    return st.decimals(min_value=Decimal(lo), max_value=Decimal(hi), places=places).map(float)


def mostly(common, rare, one_in=10):
    """``common``, and ``rare`` one time in ``one_in``; shrinks towards ``common``."""
    return st.integers(0, one_in - 1).flatmap(lambda i: rare if i == one_in - 1 else common)


QTY = st.one_of(st.integers(1, 1000).map(float), dec_float("0.000001", "10000", 6), dec_float("0.01", "500", 2))
PRICE = mostly(st.one_of(dec_float("0.01", "20000", 2), dec_float("0.000000001", "1000", 9)),
               st.sampled_from(SPECIAL_PRICE), one_in=15)
FEE = mostly(st.one_of(st.just(0.0), dec_float("0", "100", 2)), st.sampled_from(SPECIAL_FEE), one_in=15)
AMOUNT = mostly(dec_float("0.01", "1000000", 2), st.sampled_from(SPECIAL_AMOUNT))
KIND = mostly(st.integers(0, 7), st.sampled_from(BAD_KINDS), one_in=25)


def reduces(kind: int, cur: Decimal) -> bool:
    """Whether a size relative to the holding would shrink (or flip) it rather than grow it."""
    return cur != 0 and (kind in (TradeKind.TRANSFER_OUT, TradeKind.ADJUST) or
                         (kind in (TradeKind.SELL, TradeKind.SHORT)) == (cur > 0))


def relative_sizes(cur: Decimal) -> list[float]:
    """Exact close, through zero, one micro-unit past, a third."""
    return [float(x) for x in (abs(cur), 2 * abs(cur), abs(cur) + QTY_Q, (abs(cur) / 3).quantize(QTY_Q))]


def qty_strategy(kind: int, cur: Decimal, fresh: bool):
    """``fresh``: no earlier row of this batch touched the position, so ``cur`` is its quantity."""
    if kind == TradeKind.SPLIT:
        if abs(cur) > 100_000 or not fresh:
            return st.sampled_from(REVERSE_SPLITS)
        return st.one_of(st.sampled_from(SPLIT_RATIOS), dec_float("0.000001", "10", 6))
    if fresh and reduces(kind, cur):
        s = st.one_of(QTY, st.sampled_from(relative_sizes(cur)))
        if kind == TradeKind.ADJUST:  # towards zero
            s = s.map(lambda q: -q if cur > 0 else q)
        return mostly(s, st.sampled_from(SPECIAL_QTY), one_in=12)
    s = mostly(QTY, st.sampled_from(SPECIAL_QTY), one_in=12)
    if kind == TradeKind.ADJUST:
        s = st.tuples(s, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
    return s


class ReferenceMachine(RuleBasedStateMachine):
    """Random command batches on a Book and the model; after each, the whole state must agree."""

    @initialize(jpy_known=st.booleans())
    def start(self, jpy_known):
        fx = {"EUR": 1.08, **({"JPY": 0.0067} if jpy_known else {})}   # GBP: unknown until a tick
        self.h = new_harness("hypothesis", deep=True, fx=fx)

    def _portfolio_for(self, data, owner: int) -> int:
        n = len(self.h.book.portfolio_ids)
        return data.draw(mostly(st.just(owner), st.one_of(st.integers(0, n - 1), st.sampled_from((-1, n, FAR))),
                                one_in=20), label="portfolio")

    def _slot(self, data) -> int:
        bad = (-1, FAR, self.h.unallocated_slot())
        return data.draw(mostly(st.sampled_from(self.h.slots), st.sampled_from(bad), one_in=25), label="slot")

    def _owner(self, s: int) -> int:
        return int(self.h.book.a.positions[s]["portfolio"]) if s in self.h.slot_key else 0

    @rule(data=st.data(), n=st.integers(1, 6))
    def trades(self, data, n):
        rows, touched = [], set()
        for _ in range(n):
            s = self._slot(data)
            kind = data.draw(KIND, label="kind")
            cur = self.h.position(s).qty if s in self.h.slot_key else Decimal(0)
            rows.append((kind, self._portfolio_for(data, self._owner(s)), s,
                         data.draw(qty_strategy(kind, cur, s not in touched), label="qty"),
                         data.draw(PRICE, label="price"), data.draw(FEE, label="fee")))
            touched.add(s)
        for row, r in zip(rows, self.h.trades(rows)):
            event(f"trade {Reason._fields[r]}" + (f" {TradeKind._fields[row[0]]}" if r == Reason.OK else ""))

    @rule(data=st.data(), n=st.integers(1, 4))
    def cash_flows(self, data, n):
        ncy = len(self.h.book.currency_ids)
        rows = [(self._portfolio_for(data, data.draw(st.integers(0, len(PORTFOLIOS) - 1))),
                 data.draw(mostly(st.integers(0, ncy - 1), st.sampled_from((-1, FAR)), one_in=20)),
                 data.draw(mostly(st.integers(0, 4), st.sampled_from((5, -1)), one_in=20)),
                 data.draw(AMOUNT)) for _ in range(n)]
        for r in self.h.cash_flows(rows):
            event(f"cash {Reason._fields[r]}")

    @rule(data=st.data(), n=st.integers(1, 4))
    def prices(self, data, n):
        nin = len(self.h.book.instrument_ids)
        rows = [(data.draw(mostly(st.integers(0, nin - 1), st.sampled_from((-1, nin, FAR)), one_in=20)),
                 data.draw(PRICE)) for _ in range(n)]
        self.h.prices(rows)

    @rule(data=st.data(), ccy=st.sampled_from(("EUR", "JPY", "GBP", "USD", None)))
    def fx(self, data, ccy):
        c = self.h.book.currency_ids.get(ccy) if ccy else data.draw(st.sampled_from((-1, FAR)))
        level = FX_LEVEL.get(ccy, 1.0)
        rate = data.draw(mostly(st.floats(0.8 * level, 1.2 * level), st.sampled_from((NAN, 0.0, -1.0, INF))))
        self.h.fx([(c, rate)])

    @rule(data=st.data(), n=st.integers(1, 4))
    def statuses(self, data, n):
        rows = []
        visible = [s for s in self.h.slots if self.h.position(s).status != "FREE"]
        for _ in range(n):
            s = data.draw(st.sampled_from(visible), label="slot") if visible and data.draw(st.booleans()) else \
                self._slot(data)
            rows.append((self._portfolio_for(data, self._owner(s)), s, data.draw(st.sampled_from(STATUS_TARGETS))))
        for r in self.h.statuses(rows):
            event(f"status {Reason._fields[r]}")

    @rule(pid=st.sampled_from([p[0] for p in PORTFOLIOS]), ins=st.sampled_from(INSTRUMENTS), n=st.integers(1, 3))
    def open_position(self, pid, ins, n):
        self.h.slot(pid, f"{ins[0]}-{n}", ins[0])

    @rule(ins=st.sampled_from(INSTRUMENTS), sector=st.sampled_from(("Technology", "Energy", "Other")),
          country=st.sampled_from(("US", "DE", "XX")), asset=st.sampled_from(("EQUITY", "ETF", "FUTURE", "ODD")))
    def reclassify(self, ins, sector, country, asset):
        iid, ccy, _, _, _, mult = ins
        self.h.instrument(iid, ccy, sector, country, asset, mult)

    @invariant()
    def agrees(self):
        self.h.check()


ReferenceMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("PSTATE_HYPOTHESIS_EXAMPLES", 200)), stateful_step_count=40, deadline=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestReferenceMachine = ReferenceMachine.TestCase


# ====================================================================== seeded random batches
class RandomOps:
    """Batches of random commands for a Harness, sized from the model's state; all from one rng."""

    KINDS = [TradeKind.BUY] * 25 + [TradeKind.SELL] * 20 + [TradeKind.SHORT] * 12 + [TradeKind.COVER] * 10 + \
        [TradeKind.ADJUST] * 8 + [TradeKind.TRANSFER_IN] * 8 + [TradeKind.TRANSFER_OUT] * 8 + \
        [TradeKind.SPLIT] * 4 + list(BAD_KINDS)

    def __init__(self, h: Harness, rng: random.Random):
        self.h, self.r = h, rng

    def decimal(self, max_exp: int, places: tuple) -> float:
        d = self.r.choice(places)
        units = self.r.randint(0 if d else 1, 10 ** self.r.randint(0, max_exp))
        return float(Decimal(units * 10**d + self.r.randrange(10**d)).scaleb(-d))

    def qty(self, kind: int, cur: Decimal, fresh: bool) -> float:
        """Sizes that close, flip or trim what is held; never sizes that compound the holding.

        ``fresh``: no earlier row of this batch touched the position, so ``cur`` is its quantity.
        """
        r = self.r
        if kind == TradeKind.SPLIT:
            if abs(cur) > 100_000 or not fresh:
                return r.choice(REVERSE_SPLITS)
            return r.choice(SPLIT_RATIOS) if r.random() < 0.7 else self.decimal(0, (1, 2, 6)) or 1.0
        x = r.random()
        if x < 0.04:
            q = r.choice(SPECIAL_QTY)
        elif x < 0.30 and fresh and reduces(kind, cur):
            q = r.choice(relative_sizes(cur))
            return -q if kind == TradeKind.ADJUST and cur > 0 else q
        else:
            q = self.decimal(3, (0, 0, 0, 1, 2, 3, 6))
        return -q if kind == TradeKind.ADJUST and r.random() < 0.5 else q

    def price(self, iid: str) -> float:
        r = self.r
        if r.random() < 0.03:
            return r.choice(SPECIAL_PRICE)
        places = r.choice((0, 2, 2, 4, 9))
        return float(Decimal(PRICE_LEVEL[iid] * r.uniform(0.5, 1.5)).quantize(Decimal(10) ** -places))

    def fee(self) -> float:
        x = self.r.random()
        return 0.0 if x < 0.7 else self.decimal(1, (0, 2)) if x < 0.97 else self.r.choice(SPECIAL_FEE)

    def portfolio(self, owner: int) -> int:
        x, n = self.r.random(), len(self.h.book.portfolio_ids)
        return owner if x < 0.94 else self.r.randrange(n) if x < 0.97 else self.r.choice((-1, n, FAR))

    def slot(self) -> int:
        if self.r.random() < 0.98:
            return self.r.choice(self.h.slots)
        return self.r.choice((-1, FAR, self.h.unallocated_slot()))

    def owner(self, s: int) -> int:
        return int(self.h.book.a.positions[s]["portfolio"]) if s in self.h.slot_key else 0

    def trades(self, n):
        rows, touched = [], set()
        for _ in range(n):
            s = self.slot()
            kind = self.r.choice(self.KINDS)
            known = s in self.h.slot_key
            cur = self.h.position(s).qty if known else Decimal(0)
            iid = self.h.position(s).instrument_id if known else "AAPL"
            rows.append((kind, self.portfolio(self.owner(s)), s, self.qty(kind, cur, s not in touched),
                         self.price(iid), self.fee()))
            touched.add(s)
        return self.h.trades(rows)

    def cash_flows(self, n):
        r, ncy = self.r, len(self.h.book.currency_ids)
        rows = []
        for _ in range(n):
            p = self.portfolio(r.randrange(len(PORTFOLIOS)))
            c = r.randrange(ncy) if r.random() < 0.97 else r.choice((-1, FAR))
            kind = r.choice((0, 0, 1, 2, 3, 4)) if r.random() < 0.98 else r.choice((5, -1))
            amount = self.decimal(5, (0, 2)) if r.random() < 0.97 else r.choice(SPECIAL_AMOUNT)
            rows.append((p, c, kind, amount))
        return self.h.cash_flows(rows)

    def prices(self, n):
        r, ids = self.r, self.h.book.instrument_ids.ids
        rows = []
        for _ in range(n):
            k = r.randrange(len(ids)) if r.random() < 0.98 else r.choice((-1, len(ids), FAR))
            rows.append((k, self.price(ids[k] if 0 <= k < len(ids) else "AAPL")))
        return self.h.prices(rows)

    def fx(self, n):
        r, rows = self.r, []
        for _ in range(n):
            ccy = r.choice(("EUR", "EUR", "JPY", "JPY", "GBP", "USD"))
            c = self.h.book.currency_ids.get(ccy) if r.random() < 0.97 else r.choice((-1, FAR))
            rate = FX_LEVEL.get(ccy, 1.0) * r.uniform(0.8, 1.2) if r.random() < 0.97 else r.choice((NAN, 0.0, -1.0))
            rows.append((c, rate))
        return self.h.fx(rows)

    def statuses(self, n):
        """Random targets, except that a suspension is mostly lifted the way its holding allows
        (else suspended positions pile up and most trades are refused)."""
        rows = []
        for _ in range(n):
            s = self.slot()
            to = self.r.choices(STATUS_TARGETS, (30, 25, 15, 10, 5, 5))[0]
            if s in self.h.slot_key and self.h.position(s).status == "SUSPENDED" and self.r.random() < 0.9:
                to = PositionStatus.ACTIVE if self.h.position(s).qty else PositionStatus.CLOSED
            rows.append((self.portfolio(self.owner(s)), s, to))
        return self.h.statuses(rows)

    def new_positions(self):
        pid = self.r.choice(PORTFOLIOS)[0]
        iid = self.r.choice(INSTRUMENTS)[0]
        self.h.slot(pid, f"{iid}-{self.r.randint(1, 4)}", iid)

    def step(self):
        """One batch of one command type; trades are most of the traffic."""
        x = self.r.random()
        if x < 0.55:
            self.trades(1000)
        elif x < 0.70:
            self.prices(300)
        elif x < 0.80:
            self.cash_flows(300)
        elif x < 0.88:
            self.statuses(20)
        elif x < 0.95:
            self.fx(20)
        else:
            self.new_positions()


def run_random(seed: int, n_ops: int, record=False, checkpoint_every=5):
    h = new_harness(f"seed={seed}", record=record, fx={"EUR": 1.08, "JPY": 0.0067})
    ops = RandomOps(h, random.Random(seed))
    h.cash_flows([(p, h.book.currency_ids.get(base), 0, 1_000_000.0) for p, (_, base, _) in enumerate(PORTFOLIOS)])
    batches = 0
    while h.n_ops < n_ops:
        ops.step()
        batches += 1
        if batches % checkpoint_every == 0:
            h.check()
    h.check()
    return h


def test_long_random_run_matches_model():
    seed = seed_from_env()
    n_ops = int(os.environ.get("PSTATE_RANDOM_OPS", 100_000))
    print(f"reference random run: seed={seed} (PSTATE_SEED={seed} replays it)")
    t0 = time.perf_counter()
    h = run_random(seed, n_ops)
    print(f"seed={seed}: {h.n_ops} operations in {time.perf_counter() - t0:.1f} s")
    assert h.n_ops >= n_ops
    a = h.book.a.positions
    # the run did reach the states it is meant to cover
    assert (a["qty"] < 0).any() and (a["qty"] > 0).any(), f"seed={seed}"
    assert h.book.capacity["slots"] > 4, f"seed={seed}: the slot arrays never grew"


# ====================================================================== determinism
def test_same_log_gives_byte_identical_books():
    seed = seed_from_env()
    print(f"determinism run: seed={seed}")
    h = run_random(seed, 20_000, record=True)
    first = book_bytes(h.book)
    again = book_bytes(replay(h.log))
    rechunked = book_bytes(replay(h.log, chunk=97))  # batch boundaries must not matter either
    for name in first:
        assert again[name] == first[name], f"seed={seed}: {name} differs on replay"
        assert rechunked[name] == first[name], f"seed={seed}: {name} differs when re-chunked"


# ====================================================================== cases worth naming
def test_split_that_rounds_a_position_away_writes_its_cost_off():
    h = new_harness("split-to-zero")
    p = h.book.portfolio_ids.get("US-LS")
    s = h.slot("US-LS", "AAPL-1", "AAPL")
    # 3 micro-units at 10,000 cost 3 cents; a 1:10 reverse split rounds the holding to 0
    h.trades([(TradeKind.BUY, p, s, 0.000003, 10000.0, 0.0), (TradeKind.SPLIT, p, s, 0.1, 0.0, 0.0)])
    row = h.book.a.positions[s]
    assert (int(row["qty"]), int(row["cost"]), int(row["realized"])) == (0, 0, -3)
    h.trades([(TradeKind.BUY, p, s, 1.0, 10000.0, 0.0)])
    assert int(h.book.a.positions[s]["cost"]) == 1_000_000  # no stale cost carried into the reopened position
    h.check()


def test_limits_agree():
    """Sizes at the edges of the fixed-point range: the model must reject the same rows."""
    h = new_harness("limits", fx={"EUR": 1.08})
    p = h.book.portfolio_ids.get("US-LS")
    s = h.slot("US-LS", "AAPL-1", "AAPL")
    g = h.slot("US-LS", "GCZ6-1", "GCZ6")
    e = h.book.portfolio_ids.get("EU-LS")
    x = h.slot("EU-LS", "XOM-1", "XOM")
    reasons = h.cash_flows([(p, 0, 0, 9e14), (p, 0, 0, 9e14), (p, 0, 1, 9e14), (p, 1, 0, 1e15)])
    assert [Reason._fields[r] for r in reasons] == ["OK", "OVERFLOW", "OK", "OK"]
    reasons = h.trades([(TradeKind.BUY, p, s, 1e9, 5e6, 0.0), (TradeKind.BUY, p, s, 1e9, 190.0, 0.0),
                        (TradeKind.SPLIT, p, s, 2.0, 0.0, 0.0), (TradeKind.SPLIT, p, s, 1e4, 0.0, 0.0),
                        (TradeKind.BUY, p, g, 1.0, 1e7, 0.0), (TradeKind.BUY, p, g, 1.0, 2400.0, 0.0)])
    assert [Reason._fields[r] for r in reasons] == ["OVERFLOW", "OK", "OVERFLOW", "OVERFLOW", "OVERFLOW", "OK"]
    h.check()
    # round trips that each lose ~1e15: cash and realized P&L must stop at the money range, not wrap
    rows = [(TradeKind.BUY if i % 2 == 0 else TradeKind.SELL, e, x, 1e9, 1e6 if i % 2 == 0 else 1.0, 0.0)
            for i in range(40)]
    reasons = [Reason._fields[r] for r in h.trades(rows)]
    assert reasons[:3] == ["OK", "OK", "OVERFLOW"]
    assert abs(int(h.book.a.cash[e, 0])) <= 10**17 and int(h.book.a.positions[x]["realized"]) < 0
    h.check()


def test_ticks_and_trades_that_would_leave_the_money_range_are_refused():
    """A holding's value must stay in int64 cents: the tick (price or FX), split or trade that
    would take it past MAX_MONEY is refused whole, where the model refuses it."""
    h = new_harness("mv-range", fx={"EUR": 1.08})
    p = h.book.portfolio_ids.get("EU-LS")
    s = h.slot("EU-LS", "AAPL-1", "AAPL")
    e = h.book.currency_ids.get("EUR")
    aapl = h.book.instrument_ids.get("AAPL")
    assert Reason._fields[h.trades([(TradeKind.SHORT, p, s, 1e9, 1.0, 0.0)])[0]] == "OK"
    assert [Reason._fields[r] for r in h.prices([(aapl, 1e8), (aapl, 2e6), (aapl, 1e3)])] == \
        ["OVERFLOW", "OVERFLOW", "OK"]
    assert [Reason._fields[r] for r in h.fx([(e, 1e-6), (e, 1.2)])] == ["OVERFLOW", "OK"]
    assert Reason._fields[h.trades([(TradeKind.SPLIT, p, s, 1e4, 0.0, 0.0)])[0]] == "OVERFLOW"
    # a trade is valued at the mark, not at its own price
    u = h.book.portfolio_ids.get("US-LS")
    x = h.slot("US-LS", "XOM-1", "XOM")
    assert Reason._fields[h.prices([(h.book.instrument_ids.get("XOM"), 2e6)])[0]] == "OK"
    reasons = h.trades([(TradeKind.BUY, u, x, 1e9, 1.0, 0.0), (TradeKind.ADJUST, u, x, 1e9, 0.0, 0.0),
                        (TradeKind.BUY, u, x, 4e8, 1.0, 0.0)])
    assert [Reason._fields[r] for r in reasons] == ["OVERFLOW", "OVERFLOW", "OK"]
    h.check()


def test_unallocated_slot_is_rejected():
    """Zeroed memory is not a FREE slot of portfolio 0."""
    h = new_harness("unallocated")
    s = h.book.capacity["slots"] - 1
    assert s not in h.slot_key
    assert Reason._fields[h.trades([(TradeKind.BUY, 0, s, 1.0, 10.0, 0.0)])[0]] == "UNKNOWN_POSITION"
    assert Reason._fields[h.statuses([(0, s, PositionStatus.PENDING)])[0]] == "UNKNOWN_POSITION"
    h.check()


def test_positions_query_with_a_currency_without_rate():
    """A flat, visible position in a currency with no rate yet: its zero cost needs none."""
    h = new_harness("no-rate", fx={"EUR": 1.08})  # JPY unknown
    p = h.book.portfolio_ids.get("US-LS")
    s = h.slot("US-LS", "7203-1", "7203")
    assert Reason._fields[h.statuses([(p, s, PositionStatus.PENDING)])[0]] == "OK"
    assert [r["status"] for r in q.positions(h.book, "US-LS") if r["position_id"] == "7203-1"] == ["PENDING"]
    h.check()
