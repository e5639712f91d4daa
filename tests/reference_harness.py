"""Drive a ``Book`` and the Decimal ``ReferenceBook`` with the same commands and compare them.

Owns: ``Harness`` (one Book + one model; every batch goes to both, row results are
compared at once, ``check()`` compares whole states), the test universe
(currencies, instruments, portfolios), ``replay`` (a recorded command log into a
fresh Book, optionally re-chunked) and ``book_bytes``.
Runs on: the test process. Imports: numpy, portfolio_state, tests.reference_model.

What is compared, and how exactly (see tests/reference_model.py for why):
  exact    reason codes, quantities, cash, cost basis, realized P&L, statuses,
           prices, FX rates, seq, position_count, timestamps; and every amount that
           stays in one currency (a position or cash in its portfolio's base currency)
  bounded  amounts converted with a float FX rate, and margins: 1 cent per converted
           term plus 4e-16 of its size (ReferenceBook.error_bounds); ratios (weights,
           exposure percentages, leverage): the kernel's float must lie in the interval
           that the bounded numerator and denominator allow
"""
from __future__ import annotations

import math
from decimal import Decimal

import numpy as np

from portfolio_state.daemon import queries as q
from portfolio_state.daemon.book import DEFAULT_MARGIN, FALLBACK_MARGIN, LONG_ONLY_TYPES, Book, Capacity
from portfolio_state.kernels import CASH_FLOW_NAMES, REASON_NAMES, STATUS_NAMES
from tests.reference_model import TRADE_KINDS, ReferenceBook, term_bound

I8, I32, I64, F64 = np.int8, np.int32, np.int64, np.float64

#: Tiny initial capacities, so that every kind of growth happens during a run.
SMALL = Capacity(portfolios=2, slots=4, instruments=2, currencies=2, sectors=2, countries=2, asset_classes=2)

CURRENCIES = ("USD", "EUR", "JPY", "GBP")
#: id, currency, sector, country, asset class, multiplier
INSTRUMENTS = (
    ("AAPL", "USD", "Technology", "US", "EQUITY", 1),
    ("XOM", "USD", "Energy", "US", "EQUITY", 1),
    ("ESZ6", "USD", "Index", "US", "FUTURE", 50),
    ("GCZ6", "USD", "Metals", "US", "COMMODITY", 1000),
    ("SAP", "EUR", "Technology", "DE", "EQUITY", 1),
    ("BUND", "EUR", "Rates", "DE", "GOVERNMENT_BOND", 1),
    ("7203", "JPY", "Consumer", "JP", "EQUITY", 1),
    ("JGB10", "JPY", "Rates", "JP", "FIXED_INCOME", 1),
    ("ODD", "USD", "Misc", "KY", "PRIVATE", 1),   # an asset class with fallback margin
)
#: id, base currency, type
PORTFOLIOS = (
    ("US-LS", "USD", "LONG_SHORT"),
    ("US-LO", "USD", "LONG_ONLY"),
    ("EU-LS", "EUR", "LONG_SHORT"),
    ("EU-LO", "EUR", "CASH"),
    ("GB-LS", "GBP", "LONG_SHORT"),   # GBP has no rate until a tick brings one
)
#: A rough price level per instrument, for generators.
PRICE_LEVEL = {"AAPL": 190, "XOM": 110, "ESZ6": 6000, "GCZ6": 2400, "SAP": 120, "BUND": 98, "7203": 2500,
               "JGB10": 100, "ODD": 15}
FX_LEVEL = {"EUR": 1.08, "JPY": 0.0067, "GBP": 1.27}
#: Indices that are never a known currency/portfolio/slot/instrument (beyond any capacity reached).
FAR = 10**7


class Mismatch(AssertionError):
    pass


def cents_int(x: Decimal) -> int:
    return int(x.scaleb(2))


def close(kernel: int, model: int, bound: float) -> bool:
    """Equal when nothing went through a float (bound 0); else within the model's error bound."""
    return abs(kernel - model) <= bound


def qclose(x: float, model_cents: int, bound: float) -> bool:
    """A query's float amount (currency units) against model cents: as ``close``, plus the
    float's own 53-bit precision, which matters only beyond ~2e15 cents."""
    return close(round(x * 100), model_cents, bound + 4e-16 * abs(model_cents))


def ratio_ok(kernel: float, num: float, num_tol: float, den: float, den_tol: float) -> bool:
    """kernel == num / den (0 when den == 0) for some num, den within their tolerances."""
    if den_tol == 0 and den == 0:
        return kernel == 0.0
    if den - den_tol <= 0 <= den + den_tol:
        return True  # the sign of the denominator is not decided by the model
    cands = [(num + a) / (den + b) for a in (-num_tol, num_tol) for b in (-den_tol, den_tol)]
    lo, hi = min(cands), max(cands)
    slack = 1e-12 * max(abs(lo), abs(hi))
    return lo - slack <= kernel <= hi + slack


class Harness:
    """One Book and one ReferenceBook, fed the same commands; every call compares."""

    def __init__(self, capacity: Capacity = SMALL, label: str = "", deep: bool = False, record: bool = False):
        self.capacity = capacity
        self.book = Book(capacity)
        self.model = ReferenceBook("USD")
        self.label = label          # printed with every mismatch (e.g. the seed)
        self.deep = deep            # also check the per-row exposure percentages
        self.log: list | None = [] if record else None
        self.slot_key: dict[int, tuple[str, str]] = {}
        self.slots: list[int] = []
        self.ts = 0
        self.n_ops = 0

    # ------------------------------------------------------------ setup
    def _record(self, *entry):
        if self.log is not None:
            self.log.append(entry)

    def setup(self, fx: dict[str, float] | None = None) -> None:
        for code in CURRENCIES:
            self.book.currency(code)
            self._record("currency", code)
        for row in PORTFOLIOS:
            self.portfolio(*row)
        for row in INSTRUMENTS:
            self.instrument(*row)
        if fx:
            self.fx([(self.book.currency_ids.get(c), r) for c, r in fx.items()])

    def portfolio(self, pid: str, base: str, ptype: str) -> int:
        self._record("portfolio", pid, base, ptype)
        p = self.book.upsert_portfolio(pid, base, ptype)
        self.model.upsert_portfolio(pid, base, ptype in LONG_ONLY_TYPES)
        return p

    def instrument(self, iid, ccy, sector, country, asset_class, multiplier) -> int:
        self._record("instrument", iid, ccy, sector, country, asset_class, multiplier)
        k = self.book.upsert_instrument(iid, ccy, sector, country, asset_class, multiplier)
        rates = DEFAULT_MARGIN.get(asset_class, FALLBACK_MARGIN)
        assert max(rates) <= 0.5, "the 1-cent margin tolerance assumes rates <= 0.5"
        self.model.upsert_instrument(iid, ccy, sector, country, asset_class, multiplier, rates)
        return k

    def slot(self, pid: str, position_id: str, iid: str) -> int:
        self._record("slot", pid, position_id, iid)
        p = self.book.portfolio_ids.get(pid)
        s = self.book.slot(p, position_id, self.book.instrument_ids.get(iid))
        assert s >= 0, (pid, position_id, iid, s)
        if s not in self.slot_key:
            self.slot_key[s] = (pid, position_id)
            self.slots.append(s)
            self.model.open_position(pid, position_id, iid)
        return s

    # ------------------------------------------------------------ index -> id (None: unknown)
    def pid(self, p: int) -> str | None:
        ids = self.book.portfolio_ids.ids
        return ids[p] if 0 <= p < len(ids) else None

    def ccy(self, c: int) -> str | None:
        ids = self.book.currency_ids.ids
        if 0 <= c < len(ids):
            return ids[c]
        # an index inside the arrays but never named is a currency to apply_fx: not generated
        assert not 0 <= c < self.book.a.fx.shape[0], c
        return None

    def iid(self, k: int) -> str | None:
        ids = self.book.instrument_ids.ids
        return ids[k] if 0 <= k < len(ids) else None

    def key(self, s: int) -> tuple[str, str] | None:
        return self.slot_key.get(s)

    def unallocated_slot(self) -> int:
        """A slot index inside the arrays that no position owns (FAR if there is none)."""
        s = self.book.a.positions.shape[0] - 1
        return s if s not in self.slot_key else FAR

    def position(self, s: int):
        return self.model.positions[self.slot_key[s]]

    def fail(self, what: str):
        raise Mismatch(f"[{self.label} op#{self.n_ops}] {what}")

    def _ts(self, n: int) -> np.ndarray:
        ts = np.arange(self.ts + 1, self.ts + n + 1, dtype=I64)
        self.ts += n
        return ts

    # ------------------------------------------------------------ commands
    def trades(self, rows) -> np.ndarray:
        """rows: (kind, portfolio, slot, qty, price, fee). Returns the reason codes."""
        kind, p, s, qty, px, fee = (np.array(c, d) for c, d in zip(zip(*rows), (I8, I32, I32, F64, F64, F64)))
        ts = self._ts(len(rows))
        self._record("trades", kind, p, s, qty, px, fee, ts)
        out, ex = self.book.apply_trades(kind, p, s, qty, px, fee, ts)
        for i, (k, pi, si, qi, pri, fi) in enumerate(rows):
            self.n_ops += 1
            pid = self.pid(pi)
            key = self.key(si)
            before = self._exposure_view(pid, key) if self.deep else None
            m = self.model.trade(TRADE_KINDS[k] if 0 <= k < len(TRADE_KINDS) else None, pid, key,
                                 qi, pri, fi, int(ts[i]))
            o = out[i]
            got = REASON_NAMES[o["reason"]]
            if got != m.reason:
                self.fail(f"trade row {i} {rows[i]}: kernel {got}, model {m.reason}")
            if m.reason != "OK":
                continue
            exact = {"old_qty": int(m.old_qty.scaleb(6)), "qty": int(m.qty.scaleb(6)),
                     "cost": cents_int(m.cost), "realized": cents_int(m.realized)}
            for f, v in exact.items():
                if int(o[f]) != v:
                    self.fail(f"trade row {i} {rows[i]}: {f} kernel {int(o[f])}, model {v}")
            ins = self.model.instruments[self.model.positions[key].instrument_id]
            foreign = ins.currency != self.model.portfolios[pid].base
            impact_bound = self._impact_bound(pid, ins.currency, m.cash_impact) if foreign else 0
            for f, v, bound in (("old_mv", m.old_mv, foreign and term_bound(m.old_mv)),
                                ("mv", m.mv, foreign and term_bound(m.mv)),
                                ("cash_impact", m.cash_impact, impact_bound)):
                if not close(int(o[f]), cents_int(v), bound):
                    self.fail(f"trade row {i} {rows[i]}: {f} kernel {int(o[f])}, model {cents_int(v)}")
            if self.deep:
                self._check_exposure_row(i, rows[i], ex[i, :, 0], before)
                self._check_exposure_row(i, rows[i], ex[i, :, 1], self._exposure_view(pid, key))
        return out["reason"]

    def cash_flows(self, rows) -> np.ndarray:
        """rows: (portfolio, currency, kind, amount)."""
        p, c, kind, amount = (np.array(col, d) for col, d in zip(zip(*rows), (I32, I32, I8, F64)))
        ts = self._ts(len(rows))
        self._record("cash", p, c, kind, amount, ts)
        out = self.book.apply_cash_flows(p, c, kind, amount, ts)
        for i, (pi, ci, ki, ai) in enumerate(rows):
            self.n_ops += 1
            m = self.model.cash_flow(self.pid(pi), self.ccy(ci), CASH_FLOW_NAMES[ki] if 0 <= ki < 5 else None, ai)
            got = REASON_NAMES[out[i]["reason"]]
            if got != m.reason:
                self.fail(f"cash row {i} {rows[i]}: kernel {got}, model {m.reason}")
            if m.reason != "OK":
                continue
            if (int(out[i]["amount"]), int(out[i]["cash"])) != (cents_int(m.amount), cents_int(m.cash)):
                self.fail(f"cash row {i} {rows[i]}: kernel {out[i]}, model {m}")
            foreign = self.ccy(ci) != self.model.portfolios[self.pid(pi)].base
            bound = self._impact_bound(self.pid(pi), self.ccy(ci), m.cash_impact) if foreign else 0
            if not close(int(out[i]["cash_impact"]), cents_int(m.cash_impact), bound):
                self.fail(f"cash row {i} {rows[i]}: cash_impact kernel {out[i]}, model {m}")
        return out["reason"]

    def _impact_bound(self, pid: str, ccy: str, impact: Decimal) -> float:
        """A change of a converted cash balance: the old and the new conversion may each be off."""
        pf = self.model.portfolios[pid]
        new = self.model.to_base(pf.cash.get(ccy, Decimal(0)), ccy, pf.base)
        return term_bound(new) + term_bound(new - impact)

    def prices(self, rows) -> np.ndarray:
        """rows: (instrument, price)."""
        k, px = (np.array(col, d) for col, d in zip(zip(*rows), (I32, F64)))
        ts = self._ts(len(rows))
        self._record("prices", k, px, ts)
        reason, _ = self.book.apply_prices(k, px, ts)
        for i, (ki, pi) in enumerate(rows):
            self.n_ops += 1
            m = self.model.price_tick(self.iid(ki), pi, int(ts[i]))
            if REASON_NAMES[reason[i]] != m:
                self.fail(f"price row {i} {rows[i]}: kernel {REASON_NAMES[reason[i]]}, model {m}")
        return reason

    def fx(self, rows) -> np.ndarray:
        """rows: (currency, rate)."""
        c, r = (np.array(col, d) for col, d in zip(zip(*rows), (I32, F64)))
        ts = self._ts(len(rows))
        self._record("fx", c, r, ts)
        reason, _ = self.book.apply_fx(c, r, ts)
        for i, (ci, ri) in enumerate(rows):
            self.n_ops += 1
            m = self.model.fx_tick(self.ccy(ci), ri)
            if REASON_NAMES[reason[i]] != m:
                self.fail(f"fx row {i} {rows[i]}: kernel {REASON_NAMES[reason[i]]}, model {m}")
        return reason

    def statuses(self, rows) -> np.ndarray:
        """rows: (portfolio, slot, status)."""
        p, s, st = (np.array(col, d) for col, d in zip(zip(*rows), (I32, I32, I8)))
        ts = self._ts(len(rows))
        self._record("status", p, s, st, ts)
        reason = self.book.set_status(p, s, st, ts)
        for i, (pi, si, sti) in enumerate(rows):
            self.n_ops += 1
            m = self.model.set_status(self.pid(pi), self.key(si), STATUS_NAMES[sti] if 0 <= sti < 5 else None,
                                      int(ts[i]))
            if REASON_NAMES[reason[i]] != m:
                self.fail(f"status row {i} {rows[i]}: kernel {REASON_NAMES[reason[i]]}, model {m}")
        return reason

    # ------------------------------------------------------------ per-row exposure percentages
    def _exposure_view(self, pid, key):
        if pid is None or key not in self.model.positions:
            return None
        pos = self.model.positions[key]
        ins = self.model.instruments[pos.instrument_id]
        cats = (ins.instrument_id, ins.sector, ins.country, ins.currency, ins.asset_class)
        return self.model.view(pid), self.model.error_bounds(pid), cats

    def _check_exposure_row(self, i, row, got, view):
        v, e, cats = view
        total, e_total = cents_int(v["total_value"]), e["positions"] + e["cash"]
        for j, (t, cat) in enumerate(zip(v["exposures"], cats)):
            num = cents_int(v["exposures"][t].get(cat, Decimal(0)))
            if not ratio_ok(float(got[j]), num, e["by_category"][t].get(cat, 0.0), total, e_total):
                self.fail(f"trade row {i} {row}: {t} {cat} exposure % kernel {got[j]}, model {num}/{total}")

    # ------------------------------------------------------------ whole-state comparison
    def check(self) -> None:
        issues = self.book.audit()
        if issues:
            self.fail(f"audit: {issues}")
        a, b, m = self.book.a, self.book, self.model
        for c, code in enumerate(b.currency_ids.ids):
            want = m.fx.get(code, math.nan)
            if not (a.fx[c] == want or (math.isnan(a.fx[c]) and math.isnan(want))):
                self.fail(f"fx {code}: kernel {a.fx[c]}, model {want}")
        for k, iid in enumerate(b.instrument_ids.ids):
            ins = m.instruments[iid]
            want = (0, 0) if ins.price is None else (int(ins.price.scaleb(9)), ins.price_ts)
            if (int(a.instruments[k]["price"]), int(a.instruments[k]["price_ns"])) != want:
                self.fail(f"instrument {iid}: kernel {a.instruments[k]}, model {ins}")
        for s, key in self.slot_key.items():
            pos = m.positions[key]
            if pos.qty == 0 and pos.cost != 0:
                self.fail(f"model {key}: flat with cost {pos.cost}")
            row = a.positions[s]
            got = (int(row["qty"]), int(row["cost"]), int(row["realized"]), STATUS_NAMES[row["status"]],
                   int(row["updated_ns"]))
            want = (int(pos.qty.scaleb(6)), cents_int(pos.cost), cents_int(pos.realized), pos.status, pos.updated_ts)
            if got != want:
                self.fail(f"position {key} slot {s}: kernel {got}, model {want}")
        for p, pid in enumerate(b.portfolio_ids.ids):
            self._check_portfolio(p, pid)

    def _check_portfolio(self, p: int, pid: str) -> None:
        a, b, m = self.book.a, self.book, self.model
        pf = m.portfolios[pid]
        for c, code in enumerate(b.currency_ids.ids):
            if int(a.cash[p, c]) != cents_int(pf.cash.get(code, Decimal(0))):
                self.fail(f"{pid} cash {code}: kernel {int(a.cash[p, c])}, model {pf.cash.get(code)}")
        row = a.portfolios[p]
        v = m.view(pid)
        e = m.error_bounds(pid)
        if (int(row["seq"]), int(row["position_count"])) != (pf.seq, v["position_count"]):
            self.fail(f"{pid} seq/position_count: kernel {row}, model {pf.seq} {v['position_count']}")
        e_total = e["positions"] + e["cash"]
        bound = {"cash_balance": e["cash"], "long_mv": e["positions"], "short_mv": e["positions"],
                 "invested_value": e["positions"], "gross_exposure": e["positions"], "total_value": e_total,
                 "initial_margin": e["margin"], "maintenance_margin": e["margin"],
                 "margin_available": e_total + e["margin"], "excess_liquidity": e_total + e["margin"],
                 "available_cash": max(e["cash"], e_total + e["margin"])}
        bound["buying_power"] = bound["available_cash"] if pf.long_only else 2 * bound["margin_available"]
        mc = {k: cents_int(v[k]) for k in bound}
        for name, col in (("cash_balance", "cash_base"), ("long_mv", "long_mv"), ("short_mv", "short_mv"),
                          ("initial_margin", "init_margin"), ("maintenance_margin", "maint_margin")):
            if not close(int(row[col]), mc[name], bound[name]):
                self.fail(f"{pid} {col}: kernel {int(row[col])}, model {mc[name]} (bound {bound[name]})")
        for s, key in self.slot_key.items():  # market values as stored, per slot
            if key[0] == pid:
                want = cents_int(v["mv"].get(key[1], Decimal(0)))
                if not close(int(a.positions[s]["mv"]), want, e["position"].get(key[1], 0.0)):
                    self.fail(f"{pid} {key[1]} mv: kernel {int(a.positions[s]['mv'])}, model {want}")
        self._check_queries(pid, pf, v, e, mc, bound)

    def _check_queries(self, pid, pf, v, e, mc, bound) -> None:
        b = self.book
        total, e_total = mc["total_value"], bound["total_value"]

        st = q.state(b, pid)
        for name in ("total_value", "cash_balance", "invested_value", "available_cash", "margin_available"):
            if not qclose(st[name], mc[name], bound[name]):
                self.fail(f"{pid} state {name}: kernel {st[name]}, model {mc[name]}")
        if not qclose(st["margin_used"], mc["initial_margin"], bound["initial_margin"]):
            self.fail(f"{pid} state margin_used: kernel {st['margin_used']}, model {mc['initial_margin']}")
        if st["position_count"] != v["position_count"]:
            self.fail(f"{pid} position_count: kernel {st['position_count']}, model {v['position_count']}")
        gross, e_gross = mc["gross_exposure"], bound["gross_exposure"]
        lev = st["leverage_ratio"]
        if gross == 0 and e_gross == 0:
            ok = lev == 0.0
        elif total + e_total <= 0 and gross - e_gross > 0:
            ok = lev == math.inf
        elif total - e_total > 0:
            ok = ratio_ok(lev, gross, e_gross, total, e_total)
        else:
            ok = True  # equity within rounding of zero: either answer is right
        if not ok:
            self.fail(f"{pid} leverage: kernel {lev}, model {gross}/{total}")

        mr = q.margin(b, pid)
        for name in ("initial_margin", "maintenance_margin", "excess_liquidity", "buying_power"):
            if not qclose(mr[name], mc[name], bound[name]):
                self.fail(f"{pid} margin {name}: kernel {mr[name]}, model {mc[name]}")

        want_cash = {c: float(x) for c, x in pf.cash.items() if x != 0}
        if q.cash(b, pid) != want_cash:
            self.fail(f"{pid} cash query: kernel {q.cash(b, pid)}, model {want_cash}")

        self._check_position_rows(pid, pf, v, e, total, e_total)
        self._check_exposures(pid, v, e, total, e_total)

    def _check_position_rows(self, pid, pf, v, e, total, e_total) -> None:
        m = self.model
        want = {key[1]: pos for key, pos in m.positions.items() if key[0] == pid and pos.status != "FREE"}
        rows = {r["position_id"]: r for r in q.positions(self.book, pid, include_closed=True)}
        if set(rows) != set(want):
            self.fail(f"{pid} visible positions: kernel {sorted(rows)}, model {sorted(want)}")
        for position_id, pos in want.items():
            r = rows[position_id]
            ins = m.instruments[pos.instrument_id]
            foreign = ins.currency != pf.base
            mv = cents_int(v["mv"].get(position_id, Decimal(0)))
            e_mv = e["position"].get(position_id, 0.0)
            cost_base = cents_int(m.to_base(pos.cost, ins.currency, pf.base))
            e_cost = term_bound(m.to_base(pos.cost, ins.currency, pf.base)) if foreign else 0.0
            avg = float(pos.cost / pos.qty / ins.multiplier) if pos.qty else 0.0
            checks = [
                ("instrument_id", r["instrument_id"] == ins.instrument_id),
                ("status", r["status"] == pos.status),
                ("quantity", r["quantity"] == float(pos.qty)),
                ("last_price", r["last_price"] == float(ins.price or 0)),
                ("realized_pnl", qclose(r["realized_pnl"], cents_int(pos.realized), 0.0)),
                ("market_value", qclose(r["market_value"], mv, e_mv)),
                ("cost_basis", qclose(r["cost_basis"], cost_base, e_cost)),
                ("unrealized_pnl", qclose(r["unrealized_pnl"], mv - cost_base, e_mv + e_cost)),
                ("average_price", math.isclose(r["average_price"], avg, rel_tol=1e-12, abs_tol=1e-12)),
                ("weight", ratio_ok(r["weight"], mv, e_mv, total, e_total)),
            ]
            bad = [name for name, ok in checks if not ok]
            if bad:
                self.fail(f"{pid} position {position_id} {bad}: kernel {r}, model {pos} mv {mv}")

    def _check_exposures(self, pid, v, e, total, e_total) -> None:
        got = q.exposures(self.book, pid)
        for etype, want in v["exposures"].items():
            rows = {r["category"]: r for r in got[etype]}
            for cat in set(rows) | set(want):
                k = rows[cat]["exposure_value"] if cat in rows else 0.0
                mv = cents_int(want.get(cat, Decimal(0)))
                bound = e["by_category"][etype].get(cat, 0.0)
                if not qclose(k, mv, bound):
                    self.fail(f"{pid} exposure {etype} {cat}: kernel {k}, model {mv} (bound {bound})")
                if cat in rows and not ratio_ok(rows[cat]["exposure_percentage"], mv, bound, total, e_total):
                    self.fail(f"{pid} exposure % {etype} {cat}: kernel {rows[cat]}, model {mv}/{total}")


# ------------------------------------------------------------ replay and bytes
def replay(log, capacity: Capacity = SMALL, chunk: int | None = None) -> Book:
    """Apply a recorded command log to a fresh Book; ``chunk`` re-splits every batch."""
    book = Book(capacity)
    calls = {"trades": book.apply_trades, "cash": book.apply_cash_flows, "prices": book.apply_prices,
             "fx": book.apply_fx, "status": book.set_status}
    for op, *args in log:
        if op == "currency":
            book.currency(*args)
        elif op == "portfolio":
            book.upsert_portfolio(*args)
        elif op == "instrument":
            book.upsert_instrument(*args)
        elif op == "slot":
            pid, position_id, iid = args
            book.slot(book.portfolio_ids.get(pid), position_id, book.instrument_ids.get(iid))
        else:
            n = len(args[0])
            step = chunk or max(n, 1)
            for lo in range(0, n, step):
                calls[op](*(x[lo:lo + step] for x in args))
    return book


def book_bytes(book: Book) -> dict[str, bytes]:
    return {name: np.ascontiguousarray(arr).view(np.uint8).tobytes() for name, arr in book.a._asdict().items()}
