#!/usr/bin/env python
"""Probe: how much of the kernels' time is Numba reference counting (NRT incref/decref)?

    python perf/probe_nrt.py                       # 100 portfolios x 1,000 slots
    python perf/probe_nrt.py --portfolios 10000    # 10M slots (builds for ~1 minute)

Recompiles the *unchanged* Python source of ``apply_trades_nb`` and
``apply_prices_nb`` with Numba's NRT disabled (``njit(_nrt=False)``, a private
Numba flag; the kernels allocate nothing, so nothing else changes), runs the same
trades and ticks on two identical copies of a book built by ``bench_kernels``,
checks that both leave identical state and outputs, and prints both timings.

Background: every kernel helper takes the whole ``BookArrays`` tuple (22 arrays).
Each time the tuple is bound inside an inlined helper, Numba increfs and later
decrefs all 22 arrays' meminfos (an atomic read-modify-write through a call), and
LLVM's refcount pruning does not remove them across the helpers' branches.
A difference between the two columns below is that cost. After a fix in
``kernels/`` (e.g. unpack the needed arrays once per kernel call and pass arrays,
not the tuple, to helpers) the two columns should match.
Writes nothing. Imports: bench_kernels (same directory), numpy, numba, kernels.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_kernels as bk  # noqa: E402
from portfolio_state.kernels import apply_prices_nb, apply_trades_nb  # noqa: E402
from portfolio_state.kernels.layout import BookArrays, trade_out_dt  # noqa: E402


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    if x.dtype.names:
        return all(_same(x[f], y[f]) for f in x.dtype.names)
    return np.array_equal(x, y, equal_nan=x.dtype.kind == "f")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portfolios", type=int, default=100)
    ap.add_argument("--per-portfolio", type=int, default=1000)
    ap.add_argument("--instruments", type=int)
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    n_inst = args.instruments or (2000 if args.portfolios <= 100 else 20000)

    t0 = time.perf_counter()
    trades_off = njit(_nrt=False)(apply_trades_nb.py_func)
    prices_off = njit(_nrt=False)(apply_prices_nb.py_func)
    w = bk.make_world(5, args.portfolios, args.per_portfolio, n_inst)
    book, _ = bk.build_book(w)
    twin = BookArrays(*[x.copy() for x in book.a])
    rng = np.random.default_rng(0)
    tr = bk.make_trades(rng, w, args.trades, bk.T0 + 10)
    n_ticks = max(1000, int(w.n_slots / book.a.inst_len[:n_inst].mean()))
    tk = bk.make_ticks(rng, w, n_ticks, bk.T0 + 10 + args.trades)
    batch = 1000
    outs = [(np.zeros(batch, trade_out_dt), np.zeros((batch, 5, 2))) for _ in range(2)]
    reasons = [np.zeros(batch, np.int32) for _ in range(2)]
    for fn, b, (o, e) in ((apply_trades_nb, book.a, outs[0]), (trades_off, twin, outs[1])):
        fn(b, *[c[:0] for c in tr.cols()], o, e)       # compile, no state change
    for fn, b, r in ((apply_prices_nb, book.a, reasons[0]), (prices_off, twin, reasons[1])):
        fn(b, tk.instrument[:0], tk.price[:0], tk.ts[:0], r)
    print(f"book {args.portfolios:,} x {args.per_portfolio:,} = {w.n_slots:,} slots, {n_inst:,} instruments; "
          f"{len(tr):,} trades and {len(tk):,} ticks per rep in batches of {batch}; setup {time.perf_counter() - t0:.0f} s")

    res = {k: [] for k in ("tr_nrt", "tr_off", "tk_nrt", "tk_off")}
    for _ in range(args.reps):
        for key, fn, b, (o, e) in (("tr_nrt", apply_trades_nb, book.a, outs[0]), ("tr_off", trades_off, twin, outs[1])):
            ns = 0
            for i in range(0, len(tr), batch):
                cols = [c[i:i + batch] for c in tr.cols()]
                c0 = time.perf_counter_ns()
                fn(b, *cols, o, e)
                ns += time.perf_counter_ns() - c0
            res[key].append(ns / len(tr))
        for key, fn, b, r in (("tk_nrt", apply_prices_nb, book.a, reasons[0]), ("tk_off", prices_off, twin, reasons[1])):
            ns = n = 0
            for i in range(0, len(tk), batch):
                c0 = time.perf_counter_ns()
                n += fn(b, tk.instrument[i:i + batch], tk.price[i:i + batch], tk.ts[i:i + batch], r)
                ns += time.perf_counter_ns() - c0
            res[key].append(ns / n)
    same = all(_same(x, y) for x, y in zip(book.a, twin)) and _same(outs[0][0], outs[1][0]) and _same(
        outs[0][1], outs[1][1])
    m = {k: float(np.median(v)) for k, v in res.items()}
    print(f"{'':34s}{'as shipped':>12s}{'_nrt=False':>12s}{'ratio':>8s}")
    print(f"{'trade, ns/trade':34s}{m['tr_nrt']:12.1f}{m['tr_off']:12.1f}{m['tr_nrt'] / m['tr_off']:7.1f}x")
    print(f"{'price tick, ns/revalued position':34s}{m['tk_nrt']:12.1f}{m['tk_off']:12.1f}{m['tk_nrt'] / m['tk_off']:7.1f}x")
    print(f"identical state and outputs after {args.reps} reps: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
