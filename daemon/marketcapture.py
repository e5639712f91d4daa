"""Market-data capture for the write-behind: last prices and FX rates that moved since the last take.

Owns: ``MarketCapture``. A takeover (ADR 0011) replays the last prices and FX
rates before it loads positions: without the rates a foreign-currency position
or cash balance cannot be loaded at all (NO_FX_RATE), without the prices market
values wait for the feeds. So the stores keep them (``instrument_prices``,
``fx_rates``). ``take`` compares the book's price and rate arrays with what it
handed off last, in NumPy: its cost grows with the number of instruments, never
with the number of ticks. ``ChangeCapture`` calls it once per state interval (and
on full resyncs), so a price storm costs at most one row per instrument per
``sink.state_interval_ms``; after a start, every price and rate goes once.
Units: prices leave as floats in units of the instrument's currency (the book's
nano-units / 1e9; a float converts back to the same nano-unit below 2**52 of
them), rates as the book's float64 (one unit in the pivot currency), the pivot
included (its rate is 1).
Runs on: whichever thread owns the book (the engine's, or the write-behind's over a
scratch book during catch-up). Imports: numpy, daemon.book.
"""
from __future__ import annotations

import numpy as np

from portfolio_state.kernels.enums import PRICE_SCALE

from .book import Book


class MarketCapture:
    def __init__(self, book: Book, ids=None):
        self.book = book
        self.ids = ids or (lambda names: np.array(names, dtype=object))  # id list -> object array (a mirror)
        # nothing is taken as handed off yet: the first take after a start sends every price and rate
        # once (a store written before these tables existed gets them too)
        self.last_price = np.zeros(0, np.int64)   # per instrument: nano-units last handed off (0 = none)
        self.last_fx = np.zeros(0, np.float64)    # per currency: rate last handed off (NaN = none)

    def take(self, full: bool = False) -> tuple[dict | None, list]:
        """(instrument_prices columns or None, [(currency, rate)]) moved since the last take;
        ``full``: every known price and rate."""
        book = self.book
        a = book.a
        K, C = len(book.instrument_ids), len(book.currency_ids)
        px = a.instruments["price"][:K]
        last = np.zeros(K, np.int64)
        last[: min(K, len(self.last_price))] = self.last_price[:K]
        moved = np.flatnonzero((px > 0) & ((px != last) | full))
        prices = None
        if len(moved):
            prices = {"instrument_id": self.ids(book.instrument_ids.ids)[moved], "price": px[moved] / PRICE_SCALE,
                      "price_time": a.instruments["price_ns"][:K][moved].copy()}
        self.last_price = px.copy()
        fx = a.fx[:C]
        old = np.full(C, np.nan)
        old[: min(C, len(self.last_fx))] = self.last_fx[:C]
        known = np.isfinite(fx) & (fx > 0)
        changed = np.flatnonzero(known & ((fx != old) | full))
        rates = [(book.currency_ids.ids[c], float(fx[c])) for c in changed.tolist()]
        self.last_fx = fx.copy()
        return prices, rates
