#!/usr/bin/env python
"""Benchmark of the Numba kernels at scale, against a pure-Python dict baseline.

    python perf/bench_kernels.py                 # full: 10,000 portfolios x 1,000 = 10M slots
    python perf/bench_kernels.py --quick         # 100 x 1,000 = 100k slots, < 60 s
    python perf/bench_kernels.py --portfolios 2000 --slots 2000000 --no-write

What it does (fixed seed, everything reported, no bar asserted):
 1. Comparison book (100 portfolios x 1,000 positions, 2,000 instruments): the
    kernels and ``perf/baseline_dict.py`` build the same book and apply the same
    rows. Correctness first (per-row results and final aggregates must agree,
    ``Book.audit()`` must be clean), then timing of the same trades and ticks on
    both: an apples-to-apples ratio (same book size, same operations).
 2. Main book (--portfolios x --slots): build (timed), a hand check of sampled
    positions and portfolios, then the timed workloads through the kernels with
    caller-owned, preallocated outputs (the steady path allocates nothing):
    trades in batches of 1,000 and 100, price ticks in batches of 1,000 and 100,
    each --reps times (median of reps; per-batch percentiles over all reps).
    The same trades are also run from an @njit loop (no Python dispatch per batch)
    to separate the kernel cost from the call overhead. Then a full audit.
 3. State bytes per slot, peak RSS, a table, and the section
    "## Kernels (perf/bench_kernels.py)" in perf/RESULTS.md (unless --no-write).
Exit status is non-zero only when a correctness check fails.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import math
import os
import resource
import sys
import time
from dataclasses import dataclass

# Single-threaded BLAS: idle OpenBLAS threads spinning on the second core would skew timings.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import psutil  # noqa: E402
from numba import njit  # noqa: E402

import baseline_dict  # noqa: E402
import results  # noqa: E402
from portfolio_state.daemon.book import DEFAULT_MARGIN, Book, Capacity  # noqa: E402
from portfolio_state.kernels import (  # noqa: E402
    REASON_NAMES,
    CashFlowType,
    Reason,
    TradeKind,
    apply_cash_flows_nb,
    apply_prices_nb,
    apply_trades_nb,
)
from portfolio_state.kernels.enums import NOTIONAL_DIV, PRICE_SCALE, QTY_SCALE  # noqa: E402
from portfolio_state.kernels.layout import cash_out_dt, trade_out_dt  # noqa: E402

SECTION = "## Kernels (perf/bench_kernels.py)"
RESULTS = results.RESULTS
machine, git_commit = results.machine, results.git_commit

# ---------------------------------------------------------------- world (reference data)
#: code, value of one unit in USD (the pivot)
CURRENCIES = [("USD", 1.0), ("EUR", 1.0842), ("GBP", 1.2691), ("JPY", 0.006712), ("CAD", 0.7321),
              ("CHF", 1.1234)]
#: country, currency, share of instruments
COUNTRIES = [("US", "USD", 0.60), ("GB", "GBP", 0.06), ("DE", "EUR", 0.06), ("FR", "EUR", 0.05),
             ("NL", "EUR", 0.03), ("IT", "EUR", 0.02), ("ES", "EUR", 0.02), ("JP", "JPY", 0.06),
             ("CA", "CAD", 0.04), ("CH", "CHF", 0.03), ("IE", "USD", 0.02), ("LU", "EUR", 0.01)]
SECTORS = ["Technology", "Financials", "Health Care", "Consumer Discretionary", "Industrials",
           "Communication Services", "Consumer Staples", "Energy", "Utilities", "Real Estate",
           "Materials"]
#: asset class, share, contract multiplier
ASSET_CLASSES = [("EQUITY", 0.80, 1), ("ETF", 0.08, 1), ("FIXED_INCOME", 0.06, 1), ("COMMODITY", 0.03, 1),
                 ("FUTURE", 0.03, 50)]
#: portfolio base currency shares
BASES = [("USD", 0.85), ("EUR", 0.10), ("GBP", 0.05)]
LONG_ONLY_SHARE = 0.25
DEPOSIT_FACTOR = 1.6        # deposit = 1.6 x the portfolio's opening notional (in base)
T0 = 1_700_000_000_000_000_000


@dataclass
class World:
    """Reference data and holdings, as plain arrays, shared by the kernel book and the baseline."""

    n_pf: int
    per_pf: int
    n_inst: int
    inst_ccy: np.ndarray      # index into CURRENCIES
    inst_country: np.ndarray
    inst_sector: np.ndarray
    inst_asset: np.ndarray
    inst_mult: np.ndarray
    inst_price: np.ndarray    # opening price, instrument currency
    pf_base: np.ndarray       # index into CURRENCIES
    pf_long_only: np.ndarray
    slot_inst: np.ndarray     # int32[n_pf * per_pf]; slot s belongs to portfolio s // per_pf
    open_qty: np.ndarray      # float64[n_pf * per_pf], whole units
    deposit: np.ndarray       # float64[n_pf], base currency

    @property
    def n_slots(self) -> int:
        return self.n_pf * self.per_pf


def make_world(seed: int, n_pf: int, per_pf: int, n_inst: int) -> World:
    if per_pf > n_inst:
        raise SystemExit(f"each portfolio holds {per_pf} distinct instruments but only {n_inst} exist")
    rng = np.random.default_rng(seed)
    ccy_code = [c for c, _ in CURRENCIES]
    fx = np.array([r for _, r in CURRENCIES])
    ci = rng.choice(len(COUNTRIES), n_inst, p=[w for *_, w in COUNTRIES])
    inst_country = ci.astype(np.int32)
    inst_ccy = np.array([ccy_code.index(COUNTRIES[i][1]) for i in range(len(COUNTRIES))], np.int32)[ci]
    inst_sector = rng.integers(0, len(SECTORS), n_inst).astype(np.int32)
    inst_asset = rng.choice(len(ASSET_CLASSES), n_inst, p=[w for _, w, _ in ASSET_CLASSES]).astype(np.int32)
    inst_mult = np.array([m for *_, m in ASSET_CLASSES], np.int64)[inst_asset]
    usd_px = np.clip(rng.lognormal(np.log(40.0), 1.0, n_inst), 1.0, 2000.0)
    bond = inst_asset == 2
    usd_px[bond] = rng.normal(100.0, 5.0, bond.sum())
    px = usd_px / fx[inst_ccy]
    px = np.where(inst_ccy == ccy_code.index("JPY"), np.round(px, 0), np.round(px, 2))
    pf_base = np.array([ccy_code.index(c) for c, _ in BASES], np.int32)[
        rng.choice(len(BASES), n_pf, p=[w for _, w in BASES])]
    pf_long_only = rng.random(n_pf) < LONG_ONLY_SHARE

    # per portfolio, per_pf distinct instruments, popularity-weighted (Gumbel top-k):
    # a few instruments sit in most portfolios, a long tail in few.
    w = 1.0 / (rng.permutation(n_inst) + 50.0) ** 0.8
    logw = np.log(w)
    slot_inst = np.empty((n_pf, per_pf), np.int32)
    chunk = max(1, 2_000_000 // n_inst)
    for c0 in range(0, n_pf, chunk):
        c1 = min(n_pf, c0 + chunk)
        g = rng.gumbel(size=(c1 - c0, n_inst)) + logw
        slot_inst[c0:c1] = np.argpartition(-g, per_pf - 1, axis=1)[:, :per_pf]
    slot_inst = slot_inst.reshape(-1)

    # opening size: $5k..$50k of notional, whole units
    target = rng.uniform(5e3, 5e4, n_pf * per_pf)
    unit_usd = (px * fx[inst_ccy] * inst_mult)[slot_inst]
    open_qty = np.maximum(1.0, np.round(target / unit_usd))
    notional_base = (open_qty * unit_usd).reshape(n_pf, per_pf).sum(axis=1) / fx[pf_base]
    deposit = np.round(notional_base * DEPOSIT_FACTOR, 2)
    return World(n_pf, per_pf, n_inst, inst_ccy, inst_country, inst_sector, inst_asset, inst_mult, px,
                 pf_base, pf_long_only, slot_inst, open_qty, deposit)


# ---------------------------------------------------------------- workloads
@dataclass
class Trades:
    kind: np.ndarray   # int8
    portfolio: np.ndarray
    slot: np.ndarray
    qty: np.ndarray
    price: np.ndarray
    fee: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    def cols(self):
        return (self.kind, self.portfolio, self.slot, self.qty, self.price, self.fee, self.ts)


@dataclass
class Ticks:
    instrument: np.ndarray
    price: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.instrument)


def make_trades(rng, world: World, n: int, ts0: int) -> Trades:
    """n trades on uniformly random slots: 46% BUY, 46% SELL, 4% SHORT, 4% COVER,
    1-20% of the opening size, at the reference price +-0.2%, a 1 bp fee."""
    slot = rng.integers(0, world.n_slots, n, dtype=np.int32)
    portfolio = (slot // world.per_pf).astype(np.int32)
    inst = world.slot_inst[slot]
    u = rng.random(n)
    kind = np.select([u < 0.46, u < 0.92, u < 0.96], [TradeKind.BUY, TradeKind.SELL, TradeKind.SHORT],
                     TradeKind.COVER).astype(np.int8)
    qty = np.maximum(1.0, np.round(world.open_qty[slot] * rng.uniform(0.01, 0.2, n)))
    price = np.round(world.inst_price[inst] * (1.0 + 0.002 * rng.standard_normal(n)), 4)
    price = np.maximum(price, 0.0001)
    fee = np.round(qty * price * world.inst_mult[inst] * 1e-4, 2)
    ts = ts0 + np.arange(n, dtype=np.int64)
    return Trades(kind, portfolio, slot, qty, price, fee, ts)


def make_ticks(rng, world: World, n: int, ts0: int) -> Ticks:
    """n ticks on uniformly random instruments at the reference price +-0.1%."""
    inst = rng.integers(0, world.n_inst, n, dtype=np.int32)
    price = np.maximum(np.round(world.inst_price[inst] * (1.0 + 0.001 * rng.standard_normal(n)), 4), 0.0001)
    return Ticks(inst, price, ts0 + np.arange(n, dtype=np.int64))


# ---------------------------------------------------------------- kernel book
def build_book(world: World, open_batch: int = 100_000) -> tuple[Book, dict]:
    """The kernel book for world; returns it and the seconds of each build phase."""
    t = {}
    t0 = time.perf_counter()
    book = Book(Capacity(portfolios=world.n_pf, slots=world.n_slots, instruments=world.n_inst,
                         currencies=16, sectors=16, countries=32, asset_classes=8))
    for i, (code, _) in enumerate(CURRENCIES):
        assert book.currency(code) == i
    r, _ = book.apply_fx(np.arange(1, len(CURRENCIES), dtype=np.int32),
                         np.array([v for _, v in CURRENCIES[1:]]), np.full(len(CURRENCIES) - 1, T0, np.int64))
    assert (r == 0).all(), r
    for k in range(world.n_inst):
        a = ASSET_CLASSES[world.inst_asset[k]]
        kk = book.upsert_instrument(f"I{k:06d}", CURRENCIES[world.inst_ccy[k]][0], SECTORS[world.inst_sector[k]],
                                    COUNTRIES[world.inst_country[k]][0], a[0], multiplier=a[2])
        assert kk == k
    for p in range(world.n_pf):
        pp = book.upsert_portfolio(f"P{p:06d}", CURRENCIES[world.pf_base[p]][0],
                                   "LONG_ONLY" if world.pf_long_only[p] else "LONG_SHORT")
        assert pp == p
    reason = np.zeros(world.n_inst, np.int32)
    apply_prices_nb(book.a, np.arange(world.n_inst, dtype=np.int32), world.inst_price,
                    np.full(world.n_inst, T0, np.int64), reason)
    assert (reason == Reason.OK).all()
    out = np.zeros(world.n_pf, cash_out_dt)
    n_ok = apply_cash_flows_nb(book.a, np.arange(world.n_pf, dtype=np.int32), world.pf_base,
                               np.full(world.n_pf, CashFlowType.DEPOSIT, np.int8), world.deposit,
                               np.full(world.n_pf, T0, np.int64), out)
    assert n_ok == world.n_pf, REASON_NAMES[out["reason"].max()]
    t["reference data, prices, deposits"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    caps0 = book.capacity
    pf_col = np.repeat(np.arange(world.n_pf, dtype=np.int32), world.per_pf)
    chunk = 1_000_000
    for c0 in range(0, world.n_slots, chunk):
        s = book.alloc(pf_col[c0:c0 + chunk], world.slot_inst[c0:c0 + chunk])
        assert s[0] == c0 and s[-1] == c0 + len(s) - 1
    t["Book.alloc of every slot"] = time.perf_counter() - t0
    grown = {k: (caps0[k], v) for k, v in book.capacity.items() if v != caps0[k]}

    t0 = time.perf_counter()
    n = world.n_slots
    out = np.zeros(open_batch, trade_out_dt)
    exp_out = np.zeros((open_batch, 5, 2))
    for c0 in range(0, n, open_batch):
        c1 = min(n, c0 + open_batch)
        m = c1 - c0
        slot = np.arange(c0, c1, dtype=np.int32)
        n_ok = apply_trades_nb(book.a, np.full(m, TradeKind.BUY, np.int8), pf_col[c0:c1], slot,
                               world.open_qty[c0:c1], world.inst_price[world.slot_inst[c0:c1]], np.zeros(m),
                               np.full(m, T0 + 1, np.int64), out, exp_out)
        assert n_ok == m, REASON_NAMES[out["reason"][:m].max()]
    t["opening BUY in every slot"] = time.perf_counter() - t0
    return book, {"phases": t, "grown": grown}


def python_side_bytes(book: Book) -> int:
    """Rough size of the Book's per-slot structures outside book.a: the id tables (arrays, ADR 0022)
    and the slot_ids list with its strings (sampled)."""
    sz = sys.getsizeof
    ids = book.slot_ids
    total = book.heads.nbytes() + book.slot_index.nbytes() + sz(ids)
    if ids:
        sample = ids[:: max(1, len(ids) // 2000)]
        distinct = {id(x): sz(x) for x in sample}  # a string shared by many slots (the bench's "") once
        total += int(sum(distinct.values()) / len(sample) * len(ids))
    return total


# ---------------------------------------------------------------- timed loops
def time_trades(book: Book, tr: Trades, batch: int, out, exp_out):
    """Apply tr in batches through the Python-called kernel; returns (per-batch ns, n_ok)."""
    a = book.a
    n = len(tr)
    nb = (n + batch - 1) // batch
    ns = np.empty(nb, np.int64)
    n_ok = 0
    kind, pf, slot, qty, price, fee, ts = tr.cols()
    clock = time.perf_counter_ns
    for j in range(nb):
        i0 = j * batch
        i1 = i0 + batch
        k_, p_, s_, q_, x_, f_, t_ = kind[i0:i1], pf[i0:i1], slot[i0:i1], qty[i0:i1], price[i0:i1], fee[i0:i1], ts[i0:i1]
        c0 = clock()
        n_ok += apply_trades_nb(a, k_, p_, s_, q_, x_, f_, t_, out, exp_out)
        ns[j] = clock() - c0
    return ns, n_ok


def time_ticks(book: Book, tk: Ticks, batch: int, reason):
    """Apply tk in batches; returns (per-batch ns, per-batch revalued count)."""
    a = book.a
    n = len(tk)
    nb = (n + batch - 1) // batch
    ns = np.empty(nb, np.int64)
    nrev = np.empty(nb, np.int64)
    clock = time.perf_counter_ns
    for j in range(nb):
        i0 = j * batch
        i1 = i0 + batch
        k_, x_, t_ = tk.instrument[i0:i1], tk.price[i0:i1], tk.ts[i0:i1]
        c0 = clock()
        nrev[j] = apply_prices_nb(a, k_, x_, t_, reason)
        ns[j] = clock() - c0
    return ns, nrev


@njit(cache=True)
def _drive_trades_nb(b, kind, portfolio, slot, qty, price, fee, ts, out, exp_out, batch):
    """The same batches, called from compiled code: the kernel without Python dispatch."""
    n = kind.shape[0]
    n_ok = 0
    for i0 in range(0, n, batch):
        i1 = min(n, i0 + batch)
        n_ok += apply_trades_nb(b, kind[i0:i1], portfolio[i0:i1], slot[i0:i1], qty[i0:i1], price[i0:i1],
                                fee[i0:i1], ts[i0:i1], out, exp_out)
    return n_ok


@njit(cache=True)
def _drive_ticks_nb(b, instrument, price, ts, reason, batch):
    n = instrument.shape[0]
    n_rev = 0
    for i0 in range(0, n, batch):
        i1 = min(n, i0 + batch)
        n_rev += apply_prices_nb(b, instrument[i0:i1], price[i0:i1], ts[i0:i1], reason)
    return n_rev


def warm_up() -> float:
    """Compile (or load from cache) every kernel and driver on a throwaway book."""
    t0 = time.perf_counter()
    w = make_world(1, 2, 4, 8)
    book, _ = build_book(w, open_batch=8)
    rng = np.random.default_rng(1)
    tr = make_trades(rng, w, 16, T0 + 10)
    tk = make_ticks(rng, w, 16, T0 + 10)
    out = np.zeros(8, trade_out_dt)
    exp_out = np.zeros((8, 5, 2))
    reason = np.zeros(8, np.int32)
    time_trades(book, tr, 8, out, exp_out)
    time_ticks(book, tk, 8, reason)
    _drive_trades_nb(book.a, *tr.cols(), out, exp_out, 8)
    _drive_ticks_nb(book.a, tk.instrument, tk.price, tk.ts, reason, 8)
    assert book.audit() == []
    return time.perf_counter() - t0


def dispatch_overhead_ns(book: Book, reps: int = 20000) -> tuple[float, float]:
    """Median-of-5 cost of calling each kernel from Python with an empty batch."""
    z8, z32, zf, z64 = np.zeros(0, np.int8), np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.int64)
    out = np.zeros(1, trade_out_dt)
    exp_out = np.zeros((1, 5, 2))
    reason = np.zeros(1, np.int32)
    a = book.a
    res = []
    for fn in (lambda: apply_trades_nb(a, z8, z32, z32, zf, zf, zf, z64, out, exp_out),
               lambda: apply_prices_nb(a, z32, zf, z64, reason)):
        runs = []
        for _ in range(5):
            c0 = time.perf_counter_ns()
            for _ in range(reps):
                fn()
            runs.append((time.perf_counter_ns() - c0) / reps)
        # subtract the lambda call itself
        c0 = time.perf_counter_ns()
        noop = lambda: None  # noqa: E731
        for _ in range(reps):
            noop()
        res.append(float(np.median(runs)) - (time.perf_counter_ns() - c0) / reps)
    return res[0], res[1]


# ---------------------------------------------------------------- correctness
def check_positions(book: Book, world: World, rng, n: int = 200) -> None:
    """Recompute sampled positions' market value by hand (exact integers) and sampled
    portfolios' aggregates from their slots; raise on any difference."""
    a = book.a
    fx = a.fx
    for s in rng.integers(0, world.n_slots, n):
        pos = a.positions[s]
        ins = a.instruments[pos["instrument"]]
        pf = a.portfolios[pos["portfolio"]]
        q, px, m = int(pos["qty"]), int(ins["price"]), int(ins["multiplier"])
        num, den = q * px * m, NOTIONAL_DIV
        c, r = divmod(num, den)
        if 2 * r > den or (2 * r == den and c % 2 == 1):
            c += 1
        ccy, base = int(ins["currency"]), int(pf["base_ccy"])
        mv = c if ccy == base or q == 0 else int(np.rint(np.float64(c) * (fx[ccy] / fx[base])))
        if mv != int(pos["mv"]):
            raise AssertionError(f"slot {s}: mv {int(pos['mv'])} != hand {mv}")
        # the float view: qty * price * fx, within a cent or two
        approx = q / QTY_SCALE * px / PRICE_SCALE * m * (1.0 if ccy == base else fx[ccy] / fx[base]) * 100
        if abs(approx - mv) > 2 + 1e-9 * abs(approx):
            raise AssertionError(f"slot {s}: mv {mv} cents vs float {approx}")
    for p in rng.integers(0, world.n_pf, max(1, n // 20)):
        mv = a.positions["mv"][p * world.per_pf:(p + 1) * world.per_pf]
        qty = a.positions["qty"][p * world.per_pf:(p + 1) * world.per_pf]
        pf = a.portfolios[p]
        if int(pf["long_mv"]) != int(mv[mv > 0].sum()) or int(pf["short_mv"]) != int(mv[mv < 0].sum()):
            raise AssertionError(f"portfolio {p}: long/short mv differ from its slots")
        if int(pf["position_count"]) != int((qty != 0).sum()):
            raise AssertionError(f"portfolio {p}: position_count differs")
        sec = np.zeros(a.exp_sector.shape[1], np.int64)
        np.add.at(sec, a.instruments["sector"][a.positions["instrument"][p * world.per_pf:(p + 1) * world.per_pf]], mv)
        if not np.array_equal(sec, a.exp_sector[p]):
            raise AssertionError(f"portfolio {p}: sector exposures differ from its slots")


def build_baseline(world: World) -> baseline_dict.DictBook:
    d = baseline_dict.DictBook()
    for i, (_, rate) in enumerate(CURRENCIES):
        d.set_fx(i, rate)
    for k in range(world.n_inst):
        name, _, mult = ASSET_CLASSES[world.inst_asset[k]]
        d.add_instrument(k, int(world.inst_ccy[k]), int(world.inst_sector[k]), int(world.inst_country[k]),
                         int(world.inst_asset[k]), int(mult), DEFAULT_MARGIN[name])
    for p in range(world.n_pf):
        d.add_portfolio(p, int(world.pf_base[p]), bool(world.pf_long_only[p]))
    for k, px in enumerate(world.inst_price.tolist()):
        d.apply_price(k, px, T0)
    for p, amt in enumerate(world.deposit.tolist()):
        d.deposit(p, int(world.pf_base[p]), amt, T0)
    insts = world.slot_inst.tolist()
    for s in range(world.n_slots):
        d.add_position(s // world.per_pf, s, insts[s])
    prices = world.inst_price[world.slot_inst].tolist()
    qtys = world.open_qty.tolist()
    for s in range(world.n_slots):
        r = d.apply_trade(baseline_dict.BUY, s // world.per_pf, s, qtys[s], prices[s], 0.0, T0 + 1)
        assert r[0] == baseline_dict.OK
    return d


def baseline_lists(tr: Trades):
    # the baseline keys positions by (portfolio, position_id); the id is the slot number
    return (tr.kind.tolist(), tr.portfolio.tolist(), tr.slot.tolist(), tr.qty.tolist(), tr.price.tolist(),
            tr.fee.tolist(), tr.ts.tolist())


def compare_rows(out, exp_out, rows) -> dict:
    """Per-row agreement of kernel outputs and baseline results; raise on a mismatch."""
    reasons = out["reason"]
    worst = {"mv_cents": 0.0, "exposure_pct": 0.0, "cash_cents": 0.0}
    for i, r in enumerate(rows):
        if r[0] != reasons[i]:
            raise AssertionError(f"row {i}: kernel {REASON_NAMES[reasons[i]]} vs baseline {REASON_NAMES[r[0]]}")
        if r[0] != Reason.OK:
            continue
        o = out[i]
        if int(o["qty"]) != round(r[2] * QTY_SCALE):
            raise AssertionError(f"row {i}: qty {int(o['qty'])} vs {r[2]}")
        worst["mv_cents"] = max(worst["mv_cents"], abs(int(o["mv"]) - r[6] * 100))
        worst["cash_cents"] = max(worst["cash_cents"], abs(int(o["cash_impact"]) - r[7] * 100))
        e = exp_out[i]
        worst["exposure_pct"] = max(worst["exposure_pct"], float(np.abs(e[:, 0] - np.array(r[11])).max()),
                                    float(np.abs(e[:, 1] - np.array(r[12])).max()))
    if worst["mv_cents"] > 2 or worst["cash_cents"] > 2 or worst["exposure_pct"] > 1e-7:
        raise AssertionError(f"kernel and baseline rows disagree: {worst}")
    return worst


def compare_state(book: Book, d: baseline_dict.DictBook, roundings: float) -> float:
    """Largest difference, in base currency units, of the portfolio aggregates.

    The kernels round every market value, margin and cash movement to the cent and
    the float baseline does not, so the two may drift apart by at most half a cent
    per rounding: raise beyond ``roundings`` (per portfolio) x $0.01.
    """
    pf = book.a.portfolios
    worst = 0.0
    for p, q in d.portfolios.items():
        for name, v in (("cash_base", q.cash_base), ("long_mv", q.long_mv), ("short_mv", q.short_mv),
                        ("init_margin", q.init_margin), ("maint_margin", q.maint_margin)):
            diff = abs(int(pf[name][p]) / 100 - v)
            if diff > 0.01 * roundings:
                raise AssertionError(f"portfolio {p}: {name} kernel {int(pf[name][p]) / 100} vs baseline {v}")
            worst = max(worst, diff)
        if int(pf["position_count"][p]) != q.position_count:
            raise AssertionError(f"portfolio {p}: position_count differs")
    return worst


# ---------------------------------------------------------------- helpers
class GcWatch:
    """Records the duration of every CPython garbage collection while installed."""

    def __init__(self) -> None:
        self.t0 = 0
        self.pauses: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.t0 = time.perf_counter_ns()
        else:
            self.pauses[info["generation"]].append(time.perf_counter_ns() - self.t0)

    def __enter__(self) -> "GcWatch":
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> str:
        return ", ".join(f"gen{g} {len(v)}x (max {max(v) / 1e6:.1f} ms)" if v else f"gen{g} 0x"
                         for g, v in self.pauses.items())


def pct(x, q):
    return float(np.percentile(x, q)) if len(x) else float("nan")


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def log(msg: str) -> None:
    print(msg, flush=True)


def write_section(text: str) -> None:
    results.write_section(text, SECTION)


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 portfolios x 1,000 slots, 1M trades/revaluations")
    ap.add_argument("--portfolios", type=int, help="main book portfolios (default 10,000; quick 100)")
    ap.add_argument("--slots", type=int, help="main book slots, a multiple of --portfolios (default 10M; quick 100k)")
    ap.add_argument("--instruments", type=int, help="main book instruments (default 20,000; quick 2,000)")
    ap.add_argument("--trades", type=int, help="trades per repetition (default 10M; quick 1M)")
    ap.add_argument("--revals", type=int, help="target revalued positions per repetition (default 10M; quick 1M)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each timed workload (default 3)")
    ap.add_argument("--compare-portfolios", type=int, default=100, help="comparison book portfolios (x 1,000)")
    ap.add_argument("--compare-ops", type=int, default=100_000, help="comparison trades (and target revaluations)")
    ap.add_argument("--no-full-audit", action="store_true", help="skip Book.audit() of the main book at the end")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--no-write", action="store_true", help=f"do not update {os.path.relpath(RESULTS)}")
    args = ap.parse_args(argv)

    q = args.quick
    n_pf = args.portfolios or (100 if q else 10_000)
    n_slots = args.slots or n_pf * 1000
    if n_slots % n_pf:
        ap.error("--slots must be a multiple of --portfolios")
    per_pf = n_slots // n_pf
    n_inst = args.instruments or (2_000 if q else 20_000)
    n_trades = args.trades or (1_000_000 if q else 10_000_000)
    n_revals = args.revals or (1_000_000 if q else 10_000_000)
    reps = max(1, args.reps)
    cmd = " ".join(["python perf/bench_kernels.py", *(sys.argv[1:] if argv is None else argv)])
    t_start = time.perf_counter()
    F = {}   # figures

    log(f"== bench_kernels: main book {n_pf:,} portfolios x {per_pf:,} = {n_slots:,} slots, "
        f"{n_inst:,} instruments; {n_trades:,} trades and ~{n_revals:,} revaluations per rep, {reps} reps")
    log(f"   {machine()}")
    F["jit_warmup_s"] = warm_up()
    log(f"JIT warm-up (compile or load cache) {F['jit_warmup_s']:.1f} s")

    # ------------------------------------------------------------ 1. comparison book
    c_pf, c_per, c_inst = args.compare_portfolios, 1000, 2000
    cw = make_world(args.seed + 1, c_pf, c_per, c_inst)
    rng = np.random.default_rng(args.seed + 2)
    t0 = time.perf_counter()
    cbook, _ = build_book(cw)
    F["cmp_build_kernel_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dbook = build_baseline(cw)
    F["cmp_build_dict_s"] = time.perf_counter() - t0
    issues = cbook.audit()
    if issues:
        raise AssertionError(f"audit after build: {issues[:5]}")
    F["cmp_state_diff_build"] = compare_state(cbook, dbook, c_per)

    # correctness pass (untimed): the same 20k trades and 200 ticks on both, row by row
    ctr = make_trades(rng, cw, 20_000, T0 + 100)
    out = np.zeros(len(ctr), trade_out_dt)
    exp_out = np.zeros((len(ctr), 5, 2))
    apply_trades_nb(cbook.a, *ctr.cols(), out, exp_out)
    rows = dbook.apply_trades(*baseline_lists(ctr))
    F["cmp_row_diff"] = compare_rows(out, exp_out, rows)
    ctk = make_ticks(rng, cw, 200, T0 + 200_000)
    reason = np.zeros(len(ctk), np.int32)
    n_k = apply_prices_nb(cbook.a, ctk.instrument, ctk.price, ctk.ts, reason)
    n_d = dbook.apply_prices(ctk.instrument.tolist(), ctk.price.tolist(), ctk.ts.tolist())
    if n_k != n_d:
        raise AssertionError(f"revalued: kernel {n_k} vs baseline {n_d}")
    issues = cbook.audit()
    if issues:
        raise AssertionError(f"audit after the correctness pass: {issues[:5]}")
    F["cmp_state_diff_check"] = compare_state(cbook, dbook, c_per + 20_000 / c_pf)
    log(f"correctness (comparison book): audit clean; kernel == baseline row by row "
        f"(worst mv {F['cmp_row_diff']['mv_cents']:.2f} c, exposure {F['cmp_row_diff']['exposure_pct']:.1e}); "
        f"aggregates within ${F['cmp_state_diff_check']:.4f}")

    # timing: the same trades and ticks, kernel and baseline interleaved per rep
    n_ops = args.compare_ops
    ctr = make_trades(rng, cw, n_ops, T0 + 1_000_000)
    mean_h = cbook.a.inst_len[:c_inst].mean()
    ctk = make_ticks(rng, cw, max(100, int(math.ceil(n_ops / mean_h / 100)) * 100), T0 + 2_000_000)
    blists = baseline_lists(ctr)
    tk_lists = (ctk.instrument.tolist(), ctk.price.tolist(), ctk.ts.tolist())
    outb = np.zeros(1000, trade_out_dt)
    expb = np.zeros((1000, 5, 2))
    reason = np.zeros(1000, np.int32)
    cmp = {k: [] for k in ("k_tr1000", "k_tr100", "d_tr", "k_tk1000", "k_tk100", "d_tk")}
    okk = okd = okk100 = okd100 = nrk = nrd = 0
    for _ in range(reps):
        ns, okk = time_trades(cbook, ctr, 1000, outb, expb)
        cmp["k_tr1000"].append(ns.sum() / len(ctr))
        c0 = time.perf_counter_ns()
        res = dbook.apply_trades(*blists)
        cmp["d_tr"].append((time.perf_counter_ns() - c0) / len(ctr))
        okd = sum(1 for r in res if r[0] == 0)
        ns, okk100 = time_trades(cbook, ctr, 100, outb, expb)
        cmp["k_tr100"].append(ns.sum() / len(ctr))
        res = dbook.apply_trades(*blists)    # the same rows again: both books stay in step
        okd100 = sum(1 for r in res if r[0] == 0)
        ns, nr = time_ticks(cbook, ctk, 1000, reason)
        cmp["k_tk1000"].append(ns.sum() / nr.sum())
        nrk = int(nr.sum())
        c0 = time.perf_counter_ns()
        nrd = dbook.apply_prices(*tk_lists)
        cmp["d_tk"].append((time.perf_counter_ns() - c0) / nrd)
        ns, nr = time_ticks(cbook, ctk, 100, reason)
        cmp["k_tk100"].append(ns.sum() / nr.sum())
        dbook.apply_prices(*tk_lists)
    if okk != okd or okk100 != okd100 or nrk != nrd:
        raise AssertionError(f"accepted/revalued differ: kernel {okk}/{okk100}/{nrk} vs baseline "
                             f"{okd}/{okd100}/{nrd}")
    issues = cbook.audit()
    if issues:
        raise AssertionError(f"audit after the comparison runs: {issues[:5]}")
    F["cmp_state_diff_end"] = compare_state(cbook, dbook, c_per + (20_000 + 2 * reps * n_ops) / c_pf)
    C = {k: float(np.median(v)) for k, v in cmp.items()}
    F["cmp"] = C
    F["cmp_sizes"] = (c_pf, c_per, c_inst, len(ctr), len(ctk), nrk, okk)
    log(f"comparison book {c_pf}x{c_per} ({c_inst} instruments): {len(ctr):,} trades ({okk:,} accepted), "
        f"{len(ctk):,} ticks -> {nrk:,} revaluations; aggregates still within ${F['cmp_state_diff_end']:.4f}")
    log(f"  trades: kernel {C['k_tr1000']:.0f} ns (batch 1000), {C['k_tr100']:.0f} ns (batch 100); "
        f"dict {C['d_tr']:.0f} ns -> {C['d_tr'] / C['k_tr1000']:.0f}x / {C['d_tr'] / C['k_tr100']:.0f}x")
    log(f"  ticks per revalued position: kernel {C['k_tk1000']:.1f} ns (1000/batch), {C['k_tk100']:.1f} ns "
        f"(100/batch); dict {C['d_tk']:.0f} ns -> {C['d_tk'] / C['k_tk1000']:.0f}x / {C['d_tk'] / C['k_tk100']:.0f}x")
    del dbook, cbook, blists, res, rows

    # ------------------------------------------------------------ 2. main book
    rss0 = rss_mb()
    t0 = time.perf_counter()
    world = make_world(args.seed, n_pf, per_pf, n_inst)
    F["world_s"] = time.perf_counter() - t0
    log(f"world generated in {F['world_s']:.1f} s")
    t0 = time.perf_counter()
    book, binfo = build_book(world)
    F["build_s"] = time.perf_counter() - t0
    F["build_phases"] = binfo["phases"]
    F["grown"] = binfo["grown"]
    F["rss_after_build_mb"] = rss_mb()
    a = book.a
    holders = a.inst_len[:n_inst]
    F["holders"] = (int(holders.min()), float(np.median(holders)), float(holders.mean()), int(holders.max()))
    log(f"build {F['build_s']:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in F["build_phases"].items())
        + f"; grew {F['grown'] or 'nothing'}; RSS {F['rss_after_build_mb']:.0f} MB")
    log(f"  holders per instrument: min {F['holders'][0]}, median {F['holders'][1]:.0f}, "
        f"mean {F['holders'][2]:.0f}, max {F['holders'][3]}")

    state_bytes = {name: getattr(a, name).nbytes for name in a._fields}
    F["state_bytes"] = sum(state_bytes.values())
    F["state_top"] = sorted(state_bytes.items(), key=lambda kv: -kv[1])[:4]
    F["bytes_per_slot"] = F["state_bytes"] / a.positions.shape[0]
    F["py_bytes"] = python_side_bytes(book)
    log(f"state {F['state_bytes'] / 2**20:.0f} MiB = {F['bytes_per_slot']:.1f} B/slot ("
        + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in F["state_top"])
        + f"); Book's slot maps (id tables + slot_ids) ~{F['py_bytes'] / 2**20:.0f} MiB = "
          f"{F['py_bytes'] / n_slots:.0f} B/slot")

    c0 = time.perf_counter_ns()
    gc.collect()
    F["gc_full_ms"] = (time.perf_counter_ns() - c0) / 1e6
    log(f"a full gc.collect() with the main book in memory takes {F['gc_full_ms']:.0f} ms")
    check_positions(book, world, np.random.default_rng(args.seed + 3))
    log("correctness (main book): sampled positions match a hand mark; sampled portfolios match their slots")

    rng = np.random.default_rng(args.seed + 4)
    t0 = time.perf_counter()
    tr = make_trades(rng, world, n_trades, T0 + 10_000_000)
    n_ticks = max(1000, int(math.ceil(n_revals / holders.mean() / 1000)) * 1000)
    tk = make_ticks(rng, world, n_ticks, T0 + 10_000_000 + n_trades)
    F["workload_s"] = time.perf_counter() - t0
    F["workload_mb"] = sum(c.nbytes for c in tr.cols()) / 2**20
    log(f"workloads generated in {F['workload_s']:.1f} s ({F['workload_mb']:.0f} MiB of trade columns); "
        f"{n_ticks:,} ticks per rep")

    F["dispatch_ns"] = dispatch_overhead_ns(book)
    log(f"Python -> kernel call overhead (empty batch): trades {F['dispatch_ns'][0]:.0f} ns, "
        f"prices {F['dispatch_ns'][1]:.0f} ns")

    M = {}
    watch = GcWatch().__enter__()
    for batch in (1000, 100):
        out = np.zeros(batch, trade_out_dt)
        exp_out = np.zeros((batch, 5, 2))
        per_rep, all_ns, oks = [], [], []
        for r in range(reps):
            ns, ok = time_trades(book, tr, batch, out, exp_out)
            per_rep.append(ns.sum() / len(tr))
            all_ns.append(ns)
            oks.append(ok)
            log(f"  trades batch {batch}: rep {r + 1}: {per_rep[-1]:.1f} ns/trade ({ok:,} accepted)")
        all_ns = np.concatenate(all_ns)
        M[f"tr{batch}"] = {"ns": float(np.median(per_rep)), "reps": per_rep, "p50": pct(all_ns, 50) / 1e3,
                           "p99": pct(all_ns, 99) / 1e3, "p999": pct(all_ns, 99.9) / 1e3,
                           "max": all_ns.max() / 1e3, "accepted": float(np.mean(oks)) / len(tr)}
        c0 = time.perf_counter_ns()
        _drive_trades_nb(a, *tr.cols(), out, exp_out, batch)
        M[f"tr{batch}_jit"] = (time.perf_counter_ns() - c0) / len(tr)
        log(f"  trades batch {batch}: in-JIT loop (no Python dispatch) {M[f'tr{batch}_jit']:.1f} ns/trade")
    for batch in (1000, 100):
        reason = np.zeros(batch, np.int32)
        per_rep, all_ns, all_rev = [], [], []
        for r in range(reps):
            ns, nr = time_ticks(book, tk, batch, reason)
            per_rep.append(ns.sum() / nr.sum())
            all_ns.append(ns)
            all_rev.append(nr)
            log(f"  ticks batch {batch}: rep {r + 1}: {per_rep[-1]:.1f} ns/revalued position "
                f"({nr.sum():,} revalued)")
        all_ns = np.concatenate(all_ns)
        all_rev = np.concatenate(all_rev)
        M[f"tk{batch}"] = {"ns": float(np.median(per_rep)), "reps": per_rep, "p50": pct(all_ns, 50) / 1e3,
                           "p99": pct(all_ns, 99) / 1e3, "max": all_ns.max() / 1e3,
                           "revalued": int(all_rev.sum() // reps), "per_tick_ns": all_ns.sum() / (len(tk) * reps)}
        c0 = time.perf_counter_ns()
        nrv = _drive_ticks_nb(a, tk.instrument, tk.price, tk.ts, reason, batch)
        M[f"tk{batch}_jit"] = (time.perf_counter_ns() - c0) / nrv
        log(f"  ticks batch {batch}: in-JIT loop {M[f'tk{batch}_jit']:.1f} ns/revalued position")
    watch.__exit__()
    F["gc_timed"] = watch.summary()
    log(f"garbage collections during the timed workloads: {F['gc_timed']}")
    F["main"] = M
    F["main_sizes"] = (n_pf, per_pf, n_slots, n_inst, len(tr), len(tk))

    if not args.no_full_audit:
        t0 = time.perf_counter()
        issues = book.audit()
        F["audit_s"] = time.perf_counter() - t0
        if issues:
            raise AssertionError(f"audit of the main book after the workloads: {issues[:5]}")
        log(f"correctness (main book): Book.audit() clean after all workloads ({F['audit_s']:.1f} s)")
    check_positions(book, world, np.random.default_rng(args.seed + 5))

    F["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    F["rss_before_main_mb"] = rss0
    F["total_s"] = time.perf_counter() - t_start

    text = report(F, cmd, args)
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        log(f"wrote the section '{SECTION}' of {os.path.relpath(RESULTS)}")
    return 0


def report(F: dict, cmd: str, args) -> str:
    M, C = F["main"], F["cmp"]
    n_pf, per_pf, n_slots, n_inst, n_tr, n_tk = F["main_sizes"]
    c_pf, c_per, c_inst, c_tr, c_tk, c_rev, c_ok = F["cmp_sizes"]
    full = n_slots >= 10_000_000
    scale = f"{n_slots / 1e6:g}M slots" if n_slots >= 1e6 else f"{n_slots / 1e3:g}k slots"

    def bar(v, limit, le=True):
        ok = v <= limit if le else v >= limit
        return "meets" if ok else "**misses**"

    rows = [
        ("Trade, batch 1,000 (exposures + aggregates), ns/trade", f"{M['tr1000']['ns']:.0f}", "≤ 100",
         bar(M["tr1000"]["ns"], 100)),
        ("Trade, batch 100, ns/trade", f"{M['tr100']['ns']:.0f}", "(≤ 100)", bar(M["tr100"]["ns"], 100)),
        ("Price tick, batch 1,000 ticks, ns/revalued position", f"{M['tk1000']['ns']:.1f}", "≤ 50",
         bar(M["tk1000"]["ns"], 50)),
        ("Price tick, batch 100 ticks, ns/revalued position", f"{M['tk100']['ns']:.1f}", "(≤ 50)",
         bar(M["tk100"]["ns"], 50)),
        (f"Build of the main book ({scale}, incl. opening trades), s", f"{F['build_s']:.1f}", "(none)", ""),
        ("State bytes per position slot (book.a)", f"{F['bytes_per_slot']:.1f}", "≤ 256",
         bar(F["bytes_per_slot"], 256)),
        ("Peak RSS of the whole run, GiB", f"{F['peak_rss_mb'] / 1024:.2f}", "< 4", bar(F["peak_rss_mb"] / 1024, 4)),
        ("Trades vs dict baseline, same book, batch 1,000", f"{C['d_tr'] / C['k_tr1000']:.0f}×", "≥ 20×",
         bar(C["d_tr"] / C["k_tr1000"], 20, le=False)),
        ("Trades vs dict baseline, same book, batch 100", f"{C['d_tr'] / C['k_tr100']:.0f}×", "(≥ 20×)",
         bar(C["d_tr"] / C["k_tr100"], 20, le=False)),
        ("Ticks vs dict baseline, same book, batch 1,000", f"{C['d_tk'] / C['k_tk1000']:.0f}×", "≥ 20×",
         bar(C["d_tk"] / C["k_tk1000"], 20, le=False)),
        ("Ticks vs dict baseline, same book, batch 100", f"{C['d_tk'] / C['k_tk100']:.0f}×", "(≥ 20×)",
         bar(C["d_tk"] / C["k_tk100"], 20, le=False)),
        (f"Trades: kernel at {scale} vs dict at {c_pf * c_per // 1000}k, batch 1,000",
         f"{C['d_tr'] / M['tr1000']['ns']:.0f}×", "(≥ 20×)", bar(C["d_tr"] / M["tr1000"]["ns"], 20, le=False)),
        (f"Ticks: kernel at {scale} vs dict at {c_pf * c_per // 1000}k, batch 1,000",
         f"{C['d_tk'] / M['tk1000']['ns']:.0f}×", "(≥ 20×)", bar(C["d_tk"] / M["tk1000"]["ns"], 20, le=False)),
    ]
    tr1, tr100, tk1, tk100 = M["tr1000"], M["tr100"], M["tk1000"], M["tk100"]
    ph = F["build_phases"]
    lines = [
        SECTION,
        "",
        f"- Date (UTC): {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M')}",
        f"- Commit: {git_commit()}",
        f"- Machine: {machine()}",
        f"- Command: `{cmd}`" + ("" if full else "  (reduced size: bars are set for 10M slots)"),
        f"- Main book: {n_pf:,} portfolios × {per_pf:,} positions = {n_slots:,} slots (all live), "
        f"{n_inst:,} instruments (holders per instrument min/median/max "
        f"{F['holders'][0]}/{F['holders'][1]:.0f}/{F['holders'][3]}); "
        f"{n_tr:,} trades and {n_tk:,} ticks (≈{tk1['revalued']:,} revaluations) per repetition, "
        f"{args.reps} repetitions, median reported. Seed {args.seed}.",
        f"- Comparison book (kernels and `perf/baseline_dict.py`, same rows): {c_pf} × {c_per} = "
        f"{c_pf * c_per:,} slots, {c_inst:,} instruments; {c_tr:,} trades ({c_ok:,} accepted), {c_tk:,} ticks "
        f"(≈{c_rev:,} revaluations).",
        "- Timings are kernel calls from Python with caller-owned preallocated outputs, Python call overhead "
        "included; the machine is shared, so figures are indicative.",
        "",
        "| Figure | Value | Bar | |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        "Details:",
        "",
        f"- Trades batch 1,000: per rep {', '.join(f'{x:.0f}' for x in tr1['reps'])} ns/trade; per batch "
        f"p50 {tr1['p50']:.0f} µs, p99 {tr1['p99']:.0f} µs, p99.9 {tr1['p999']:.0f} µs, max {tr1['max']:.0f} µs; "
        f"{tr1['accepted']:.1%} accepted (the rest long-only SHORT/oversell rejections). "
        f"Same batches from an @njit loop (no Python call per batch): {M['tr1000_jit']:.0f} ns/trade.",
        f"- Trades batch 100: per rep {', '.join(f'{x:.0f}' for x in tr100['reps'])} ns/trade; per batch "
        f"p50 {tr100['p50']:.1f} µs, p99 {tr100['p99']:.1f} µs, max {tr100['max']:.0f} µs; "
        f"@njit loop {M['tr100_jit']:.0f} ns/trade.",
        f"- Python → kernel call overhead (empty batch): apply_trades_nb {F['dispatch_ns'][0]:.0f} ns, "
        f"apply_prices_nb {F['dispatch_ns'][1]:.0f} ns per call.",
        f"- Ticks batch 1,000: per rep {', '.join(f'{x:.1f}' for x in tk1['reps'])} ns/revalued position; "
        f"per batch p50 {tk1['p50'] / 1e3:.1f} ms, p99 {tk1['p99'] / 1e3:.1f} ms; "
        f"{tk1['per_tick_ns'] / 1e3:.1f} µs per tick; @njit loop {M['tk1000_jit']:.1f} ns/position.",
        f"- Ticks batch 100: per rep {', '.join(f'{x:.1f}' for x in tk100['reps'])} ns/revalued position; "
        f"per batch p50 {tk100['p50'] / 1e3:.2f} ms, p99 {tk100['p99'] / 1e3:.2f} ms; "
        f"@njit loop {M['tk100_jit']:.1f} ns/position.",
        f"- Comparison book, ns per op (kernel batch 1,000 / batch 100 / dict): trades "
        f"{C['k_tr1000']:.0f} / {C['k_tr100']:.0f} / {C['d_tr']:.0f}; ticks per revalued position "
        f"{C['k_tk1000']:.1f} / {C['k_tk100']:.1f} / {C['d_tk']:.0f}.",
        f"- State: {F['state_bytes'] / 2**20:.0f} MiB in book.a = {F['bytes_per_slot']:.1f} B/slot; largest: "
        + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in F["state_top"])
        + f". Outside book.a, the Book's slot maps (the id tables and slot_ids) hold "
          f"≈{F['py_bytes'] / 2**20:.0f} MiB ≈ {F['py_bytes'] / n_slots:.0f} B/slot.",
        f"- Python GC: a full `gc.collect()` with the main book built takes {F['gc_full_ms']:.0f} ms; "
        f"collections during the timed workloads: {F['gc_timed']}.",
        f"- Memory: RSS {F['rss_before_main_mb']:.0f} MiB before the main book, {F['rss_after_build_mb']:.0f} MiB "
        f"after building it; peak {F['peak_rss_mb']:.0f} MiB (includes {F['workload_mb']:.0f} MiB of "
        f"pre-generated trade columns).",
        f"- Build of the main book {F['build_s']:.1f} s: " + "; ".join(f"{k} {v:.1f} s" for k, v in ph.items())
        + f" ({ph['opening BUY in every slot'] * 1e9 / n_slots:.0f} ns per opening trade, batches of 100k). "
          f"Capacity grown during the build: {F['grown'] or 'nothing'}.",
        f"- Correctness: comparison book `Book.audit()` clean after build, after a row-by-row check against the "
        f"baseline (reasons and quantities equal; mv within {F['cmp_row_diff']['mv_cents']:.2f} cents, "
        f"exposure percentages within {F['cmp_row_diff']['exposure_pct']:.1e}) and after the timed runs "
        f"(aggregates within ${F['cmp_state_diff_end']:.4f} of the float baseline); main book: sampled positions "
        f"equal an exact hand mark, sampled portfolios equal the sums of their slots"
        + ("" if "audit_s" not in F else f", and `Book.audit()` is clean after all workloads ({F['audit_s']:.1f} s)")
        + ".",
        f"- Whole run {F['total_s']:.0f} s (JIT warm-up {F['jit_warmup_s']:.1f} s). Where the kernel time goes: "
        f"`python perf/probe_nrt.py` runs the same kernel source compiled without Numba reference counting.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
