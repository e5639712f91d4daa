"""The engine's work around a trade run's kernel call, compiled: screening the rows before it and
keeping the reference values its replies quote after it.

Owns: ``screen_rows_nb`` (pre-rejections of looked-up rows) and ``run_refs_nb`` (what each row's
instrument and FX stood at when the run applied). Runs on: the engine thread (each trade run,
and replay). Imports: numpy, numba, kernels.

Both replace chains of small NumPy expressions whose cost was per call, not per row (each
operation ~1-5 µs even on a one-row array): for a frame of one update, most of the engine's time
(the refs alone ~22 µs per run before, ~2 µs now). They take the book's arrays they read, not the
whole ``BookArrays``: unboxing its 22 arrays costs ~3 µs per call, a few arrays ~0.7 µs.

``screen_rows_nb``: a row's reason before the trade kernel sees it is UNKNOWN_PORTFOLIO when
its portfolio id is unknown, else UNKNOWN_INSTRUMENT when its instrument id is, else
INSTRUMENT_MISMATCH when its position exists under another instrument, else 0.

``run_refs_nb``: a reply built now or much later (a retry of a replayed key) must show the
moment its row applied, so the engine keeps, per row: the instrument index, its price and
multiplier, the FX ratio from the instrument's currency to the portfolio's base currency (1.0
when they are the same), and the five category indices (instrument, sector, country,
currency, asset class).
"""

from .enums import Reason, TradeKind
from .jit import kernel


@kernel
def screen_rows_nb(positions, portfolio, inst, slot, pre):
    """Fill pre int32[n] with each row's pre-rejection reason (0: to the kernel) from its looked-up
    portfolio, instrument and slot indices (-1: unknown); a rejected row's slot becomes 0.
    Returns how many accepted rows have no slot yet (first use of a position id)."""
    new = 0
    for j in range(slot.shape[0]):
        if portfolio[j] < 0:
            pre[j] = Reason.UNKNOWN_PORTFOLIO
        elif inst[j] < 0:
            pre[j] = Reason.UNKNOWN_INSTRUMENT
        elif slot[j] >= 0 and positions[slot[j]].instrument != inst[j]:
            pre[j] = Reason.INSTRUMENT_MISMATCH  # a known position keeps its instrument
        else:
            pre[j] = 0
            if slot[j] < 0:
                new += 1
        if pre[j] != 0:
            slot[j] = 0
    return new


@kernel(error_model="numpy")
def run_refs_nb(positions, instruments, portfolios, fx, slot, inst, price, mult, ratio, cats):
    """Fill inst int32[n], price int64[n], mult int64[n], ratio float64[n] and cats int32[n, 5]
    for the trade rows at ``slot`` int32[n].

    A rejected row's slot may point anywhere: it is clipped into the table and negative indices
    count from the end (NumPy's rule), so every row gets values; only accepted rows' are read."""
    n_pos = positions.shape[0]
    n_ins = instruments.shape[0]
    n_pf = portfolios.shape[0]
    n_fx = fx.shape[0]
    for j in range(slot.shape[0]):
        s = min(max(slot[j], 0), n_pos - 1)
        pos = positions[s]
        k = pos.instrument
        if k < 0:
            k += n_ins
        p = pos.portfolio
        if p < 0:
            p += n_pf
        ins = instruments[k]
        base = portfolios[p].base_ccy
        ccy = ins.currency
        inst[j] = pos.instrument
        price[j] = ins.price
        mult[j] = ins.multiplier
        if ccy == base:
            ratio[j] = 1.0
        else:
            ratio[j] = fx[ccy + n_fx if ccy < 0 else ccy] / fx[base + n_fx if base < 0 else base]
        cats[j, 0] = pos.instrument
        cats[j, 1] = ins.sector
        cats[j, 2] = ins.country
        cats[j, 3] = ccy
        cats[j, 4] = ins.asset_class


@kernel
def mask_rejected_nb(portfolio, pre, out):
    """out int32[n]: portfolio int32[n] with -1 in the pre-rejected rows (the trade kernel then
    rejects them untouched)."""
    for j in range(out.shape[0]):
        out[j] = -1 if pre[j] != 0 else portfolio[j]


@kernel
def settle_run_nb(kind, pre, reason, ok):
    """After the trade kernel: a pre-rejected row's reason is its pre-rejection's; ok bool[n] marks
    the accepted rows. Returns (accepted rows, accepted TRANSFER_IN / TRANSFER_OUT rows)."""
    n_ok = 0
    n_moved = 0
    for j in range(reason.shape[0]):
        if pre[j] != 0:
            reason[j] = pre[j]
        ok[j] = reason[j] == 0
        if ok[j]:
            n_ok += 1
            if kind[j] == TradeKind.TRANSFER_IN or kind[j] == TradeKind.TRANSFER_OUT:
                n_moved += 1
    return n_ok, n_moved
