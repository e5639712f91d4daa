"""Enumerations and fixed-point scales shared by every kernel.

Owns: the integer codes that cross the kernel boundary (trade kinds, position
status, exposure types, cash-flow types, reason codes) and the fixed-point
scales of quantities, prices and money.
Runs on: any thread (constants only). Imports: nothing but the standard library.

Enums are NamedTuple *instances*, so Numba folds ``Reason.OK`` to a constant
inside ``@njit`` code (vectorbt's ``portfolio/enums.py`` pattern).
"""
from typing import NamedTuple

#: Quantities are int64 counts of 1e-6 units (the spec's Decimal(15, 6)).
QTY_SCALE = 1_000_000
#: Prices are int64 counts of 1e-9 of the instrument's currency per unit.
PRICE_SCALE = 1_000_000_000
#: Money (cash, cost basis, P&L, market value) is int64 cents (Decimal(15, 2)).
MONEY_SCALE = 100
#: qty_micro * price_nano / NOTIONAL_DIV = cents.
NOTIONAL_DIV = QTY_SCALE * PRICE_SCALE // MONEY_SCALE

#: Largest accepted |quantity| in micro-units: 1e9 units, Decimal(15, 6)'s range.
MAX_QTY = 10**15
#: Largest accepted price in nano-units: 1e8 per unit, keeps price * 1e9 exact.
MAX_PRICE = 10**17
#: Largest accepted |money| in cents (1e15 currency units, beyond Decimal(15, 2)).
MAX_MONEY = 10**17


class _TradeKind(NamedTuple):
    BUY: int = 0
    SELL: int = 1
    SHORT: int = 2
    COVER: int = 3
    ADJUST: int = 4
    TRANSFER_IN: int = 5
    TRANSFER_OUT: int = 6
    SPLIT: int = 7


TradeKind = _TradeKind()


class _PositionStatus(NamedTuple):
    # FREE: a slot the id map reserved whose first command was rejected; invisible.
    FREE: int = 0
    # ACTIVE: open, quantity != 0; trades, prices and FX apply.
    ACTIVE: int = 1
    # PENDING: announced (set_status) but not yet filled; quantity 0; first fill -> ACTIVE.
    PENDING: int = 2
    # CLOSED: quantity returned to 0 through trades; the next trade reopens it (ACTIVE).
    CLOSED: int = 3
    # SUSPENDED: operator hold; trades rejected, prices still revalue it.
    SUSPENDED: int = 4


PositionStatus = _PositionStatus()
STATUS_NAMES = ("FREE", "ACTIVE", "PENDING", "CLOSED", "SUSPENDED")


class _ExposureType(NamedTuple):
    INSTRUMENT: int = 0
    SECTOR: int = 1
    GEOGRAPHIC: int = 2
    CURRENCY: int = 3
    ASSET_CLASS: int = 4


ExposureType = _ExposureType()
EXPOSURE_TYPE_NAMES = ("INSTRUMENT", "SECTOR", "GEOGRAPHIC", "CURRENCY", "ASSET_CLASS")
N_EXPOSURE_TYPES = 5


class _CashFlowType(NamedTuple):
    DEPOSIT: int = 0
    WITHDRAWAL: int = 1
    DIVIDEND: int = 2
    INTEREST: int = 3
    FEE: int = 4


CashFlowType = _CashFlowType()
CASH_FLOW_NAMES = ("DEPOSIT", "WITHDRAWAL", "DIVIDEND", "INTEREST", "FEE")


class _Reason(NamedTuple):
    OK: int = 0
    UNKNOWN_PORTFOLIO: int = 1
    UNKNOWN_INSTRUMENT: int = 2
    UNKNOWN_POSITION: int = 3
    BAD_QUANTITY: int = 4
    BAD_PRICE: int = 5
    BAD_AMOUNT: int = 6
    BAD_KIND: int = 7
    NO_FX_RATE: int = 8
    NO_PRICE: int = 9
    OVERFLOW: int = 10
    SUSPENDED: int = 11
    LONG_ONLY_SHORT: int = 12
    LONG_ONLY_OVERSELL: int = 13
    CROSSES_ZERO: int = 14
    BAD_STATUS: int = 15
    INSTRUMENT_MISMATCH: int = 16
    BAD_FEE: int = 17
    BAD_RATIO: int = 18


Reason = _Reason()
REASON_NAMES = tuple(Reason._fields)

#: Long-only portfolios (a cash account) carry this bit in portfolio.flags.
PF_LONG_ONLY = 1
#: Portfolio slot in use.
PF_ACTIVE = 2
#: Instrument slot defined by reference data.
IF_DEFINED = 1
