#!/usr/bin/env python
"""nautilus_trader's in-process cost per fill: the same fills as perf/inprocess.py's, applied to its
``Position`` objects with ``Position.apply``.

    python perf/nautilus_fills.py FILLS.npz      # prints one JSON object

Owns: reading the fills (per fill: position index, BUY/SELL, quantity, price; per position: its
opening quantity and price), building one ``Equity`` instrument per position's instrument and one
``OrderFilled`` event per fill *before* timing (event construction is the caller's cost, not the
position's), then timing ``Position.apply`` over every fill, in order, --reps times on fresh
positions; median ns per fill.
Runs on: its own process, a Python with nautilus_trader installed (the harness starts it; it may be a
separate virtual environment, since nautilus_trader pins its own uvloop). Imports: numpy,
nautilus_trader, the standard library. No portfolio_state import: it must run without the project.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    import nautilus_trader
    from nautilus_trader.core.uuid import UUID4
    from nautilus_trader.model.enums import LiquiditySide, OrderSide, OrderType
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import (AccountId, ClientOrderId, PositionId, StrategyId, TradeId,
                                                   TraderId, VenueOrderId)
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.model.position import Position
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    data = np.load(argv[0])
    reps = int(argv[1]) if len(argv) > 1 else 3
    pos_inst, open_qty, open_px = data["pos_inst"], data["open_qty"], data["open_px"]
    f_pos, f_buy, f_qty, f_px = data["f_pos"], data["f_buy"], data["f_qty"], data["f_px"]
    instruments = {int(k): TestInstrumentProvider.equity(f"S{int(k)}", "XNAS") for k in np.unique(pos_inst)}
    trader, strategy, account = TraderId("TRADER-001"), StrategyId("S-001"), AccountId("SIM-001")
    usd0 = Money(0, instruments[int(pos_inst[0])].quote_currency)
    seq = iter(range(1, 1 << 62))

    def fill(p: int, buy: bool, qty: float, px: float) -> OrderFilled:
        ins = instruments[int(pos_inst[p])]
        k = next(seq)
        return OrderFilled(trader_id=trader, strategy_id=strategy, instrument_id=ins.id,
                           client_order_id=ClientOrderId(f"O-{k}"), venue_order_id=VenueOrderId(f"V-{k}"),
                           account_id=account, trade_id=TradeId(f"T-{k}"), position_id=PositionId(f"P-{p}"),
                           order_side=OrderSide.BUY if buy else OrderSide.SELL, order_type=OrderType.MARKET,
                           last_qty=Quantity(qty, 0), last_px=Price(round(px, 2), 2), currency=ins.quote_currency,
                           commission=usd0, liquidity_side=LiquiditySide.TAKER, event_id=UUID4(), ts_event=k,
                           ts_init=k)

    per_rep = []
    for _ in range(reps):
        t_build = time.perf_counter()
        opening = [fill(p, True, float(open_qty[p]), float(open_px[p])) for p in range(len(pos_inst))]
        fills = [fill(int(p), bool(b), float(q), float(x)) for p, b, q, x in zip(f_pos, f_buy, f_qty, f_px)]
        positions = [Position(instruments[int(pos_inst[p])], opening[p]) for p in range(len(pos_inst))]
        build_s = time.perf_counter() - t_build
        apply = [positions[int(p)].apply for p in f_pos]  # bound methods fetched outside the timed loop
        t0 = time.perf_counter_ns()
        for ap, f in zip(apply, fills):
            ap(f)
        per_rep.append((time.perf_counter_ns() - t0) / len(fills))
    open_after = sum(1 for p in positions if p.is_open)
    print(json.dumps({"version": nautilus_trader.__version__, "fills": len(f_pos), "positions": len(pos_inst),
                      "ns_per_fill": sorted(per_rep)[len(per_rep) // 2], "per_rep": per_rep,
                      "event_build_s": build_s, "open_after": open_after}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
