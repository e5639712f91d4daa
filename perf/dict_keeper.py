"""A plain-Python portfolio keeper behind the same ROUTER socket: the baseline ``bench_daemon.py`` compares with.

Owns: ``DictKeeper`` (positions, portfolios, exposures in dicts and small
``__slots__`` objects, floats) and ``main`` (a ROUTER server:
``python perf/dict_keeper.py --command EP``; with ``--echo`` it answers every
frame with one constant reply and decodes nothing: the ceiling of this socket
loop, so of any Python server of one message per update).
Runs on: its own process, one thread, a plain loop: receive one message
(waiting in poll when none is queued), apply it, send its reply. Imports: zmq, msgspec (as the msgpack codec
only: untyped decode into dicts/lists, encode of dicts), the standard library.

What a straightforward service written without NumPy/Numba would do with the
daemon's wire protocol: the same frame convention (every frame before the body
is echoed back in the reply), the same msgpack bodies (``position_update``,
``position_update_batch``, ``position_update_columns`` with int32/float64
column bytes read through ``memoryview.cast``, and the set-up commands
``fx``, ``instruments``, ``prices``, ``portfolio``, ``cash_flow``,
``exposure_limit``, ``resolve``, ``metrics``, ``health``), and replies of the
same shape as the daemon's (so ``transport.client.Client`` decodes them):
a ``position_update_response`` (position, portfolio impact, the five exposure
changes) per single update, a compact ``batch_response`` per batch.

Per update it does the daemon's trade arithmetic in floats: average cost,
realized P&L on reductions, fees, cash in the instrument's currency, market
value in the portfolio's base currency through FX, long/short market value,
margin by side, position count, long-only checks, and five incremental
exposure dicts (INSTRUMENT, SECTOR, GEOGRAPHIC, CURRENCY, ASSET_CLASS). It
keeps an idempotency window (key -> reply, bounded FIFO) like the daemon's.
It publishes no events and keeps no shared memory: both are work the daemon
does and this baseline does not.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections import OrderedDict

import msgspec
import zmq

BUY, SELL, SHORT, COVER = 0, 1, 2, 3
KINDS = {"BUY": BUY, "SELL": SELL, "SHORT": SHORT, "COVER": COVER}
# reason codes, named as the daemon's error codes
REASONS = {1: "UNKNOWN_PORTFOLIO", 2: "UNKNOWN_INSTRUMENT", 3: "UNKNOWN_POSITION", 4: "BAD_QUANTITY",
           5: "BAD_PRICE", 7: "BAD_KIND", 8: "NO_FX_RATE", 12: "LONG_ONLY_SHORT", 13: "LONG_ONLY_OVERSELL",
           17: "BAD_FEE", 20: "INSTRUMENT_MISMATCH"}
EXPOSURE_TYPES = ("INSTRUMENT", "SECTOR", "GEOGRAPHIC", "CURRENCY", "ASSET_CLASS")
# default margin rates (long init, long maint, short init, short maint), as daemon/book.py's DEFAULT_MARGIN
MARGIN = {"EQUITY": (0.50, 0.25, 0.50, 0.30), "ETF": (0.50, 0.25, 0.50, 0.30), "FIXED_INCOME": (0.20, 0.10, 0.20, 0.10),
          "GOVERNMENT_BOND": (0.05, 0.03, 0.05, 0.03), "FUTURE": (0.10, 0.08, 0.10, 0.08), "FX": (0.05, 0.03, 0.05, 0.03),
          "COMMODITY": (0.15, 0.10, 0.15, 0.10), "CASH_EQUIVALENT": (0.0, 0.0, 0.0, 0.0)}


class Instrument:
    __slots__ = ("iid", "price", "multiplier", "ccy", "cats", "rates", "holders")

    def __init__(self, iid, ccy, sector, country, asset, multiplier, rates):
        self.iid = iid
        self.price = 0.0
        self.multiplier = multiplier
        self.ccy = ccy
        self.cats = (iid, sector, country, ccy, asset)  # category per exposure type
        self.rates = rates  # long init, long maint, short init, short maint
        self.holders = []  # positions holding it (for price ticks)


class Portfolio:
    __slots__ = ("pid", "base", "long_only", "cash", "cash_base", "long_mv", "short_mv", "init_margin",
                 "maint_margin", "position_count", "exp", "limits", "updated_ns")

    def __init__(self, pid, base, long_only):
        self.pid = pid
        self.base = base
        self.long_only = long_only
        self.cash = {}
        self.cash_base = 0.0
        self.long_mv = 0.0
        self.short_mv = 0.0
        self.init_margin = 0.0
        self.maint_margin = 0.0
        self.position_count = 0
        self.exp = ({}, {}, {}, {}, {})  # per exposure type: category -> net value (base currency)
        self.limits = {}
        self.updated_ns = 0


class Position:
    __slots__ = ("pf", "ins", "position_id", "qty", "cost", "realized", "mv", "updated_ns")

    def __init__(self, pf, ins, position_id):
        self.pf = pf
        self.ins = ins
        self.position_id = position_id
        self.qty = 0.0
        self.cost = 0.0  # signed, instrument currency
        self.realized = 0.0
        self.mv = 0.0  # signed, base currency
        self.updated_ns = 0


def _margin(mv, r_long, r_short):
    return mv * r_long if mv > 0 else -mv * r_short


class DictKeeper:
    def __init__(self, window: int = 1_000_000):
        self.fx = {"USD": 1.0}
        self.portfolios: dict[str, Portfolio] = {}
        self.pf_list: list[Portfolio] = []
        self.pf_handles: dict[int, int] = {}  # id(Portfolio) -> handle
        self.instruments: dict[str, Instrument] = {}
        self.positions: dict[tuple, Position] = {}  # (portfolio_id, position_id) -> Position
        self.slots: list[Position] = []  # handle -> Position (column frames)
        self._slot_of: dict[int, int] = {}  # id(Position) -> handle
        self.inst_handles: dict[str, int] = {}
        self.window_size = window
        self.window: OrderedDict[str, tuple] = OrderedDict()  # key -> (body, reply bytes)
        self.counters = {"messages": 0, "updates": 0, "rejected_updates": 0, "errors": 0, "replays": 0}
        self.started = time.time()

    # ------------------------------------------------------------ arithmetic
    def _ratio(self, ccy, base):
        if ccy == base:
            return 1.0
        a, b = self.fx.get(ccy), self.fx.get(base)
        return a / b if a and b else None

    def _cash(self, pf, ccy, delta):
        pf.cash[ccy] = pf.cash.get(ccy, 0.0) + delta
        d = delta * self._ratio(ccy, pf.base)
        pf.cash_base += d
        e = pf.exp[3]
        e[ccy] = e.get(ccy, 0.0) + d
        return d

    @staticmethod
    def _set_mv(pf, pos, ins, new_mv):
        old_mv = pos.mv
        if old_mv == new_mv:
            return
        if old_mv > 0:
            pf.long_mv -= old_mv
        else:
            pf.short_mv -= old_mv
        if new_mv > 0:
            pf.long_mv += new_mv
        else:
            pf.short_mv += new_mv
        li, lm, si, sm = ins.rates
        pf.init_margin += _margin(new_mv, li, si) - _margin(old_mv, li, si)
        pf.maint_margin += _margin(new_mv, lm, sm) - _margin(old_mv, lm, sm)
        d = new_mv - old_mv
        for e, cat in zip(pf.exp, ins.cats):
            e[cat] = e.get(cat, 0.0) + d
        pos.mv = new_mv

    @staticmethod
    def _pcts(pf, ins, total):
        if total == 0:
            return (0.0, 0.0, 0.0, 0.0, 0.0)
        return tuple(e.get(cat, 0.0) / total for e, cat in zip(pf.exp, ins.cats))

    def trade(self, pos, kind, qty, price, fee, ts, detail):
        """Apply one update to a known position. Returns a reason code (int) or, when ok,
        None (detail False) or the reply dict (detail True)."""
        pf, ins = pos.pf, pos.ins
        if not (kind == BUY or kind == SELL or kind == SHORT or kind == COVER):
            return 7
        if not (fee >= 0.0 and math.isfinite(fee)):
            return 17
        if not (price > 0.0 and math.isfinite(price)):
            return 5
        if not (qty > 0.0 and math.isfinite(qty)):
            return 4
        ratio = self._ratio(ins.ccy, pf.base)
        if ratio is None:
            return 8
        dq = qty if (kind == BUY or kind == COVER) else -qty
        old = pos.qty
        new = old + dq
        if pf.long_only:
            if kind == SHORT:
                return 12
            if new < 0:
                return 13
        px_eff = price * ins.multiplier
        notional = dq * px_eff
        cost = pos.cost
        realized = 0.0
        if old == 0 or (dq > 0) == (old > 0):
            cost += notional
        else:
            closed = dq if abs(dq) <= abs(old) else -old
            n_closed = notional if closed == dq else closed * px_eff
            removed = cost * abs(closed) / abs(old)
            realized = -n_closed - removed
            cost = cost - removed + (notional - n_closed)
        realized -= fee
        old_total = pf.cash_base + pf.long_mv + pf.short_mv
        old_mv = pos.mv
        if detail:
            old_pcts = self._pcts(pf, ins, old_total)
        if ins.price == 0.0:
            ins.price = price
        cash_impact = self._cash(pf, ins.ccy, -notional - fee)
        pos.qty = new
        pos.cost = cost
        pos.realized += realized
        pos.updated_ns = ts
        if (old != 0) != (new != 0):
            pf.position_count += 1 if new != 0 else -1
        self._set_mv(pf, pos, ins, new * ins.price * ins.multiplier * ratio)
        pf.updated_ns = ts
        if not detail:
            return None
        total = pf.cash_base + pf.long_mv + pf.short_mv
        new_pcts = self._pcts(pf, ins, total)
        cost_base = cost * ratio
        return {
            "updated_position": {
                "position_id": pos.position_id, "instrument_id": ins.iid, "quantity": new, "market_value": pos.mv,
                "cost_basis": cost_base, "unrealized_pnl": pos.mv - cost_base,
                "weight": pos.mv / total if total else 0.0, "status": "ACTIVE", "last_updated": None,
                "realized_pnl": pos.realized * ratio, "average_price": cost / (new * ins.multiplier) if new else 0.0,
                "last_price": ins.price},
            "portfolio_impact": {"value_change": total - old_total,
                                 "weight_change": (pos.mv / total if total else 0.0) - (old_mv / old_total if old_total else 0.0),
                                 "risk_change": 0.0, "cash_impact": cash_impact},
            "exposure_changes": [{"exposure_type": t, "category": c, "old_percentage": o, "new_percentage": n,
                                  "change": n - o}
                                 for t, c, o, n in zip(EXPOSURE_TYPES, ins.cats, old_pcts, new_pcts)],
        }

    def position(self, pf, position_id, instrument_id):
        """The position, created on first use (as the daemon allocates a slot); or a reason code."""
        pos = self.positions.get((pf.pid, position_id))
        if pos is not None:
            return pos if pos.ins.iid == instrument_id else 20
        ins = self.instruments.get(instrument_id)
        if ins is None:
            return 2
        pos = Position(pf, ins, position_id)
        self.positions[(pf.pid, position_id)] = pos
        ins.holders.append(pos)
        return pos

    def price(self, iid, price):
        ins = self.instruments.get(iid)
        if ins is None or not (price > 0.0 and math.isfinite(price)):
            return -1
        ins.price = price
        local = price * ins.multiplier
        n = 0
        for pos in ins.holders:
            if pos.qty != 0:
                pf = pos.pf
                self._set_mv(pf, pos, ins, pos.qty * local * self._ratio(ins.ccy, pf.base))
                n += 1
        return n

    # ------------------------------------------------------------ commands
    def handle(self, msg: dict, now: int):
        """One decoded request -> reply dict."""
        t = msg.get("type")
        key = msg.get("key")
        if t == "position_update":
            return self._single(msg, key, now)
        if t == "position_update_columns":
            return self._columns(msg, key, now)
        if t == "position_update_batch":
            return self._batch(msg, key, now)
        if t == "fx":
            for ccy, rate in msg["rates"]:
                self.fx[ccy] = float(rate)
            self._revalue_all()
            return {"type": "ack", "key": key, "result": {"accepted": len(msg["rates"])}}
        if t == "prices":
            n = sum(max(0, self.price(iid, float(px))) for iid, px in msg["ticks"])
            return {"type": "ack", "key": key, "result": {"accepted": len(msg["ticks"]), "revalued": n}}
        if t == "instruments":
            handles = []
            for d in msg["instruments"]:
                iid = d["instrument_id"]
                ac = d.get("asset_class", "EQUITY")
                rates = tuple(d["margin"]) if d.get("margin") else MARGIN.get(ac, MARGIN["EQUITY"])
                if iid not in self.instruments:
                    self.instruments[iid] = Instrument(iid, d.get("currency", "USD"), d.get("sector", "UNKNOWN"),
                                                       d.get("country", "UNKNOWN"), ac, d.get("multiplier", 1), rates)
                    self.inst_handles[iid] = len(self.inst_handles)
                handles.append(self.inst_handles[iid])
            return {"type": "ack", "key": key, "result": {"handles": handles, "rejected": []}}
        if t == "portfolio":
            d = msg["portfolio"]
            pid = d["portfolio_id"]
            pf = self.portfolios.get(pid)
            if pf is None:
                pf = Portfolio(pid, d.get("base_currency", "USD"), d.get("portfolio_type", "LONG_SHORT") == "LONG_ONLY")
                self.portfolios[pid] = pf
                self.pf_handles[id(pf)] = len(self.pf_list)
                self.pf_list.append(pf)
            return {"type": "ack", "key": key, "result": {"portfolio_id": pid, "handle": self.pf_handles[id(pf)]}}
        if t == "cash_flow":
            pf = self.portfolios.get(msg["portfolio_id"])
            if pf is None:
                return _error("UNKNOWN_PORTFOLIO", key)
            amount = float(msg["amount"])
            sign = -1.0 if msg["flow_type"] in ("WITHDRAWAL", "FEE") else 1.0
            impact = self._cash(pf, msg["currency"], sign * amount)
            return {"type": "ack", "key": key, "result": {"cash_flow_id": msg["cash_flow_id"], "amount": amount,
                                                          "cash": pf.cash[msg["currency"]], "cash_impact": impact}}
        if t == "exposure_limit":
            pf = self.portfolios.get(msg["portfolio_id"])
            if pf is None:
                return _error("UNKNOWN_PORTFOLIO", key)
            pf.limits[(msg["exposure_type"], msg["category"])] = msg["limit_percentage"]
            return {"type": "ack", "key": key, "result": {}}
        if t == "resolve":
            return self._resolve(msg)
        if t == "metrics":
            return {"type": "metrics_response",
                    "metrics": {**self.counters, "portfolios": len(self.portfolios),
                                "instruments": len(self.instruments), "slots": len(self.positions),
                                "idempotency_keys": len(self.window), "uptime_s": time.time() - self.started}}
        if t == "health":
            return {"type": "health_response", "status": "ok", "details": {}}
        return _error("INVALID", key, f"unknown command type {t!r}")

    def _single(self, msg, key, now):
        pf = self.portfolios.get(msg["portfolio_id"])
        if pf is None:
            r = 1
        else:
            pos = self.position(pf, msg["position_id"], msg["instrument_id"])
            if isinstance(pos, int):
                r = pos
            else:
                r = self.trade(pos, KINDS.get(msg["transaction_type"], -1), float(msg["quantity_change"]),
                               float(msg["price"]), float(msg.get("fee", 0.0)), msg.get("timestamp") or now, True)
        if isinstance(r, int):
            self.counters["rejected_updates"] += 1
            return _error(REASONS.get(r, "INVALID"), key)
        self.counters["updates"] += 1
        r["type"] = "position_update_response"
        r["key"] = key
        r["processing_time_ms"] = 0.0
        return r

    def _batch(self, msg, key, now):
        rejected = []
        ok = 0
        for j, u in enumerate(msg["updates"]):
            pf = self.portfolios.get(u["portfolio_id"])
            if pf is None:
                r = 1
            else:
                pos = self.position(pf, u["position_id"], u["instrument_id"])
                r = pos if isinstance(pos, int) else self.trade(
                    pos, KINDS.get(u["transaction_type"], -1), float(u["quantity_change"]), float(u["price"]),
                    float(u.get("fee", 0.0)), u.get("timestamp") or now, False)
            if r is None:
                ok += 1
            else:
                rejected.append([j, REASONS.get(r, "INVALID"), REASONS.get(r, "INVALID")])
        return self._batch_reply(key, ok, rejected)

    def _columns(self, msg, key, now):
        portfolio = memoryview(msg["portfolio"]).cast("i")
        slot = memoryview(msg["slot"]).cast("i")
        kind = memoryview(msg["kind"]).cast("b")
        qty = memoryview(msg["qty"]).cast("d")
        price = memoryview(msg["price"]).cast("d")
        n = len(portfolio)
        fee = memoryview(msg["fee"]).cast("d") if msg.get("fee") else None
        ts = memoryview(msg["timestamp"]).cast("q") if msg.get("timestamp") else None
        if not all(len(c) == n for c in (slot, kind, qty, price)):
            return _error("INVALID", key, "columns differ in length")
        slots, pf_list, trade = self.slots, self.pf_list, self.trade
        rejected = []
        ok = 0
        for j in range(n):
            s = slot[j]
            p = portfolio[j]
            if not (0 <= s < len(slots)) or not (0 <= p < len(pf_list)):
                r = 3 if 0 <= p < len(pf_list) else 1
            else:
                pos = slots[s]
                r = 3 if pos.pf is not pf_list[p] else trade(
                    pos, kind[j], qty[j], price[j], fee[j] if fee is not None else 0.0,
                    ts[j] if ts is not None else now, False)
            if r is None:
                ok += 1
            else:
                rejected.append([j, REASONS.get(r, "INVALID"), REASONS.get(r, "INVALID")])
        return self._batch_reply(key, ok, rejected)

    def _batch_reply(self, key, ok, rejected):
        self.counters["updates"] += ok
        self.counters["rejected_updates"] += len(rejected)
        return {"type": "batch_response", "key": key, "accepted": ok, "rejected": rejected,
                "processing_time_ms": 0.0, "results": None}

    def _resolve(self, msg):
        slots, portfolios, errors = [], [], []
        handle_of = self.pf_handles
        for j, (pid, position_id, iid) in enumerate(msg.get("positions", [])):
            pf = self.portfolios.get(pid)
            portfolios.append(handle_of[id(pf)] if pf is not None else -1)
            pos = 1 if pf is None else self.position(pf, position_id, iid)
            if isinstance(pos, int):
                errors.append([j, REASONS.get(pos, "INVALID"), REASONS.get(pos, "INVALID")])
                slots.append(-1)
                continue
            s = self._slot_of.get(id(pos))
            if s is None:
                s = len(self.slots)
                self.slots.append(pos)
                self._slot_of[id(pos)] = s
            slots.append(s)
        for pid in msg.get("portfolio_ids", []):
            pf = self.portfolios.get(pid)
            portfolios.append(handle_of[id(pf)] if pf is not None else -1)
        instruments = [self.inst_handles.get(i, -1) for i in msg.get("instrument_ids", [])]
        return {"type": "resolve_response", "slots": slots, "portfolios": portfolios, "instruments": instruments,
                "errors": errors}

    def _revalue_all(self):
        for ins in self.instruments.values():
            if ins.price:
                self.price(ins.iid, ins.price)

    # ------------------------------------------------------------ idempotency
    def serve_one(self, body: bytes, now: int) -> bytes:
        """Decode, check the key, apply, encode: one message."""
        self.counters["messages"] += 1
        try:
            msg = msgspec.msgpack.decode(body)
        except msgspec.DecodeError as e:
            self.counters["errors"] += 1
            return msgspec.msgpack.encode(_error("MALFORMED", None, str(e)))
        if not isinstance(msg, dict):
            self.counters["errors"] += 1
            return msgspec.msgpack.encode(_error("INVALID", None, "not a map"))
        key = msg.get("key")
        if key is not None:
            prior = self.window.get(key)
            if prior is not None:
                if prior[0] != body:
                    self.counters["errors"] += 1
                    return msgspec.msgpack.encode(_error("KEY_CONFLICT", key))
                self.counters["replays"] += 1
                return prior[1]
        try:
            reply = msgspec.msgpack.encode(self.handle(msg, now))
        except (KeyError, TypeError, ValueError) as e:
            self.counters["errors"] += 1
            return msgspec.msgpack.encode(_error("INVALID", key, f"{type(e).__name__}: {e}"))
        if key is not None:
            self.window[key] = (body, reply)
            if len(self.window) > self.window_size:
                self.window.popitem(last=False)
        return reply


def _error(code, key=None, message=None):
    return {"type": "error", "code": code, "message": message or code, "key": key}


class _Stop(Exception):
    pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Plain-Python dict keeper on a ZeroMQ ROUTER socket (benchmark baseline).")
    ap.add_argument("--command", required=True, help="endpoint to bind, e.g. ipc:///tmp/x or tcp://127.0.0.1:7799")
    ap.add_argument("--echo", action="store_true",
                    help="transport ceiling: answer every frame with the same small reply, decoding nothing")
    args = ap.parse_args(argv)
    keeper = DictKeeper()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.SNDHWM, 100_000)
    router.setsockopt(zmq.RCVHWM, 100_000)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(args.command)

    def stop(signum, frame):
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"ready: dict keeper on {args.command}, pid {os.getpid()}", file=sys.stderr, flush=True)
    reply = msgspec.msgpack.encode({"type": "batch_response", "key": "echo", "accepted": 1, "rejected": [],
                                    "processing_time_ms": 0.0, "results": None})

    def echo(body, now):
        keeper.counters["messages"] += 1
        return reply

    recv, send, clock = router.recv_multipart, router.send_multipart, time.time_ns
    serve = echo if args.echo else keeper.serve_one
    poll, NOBLOCK, Again = router.poll, zmq.NOBLOCK, zmq.Again
    try:
        while True:
            try:
                frames = recv(NOBLOCK)
            except Again:
                # wait with a timeout, not in a blocking recv: a blocking recv may never see SIGTERM
                poll(200)
                continue
            body = frames.pop()
            frames.append(serve(body, clock()))
            try:
                send(frames, NOBLOCK)
            except Again:
                pass
    except _Stop:
        pass
    finally:
        router.close(0)
        ctx.term()
    print(f"stopped after {keeper.counters['messages']} messages", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
