"""Replies to single position updates, written as msgpack by compiled code.

Owns: ``encode_updates`` (the ``PositionUpdateResponse`` bytes of a run's accepted single
updates, one compiled call for the whole run) and ``encode_responses_nb``.
Runs on: the engine thread. Imports: numpy, numba, msgspec, kernels, transport.

Why: a single update's reply is a tree of Structs (the response, its Position, its
PortfolioImpact and five ExposureChanges). Built in Python and encoded by msgspec it cost
about a third of the daemon's time per single-update frame. Here each reply is written
straight from the run's kernel outputs, with ids and names taken from the event builder's
pre-encoded pools, to the same bytes msgspec writes for the Structs ``_Run.response``
builds (a test holds them byte for byte). JSON replies and rejections keep the Struct path.

Money and quantities are float(x) / scale, as in ``_Run.response`` and the events: the
correctly rounded quotient while |x| < 2**53.
"""
from __future__ import annotations

from itertools import accumulate

import msgspec
import numpy as np
from numba import njit

from portfolio_state.kernels import EXPOSURE_TYPE_NAMES, STATUS_NAMES
from portfolio_state.kernels.enums import PRICE_SCALE, QTY_SCALE
from portfolio_state.transport import messages as m
from portfolio_state.transport.msgpack_nb import (literals, put_float_nb, put_iso_nb, put_item_nb, put_nil_nb,
                                                  put_str_header_nb)

_R, _P, _I, _X = m.PositionUpdateResponse, m.Position, m.PortfolioImpact, m.ExposureChange
# the writer below follows these field orders; a change to a Struct must change it too
assert _R.__struct_fields__ == ("key", "updated_position", "portfolio_impact", "exposure_changes",
                                "processing_time_ms"), _R.__struct_fields__
assert _P.__struct_fields__ == ("position_id", "instrument_id", "quantity", "market_value", "cost_basis",
                                "unrealized_pnl", "weight", "status", "last_updated", "realized_pnl",
                                "average_price", "last_price"), _P.__struct_fields__
assert _I.__struct_fields__ == ("value_change", "weight_change", "risk_change", "cash_impact")
assert _X.__struct_fields__ == ("exposure_type", "category", "old_percentage", "new_percentage", "change")

_RKd, _RKo = literals(_R.__struct_config__.tag_field, _R.__struct_config__.tag, *_R.__struct_fields__)
_PKd, _PKo = literals(*_P.__struct_fields__)
_IKd, _IKo = literals(*_I.__struct_fields__)
_XKd, _XKo = literals(*_X.__struct_fields__)
_STd, _STo = literals(*STATUS_NAMES)
_TYd, _TYo = literals(*EXPOSURE_TYPE_NAMES)
_R_MAP, _P_MAP, _I_MAP, _X_MAP = (0x80 | n for n in (len(_R.__struct_fields__) + 1, len(_P.__struct_fields__),
                                                     len(_I.__struct_fields__), len(_X.__struct_fields__)))


def _fixed_bytes() -> int:
    """Bytes a reply needs beyond its key's bytes and its pooled ids and names: msgspec's encoding
    of a reply whose strings are all empty (each empty string's 1-byte header stands in for the
    header its pooled entry carries), with the longest status and a timestamp, plus the 2 more bytes
    a key's header can take (str16: a key is at most 128 characters, 512 bytes)."""
    pos = _P("", "", 0.0, 0.0, 0.0, 0.0, 0.0, max(STATUS_NAMES, key=len), "2000-01-01T00:00:00.000000Z")
    xs = [_X(t, "", 0.0, 0.0, 0.0) for t in EXPOSURE_TYPE_NAMES]
    return len(msgspec.msgpack.encode(_R("", pos, _I(0.0, 0.0, 0.0, 0.0), xs, 0.0))) + 2


_FIXED = _fixed_bytes()  # 953 bytes today


def encode_updates(run, rows: np.ndarray, keys: list[str], pools) -> list[bytes]:
    """The msgpack ``PositionUpdateResponse`` of each accepted row ``rows[e]`` of ``run`` (a
    ``daemon.engine._Run``), answering the request whose key is ``keys[e]``. ``pools``: the event
    builder's synced pools (portfolio, slot, instrument, then the four category axes)."""
    kb = [k.encode() for k in keys]
    key_offs = np.fromiter(accumulate(map(len, kb), initial=0), np.int64, len(kb) + 1)
    key_data = np.frombuffer(b"".join(kb), np.uint8)
    names = pools[2:7]
    args = (rows, run.out, run.exp, run.slot, run.cats, run.price, run.mult, run.ratio, float(run.ms),
            key_data, key_offs, pools[1].data, pools[1].offs, tuple(q.data for q in names),
            tuple(q.offs for q in names))
    ends = np.empty(len(rows), np.int64)
    buf = np.empty(len(rows) * (_FIXED + 256) + len(key_data), np.uint8)  # ids and names of ~40 bytes fit
    w = encode_responses_nb(buf, ends, *args)
    while w < 0:
        buf = np.empty(max(-w, 2 * len(buf)), np.uint8)
        w = encode_responses_nb(buf, ends, *args)
    blob = buf[:w].tobytes()
    out, lo = [], 0
    for hi in ends.tolist():
        out.append(blob[lo:hi])
        lo = hi
    return out


@njit(cache=True)
def encode_responses_nb(buf, ends, rows, out, exp, slot, cats, price, mult, ratio, ms, key_data, key_offs,
                        slot_data, slot_offs, name_data, name_offs):  # pragma: no cover (compiled)
    """Write reply e (for run row rows[e]) ending at ends[e]; return the bytes written, or minus a
    size ``buf`` must reach when it is too small (the caller grows it and calls again).

    Per row: out (trade_out_dt), exp (old/new percentage per exposure type), slot, cats
    (instrument, sector, country, currency, asset class), price (nano), mult, ratio (base units
    per instrument-currency unit) as ``daemon.engine._Run`` holds them."""
    fbits = np.empty(1, np.float64)
    ibits = fbits.view(np.int64)
    w = 0
    n = rows.shape[0]
    for e in range(n):
        j = rows[e]
        s = slot[j]
        # an upper bound of this reply's size (the writers do not check buf's end): the instrument
        # id is written twice, as the position's and as the INSTRUMENT exposure's category
        k = cats[j, 0]
        need = (_FIXED + key_offs[e + 1] - key_offs[e] + slot_offs[s + 1] - slot_offs[s]
                + name_offs[0][k + 1] - name_offs[0][k])
        for t in range(5):
            i = cats[j, t]
            need += name_offs[t][i + 1] - name_offs[t][i]
        if w + need > buf.shape[0]:
            return -(w + need + (n - e) * _FIXED)
        o = out[j]
        buf[w] = _R_MAP
        w += 1
        w = put_item_nb(buf, w, _RKd, _RKo, 0)  # type
        w = put_item_nb(buf, w, _RKd, _RKo, 1)
        w = put_item_nb(buf, w, _RKd, _RKo, 2)  # key
        kl = key_offs[e + 1] - key_offs[e]
        w = put_str_header_nb(buf, w, kl)
        for q in range(kl):
            buf[w + q] = key_data[key_offs[e] + q]
        w += kl
        # updated_position, as daemon.queries.position_fields
        w = put_item_nb(buf, w, _RKd, _RKo, 3)
        buf[w] = _P_MAP
        w += 1
        qty = o.qty
        cost = o.cost
        mv = o.mv
        r = ratio[j]
        cost_base = cost if r == 1.0 or cost == 0 else np.int64(np.rint(cost * r))
        w = put_item_nb(buf, w, _PKd, _PKo, 0)
        w = put_item_nb(buf, w, slot_data, slot_offs, s)
        w = put_item_nb(buf, w, _PKd, _PKo, 1)
        w = put_item_nb(buf, w, name_data[0], name_offs[0], cats[j, 0])
        w = put_item_nb(buf, w, _PKd, _PKo, 2)
        w = put_float_nb(buf, w, qty / QTY_SCALE, fbits, ibits)
        w = put_item_nb(buf, w, _PKd, _PKo, 3)
        w = put_float_nb(buf, w, mv / 100, fbits, ibits)
        w = put_item_nb(buf, w, _PKd, _PKo, 4)
        w = put_float_nb(buf, w, cost_base / 100, fbits, ibits)
        w = put_item_nb(buf, w, _PKd, _PKo, 5)
        w = put_float_nb(buf, w, (mv - cost_base) / 100, fbits, ibits)
        w = put_item_nb(buf, w, _PKd, _PKo, 6)
        w = put_float_nb(buf, w, o.weight, fbits, ibits)
        w = put_item_nb(buf, w, _PKd, _PKo, 7)
        w = put_item_nb(buf, w, _STd, _STo, o.status)
        w = put_item_nb(buf, w, _PKd, _PKo, 8)
        if o.ts == 0:
            w = put_nil_nb(buf, w)
        else:
            w = put_iso_nb(buf, w, o.ts, 6)
        w = put_item_nb(buf, w, _PKd, _PKo, 9)
        w = put_float_nb(buf, w, o.pos_realized / 100, fbits, ibits)
        w = put_item_nb(buf, w, _PKd, _PKo, 10)
        avg = (cost / 100) / (qty / QTY_SCALE) / mult[j] if qty != 0 else 0.0
        w = put_float_nb(buf, w, avg, fbits, ibits)
        w = put_item_nb(buf, w, _PKd, _PKo, 11)
        w = put_float_nb(buf, w, price[j] / PRICE_SCALE, fbits, ibits)
        # portfolio_impact
        w = put_item_nb(buf, w, _RKd, _RKo, 4)
        buf[w] = _I_MAP
        w += 1
        w = put_item_nb(buf, w, _IKd, _IKo, 0)
        w = put_float_nb(buf, w, o.value_change / 100, fbits, ibits)
        w = put_item_nb(buf, w, _IKd, _IKo, 1)
        w = put_float_nb(buf, w, o.weight - o.old_weight, fbits, ibits)
        w = put_item_nb(buf, w, _IKd, _IKo, 2)
        w = put_float_nb(buf, w, 0.0, fbits, ibits)
        w = put_item_nb(buf, w, _IKd, _IKo, 3)
        w = put_float_nb(buf, w, o.cash_impact / 100, fbits, ibits)
        # exposure_changes: the five types, in order
        w = put_item_nb(buf, w, _RKd, _RKo, 5)
        buf[w] = 0x95
        w += 1
        for t in range(5):
            old = exp[j, t, 0]
            new = exp[j, t, 1]
            buf[w] = _X_MAP
            w += 1
            w = put_item_nb(buf, w, _XKd, _XKo, 0)
            w = put_item_nb(buf, w, _TYd, _TYo, t)
            w = put_item_nb(buf, w, _XKd, _XKo, 1)
            w = put_item_nb(buf, w, name_data[t], name_offs[t], cats[j, t])
            w = put_item_nb(buf, w, _XKd, _XKo, 2)
            w = put_float_nb(buf, w, old, fbits, ibits)
            w = put_item_nb(buf, w, _XKd, _XKo, 3)
            w = put_float_nb(buf, w, new, fbits, ibits)
            w = put_item_nb(buf, w, _XKd, _XKo, 4)
            w = put_float_nb(buf, w, new - old, fbits, ibits)
        w = put_item_nb(buf, w, _RKd, _RKo, 6)  # processing_time_ms
        w = put_float_nb(buf, w, ms, fbits, ibits)
        ends[e] = w
    return w
