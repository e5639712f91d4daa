"""Portfolio performance: daily Modified Dietz returns chained into a time-weighted index.

Owns: ``PerformanceBook``, per-portfolio state in NumPy arrays (a few numbers each, never a
history), and ``metrics``, the spec's PerformanceMetrics of one portfolio.
Runs on: the engine thread (the engine calls ``roll`` at the first batch of each UTC day, ``flow``
for external flows, ``metrics`` for a query). Imports: numpy.

Definitions (returns are fractions; money in base cents; a "day" is a UTC calendar day of the
batches' receive times, which the journal records, so replay and as-of rebuild the same numbers):
- External flows F: deposits and withdrawals (their base-currency cash impact) and position
  transfers in and out (their value change). Dividends, interest, fees and trading are
  performance, not flows.
- Day return (Modified Dietz, flows weighted at mid-day): r = (V_end - V_open - F) / (V_open + F/2),
  0 when the denominator is not positive. V_open is the total value (cash + long + short market
  value) when the day began, V_end at the day's last batch (for today: now).
- Index: I = prod(1 + r) over completed days; total_return = I * (1 + r_today) - 1;
  daily_return = r_today.
- volatility = sample standard deviation of completed day returns * sqrt(252); null below 2 days.
- sharpe_ratio = mean / standard deviation of completed day returns * sqrt(252) (risk-free rate 0);
  null below 2 days or with zero deviation.
- max_drawdown = the largest fall of the index from its running peak, at day ends and now: a
  positive fraction (0.25 = a 25% fall).
- beta = cov(r, r_b) / var(r_b) over completed days, r_b the day return of the portfolio's
  benchmark instrument (its price at day end / day open - 1); alpha = (mean(r) - beta *
  mean(r_b)) * 252. Null when the benchmark is not an instrument with prices, or below 2 days.
"""
from __future__ import annotations

import math

import numpy as np

NS_PER_DAY = 86_400 * 1_000_000_000
DAYS_PER_YEAR = 252

STATE_DT = np.dtype([
    ("open_value", np.int64),   # total value at the day's start, base cents
    ("flows", np.int64),        # external flows today, base cents
    ("index", np.float64),      # time-weighted index at the day's start (1.0 at inception)
    ("peak", np.float64),       # running peak of the index at day ends
    ("mdd", np.float64),        # largest drawdown at day ends so far
    ("n", np.int64),            # completed days
    ("s_r", np.float64), ("s_rr", np.float64),                   # sums of r, r^2
    ("bench_open", np.float64),                                  # benchmark price at the day's start (NaN: none)
    ("n_b", np.int64), ("s_b", np.float64), ("s_bb", np.float64), ("s_rb", np.float64),  # days with the
    ("s_r_b", np.float64),                                                               # benchmark: sums
])


def day_of(ns: int) -> int:
    return int(ns) // NS_PER_DAY


def dietz(v_open, v_end, flows):
    """Modified Dietz return(s), 0 where the denominator is not positive."""
    v_open = np.asarray(v_open, np.float64)
    flows = np.asarray(flows, np.float64)
    den = v_open + flows / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (np.asarray(v_end, np.float64) - v_open - flows) / np.where(den > 0, den, 1), 0.0)


class PerformanceBook:
    def __init__(self, n: int = 0):
        self.day = -1                     # the UTC day the open values belong to (-1: none yet)
        self.s = np.zeros(n, STATE_DT)
        self.s["index"] = self.s["peak"] = 1.0
        self.s["bench_open"] = np.nan

    def fit(self, n: int) -> None:
        if len(self.s) < n:
            add = np.zeros(max(n, 2 * len(self.s)) - len(self.s), STATE_DT)
            add["index"] = add["peak"] = 1.0
            add["bench_open"] = np.nan
            self.s = np.concatenate([self.s, add])

    def flow(self, p, cents) -> None:
        """External flows (arrays or scalars) into portfolios p."""
        if isinstance(p, int):  # one cash flow: no arrays to build
            self.fit(p + 1)
            self.s["flows"][p] += cents
            return
        p = np.atleast_1d(np.asarray(p, np.int64))
        if len(p):
            self.fit(int(p.max()) + 1)
            np.add.at(self.s["flows"], p, np.atleast_1d(np.asarray(cents, np.int64)))

    def roll(self, day: int, values: np.ndarray, bench: np.ndarray) -> None:
        """A new UTC day begins: close the day for every portfolio at ``values`` (base cents, now)
        with benchmark prices ``bench`` (NaN: none), and open the new one there."""
        n = len(values)
        self.fit(n)
        s = self.s[:n]
        if self.day >= 0:
            r = dietz(s["open_value"], values, s["flows"])
            idx = s["index"] * (1 + r)
            s["index"] = idx
            s["peak"] = np.maximum(s["peak"], idx)
            with np.errstate(invalid="ignore", divide="ignore"):
                s["mdd"] = np.maximum(s["mdd"], np.where(s["peak"] > 0, 1 - idx / s["peak"], 0.0))
            s["n"] += 1
            s["s_r"] += r
            s["s_rr"] += r * r
            with np.errstate(invalid="ignore", divide="ignore"):
                rb = bench / s["bench_open"] - 1
            ok = np.isfinite(rb)
            s["n_b"] += ok
            s["s_b"] += np.where(ok, rb, 0.0)
            s["s_bb"] += np.where(ok, rb * rb, 0.0)
            s["s_rb"] += np.where(ok, r * rb, 0.0)
            s["s_r_b"] += np.where(ok, r, 0.0)
        s["open_value"] = values
        s["flows"] = 0
        s["bench_open"] = bench
        self.day = day

    def columns(self, ps: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        """PerformanceMetrics of portfolios ps now, as float64 columns (NaN where undefined);
        values: their total values (base cents)."""
        ps = np.asarray(ps, np.int64)
        if len(ps):
            self.fit(int(ps.max()) + 1)
        s = self.s[ps]
        r_today = dietz(s["open_value"], values, s["flows"])
        idx_now = s["index"] * (1 + r_today)
        peak = np.maximum(s["peak"], idx_now)
        with np.errstate(invalid="ignore", divide="ignore"):
            mdd = np.maximum(s["mdd"], np.where(peak > 0, 1 - idx_now / peak, 0.0))
            n = s["n"].astype(np.float64)
            mean = s["s_r"] / n
            sd = np.sqrt(np.maximum(0.0, (s["s_rr"] - n * mean * mean) / (n - 1)))
            vol = np.where(n >= 2, sd * math.sqrt(DAYS_PER_YEAR), np.nan)
            sharpe = np.where((n >= 2) & (sd > 0), mean / sd * math.sqrt(DAYS_PER_YEAR), np.nan)
            nb = s["n_b"].astype(np.float64)
            mb, mr = s["s_b"] / nb, s["s_r_b"] / nb
            var_b = (s["s_bb"] - nb * mb * mb) / (nb - 1)
            cov = (s["s_rb"] - nb * mr * mb) / (nb - 1)
            ok = (nb >= 2) & (var_b > 0)
            beta = np.where(ok, cov / var_b, np.nan)
            alpha = np.where(ok, (mr - beta * mb) * DAYS_PER_YEAR, np.nan)
        return {"total_return": idx_now - 1, "daily_return": r_today, "volatility": vol, "sharpe_ratio": sharpe,
                "max_drawdown": mdd, "beta": beta, "alpha": alpha}

    def metrics(self, p: int, value: int) -> dict:
        """PerformanceMetrics of portfolio p now (value: its total value, base cents): None where undefined."""
        cols = self.columns(np.array([p]), np.array([value], np.int64))
        return {k: (None if math.isnan(float(v[0])) else float(v[0])) for k, v in cols.items()}
