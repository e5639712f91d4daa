"""Record layouts of the book: every dtype the kernels read or write, declared once.

Owns: the structured dtypes (``*_dt``), the ``BookArrays`` tuple the kernels take,
and ``SCHEMA_VERSION`` (bump it when any layout below changes; checkpoints and
shared-memory readers refuse a version they do not know).
Runs on: any thread. Imports: numpy only.

Units (see ``enums``): quantities int64 micro-units, prices int64 nano-units,
money int64 cents. Market values are in the *portfolio's base currency*; cash,
cost basis and realized P&L are in the *instrument's (or flow's) currency*.
"""
from typing import NamedTuple

import numpy as np

SCHEMA_VERSION = 1

#: One portfolio. ``version`` is the seqlock: odd while the writer is changing
#: this portfolio (its row, its positions, its cash and exposure rows).
portfolio_dt = np.dtype(
    [
        ("version", np.int64),
        ("seq", np.int64),            # accepted mutations so far (per-portfolio sequence)
        ("updated_ns", np.int64),     # time of the last accepted mutation, ns since epoch
        ("cash_base", np.int64),      # sum over currencies of rint(cash * fx), base cents
        ("long_mv", np.int64),        # sum of positive market values, base cents
        ("short_mv", np.int64),       # sum of negative market values (<= 0), base cents
        ("init_margin", np.int64),    # base cents
        ("maint_margin", np.int64),   # base cents
        ("inst_limit", np.float64),   # default INSTRUMENT limit (fraction of total_value); NaN = none
        ("flags", np.int32),          # PF_* bits
        ("base_ccy", np.int32),       # currency index
        ("position_count", np.int32), # positions with quantity != 0
        ("n_slots", np.int32),        # position slots allocated to this portfolio
    ],
    align=True,
)

#: One position slot: one (portfolio, position_id). 64 bytes, one cache line.
position_dt = np.dtype(
    [
        ("portfolio", np.int32),      # owner; -1 for a slot never allocated
        ("instrument", np.int32),
        ("qty", np.int64),            # micro-units, signed (short < 0)
        ("cost", np.int64),           # cost basis, instrument-currency cents, signed like qty
        ("realized", np.int64),       # realized P&L to date, instrument-currency cents
        ("mv", np.int64),             # market value, base cents, signed
        ("inst_exp", np.int64),       # on the (portfolio, instrument) head slot only: net INSTRUMENT exposure, base cents
        ("updated_ns", np.int64),
        ("head", np.int32),           # slot holding this (portfolio, instrument)'s INSTRUMENT exposure
        ("status", np.int8),          # PositionStatus
    ],
    align=True,
)
assert position_dt.itemsize == 64, position_dt.itemsize

#: Reference data and last price of one instrument.
instrument_dt = np.dtype(
    [
        ("price", np.int64),          # last price, nano-units of its currency; 0 = none yet
        ("price_ns", np.int64),       # time of the last price
        ("multiplier", np.int64),     # contract multiplier (integer, >= 1)
        ("long_init", np.float64),    # margin rates, fraction of |market value|
        ("long_maint", np.float64),
        ("short_init", np.float64),
        ("short_maint", np.float64),
        ("flags", np.int32),          # IF_* bits
        ("sector", np.int32),
        ("country", np.int32),
        ("currency", np.int32),
        ("asset_class", np.int32),
    ],
    align=True,
)

#: Per-row result of ``apply_trades_nb`` (the numbers of a PositionUpdateResponse).
trade_out_dt = np.dtype(
    [
        ("reason", np.int32),
        ("old_qty", np.int64),
        ("qty", np.int64),
        ("cost", np.int64),
        ("realized", np.int64),       # realized P&L of this row, instrument-currency cents
        ("pos_realized", np.int64),   # the position's realized P&L to date after this row
        ("ts", np.int64),             # the row's time (updated_ns of the position)
        ("status", np.int32),         # the position's status after this row
        ("old_mv", np.int64),
        ("mv", np.int64),
        ("cash_impact", np.int64),    # change of cash_balance, base cents
        ("value_change", np.int64),   # change of total_value, base cents
        ("old_weight", np.float64),
        ("weight", np.float64),
    ],
    align=True,
)

#: Per-row result of ``apply_cash_flows_nb``.
cash_out_dt = np.dtype(
    [
        ("reason", np.int32),
        ("amount", np.int64),         # signed, flow-currency cents
        ("cash", np.int64),           # new balance in that currency, cents
        ("cash_impact", np.int64),    # change of cash_balance, base cents
    ],
    align=True,
)


class BookArrays(NamedTuple):
    """Every array of the book. Kernels take it whole; growth builds a new one.

    ``*_start/_len/_cap`` + ``*_pool`` are slot lists (instrument -> slots,
    portfolio -> slots): list k is ``pool[start[k]:start[k] + len[k]]``.
    """

    portfolios: np.ndarray       # portfolio_dt[P]
    positions: np.ndarray        # position_dt[N]
    instruments: np.ndarray      # instrument_dt[I]
    fx: np.ndarray               # float64[C]: value of 1 unit in the pivot currency; NaN = unknown
    cash: np.ndarray             # int64[P, C]: cents per currency
    exp_sector: np.ndarray       # int64[P, S]: net market value, base cents
    exp_country: np.ndarray      # int64[P, G]
    exp_currency: np.ndarray     # int64[P, C]: positions + cash in that currency, base cents
    exp_asset: np.ndarray        # int64[P, A]
    lim_sector: np.ndarray       # float64[P, S]: limit as fraction of total_value; NaN = none
    lim_country: np.ndarray      # float64[P, G]
    lim_currency: np.ndarray     # float64[P, C]
    lim_asset: np.ndarray        # float64[P, A]
    inst_start: np.ndarray       # int64[I]
    inst_len: np.ndarray         # int32[I]
    inst_cap: np.ndarray         # int32[I]
    inst_pool: np.ndarray        # int32[...]
    pf_start: np.ndarray         # int64[P]
    pf_len: np.ndarray           # int32[P]
    pf_cap: np.ndarray           # int32[P]
    pf_pool: np.ndarray          # int32[...]
    meta: np.ndarray             # int64[8]: see META_*


#: meta[] cells: pool fill marks, written by kernels.
META_INST_POOL_USED = 0
META_PF_POOL_USED = 1
