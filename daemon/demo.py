"""``pstate demo``: a daemon, a synthetic desk's book, a stream of trades and ticks, a report.

Owns: the demo's book generator, its pipelined streaming loop and its report.
Runs on: the main thread of the demo process; the daemon is a child process.
Imports: numpy, zmq, msgspec, transport, daemon.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import msgspec
import numpy as np

from portfolio_state.kernels import TradeKind
from portfolio_state.transport import messages as m
from portfolio_state.transport.client import Client, new_key

SECTORS = ["Technology", "Financials", "Health Care", "Energy", "Industrials", "Consumer Discretionary",
           "Consumer Staples", "Utilities", "Materials", "Real Estate", "Communication Services"]
COUNTRIES = {"USD": ["US"], "EUR": ["DE", "FR", "NL", "IT", "ES"], "GBP": ["GB"], "JPY": ["JP"], "CHF": ["CH"],
             "CAD": ["CA"]}
FX = {"EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CHF": 1.12, "CAD": 0.73}
ASSET_CLASSES = ["EQUITY", "EQUITY", "EQUITY", "ETF", "FIXED_INCOME", "FUTURE", "COMMODITY"]


def _say(text: str, end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def demo(args) -> int:
    rng = np.random.default_rng(20261124)
    tmp = tempfile.mkdtemp(prefix="pstate-demo-")
    cmd_ep, ev_ep = f"ipc://{tmp}/cmd", f"ipc://{tmp}/events"
    log_path = os.path.join(tmp, "daemon.log")
    t_start = time.time()
    _say(f"starting daemon (log {log_path}) ...")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "portfolio_state.daemon.cli", "run", "--command", cmd_ep,
                                 "--events", ev_ep, "--set", "book.slots=131072",
                                 "--set", f"journal.data_dir={tmp}/data"], stdout=log, stderr=subprocess.STDOUT)
    try:
        while "ready:" not in open(log_path).read():
            if proc.poll() is not None:
                _say(open(log_path).read())
                return 1
            time.sleep(0.05)
        with Client(cmd_ep, timeout=30.0) as c, Client(cmd_ep, timeout=30.0) as probe:
            slots, portfolios, instruments, prices, opened = _build(c, args, rng)
            _say(f"book ready in {time.time() - t_start:.1f}s: {args.portfolios} portfolios, {args.instruments} "
                 f"instruments, {len(slots)} positions")
            sent, seconds = _stream(c, probe, args, rng, slots, portfolios, instruments, prices, opened)
            _report(c, sent, seconds)
        return 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _build(c: Client, args, rng):
    n_inst = args.instruments
    ccys = rng.choice(list(COUNTRIES), n_inst, p=[0.55, 0.2, 0.08, 0.08, 0.05, 0.04])
    c.fx(FX)
    instruments, prices = [], {}
    for i in range(n_inst):
        ccy = str(ccys[i])
        ac = str(rng.choice(ASSET_CLASSES))
        iid = f"I{i:05d}"
        instruments.append(m.Instrument(iid, ccy, str(rng.choice(SECTORS)), str(rng.choice(COUNTRIES[ccy])), ac,
                                        50 if ac == "FUTURE" else 1))
        prices[iid] = float(np.round(rng.lognormal(4.0, 0.8), 2)) / (FX.get(ccy, 1.0) if ccy == "JPY" else 1.0)
    for k in range(0, n_inst, 1000):
        c.upsert_instruments(instruments[k:k + 1000])
    c.prices(prices)
    refs = []
    for p in range(args.portfolios):
        pid = f"PF{p:04d}"
        c.upsert_portfolio(pid, portfolio_name=f"Fund {p}", portfolio_type="LONG_ONLY" if p % 5 == 0 else "LONG_SHORT",
                           base_currency="EUR" if p % 7 == 0 else "USD", instrument_limit=0.10)
        c.cash_flow(pid, float(rng.integers(1, 50)) * 1_000_000, currency="EUR" if p % 7 == 0 else "USD")
        c.set_limit(pid, "SECTOR", "Technology", 0.30)
        held = rng.choice(n_inst, args.positions, replace=False)
        refs += [(pid, f"{pid}-{instruments[k].instrument_id}", instruments[k].instrument_id) for k in held]
    slots, pfs = [], []
    for k in range(0, len(refs), 5000):
        r = c.resolve(positions=refs[k:k + 5000])
        slots += r.slots
        pfs += r.portfolios[:len(r.slots)]
    inst_of_slot = np.array([int(ref[2][1:]) for ref in refs])
    # open every position with a buy so the stream trades around real holdings
    slots, pfs = np.array(slots, np.int32), np.array(pfs, np.int32)
    px = np.array([prices[f"I{k:05d}"] for k in inst_of_slot])
    opened = rng.integers(10, 500, len(slots)).astype(np.float64)
    for k in range(0, len(slots), 5000):
        sl = slice(k, k + 5000)
        c.update_columns(pfs[sl], slots[sl], np.zeros(len(slots[sl]), np.int8), opened[sl], px[sl])
    return slots, pfs, inst_of_slot, prices, opened


def _stream(c: Client, probe: Client, args, rng, slots, portfolios, inst_of_slot, prices, opened):
    """Pipelined column frames (a window of frames in flight) plus a price-tick frame every tenth frame.
    Trades lean back towards each position's opening size (a desk trading around its holdings, not
    a drift that piles up millions of units over a run): the chance of a buy falls as the position
    grows past it. Progress comes through ``probe``: a second socket, so no reply of the stream is
    taken by it."""
    sock = c.sock
    enc = msgspec.msgpack.Encoder()
    base_px = np.array([prices[f"I{k:05d}"] for k in range(len(prices))])
    inst_ids = [f"I{k:05d}" for k in range(len(prices))]
    window, inflight, sent, frames = 8, 0, 0, 0
    held = opened.copy()  # this client's view of each position's size (the daemon's may differ by a rejection)
    t0 = time.time()
    last_print = t0
    n = args.batch
    while True:
        now = time.time()
        if now - t0 >= args.seconds:
            break
        while inflight < window:
            pick = rng.integers(0, len(slots), n)
            p_buy = 0.5 - 0.4 * np.tanh((held[pick] - opened[pick]) / opened[pick])
            buy = rng.random(n) < p_buy
            kind = np.where(buy, TradeKind.BUY, TradeKind.SELL).astype(np.int8)
            qty = rng.integers(1, 20, n).astype(np.float64)
            np.add.at(held, pick, np.where(buy, qty, -qty))
            px = base_px[inst_of_slot[pick]] * (1 + rng.normal(0, 0.002, n))
            body = enc.encode(c.columns(portfolios[pick], slots[pick], kind, qty, np.round(px, 4), key=new_key()))
            sock.send_multipart([b"t", body])
            inflight += 1
            sent += n
            frames += 1
            if frames % 10 == 0:
                ticks = rng.integers(0, len(inst_ids), 200)
                moves = base_px[ticks] * (1 + rng.normal(0, 0.001, len(ticks)))
                sock.send_multipart([b"p", enc.encode(m.PriceTicks(new_key(), [m.PriceTick(inst_ids[k], float(round(v, 4)))
                                                                              for k, v in zip(ticks, moves)]))])
                inflight += 1
        if sock.poll(5000):
            sock.recv_multipart()
            inflight -= 1
        if now - last_print >= 0.5:
            mt = probe.metrics()
            _say(f"\r  {now - t0:5.1f}s  sent {sent:>10,} updates  {sent / (now - t0):>10,.0f} updates/s  "
                 f"daemon p99 {mt['latency_us']['p99']:>6} us", end="")
            last_print = now
    while inflight:
        if not sock.poll(30000):
            break
        sock.recv_multipart()
        inflight -= 1
    _say("")
    return sent, time.time() - t0


def _report(c: Client, sent: int, seconds: float) -> None:
    mt = c.metrics()
    lat = mt["latency_us"]
    _say(f"\nstreamed {sent:,} updates in {seconds:.1f}s: {sent / seconds:,.0f} updates/s offered; daemon applied "
         f"{mt['updates']:,} ({mt['rejected_updates']:,} rejected by business rules), {mt['ticks']:,} price ticks "
         f"revaluing {mt['revalued_positions']:,} positions")
    _say(f"daemon latency per frame (receive -> reply sent): p50 {lat['p50']} us, p90 {lat['p90']} us, "
         f"p99 {lat['p99']} us, p99.9 {lat['p99_9']} us, max {lat['max']} us over {lat['count']:,} frames")
    st = c.state("PF0001")
    s = st.portfolio_state
    _say(f"\nportfolio {s.portfolio_id}: total value {s.total_value:,.2f}  cash {s.cash_balance:,.2f}  invested "
         f"{s.invested_value:,.2f}  leverage {s.leverage_ratio:.3f}  positions {s.position_count}")
    _say(f"margin: initial {st.margin.initial_margin:,.2f}  maintenance {st.margin.maintenance_margin:,.2f}  "
         f"excess liquidity {st.margin.excess_liquidity:,.2f}  buying power {st.margin.buying_power:,.2f}")
    for t in ("SECTOR", "INSTRUMENT", "CURRENCY"):
        _say(f"top {t.lower()} exposures:")
        for e in st.exposures.get(t, [])[:4]:
            util = "" if e.utilization != e.utilization else f"  limit {e.limit_percentage:.0%}  utilization {e.utilization:.0%}"
            _say(f"  {e.category:<24} {e.exposure_value:>16,.2f}  {e.exposure_percentage:>7.2%}{util}")
