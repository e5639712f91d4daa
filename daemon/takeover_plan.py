"""A takeover's plan: the command side's rows as the messages a client would send, in order.

Owns: ``plan(side, pivot, key_prefix, now_ns)`` -> ``Plan`` (stages of message Structs
with keys ``<key_prefix>:<n>``), ``cash_flows`` (the deposits and withdrawals
that make every cash balance exact, from what the book holds after the
positions), ``position_rows`` (a position as TRANSFER_IN or SHORT rows whose
cost is exactly the stored one) and ``TakeoverError``. Pure: no I/O, no engine.
Every refusal is a TakeoverError naming the row, raised before anything is applied.
Runs on: the main thread at start-up. Imports: numpy, transport, kernels.

Units. The positions table holds cost_basis in *base* cents, rint(cost * ratio)
where cost is the kernel's signed total cost in *instrument-currency* cents and
ratio = fx[instrument ccy] / fx[base] (kernels/valuation.py). The local cost is
recovered as the c nearest cost_basis / ratio with rint(c * ratio) ==
cost_basis, at the stored FX rates: exact whenever the rows were written at the
rates fx_rates holds (a drained stop), and then the base cost_basis, unrealized
P&L and everything derived come back to the cent. A long position is loaded by
TRANSFER_IN (no cash), a short by SHORT (its proceeds land in cash, which the
cash stage then reconciles), at a price p (nano-units) solving
round_half_even(q * p * multiplier / 1e13) = |c|; when no single price does
(q * multiplier above 1e7 units makes one nano-unit of price worth more than a
cent), the last micro-unit gets a price of its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from portfolio_state.kernels.enums import MAX_PRICE, NOTIONAL_DIV, PRICE_SCALE, QTY_SCALE
from portfolio_state.transport import messages as m

CHUNK_ROWS = 2000          # position rows (or prices) per message: far below transport.max_message_bytes
_MAX_CENTS_PER_FLOW = 10 ** 15
STATUS_STEPS = {           # (status, flat) -> status changes after the rows; flat ACTIVE is impossible
    ("ACTIVE", False): [], ("SUSPENDED", False): ["SUSPENDED"], ("SUSPENDED", True): ["PENDING", "SUSPENDED"],
    ("PENDING", True): ["PENDING"], ("CLOSED", True): ["PENDING", "CLOSED"],
}


class TakeoverError(RuntimeError):
    """The takeover cannot load the book exactly; start-up stops (nothing is served)."""


@dataclass
class Target:
    """What a loaded position must hold: quantity micro-units, local cost cents, base cost cents."""
    portfolio_id: str
    position_id: str
    instrument_id: str
    qty: int
    cost: int
    cost_basis: int
    status: str
    exact: bool            # rint(cost * ratio) == cost_basis at the stored rates


@dataclass
class Plan:
    stages: list = field(default_factory=list)     # [(name, [message Struct])], applied in this order
    positions: list[Target] = field(default_factory=list)
    cash: dict = field(default_factory=dict)        # (portfolio_id, currency) -> cents of that currency
    counts: dict = field(default_factory=dict)
    n: int = 0                                      # keys handed out
    prefix: str = ""

    def key(self) -> str:
        self.n += 1
        return f"{self.prefix}:{self.n}"


# ------------------------------------------------------------------ fixed point, as the kernels do it
def muldiv(a: int, b: int, d: int) -> int:
    """round_half_even(a * b / d), exactly (kernels.fixedpoint.muldiv_round_nb)."""
    q, r = divmod(a * b, d)
    return q + 1 if 2 * r > d or (2 * r == d and q & 1) else q


def to_fixed(units: int, scale: int) -> int:
    """What the kernel makes of the float a message carries for ``units`` / scale."""
    return int(np.rint(np.float64(units / scale) * scale))


def _price_ok(px: int, mult: int) -> bool:
    """In the kernel's range, and the float a message carries converts back to px itself."""
    return 1 <= px <= MAX_PRICE and px * mult <= 9.0e18 and to_fixed(px, PRICE_SCALE) == px


def _price_for(q: int, mult: int, cost: int) -> int | None:
    """A price (nano-units) at which q micro-units cost exactly ``cost`` cents, or None."""
    near = cost * NOTIONAL_DIV // (q * mult)
    for px in sorted(range(near - 3, near + 5), key=lambda x: abs(x - near)):
        if _price_ok(px, mult) and muldiv(q, px * mult, NOTIONAL_DIV) == cost:
            return px
    return None


def position_rows(q: int, mult: int, cost: int) -> list[tuple[int, int]] | None:
    """[(micro-units, price nano-units)] whose costs add up to ``cost`` cents (both magnitudes)."""
    px = _price_for(q, mult, cost)
    if px is not None:
        return [(q, px)]
    if q > 1:  # one price cannot hit the cent: the bulk at the price just below, the last micro-unit the rest
        px1 = cost * NOTIONAL_DIV // ((q - 1) * mult)
        while px1 > 1 and (muldiv(q - 1, px1 * mult, NOTIONAL_DIV) > cost or not _price_ok(px1, mult)):
            px1 -= 1
        rest = cost - muldiv(q - 1, px1 * mult, NOTIONAL_DIV)
        px2 = _price_for(1, mult, rest) if _price_ok(px1, mult) and rest >= 0 else None
        if px2 is not None:
            return [(q - 1, px1), (1, px2)]
    return None


def local_cost(cost_basis: int, ratio: float) -> tuple[int, bool]:
    """(c, exact): the instrument-currency cost whose rint(c * ratio) is cost_basis (base cents)."""
    if ratio == 1.0 or cost_basis == 0:
        return cost_basis, True
    guess = cost_basis / ratio
    c0 = int(round(guess))
    for c in sorted(range(c0 - 2, c0 + 3), key=lambda c: abs(c - guess)):
        if int(np.rint(np.float64(c) * ratio)) == cost_basis:
            return c, True
    return c0, False


# ------------------------------------------------------------------ the plan
def _rates(side, pivot: str) -> dict[str, float]:
    rates = {r["currency"]: float(r["rate"]) for r in side.fx}
    if pivot in rates and rates[pivot] != 1.0:
        raise TakeoverError(f"fx_rates gives the pivot currency {pivot} a rate of {rates[pivot]}: the old host "
                            "quoted rates against another pivot; set book.pivot_currency to the currency whose "
                            "rate is 1")
    rates[pivot] = 1.0
    return rates


def _ratio(rates: dict, ccy: str, base: str, what: str) -> float:
    if ccy == base:
        return 1.0
    if ccy not in rates or base not in rates:
        raise TakeoverError(f"{what}: no FX rate between {ccy} and {base} in fx_rates (a command side written "
                            "before schema version 4 has none: the old host must run once more with this "
                            "version, or load the rates by hand)")
    return rates[ccy] / rates[base]


def plan(side, pivot: str, key_prefix: str, now_ns: int) -> Plan:
    """Every stage but the cash (which needs the book after the positions: ``cash_flows``)."""
    out = Plan(prefix=key_prefix)
    rates = _rates(side, pivot)
    instruments = {r["instrument_id"]: r for r in side.instruments}
    bases = {r["portfolio_id"]: r["base_currency"] for r in side.portfolios}
    out.stages.append(("instruments", [m.InstrumentUpsert(out.key(), chunk) for chunk in _chunks([
        m.Instrument(r["instrument_id"], r["currency"], r["sector"], r["country"], r["asset_class"], int(r["multiplier"]),
                     _margin(r)) for r in side.instruments])]))
    out.stages.append(("portfolios", [m.PortfolioUpsert(out.key(), m.Portfolio(
        r["portfolio_id"], r["portfolio_name"], r["base_currency"], r["portfolio_type"], r["inception_date"],
        r["status"], r["benchmark"], r["instrument_limit"])) for r in side.portfolios]))
    fx = [m.FxRate(c, r) for c, r in sorted(rates.items()) if c != pivot]
    out.stages.append(("fx", [m.FxTicks(out.key(), fx, now_ns)] if fx else []))
    ticks = [m.PriceTick(r["instrument_id"], float(r["price"])) for r in side.prices if r["instrument_id"] in instruments]
    out.stages.append(("prices", [m.PriceTicks(out.key(), chunk, now_ns) for chunk in _chunks(ticks)]))
    rows, statuses = [], []
    for r in side.positions:
        t = _target(r, instruments, bases, rates)
        out.positions.append(t)
        ins = instruments[t.instrument_id]
        if t.qty:
            parts = position_rows(abs(t.qty), int(ins["multiplier"]), abs(t.cost))
            if parts is None:
                raise TakeoverError(f"position {t.position_id}: a cost of {t.cost} cents on {t.qty} micro-units "
                                    f"(multiplier {ins['multiplier']}) cannot be reproduced by transfers")
            kind = "TRANSFER_IN" if t.qty > 0 else "SHORT"
            rows += [m.PositionUpdate(t.portfolio_id, t.position_id, t.instrument_id, q / QTY_SCALE, px / PRICE_SCALE,
                                      kind, 0.0, r["last_updated"]) for q, px in parts]
        statuses += [m.PositionStatusChange(out.key(), t.portfolio_id, t.position_id, t.instrument_id, s)
                     for s in STATUS_STEPS[(t.status, t.qty == 0)]]
    out.stages.append(("positions", [m.PositionUpdateBatch(out.key(), chunk) for chunk in _chunks(rows)]))
    out.stages.append(("statuses", statuses))
    out.stages.append(("limits", [m.ExposureLimit(out.key(), r["portfolio_id"], r["exposure_type"], r["category"],
                                                  float(r["limit_percentage"])) for r in side.limits]))
    for r in side.cash:
        base = bases.get(r["portfolio_id"])
        if base is None:
            raise TakeoverError(f"cash_balances ({r['portfolio_id']}, {r['currency']}): no such portfolio")
        _ratio(rates, r["currency"], base, f"cash_balances ({r['portfolio_id']}, {r['currency']})")
        out.cash[(r["portfolio_id"], r["currency"])] = r["amount"]
    out.counts = {"instruments": len(side.instruments), "portfolios": len(side.portfolios), "fx_rates": len(fx),
                  "prices": len(ticks), "positions": len(side.positions), "limits": len(side.limits),
                  "cash_balances": len(side.cash)}
    return out


def _target(r: dict, instruments: dict, bases: dict, rates: dict) -> Target:
    pid, pos, inst, qty, status = r["portfolio_id"], r["position_id"], r["instrument_id"], r["quantity"], r["status"]
    what = f"position {pos} of {pid}"
    if pid not in bases:
        raise TakeoverError(f"{what}: no such portfolio in portfolios")
    if inst not in instruments:
        raise TakeoverError(f"{what}: instrument {inst} is not in instruments")
    if (status, qty == 0) not in STATUS_STEPS:
        raise TakeoverError(f"{what}: status {status} with quantity {qty / QTY_SCALE} is not a state the engine "
                            "can hold")
    cb = r["cost_basis"]
    if (qty == 0 and cb != 0) or (qty > 0 and cb < 0) or (qty < 0 and cb > 0):
        raise TakeoverError(f"{what}: cost_basis {cb / 100} does not fit quantity {qty / QTY_SCALE} (a long "
                            "position costs >= 0, a short <= 0, a flat one nothing)")
    ratio = _ratio(rates, instruments[inst]["currency"], bases[pid], what) if qty else 1.0
    cost, exact = local_cost(cb, ratio)
    return Target(pid, pos, inst, qty, cost, cb, status, exact)


def cash_flows(p: Plan, held: dict, now_ns: int) -> list:
    """DEPOSIT / WITHDRAWAL commands taking every balance from ``held`` ((portfolio, currency) ->
    cents the book holds after the positions stage) to the stored one, exactly."""
    out = []
    for (pid, ccy) in sorted(set(p.cash) | set(held)):
        delta = p.cash.get((pid, ccy), 0) - held.get((pid, ccy), 0)
        while delta:
            part = min(abs(delta), _MAX_CENTS_PER_FLOW)  # a float amount is exact to the cent below 2**52 cents
            key = p.key()
            out.append(m.CashFlowRequest(key, key, pid, part / 100, ccy, "DEPOSIT" if delta > 0 else "WITHDRAWAL",
                                         "takeover: balance loaded from the command side", now_ns))
            delta -= part if delta > 0 else -part
    return out


def _margin(r: dict):
    rates = (r["long_initial"], r["long_maintenance"], r["short_initial"], r["short_maintenance"])
    return None if any(x is None for x in rates) else tuple(float(x) for x in rates)


def _chunks(items: list) -> list[list]:
    return [items[i: i + CHUNK_ROWS] for i in range(0, len(items), CHUNK_ROWS)]
