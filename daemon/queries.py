"""Queries: the spec's PortfolioState, Position, Exposure and MarginRequirement from the book.

Owns: read-only functions from a ``Book`` to plain dicts shaped exactly like the
spec's structs (amounts in base-currency units as floats, ids as strings).
Runs on: the engine thread (reads between batches, so always consistent).
Imports: numpy, daemon.book, kernels.
"""
from __future__ import annotations

import functools

import numpy as np

from portfolio_state.kernels import EXPOSURE_TYPE_NAMES, STATUS_NAMES, PositionStatus
from portfolio_state.kernels.enums import PRICE_SCALE, QTY_SCALE
from portfolio_state.kernels.views import cents, exposure_row, margin_requirement, portfolio_state

from .book import Book


@functools.lru_cache(maxsize=4096)  # the rows of a batch share their receive time
def _iso(ns: int) -> str | None:
    if not ns:
        return None
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="us") + "Z"


def state(book: Book, portfolio_id: str) -> dict:
    """PortfolioState."""
    p = book._portfolio(portfolio_id)
    return {"portfolio_id": portfolio_id, **portfolio_state(book.a.portfolios[p])}


def margin(book: Book, portfolio_id: str) -> dict:
    """MarginRequirement (requirement_id is portfolio_id: one live requirement each)."""
    p = book._portfolio(portfolio_id)
    pf = book.a.portfolios[p]
    return {"requirement_id": portfolio_id, "portfolio_id": portfolio_id, **margin_requirement(pf),
            "last_updated": _iso(pf["updated_ns"])}


def cash(book: Book, portfolio_id: str) -> dict[str, float]:
    """Cash per currency, in that currency's units (exact cents as floats)."""
    p = book._portfolio(portfolio_id)
    row = book.a.cash[p]
    return {book.currency_ids.ids[c]: cents(row[c]) for c in np.nonzero(row[: len(book.currency_ids)])[0]}


def position_fields(position_id: str, instrument_id: str, qty: int, cost: int, realized: int, mv: int, ts: int,
                    status: int, weight: float, price: int, mult: int, ratio: float) -> dict:
    """A Position's fields (spec fields plus realized_pnl, average_price, last_price) from stored units:
    qty micro-units, cost/realized instrument-currency cents, mv base cents, price nano-units,
    ratio = base units per instrument-currency unit. A cost of 0 (a flat position) needs no rate."""
    cost_base = cost if ratio == 1.0 or cost == 0 else round(cost * ratio)
    return {
        "position_id": position_id,
        "instrument_id": instrument_id,
        "quantity": qty / QTY_SCALE,
        "market_value": mv / 100,
        "cost_basis": cost_base / 100,
        "unrealized_pnl": (mv - cost_base) / 100,
        "weight": weight,
        "status": STATUS_NAMES[status],
        "last_updated": _iso(ts),
        "realized_pnl": realized / 100,
        "average_price": (cost / 100) / (qty / QTY_SCALE) / mult if qty else 0.0,
        "last_price": price / PRICE_SCALE,
    }


def position_row(book: Book, s: int, total: int) -> dict:
    """One Position of slot s as the book holds it now."""
    a = book.a
    # one .item() per record: plain Python scalars, not a NumPy scalar per field
    pf_, k, qty, cost, realized, mv, _, upd, _, status = a.positions[s].item()
    price, _, mult, _, _, _, _, _, _, _, ccy, _ = a.instruments[k].item()
    base = int(a.portfolios["base_ccy"][pf_])
    return position_fields(book.slot_ids[s], book.instrument_ids.ids[k], qty, cost, realized, mv, upd, status,
                           mv / total if total else 0.0, price, mult, 1.0 if ccy == base else _ratio(book, ccy, base))


def total_cents(book: Book, p: int) -> int:
    pf = book.a.portfolios
    return int(pf["cash_base"][p]) + int(pf["long_mv"][p]) + int(pf["short_mv"][p])


def positions(book: Book, portfolio_id: str, include_closed: bool = False) -> list[dict]:
    """Positions of a portfolio (FREE slots never; CLOSED ones on request)."""
    p = book._portfolio(portfolio_id)
    a = book.a
    total = total_cents(book, p)
    out = []
    for s in a.pf_pool[a.pf_start[p]: a.pf_start[p] + a.pf_len[p]]:
        st = int(a.positions[s]["status"])
        if st == PositionStatus.FREE or (st == PositionStatus.CLOSED and not include_closed):
            continue
        out.append(position_row(book, int(s), total))
    return out


def _ratio(book: Book, ccy: int, base: int) -> float:
    return 1.0 if ccy == base else float(book.a.fx[ccy] / book.a.fx[base])


def exposures(book: Book, portfolio_id: str) -> dict[str, list[dict]]:
    """Map<ExposureType, List<Exposure>>, non-zero categories only, largest |value| first."""
    p = book._portfolio(portfolio_id)
    a = book.a
    pf = a.portfolios[p]
    total = total_cents(book, p)
    result: dict[str, list[dict]] = {}
    inst = []
    seen = set()
    for s in a.pf_pool[a.pf_start[p]: a.pf_start[p] + a.pf_len[p]]:
        head = int(a.positions[s]["head"])
        if head in seen:
            continue
        seen.add(head)
        v = int(a.positions[head]["inst_exp"])
        if v:
            k = int(a.positions[head]["instrument"])
            limit = book.instrument_limits.get((p, k), float(pf["inst_limit"]))
            inst.append((book.instrument_ids.ids[k], v, limit))
    result["INSTRUMENT"] = _rows(portfolio_id, "INSTRUMENT", inst, total)
    for t in EXPOSURE_TYPE_NAMES[1:]:
        interner, lim = book._exposure_axis(t)
        vals = {"SECTOR": a.exp_sector, "GEOGRAPHIC": a.exp_country, "CURRENCY": a.exp_currency,
                "ASSET_CLASS": a.exp_asset}[t][p]
        rows = [(interner.ids[c], int(vals[c]), float(lim[p, c])) for c in np.nonzero(vals[: len(interner)])[0]]
        result[t] = _rows(portfolio_id, t, rows, total)
    return result


def _rows(portfolio_id: str, t: str, rows, total: int) -> list[dict]:
    rows.sort(key=lambda r: -abs(r[1]))
    return [{"exposure_id": f"{portfolio_id}:{t}:{cat}", "exposure_type": t, "category": cat,
             **exposure_row(v, total, lim)} for cat, v, lim in rows]


