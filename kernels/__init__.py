"""portfolio_state.kernels: the book's record layouts and the Numba kernels that change it.

Pure functions over arrays: state arrays + a batch of inputs + caller-owned
output buffers in, reason codes out. No I/O, no Python objects on the steady
path, no exceptions for business outcomes. Imports only numpy, numba and itself.
"""
from .audit import recompute_nb
from .cash import apply_cash_flow_nb, apply_cash_flows_nb
from .enums import (
    CASH_FLOW_NAMES,
    EXPOSURE_TYPE_NAMES,
    REASON_NAMES,
    STATUS_NAMES,
    CashFlowType,
    ExposureType,
    PositionStatus,
    Reason,
    TradeKind,
)
from .layout import SCHEMA_VERSION, BookArrays
from .market import apply_fx_nb, apply_prices_nb
from .slots import alloc_slots_nb, remark_instrument_nb, unmark_instrument_nb
from .status import set_status_nb
from .trades import apply_trades_nb

__all__ = [
    "BookArrays", "SCHEMA_VERSION", "CashFlowType", "ExposureType", "PositionStatus", "Reason",
    "TradeKind", "CASH_FLOW_NAMES", "EXPOSURE_TYPE_NAMES", "REASON_NAMES", "STATUS_NAMES",
    "alloc_slots_nb", "apply_cash_flow_nb", "apply_cash_flows_nb", "apply_fx_nb", "apply_prices_nb", "apply_trades_nb",
    "recompute_nb", "remark_instrument_nb", "set_status_nb", "unmark_instrument_nb",
]
