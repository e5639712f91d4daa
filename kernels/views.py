"""Read-side formulas: the spec's PortfolioState and MarginRequirement from stored rows.

Owns: ``portfolio_state``, ``margin_requirement``, ``exposure_row``: plain
Python over one portfolio record (a NumPy void), used by the engine's queries and
by the shared-memory reader alike, so both report the same numbers.
Runs on: any thread or process. Imports: numpy, kernels.

Stored values are cents; these return currency units (float) of the base currency.
  total_value      = cash_balance + invested_value
  invested_value   = long_mv + short_mv (net)
  gross_exposure   = long_mv - short_mv
  leverage_ratio   = gross_exposure / total_value; 0 when gross == 0; +inf when total_value <= 0
  margin_used      = initial_margin
  margin_available = max(0, total_value - initial_margin)
  excess_liquidity = total_value - maintenance_margin (signed; < 0 is a margin call)
  available_cash   = max(0, min(cash_balance, total_value - initial_margin))
  buying_power     = margin account: margin_available / REG_T_INITIAL (0.5, so 2x);
                     cash (long-only) account: available_cash
  utilization      = |exposure_percentage| / limit_percentage; NaN without a limit
"""
import math

from .enums import MONEY_SCALE, PF_LONG_ONLY

#: Reg T initial margin on equities; buying power of a margin account is excess / this.
REG_T_INITIAL = 0.5


def cents(x) -> float:
    return int(x) / MONEY_SCALE


def leverage(gross: int, total: int) -> float:
    if gross == 0:
        return 0.0
    if total <= 0:
        return math.inf
    return gross / total


def portfolio_state(pf) -> dict:
    """The spec's PortfolioState numbers (without portfolio_id) from a portfolio_dt row."""
    cash = int(pf["cash_base"])
    invested = int(pf["long_mv"]) + int(pf["short_mv"])
    gross = int(pf["long_mv"]) - int(pf["short_mv"])
    total = cash + invested
    im = int(pf["init_margin"])
    return {
        "total_value": cents(total),
        "cash_balance": cents(cash),
        "invested_value": cents(invested),
        "available_cash": cents(max(0, min(cash, total - im))),
        "margin_used": cents(im),
        "margin_available": cents(max(0, total - im)),
        "leverage_ratio": leverage(gross, total),
        "position_count": int(pf["position_count"]),
    }


def margin_requirement(pf) -> dict:
    """The spec's MarginRequirement numbers from a portfolio_dt row."""
    total = int(pf["cash_base"]) + int(pf["long_mv"]) + int(pf["short_mv"])
    im = int(pf["init_margin"])
    mm = int(pf["maint_margin"])
    available = max(0, total - im)
    if int(pf["flags"]) & PF_LONG_ONLY:
        bp = max(0, min(int(pf["cash_base"]), total - im))
    else:
        bp = available / REG_T_INITIAL
    return {
        "initial_margin": cents(im),
        "maintenance_margin": cents(mm),
        "excess_liquidity": cents(total - mm),
        "buying_power": cents(bp),
    }


def utilization(pct: float, limit: float) -> float:
    """|exposure_percentage| / limit_percentage; NaN without a limit."""
    limit = float(limit)
    return abs(pct) / limit if limit == limit and limit > 0 else math.nan


def exposure_row(value_cents: int, total_cents: int, limit: float) -> dict:
    """One Exposure's numbers: value, percentage of total_value, limit, utilization."""
    pct = value_cents / total_cents if total_cents else 0.0
    return {
        "exposure_value": cents(value_cents),
        "exposure_percentage": pct,
        "limit_percentage": float(limit),
        "utilization": utilization(pct, limit),
    }
