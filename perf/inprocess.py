"""In-process core cost per fill: our kernel against nautilus_trader's ``Position.apply`` on the same fills.

Owns: ``compare`` (one book from perf/bench_kernels.py's world, one stream of trades; ours timed
through ``apply_trades_nb`` called from Python one fill per call, 100 and 1,000 per call; then the
same fills handed to perf/nautilus_fills.py in a Python that has nautilus_trader) and
``nautilus_python`` (which Python that is: this one, or $PERF_NAUTILUS_PYTHON).
What each side does per fill: ours moves quantity, cost, realized P&L, fees, cash, market value,
five exposure dimensions, margin and the portfolio aggregates (fixed point); nautilus_trader moves
one position's quantity, average prices, realized P&L and commissions and keeps the fill event.
Runs on: the harness's main process; nautilus_trader in a child process. Imports: numpy,
perf/bench_kernels.py (world, book, trades, timing), the standard library.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import bench_kernels as bk
from portfolio_state.kernels import TradeKind
from portfolio_state.kernels.layout import trade_out_dt

HERE = os.path.dirname(os.path.abspath(__file__))
NAUTILUS_VERSION = "1.221.0"


def nautilus_python() -> tuple[str | None, str]:
    """(a Python that imports nautilus_trader, or None; how it was found or why not)."""
    cands = [os.environ.get("PERF_NAUTILUS_PYTHON"), sys.executable]
    for py in filter(None, cands):
        r = subprocess.run([py, "-c", "import nautilus_trader; print(nautilus_trader.__version__)"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return py, f"nautilus_trader {r.stdout.strip()} ({py})"
    return None, (f"nautilus_trader is not installed: `pip install -e \".[perf]\"` (nautilus_trader=={NAUTILUS_VERSION}), "
                  "or point PERF_NAUTILUS_PYTHON at a Python that has it")


def compare(n_pf: int, per_pf: int, n_fills: int, reps: int = 3, seed: int = 20261124) -> dict:
    bk.warm_up()
    world = bk.make_world(seed, n_pf, per_pf, max(2000, per_pf))
    book, _ = bk.build_book(world)
    tr = bk.make_trades(np.random.default_rng(seed + 1), world, n_fills, bk.T0 + 10)
    res = {"positions": world.n_slots, "fills": n_fills, "ours_ns": {}}
    out, exp_out = np.zeros(1000, trade_out_dt), np.zeros((1000, 5, 2))
    for batch in (1, 100, 1000):
        per = []
        for _ in range(reps):  # the same fills again: the book moves on, the work per fill stays alike
            ns, _ = bk.time_trades(book, tr, batch, out, exp_out)
            per.append(float(ns.sum()) / n_fills)
        res["ours_ns"][batch] = sorted(per)[reps // 2]
    res["ours_accepted"] = int(bk.time_trades(book, tr, 1000, out, exp_out)[1])
    py, how = nautilus_python()
    res["nautilus_how"] = how
    if py is None:
        return res
    with tempfile.TemporaryDirectory(prefix="pstate-nautilus-") as tmp:
        path = os.path.join(tmp, "fills.npz")
        buy = (tr.kind == TradeKind.BUY) | (tr.kind == TradeKind.COVER)
        inst_px = world.inst_price[world.slot_inst]
        np.savez(path, pos_inst=world.slot_inst, open_qty=world.open_qty, open_px=inst_px,
                 f_pos=tr.slot, f_buy=buy, f_qty=tr.qty, f_px=tr.price)
        r = subprocess.run([py, os.path.join(HERE, "nautilus_fills.py"), path, str(reps)], capture_output=True,
                           text=True, timeout=1800)
    if r.returncode != 0:
        res["nautilus_error"] = (r.stderr or r.stdout)[-1500:]
        return res
    res["nautilus"] = json.loads(r.stdout.strip().splitlines()[-1])
    return res
