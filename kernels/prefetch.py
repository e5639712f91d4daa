"""Software prefetch: start loading the rows a batch will touch a few rows from now.

Owns: the ``llvm.prefetch`` intrinsics (``prefetch_nb`` for a 1-D array element,
``prefetch2_nb`` for a 2-D one) and the staged prefetch of a trade row and of a
revalued holding, which the trade and price kernels call ahead of their loops.
Runs on: the engine thread (inside kernels). Imports: numpy, numba, llvmlite.

Why: at 10M slots a position record is a DRAM miss, and the rows it leads to (its
portfolio, its instrument, the portfolio's cash and four category cells, its
INSTRUMENT head) are L2/L3 misses that depend on it. The trade row's code is too long
for the CPU to run ahead into the next row by itself, so each miss is waited for in
turn. The trade kernel therefore takes its rows in chunks of CHUNK and, before applying
chunk c, runs two short loops the CPU overlaps freely:

  far   (chunk c + 1)  the position records and portfolio rows (both from the inputs)
  near  (chunk c)      the instrument rows, from the records ``far`` requested a chunk
                       ago; then the cash and category cells and head records, from
                       the instrument rows

A price tick walks one instrument's holders; it requests each holder's record AHEAD
holders on (its portfolio and category cells, requested from the record, measured slower).

A prefetch never changes a result: every index is range-checked before a load, and a
prefetch of an address that is never used costs only bandwidth.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import inline

#: trade rows per chunk: the chunk after next is requested while this one applies
CHUNK = 32
#: how many holders ahead a revaluation requests the position record
AHEAD = 16


def _emit_prefetch(context, builder, aryty, ary_val, indices):
    ary = context.make_array(aryty)(context, builder, ary_val)
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, indices, wraparound=False)
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    # (address, rw = read, locality = 3: keep in every cache level, cache type = data)
    builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])


@intrinsic
def prefetch_nb(typingctx, arr, idx):
    """Ask the CPU to start loading arr[idx] (1-D) into cache. idx must be in range."""

    def codegen(context, builder, signature, args):
        idx_val = context.cast(builder, args[1], signature.args[1], types.intp)
        _emit_prefetch(context, builder, signature.args[0], args[0], [idx_val])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


@intrinsic
def prefetch2_nb(typingctx, arr, i, j):
    """Ask the CPU to start loading arr[i, j] (2-D) into cache. i and j must be in range."""

    def codegen(context, builder, signature, args):
        iv = context.cast(builder, args[1], signature.args[1], types.intp)
        jv = context.cast(builder, args[2], signature.args[2], types.intp)
        _emit_prefetch(context, builder, signature.args[0], args[0], [iv, jv])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@inline
def _slot_ok_nb(b, s):
    return s >= 0 and s < b.positions.shape[0]


@inline
def _categories_nb(b, p, k):
    """Request portfolio p's cash in instrument k's currency and its four category cells."""
    ins = b.instruments[k]
    ccy = ins.currency
    if ccy >= 0 and ccy < b.cash.shape[1]:
        prefetch2_nb(b.cash, p, ccy)
        prefetch2_nb(b.exp_currency, p, ccy)
    if ins.sector >= 0 and ins.sector < b.exp_sector.shape[1]:
        prefetch2_nb(b.exp_sector, p, ins.sector)
    if ins.country >= 0 and ins.country < b.exp_country.shape[1]:
        prefetch2_nb(b.exp_country, p, ins.country)
    if ins.asset_class >= 0 and ins.asset_class < b.exp_asset.shape[1]:
        prefetch2_nb(b.exp_asset, p, ins.asset_class)


@inline
def warm_trades_far_nb(b, portfolio, slot, i0, i1):
    """Stage 1 for trade rows [i0, i1): request the position records and portfolio rows."""
    for j in range(i0, i1):
        s = slot[j]
        if _slot_ok_nb(b, s):
            prefetch_nb(b.positions, s)
        p = portfolio[j]
        if p >= 0 and p < b.portfolios.shape[0]:
            prefetch_nb(b.portfolios, p)


@inline
def warm_trades_near_nb(b, portfolio, slot, i0, i1):
    """Stages 2 and 3 for trade rows [i0, i1), whose records stage 1 requested one chunk
    earlier: the instrument rows, then the cash and category cells and head records."""
    for j in range(i0, i1):
        s = slot[j]
        if _slot_ok_nb(b, s):
            k = b.positions[s].instrument
            if k >= 0 and k < b.instruments.shape[0]:
                prefetch_nb(b.instruments, k)
    for j in range(i0, i1):
        s = slot[j]
        p = portfolio[j]
        if _slot_ok_nb(b, s) and p >= 0 and p < b.portfolios.shape[0]:
            pos = b.positions[s]
            if pos.head != s and _slot_ok_nb(b, pos.head):
                prefetch_nb(b.positions, pos.head)
            k = pos.instrument
            if k >= 0 and k < b.instruments.shape[0]:
                _categories_nb(b, p, k)


@inline
def prefetch_holding_nb(b, start, n, j):
    """For the j-th holder in the slot list ``inst_pool[start:start+n]``: request the
    position record AHEAD holders on. (Also requesting each holder's portfolio and
    category cells, from the record, measured slower: the extra demand load stalls.)"""
    if j + AHEAD < n:
        prefetch_nb(b.positions, b.inst_pool[start + j + AHEAD])
