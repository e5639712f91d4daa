"""A plain-Python reference model of the book, in ``decimal.Decimal``, for property tests.

Owns: ``ReferenceBook``, the book's semantics written to be obviously right rather
than fast: dicts of Decimals keyed by ids, one method per command, every rule
taken from the kernel docstrings (kernels/trades.py, cash.py, market.py,
status.py, valuation.py, views.py). It shares no code with the kernels: names in
(ids, kind names, status names), reason *names* out.
Runs on: the test process. Imports: the standard library only.

Units: quantities in units (6 decimals), prices per unit (9 decimals), money in
currency units (2 decimals). Every rounding is half-even. Products are exact
(the context carries 100 digits, far more than any product here needs); the only
inexact step is a quotient, which is then rounded to cents, and 100 digits decide
that rounding correctly.

Money range: a command that would take a quantity, notional, cost, cash balance,
realized P&L or a holding's value (at the mark, in base currency) past MAX_QTY or
MAX_MONEY is refused (OVERFLOW); a price or FX tick is refused whole. (The price
kernel skips that scan below 1e4 per unit, which is the same rule while FX ratios
stay under 100.)

What the model cannot reproduce exactly, and the tests allow for: base-currency
amounts go through a float FX ratio in the kernels (``rint(cents * ratio)``) and
through the exact Decimal value of the same floats here, so a converted amount may
differ by one cent; the same holds for margins (``rint(|mv| * rate)`` with a float
rate). ``error_bounds`` says by how much, so the tests can allow exactly that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

EXACT = Context(prec=100, rounding=ROUND_HALF_EVEN)

QTY_Q = Decimal("0.000001")
PRICE_Q = Decimal("0.000000001")
CENT = Decimal("0.01")
ZERO = Decimal(0)

#: Limits, in units of the model (kernels/enums.py: MAX_QTY, MAX_PRICE, MAX_MONEY).
MAX_QTY = Decimal(10) ** 9
MAX_PRICE = Decimal(10) ** 8
MAX_MONEY = Decimal(10) ** 15
#: price * multiplier must stay below 9e18 nano-units (kernels/trades.py, market.py).
MAX_PRICE_TIMES_MULT = Decimal(9) * Decimal(10) ** 9
#: Relative error of a float conversion rint(cents * (a / b)): three float roundings (the
#: quotient, the cents beyond 2**53, the product), each <= 2**-53, with room to spare.
FLOAT_SLACK = 4e-16
#: Reg T initial margin rate: a margin account's buying power is margin_available / 0.5.
REG_T_INITIAL = Decimal("0.5")

TRADE_KINDS = ("BUY", "SELL", "SHORT", "COVER", "ADJUST", "TRANSFER_IN", "TRANSFER_OUT", "SPLIT")
PRICED_KINDS = ("BUY", "SELL", "SHORT", "COVER", "TRANSFER_IN")
CASH_FLOW_KINDS = ("DEPOSIT", "WITHDRAWAL", "DIVIDEND", "INTEREST", "FEE")
CASH_DEBITS = ("WITHDRAWAL", "FEE")
STATUSES = ("FREE", "ACTIVE", "PENDING", "CLOSED", "SUSPENDED")
EXPOSURE_TYPES = ("INSTRUMENT", "SECTOR", "GEOGRAPHIC", "CURRENCY", "ASSET_CLASS")


def cents(x: Decimal) -> Decimal:
    """Round to whole cents, half to even."""
    return x.quantize(CENT, rounding=ROUND_HALF_EVEN)


def from_float(x: float, quantum: Decimal, limit: Decimal) -> Decimal | None:
    """A float input as the decimal it was written as, rounded to ``quantum``; None if unusable."""
    if not math.isfinite(x):
        return None
    d = Decimal(repr(float(x)))
    if abs(d) > limit:
        return None
    return d.quantize(quantum, rounding=ROUND_HALF_EVEN)


def sign(x: Decimal) -> int:
    return (x > 0) - (x < 0)


@dataclass
class Portfolio:
    portfolio_id: str
    base: str
    long_only: bool
    cash: dict[str, Decimal] = field(default_factory=dict)
    seq: int = 0


@dataclass
class Instrument:
    instrument_id: str
    currency: str
    sector: str
    country: str
    asset_class: str
    multiplier: int
    margin: tuple[Decimal, Decimal, Decimal, Decimal]  # long init, long maint, short init, short maint
    price: Decimal | None = None
    price_ts: int = 0


@dataclass
class Position:
    portfolio_id: str
    position_id: str
    instrument_id: str
    qty: Decimal = ZERO
    cost: Decimal = ZERO       # signed total cost, instrument currency
    realized: Decimal = ZERO   # instrument currency
    status: str = "FREE"
    updated_ts: int = 0


@dataclass
class TradeResult:
    reason: str
    old_qty: Decimal = ZERO
    qty: Decimal = ZERO
    cost: Decimal = ZERO
    realized: Decimal = ZERO      # this row's realized P&L
    old_mv: Decimal = ZERO        # base currency
    mv: Decimal = ZERO
    cash_impact: Decimal = ZERO   # change of cash_balance, base currency


@dataclass
class CashResult:
    reason: str
    amount: Decimal = ZERO        # signed, flow currency
    cash: Decimal = ZERO          # new balance in that currency
    cash_impact: Decimal = ZERO   # base currency


class ReferenceBook:
    """The whole book as dicts; every command returns a reason name ("OK" or the rejection)."""

    def __init__(self, pivot: str = "USD"):
        self.pivot = pivot
        self.fx: dict[str, float] = {pivot: 1.0}   # value of one unit in the pivot; absent = unknown
        self.portfolios: dict[str, Portfolio] = {}
        self.instruments: dict[str, Instrument] = {}
        self.positions: dict[tuple[str, str], Position] = {}

    # ------------------------------------------------------------ reference data
    def upsert_portfolio(self, portfolio_id: str, base: str, long_only: bool) -> None:
        pf = self.portfolios.get(portfolio_id)
        if pf is None:
            self.portfolios[portfolio_id] = Portfolio(portfolio_id, base, long_only)
        else:
            pf.base, pf.long_only = base, long_only

    def upsert_instrument(self, instrument_id, currency, sector, country, asset_class, multiplier, margin) -> None:
        rates = tuple(Decimal(repr(float(r))) for r in margin)
        ins = self.instruments.get(instrument_id)
        if ins is None:
            self.instruments[instrument_id] = Instrument(instrument_id, currency, sector, country, asset_class,
                                                         multiplier, rates)
        else:
            ins.currency, ins.sector, ins.country, ins.asset_class = currency, sector, country, asset_class
            ins.multiplier, ins.margin = multiplier, rates

    def open_position(self, portfolio_id: str, position_id: str, instrument_id: str) -> None:
        """The id map reserved a slot: a FREE, invisible position."""
        key = (portfolio_id, position_id)
        if key not in self.positions:
            self.positions[key] = Position(portfolio_id, position_id, instrument_id)

    # ------------------------------------------------------------ FX
    def ratio(self, ccy: str, base: str, fx: dict[str, float] | None = None) -> Decimal | None:
        """Units of base per unit of ccy: fx[ccy] / fx[base]; 1 for the same currency; None if unknown."""
        fx = self.fx if fx is None else fx
        if ccy == base:
            return Decimal(1)
        if ccy not in fx or base not in fx:
            return None
        with localcontext(EXACT):
            return Decimal(fx[ccy]) / Decimal(fx[base])

    def to_base(self, amount: Decimal, ccy: str, base: str) -> Decimal:
        """An amount in ccy, in base: rounded to cents (a zero needs no rate, and may have none)."""
        if ccy == base or amount == 0:
            return amount
        with localcontext(EXACT):
            return cents(amount * self.ratio(ccy, base))

    def value_fits(self, portfolio_id: str, instrument_id: str, qty: Decimal, price: Decimal,
                   fx: dict[str, float] | None = None) -> bool:
        """Whether qty at this price (and these rates), in base currency, stays within the money range."""
        ins = self.instruments[instrument_id]
        ratio = self.ratio(ins.currency, self.portfolios[portfolio_id].base, fx)
        with localcontext(EXACT):
            return ratio is None or abs(qty * price * ins.multiplier * ratio) <= MAX_MONEY

    # ------------------------------------------------------------ trades
    def trade(self, kind: str | None, portfolio_id: str | None, key: tuple[str, str] | None,
              qty_in: float, price_in: float, fee_in: float, ts: int) -> TradeResult:
        """One row of apply_trades (kernels/trades.py); ``None`` stands for an unknown id or kind."""
        with localcontext(EXACT):
            return self._trade(kind, portfolio_id, key, qty_in, price_in, fee_in, ts)

    def _trade(self, kind, portfolio_id, key, qty_in, price_in, fee_in, ts) -> TradeResult:
        # ---- validation, in the kernel's documented order
        pf = self.portfolios.get(portfolio_id)
        if pf is None:
            return TradeResult("UNKNOWN_PORTFOLIO")
        pos = self.positions.get(key)
        if pos is None or pos.portfolio_id != portfolio_id:
            return TradeResult("UNKNOWN_POSITION")
        ins = self.instruments[pos.instrument_id]
        if kind not in TRADE_KINDS:
            return TradeResult("BAD_KIND")
        if pos.status == "SUSPENDED":
            return TradeResult("SUSPENDED")
        if self.ratio(ins.currency, pf.base) is None:
            return TradeResult("NO_FX_RATE")
        fee = from_float(fee_in, CENT, MAX_MONEY)
        if fee is None or fee < 0:
            return TradeResult("BAD_FEE")
        priced = kind in PRICED_KINDS
        px = None
        if priced:
            px = from_float(price_in, PRICE_Q, MAX_PRICE)
            if px is None or px <= 0:
                return TradeResult("BAD_PRICE")
        elif ins.price is None:
            return TradeResult("NO_PRICE")
        mark_px = ins.price if ins.price is not None else px
        if mark_px * ins.multiplier > MAX_PRICE_TIMES_MULT or (priced and px * ins.multiplier > MAX_PRICE_TIMES_MULT):
            return TradeResult("OVERFLOW")

        old = pos.qty
        if kind == "SPLIT":
            split_ratio = from_float(qty_in, QTY_Q, MAX_QTY)
            if split_ratio is None or split_ratio <= 0:
                return TradeResult("BAD_RATIO")
            new = (old * split_ratio).quantize(QTY_Q, rounding=ROUND_HALF_EVEN)
        else:
            q = from_float(qty_in, QTY_Q, MAX_QTY)
            if q is None or q == 0:
                return TradeResult("BAD_QUANTITY")
            if kind != "ADJUST" and q < 0:
                return TradeResult("BAD_QUANTITY")
            if kind in ("BUY", "COVER"):
                new = old + q
            elif kind in ("SELL", "SHORT"):
                new = old - q
            elif kind == "TRANSFER_IN":            # |qty| grows; long when flat
                new = old - q if old < 0 else old + q
            elif kind == "TRANSFER_OUT":           # |qty| shrinks, never past zero
                if old == 0 or q > abs(old):
                    return TradeResult("CROSSES_ZERO")
                new = old - q if old > 0 else old + q
            else:                                  # ADJUST: signed, may not cross zero
                new = old + q
                if old != 0 and sign(new) == -sign(old):
                    return TradeResult("CROSSES_ZERO")
        if abs(new) > MAX_QTY or not self.value_fits(portfolio_id, ins.instrument_id, new, mark_px):
            return TradeResult("OVERFLOW")                # the holding, at the mark, leaves the money range
        if pf.long_only:
            if kind == "SHORT" or (kind == "ADJUST" and new < 0):
                return TradeResult("LONG_ONLY_SHORT")
            if new < 0:
                return TradeResult("LONG_ONLY_OVERSELL")

        # ---- money of the row (instrument currency)
        dq = new - old
        cost = pos.cost
        realized = ZERO
        cash_delta = ZERO
        if kind in ("BUY", "SELL", "SHORT", "COVER"):
            exact = dq * px * ins.multiplier           # signed like dq: a purchase is > 0
            if abs(exact) > MAX_MONEY:
                return TradeResult("OVERFLOW")
            notional = cents(exact)
            cash_delta = -notional
            if old == 0 or sign(dq) == sign(old):      # opening or increasing
                cost += notional
            else:                                      # reducing, closing, or through zero
                closed = dq if abs(dq) <= abs(old) else -old
                closed_notional = cents(closed * px * ins.multiplier)
                removed = cents(cost * abs(closed) / abs(old))
                realized = -closed_notional - removed
                cost = cost - removed + (notional - closed_notional)   # the opened rest, at the trade price
        elif kind == "TRANSFER_IN":
            exact = dq * px * ins.multiplier
            if abs(exact) > MAX_MONEY:
                return TradeResult("OVERFLOW")
            cost += cents(exact)
        elif kind == "TRANSFER_OUT":
            cost -= cents(cost * abs(dq) / abs(old))
        elif kind == "ADJUST":
            if new == 0:                               # the remaining cost is written off
                realized = -cost
                cost = ZERO
        else:  # SPLIT: cost unchanged; a split that rounds the holding away writes its cost off
            if new == 0:
                realized = -cost
                cost = ZERO
        if abs(cost) > MAX_MONEY:
            return TradeResult("OVERFLOW")
        cash_delta -= fee                              # fees are expensed, never capitalized
        realized -= fee
        if abs(pf.cash.get(ins.currency, ZERO) + cash_delta) > MAX_MONEY or abs(pos.realized + realized) > MAX_MONEY:
            return TradeResult("OVERFLOW")                # a balance would leave the money range

        # ---- apply
        old_mv = self.market_value(pos)
        if ins.price is None:
            ins.price, ins.price_ts = px, ts
        old_cash = pf.cash.get(ins.currency, ZERO)
        new_cash = old_cash + cash_delta
        pf.cash[ins.currency] = new_cash
        cash_impact = self.to_base(new_cash, ins.currency, pf.base) - self.to_base(old_cash, ins.currency, pf.base)
        pos.qty, pos.cost = new, cost
        pos.realized += realized
        pos.updated_ts = ts
        if new != 0:
            pos.status = "ACTIVE"
        elif old != 0 or pos.status == "FREE":
            pos.status = "CLOSED"
        pf.seq += 1
        return TradeResult("OK", old, new, cost, realized, old_mv, self.market_value(pos), cash_impact)

    # ------------------------------------------------------------ cash, market data, status
    def cash_flow(self, portfolio_id: str | None, ccy: str | None, kind: str | None, amount_in: float) -> CashResult:
        """One row of apply_cash_flows (kernels/cash.py)."""
        with localcontext(EXACT):
            pf = self.portfolios.get(portfolio_id)
            if pf is None:
                return CashResult("UNKNOWN_PORTFOLIO")
            if kind not in CASH_FLOW_KINDS:
                return CashResult("BAD_KIND")
            amount = from_float(amount_in, CENT, MAX_MONEY)
            if amount is None or amount <= 0:
                return CashResult("BAD_AMOUNT")
            if ccy is None or self.ratio(ccy, pf.base) is None:
                return CashResult("NO_FX_RATE")
            if kind in CASH_DEBITS:
                amount = -amount
            old = pf.cash.get(ccy, ZERO)
            if abs(old + amount) > MAX_MONEY:
                return CashResult("OVERFLOW")
            pf.cash[ccy] = old + amount
            pf.seq += 1
            impact = self.to_base(old + amount, ccy, pf.base) - self.to_base(old, ccy, pf.base)
            return CashResult("OK", amount, old + amount, impact)

    def price_tick(self, instrument_id: str | None, price_in: float, ts: int) -> str:
        """One row of apply_prices (kernels/market.py)."""
        with localcontext(EXACT):
            ins = self.instruments.get(instrument_id)
            if ins is None:
                return "UNKNOWN_INSTRUMENT"
            px = from_float(price_in, PRICE_Q, MAX_PRICE)
            if px is None or px <= 0 or px * ins.multiplier > MAX_PRICE_TIMES_MULT:
                return "BAD_PRICE"
            # a tick applies whole or not at all: refused if any holding would leave the money range
            if not all(self.value_fits(pos.portfolio_id, instrument_id, pos.qty, px) for pos in self.positions.values()
                       if pos.instrument_id == instrument_id and pos.qty != 0):
                return "OVERFLOW"
            ins.price, ins.price_ts = px, ts
            return "OK"

    def fx_tick(self, ccy: str | None, rate: float) -> str:
        """One row of apply_fx: rate = value of one unit of ccy in the pivot (fixed at 1).

        Refused whole (OVERFLOW) if a holding or cash balance it revalues would leave the money range.
        """
        if ccy is None or ccy == self.pivot or not math.isfinite(rate) or rate <= 0.0:
            return "BAD_PRICE"
        fx = {**self.fx, ccy: float(rate)}
        for pos in self.positions.values():
            ins = self.instruments[pos.instrument_id]
            if pos.qty != 0 and ccy in (ins.currency, self.portfolios[pos.portfolio_id].base) \
                    and not self.value_fits(pos.portfolio_id, pos.instrument_id, pos.qty, ins.price, fx):
                return "OVERFLOW"
        for pf in self.portfolios.values():
            for c, v in pf.cash.items():
                ratio = self.ratio(c, pf.base, fx)
                if v != 0 and ccy in (c, pf.base) and ratio is not None:
                    with localcontext(EXACT):
                        if abs(v * ratio) > MAX_MONEY:
                            return "OVERFLOW"
        self.fx[ccy] = float(rate)
        return "OK"

    def set_status(self, portfolio_id: str | None, key: tuple[str, str] | None, to: str | None, ts: int) -> str:
        """One row of set_status (kernels/status.py)."""
        pf = self.portfolios.get(portfolio_id)
        if pf is None:
            return "UNKNOWN_PORTFOLIO"
        pos = self.positions.get(key)
        if pos is None or pos.portfolio_id != portfolio_id:
            return "UNKNOWN_POSITION"
        cur, flat = pos.status, pos.qty == 0
        allowed = {
            "PENDING": flat and cur in ("FREE", "CLOSED"),
            "ACTIVE": cur == "SUSPENDED" and not flat,
            "CLOSED": flat and cur in ("PENDING", "SUSPENDED"),
            "SUSPENDED": cur not in ("FREE", "SUSPENDED"),
        }
        if not allowed.get(to, False):
            return "BAD_STATUS"
        pos.status, pos.updated_ts = to, ts
        pf.seq += 1
        return "OK"

    # ------------------------------------------------------------ valuation (kernels/valuation.py, views.py)
    def local_value(self, pos: Position) -> Decimal:
        """Market value in instrument currency: cents(qty * price * multiplier)."""
        if pos.qty == 0:
            return ZERO
        ins = self.instruments[pos.instrument_id]
        with localcontext(EXACT):
            return cents(pos.qty * ins.price * ins.multiplier)

    def market_value(self, pos: Position) -> Decimal:
        """Base currency: the local value converted and rounded to cents."""
        ins = self.instruments[pos.instrument_id]
        return self.to_base(self.local_value(pos), ins.currency, self.portfolios[pos.portfolio_id].base)

    def held(self, portfolio_id: str) -> list[Position]:
        return [p for p in self.positions.values() if p.portfolio_id == portfolio_id and p.qty != 0]

    def view(self, portfolio_id: str) -> dict:
        """Every derived number of one portfolio, in base-currency units (Decimal).

        Keys: cash_balance, long_mv, short_mv, initial_margin, maintenance_margin,
        total_value, invested_value, gross_exposure, position_count, available_cash,
        margin_available, excess_liquidity, buying_power, exposures {type: {category: value}},
        mv {position_id: value}.
        """
        pf = self.portfolios[portfolio_id]
        with localcontext(EXACT):
            cash_balance = sum((self.to_base(v, c, pf.base) for c, v in pf.cash.items()), ZERO)
            long_mv = short_mv = im = mm = ZERO
            mvs = {}
            expo = {t: {} for t in EXPOSURE_TYPES}
            for c, v in pf.cash.items():
                if v != 0:
                    expo["CURRENCY"][c] = expo["CURRENCY"].get(c, ZERO) + self.to_base(v, c, pf.base)
            for pos in self.held(portfolio_id):
                ins = self.instruments[pos.instrument_id]
                mv = self.market_value(pos)
                mvs[pos.position_id] = mv
                if mv > 0:
                    long_mv += mv
                elif mv < 0:
                    short_mv += mv
                if not pf.long_only:       # cash accounts carry no margin
                    li, lm, si, sm = ins.margin
                    im += cents(mv * li) if mv > 0 else cents(-mv * si)
                    mm += cents(mv * lm) if mv > 0 else cents(-mv * sm)
                for t, cat in zip(EXPOSURE_TYPES, (ins.instrument_id, ins.sector, ins.country, ins.currency,
                                                   ins.asset_class)):
                    expo[t][cat] = expo[t].get(cat, ZERO) + mv
            total = cash_balance + long_mv + short_mv
            available_cash = max(ZERO, min(cash_balance, total - im))
            margin_available = max(ZERO, total - im)
            return {
                "cash_balance": cash_balance, "long_mv": long_mv, "short_mv": short_mv,
                "initial_margin": im, "maintenance_margin": mm, "total_value": total,
                "invested_value": long_mv + short_mv, "gross_exposure": long_mv - short_mv,
                "position_count": len(mvs), "available_cash": available_cash,
                "margin_available": margin_available, "excess_liquidity": total - mm,
                "buying_power": available_cash if pf.long_only else margin_available / REG_T_INITIAL,
                "exposures": expo, "mv": mvs,
            }

    def error_bounds(self, portfolio_id: str) -> dict:
        """How far, in cents, the kernels' float steps may move each derived amount from this model.

        A converted amount v (cents) may differ by ``term_bound(v)``: half a cent of rounding
        on each side, plus the float relative error of cents * ratio (see the module
        docstring). A margin, rint(|mv| * rate) with rate <= 0.5, by the same bound. Amounts
        in the portfolio's base currency are exact (bound 0), except margins.
        Keys: ``cash``, ``positions`` (foreign ones), ``margin``, ``position`` {position_id:
        bound of its market value}, ``by_category`` {type: {category: bound}}.
        """
        pf = self.portfolios[portfolio_id]
        by_cat = {t: {} for t in EXPOSURE_TYPES}
        out = {"cash": 0.0, "positions": 0.0, "margin": 0.0, "position": {}, "by_category": by_cat}
        for c, v in pf.cash.items():
            if v != 0 and c != pf.base:
                e = term_bound(self.to_base(v, c, pf.base))
                out["cash"] += e
                by_cat["CURRENCY"][c] = by_cat["CURRENCY"].get(c, 0.0) + e
        for pos in self.held(portfolio_id):
            ins = self.instruments[pos.instrument_id]
            mv = self.market_value(pos)
            e = term_bound(mv) if ins.currency != pf.base else 0.0
            out["positions"] += e
            out["position"][pos.position_id] = e
            if not pf.long_only:
                out["margin"] += term_bound(mv)
            for t, cat in zip(EXPOSURE_TYPES, (ins.instrument_id, ins.sector, ins.country, ins.currency,
                                               ins.asset_class)):
                by_cat[t][cat] = by_cat[t].get(cat, 0.0) + e
        return out


def term_bound(amount: Decimal) -> float:
    """Cents by which one float-converted amount may differ from its exact value."""
    return 1.0 + FLOAT_SLACK * abs(float(amount)) * 100
