"""The book: the engine's state (arrays + id maps) and the only code that calls kernels.

Owns: ``Book``: allocation and growth of the arrays (plain or in a shared-memory
``Arena``), the id <-> index maps (portfolios, instruments, currencies, categories,
position slots), reference data, and thin batch wrappers around the kernels.
Runs on: the engine thread only (single writer, no locks). Imports: numpy,
daemon.shm, kernels.

Growth doubles a capacity when it is reached, copies the arrays into a new
generation and carries on: no restart, no pause longer than one copy.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import numpy as np

from portfolio_state.kernels import (
    EXPOSURE_TYPE_NAMES,
    BookArrays,
    Reason,
    alloc_slots_nb,
    apply_cash_flow_nb,
    apply_cash_flows_nb,
    apply_fx_nb,
    apply_prices_nb,
    apply_trades_nb,
    recompute_nb,
    remark_instrument_nb,
    set_status_nb,
    unmark_instrument_nb,
)
from portfolio_state.kernels.enums import IF_DEFINED, PF_ACTIVE, PF_LONG_ONLY
from portfolio_state.kernels.layout import (
    META_INST_POOL_USED,
    META_PF_POOL_USED,
    SCHEMA_VERSION,
    cash_out_dt,
    instrument_dt,
    portfolio_dt,
    position_dt,
    trade_out_dt,
)

from .hugepages import HugeArena
from .idmaps import HeadIndex, SlotIndex
from .shm import MOVED, Arena

#: Portfolio types that are cash accounts: long only, no margin.
LONG_ONLY_TYPES = frozenset({"LONG_ONLY", "CASH"})

#: Margin rates per asset class: (long initial, long maintenance, short initial,
#: short maintenance), as fractions of |market value|. Equities follow Reg T
#: (50% initial) and FINRA 4210 (25% long / 30% short maintenance).
DEFAULT_MARGIN = {
    "EQUITY": (0.50, 0.25, 0.50, 0.30),
    "ETF": (0.50, 0.25, 0.50, 0.30),
    "FIXED_INCOME": (0.20, 0.10, 0.20, 0.10),
    "GOVERNMENT_BOND": (0.05, 0.03, 0.05, 0.03),
    "FUTURE": (0.10, 0.08, 0.10, 0.08),
    "FX": (0.05, 0.03, 0.05, 0.03),
    "COMMODITY": (0.15, 0.10, 0.15, 0.10),
    "CASH_EQUIVALENT": (0.0, 0.0, 0.0, 0.0),
}
#: Any other asset class is margined like an equity.
FALLBACK_MARGIN = DEFAULT_MARGIN["EQUITY"]

_CCY = re.compile(r"^[A-Z]{3}$")


class BookError(ValueError):
    """A command the book refuses before any kernel runs; ``code`` is a Reason name."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Capacity:
    """Initial sizes; each doubles when reached."""

    portfolios: int = 1024
    slots: int = 65536
    instruments: int = 1024
    currencies: int = 16
    sectors: int = 16
    countries: int = 32
    asset_classes: int = 8


class Interner:
    """str id <-> dense int index, append only."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []

    def get(self, ident: str) -> int:
        return self.index.get(ident, -1)

    def add(self, ident: str) -> tuple[int, bool]:
        i = self.index.get(ident)
        if i is not None:
            return i, False
        i = len(self.ids)
        self.index[ident] = i
        self.ids.append(ident)
        return i, True

    def __len__(self) -> int:
        return len(self.ids)


#: the slot-list arrays: written only by slot allocation (kernels/slots.py)
SLOT_LIST_ARRAYS = frozenset(("inst_start", "inst_len", "inst_cap", "inst_pool", "pf_start", "pf_len", "pf_cap", "pf_pool"))

_INTERNERS = ("portfolio_ids", "instrument_ids", "currency_ids", "sector_ids", "country_ids", "asset_class_ids")


class Book:
    """Every portfolio's state, updated only through kernels, on one thread."""

    def __init__(self, capacity: Capacity = Capacity(), pivot: str = "USD",
                 shm_name: str | None = None, shm_dir: str = "/dev/shm"):
        self._cap = {
            "portfolios": capacity.portfolios, "slots": capacity.slots,
            "instruments": capacity.instruments, "currencies": capacity.currencies,
            "sectors": capacity.sectors, "countries": capacity.countries,
            "asset_classes": capacity.asset_classes,
            "inst_pool": 2 * capacity.slots + 4 * capacity.instruments,
            "pf_pool": 2 * capacity.slots + 4 * capacity.portfolios,
        }
        self.arena = Arena(shm_name, shm_dir) if shm_name else None
        self.portfolio_ids = Interner()
        self.instrument_ids = Interner()
        self.currency_ids = Interner()
        self.sector_ids = Interner()
        self.country_ids = Interner()
        self.asset_class_ids = Interner()
        self.slot_ids: list[str] = []
        self.slot_index = SlotIndex(self.slot_ids, capacity.slots)  # (portfolio, position_id) -> slot
        self.heads = HeadIndex(capacity.slots)                      # (portfolio, instrument) -> head slot
        self.portfolio_info: dict[int, dict] = {}
        self.instrument_info: dict[int, dict] = {}
        self.instrument_limits: dict[tuple[int, int], float] = {}
        self.alloc_log: list | None = None
        self._pools_changed = 0  # bumped whenever the slot lists may change (export_state)
        self._pools_exported = None
        self.a: BookArrays = self._build(None)
        self.pivot = self.currency(pivot)
        self.a.fx[self.pivot] = 1.0

    # ------------------------------------------------------------ arrays
    def _shapes(self) -> dict:
        c = self._cap
        P, C = c["portfolios"], c["currencies"]
        return {
            "portfolios": (portfolio_dt, (P,)), "positions": (position_dt, (c["slots"],)),
            "instruments": (instrument_dt, (c["instruments"],)), "fx": (np.float64, (C,)),
            "cash": (np.int64, (P, C)), "exp_sector": (np.int64, (P, c["sectors"])),
            "exp_country": (np.int64, (P, c["countries"])), "exp_currency": (np.int64, (P, C)),
            "exp_asset": (np.int64, (P, c["asset_classes"])),
            "lim_sector": (np.float64, (P, c["sectors"])), "lim_country": (np.float64, (P, c["countries"])),
            "lim_currency": (np.float64, (P, C)), "lim_asset": (np.float64, (P, c["asset_classes"])),
            "inst_start": (np.int64, (c["instruments"],)), "inst_len": (np.int32, (c["instruments"],)),
            "inst_cap": (np.int32, (c["instruments"],)), "inst_pool": (np.int32, (c["inst_pool"],)),
            "pf_start": (np.int64, (P,)), "pf_len": (np.int32, (P,)), "pf_cap": (np.int32, (P,)),
            "pf_pool": (np.int32, (c["pf_pool"],)), "meta": (np.int64, (8,)),
        }

    def _build(self, old: BookArrays | None) -> BookArrays:
        arrays = {}
        shapes = self._shapes()
        heap = None if self.arena else HugeArena(shapes)
        self._heap = heap  # (the newest generation's mapping: collapse_huge)
        for name, (dtype, shape) in shapes.items():
            dtype = np.dtype(dtype)
            a = self.arena.allocate(name, dtype, shape) if self.arena else heap[name]
            if name in ("fx", "lim_sector", "lim_country", "lim_currency", "lim_asset"):
                a[...] = np.nan
            if name == "positions":
                a["portfolio"] = -1  # never allocated: no portfolio owns it, so every kernel rejects it
            if old is None:
                if name == "portfolios":
                    a["inst_limit"] = np.nan
            else:
                prev = getattr(old, name)
                if name == "portfolios":
                    a["inst_limit"] = np.nan
                a[tuple(slice(0, n) for n in prev.shape)] = prev
            arrays[name] = a
        self._pools_changed += 1
        if self.arena:
            if old is not None:
                old.portfolios["version"] = MOVED
            self.arena.publish(arrays, SCHEMA_VERSION, {"pivot_index": 0})
        return BookArrays(**arrays)

    def _grow(self, **need: int) -> None:
        changed = False
        for key, n in need.items():
            while self._cap[key] < n:
                self._cap[key] *= 2
                changed = True
        if changed:
            self.a = self._build(self.a)

    @property
    def capacity(self) -> dict:
        return dict(self._cap)

    # ------------------------------------------------------------ reference data
    def currency(self, code: str) -> int:
        if not isinstance(code, str) or not _CCY.match(code):
            raise BookError("BAD_CURRENCY", f"currency must be three capital letters, got {code!r}")
        i, new = self.currency_ids.add(code)
        if new:
            self._grow(currencies=i + 1)
            if self.arena:
                self.arena.log_name("currency", i, code)
        return i

    def _category(self, interner: Interner, key: str, value: str) -> int:
        if not isinstance(value, str) or not value or len(value) > 100:
            raise BookError("BAD_CATEGORY", f"{key} must be a non-empty string of at most 100 characters")
        i, new = interner.add(value)
        if new:
            self._grow(**{key: i + 1})
        return i

    def upsert_portfolio(self, portfolio_id: str, base_currency: str = "USD",
                         portfolio_type: str = "LONG_SHORT", **info) -> int:
        """Create or update a portfolio. Returns its index.

        ``portfolio_type`` in LONG_ONLY_TYPES makes a cash account (long only, no
        margin). The base currency is fixed once the portfolio holds anything.
        """
        if not isinstance(portfolio_id, str) or not portfolio_id or len(portfolio_id) > 50:
            raise BookError("BAD_PORTFOLIO_ID", "portfolio_id must be 1 to 50 characters")
        base = self.currency(base_currency)
        p, new = self.portfolio_ids.add(portfolio_id)
        if new:
            self._grow(portfolios=p + 1)
            if self.arena:
                self.arena.log_name("portfolio", p, portfolio_id)
        pf = self.a.portfolios[p]
        if not new and int(pf["base_ccy"]) != base and (pf["n_slots"] or self.a.cash[p].any()):
            raise BookError("BASE_CURRENCY_FIXED", f"portfolio {portfolio_id} holds positions or cash")
        flags = PF_ACTIVE | (PF_LONG_ONLY if portfolio_type in LONG_ONLY_TYPES else 0)
        retype = not new and int(pf["flags"]) != flags
        pf["version"] += 1
        pf["base_ccy"] = base
        pf["flags"] = flags
        if "instrument_limit" in info and info["instrument_limit"] is not None:
            pf["inst_limit"] = float(info.pop("instrument_limit"))
        if retype:
            self._recompute_margin(p)
        pf["version"] += 1
        self.portfolio_info[p] = {"portfolio_id": portfolio_id, "base_currency": base_currency,
                                  "portfolio_type": portfolio_type, **info}
        return p

    def _recompute_margin(self, p: int) -> None:
        agg, expo, inst_exp, mv = self._recompute(p)
        self.a.portfolios[p]["init_margin"] = agg[p, 3]
        self.a.portfolios[p]["maint_margin"] = agg[p, 4]

    def upsert_instrument(self, instrument_id: str, currency: str = "USD", sector: str = "UNKNOWN",
                          country: str = "UNKNOWN", asset_class: str = "EQUITY", multiplier: int = 1,
                          margin: tuple[float, float, float, float] | None = None) -> int:
        """Create or update an instrument's reference data. Returns its index.

        Changing sector, country, asset class, multiplier or margin rates moves the
        held positions' exposures and margin at once; the currency is fixed once held.
        """
        if not isinstance(instrument_id, str) or not instrument_id or len(instrument_id) > 20:
            raise BookError("BAD_INSTRUMENT_ID", "instrument_id must be 1 to 20 characters")
        if not isinstance(multiplier, int) or isinstance(multiplier, bool) or not 1 <= multiplier <= 1_000_000:
            raise BookError("BAD_MULTIPLIER", "multiplier must be an integer from 1 to 1,000,000")
        rates = margin if margin is not None else DEFAULT_MARGIN.get(asset_class, FALLBACK_MARGIN)
        if len(rates) != 4 or not all(isinstance(r, (int, float)) and 0.0 <= r <= 10.0 for r in rates):
            raise BookError("BAD_MARGIN", "margin rates are four fractions between 0 and 10")
        ccy = self.currency(currency)
        sec = self._category(self.sector_ids, "sectors", sector)
        cty = self._category(self.country_ids, "countries", country)
        acl = self._category(self.asset_class_ids, "asset_classes", asset_class)
        k, new = self.instrument_ids.add(instrument_id)
        if new:
            self._grow(instruments=k + 1)
            if self.arena:
                self.arena.log_name("instrument", k, instrument_id)
        ins = self.a.instruments[k]
        held = not new and self.a.inst_len[k] > 0
        if held and int(ins["currency"]) != ccy:
            raise BookError("CURRENCY_FIXED", f"instrument {instrument_id} is held; its currency cannot change")
        if held:
            unmark_instrument_nb(self.a, k)
        ins["currency"], ins["sector"], ins["country"], ins["asset_class"] = ccy, sec, cty, acl
        ins["multiplier"] = multiplier
        ins["long_init"], ins["long_maint"], ins["short_init"], ins["short_maint"] = rates
        ins["flags"] |= IF_DEFINED
        if held:
            remark_instrument_nb(self.a, k)
        self.instrument_info[k] = {"instrument_id": instrument_id, "currency": currency, "sector": sector,
                                   "country": country, "asset_class": asset_class, "multiplier": multiplier}
        return k

    def portfolio_meta(self, p: int) -> dict:
        """The spec's Portfolio fields of portfolio p (plus its default INSTRUMENT limit), as given."""
        info = dict(self.portfolio_info.get(p) or {"portfolio_id": self.portfolio_ids.ids[p]})
        lim = float(self.a.portfolios["inst_limit"][p])
        info["instrument_limit"] = None if lim != lim else lim
        return info

    def instrument_meta(self, k: int) -> dict:
        """An instrument's reference data as given, with the margin rates in force."""
        ins = self.a.instruments[k]
        info = dict(self.instrument_info.get(k) or {"instrument_id": self.instrument_ids.ids[k]})
        info["margin"] = (float(ins["long_init"]), float(ins["long_maint"]), float(ins["short_init"]),
                          float(ins["short_maint"]))
        return info

    def limit_rows(self) -> list[tuple[str, str, str, float]]:
        """Every explicit exposure limit: (portfolio_id, exposure_type, category, limit)."""
        rows = [(self.portfolio_ids.ids[p], "INSTRUMENT", self.instrument_ids.ids[k], v)
                for (p, k), v in self.instrument_limits.items()]
        for t in EXPOSURE_TYPE_NAMES[1:]:
            interner, arr = self._exposure_axis(t)
            sub = arr[: len(self.portfolio_ids), : len(interner)]
            for p, c in zip(*np.nonzero(~np.isnan(sub))):
                rows.append((self.portfolio_ids.ids[p], t, interner.ids[c], float(sub[p, c])))
        return rows

    def set_limit(self, portfolio_id: str, exposure_type: str, category: str, limit: float | None) -> None:
        """Set (or clear, with None) a limit, as a fraction of total_value, for one category."""
        p = self._portfolio(portfolio_id)
        if limit is not None and not (isinstance(limit, (int, float)) and 0 < limit < 1e6):
            raise BookError("BAD_LIMIT", "limit_percentage must be a positive fraction")
        value = np.nan if limit is None else float(limit)
        if exposure_type == "INSTRUMENT":
            k = self.instrument_ids.get(category)
            if k < 0:
                raise BookError("UNKNOWN_INSTRUMENT", category)
            if limit is None:
                self.instrument_limits.pop((p, k), None)
            else:
                self.instrument_limits[(p, k)] = value
            return
        interner, arr = self._exposure_axis(exposure_type)
        c = interner.get(category)
        if c < 0:
            raise BookError("UNKNOWN_CATEGORY", f"{exposure_type} {category!r} is not known")
        self.a.portfolios["version"][p] += 1
        arr[p, c] = value
        self.a.portfolios["version"][p] += 1

    def _exposure_axis(self, exposure_type: str):
        axes = {"SECTOR": (self.sector_ids, self.a.lim_sector), "GEOGRAPHIC": (self.country_ids, self.a.lim_country),
                "CURRENCY": (self.currency_ids, self.a.lim_currency), "ASSET_CLASS": (self.asset_class_ids, self.a.lim_asset)}
        if exposure_type not in axes:
            raise BookError("BAD_EXPOSURE_TYPE", f"exposure_type must be one of {', '.join(EXPOSURE_TYPE_NAMES)}")
        return axes[exposure_type]

    # ------------------------------------------------------------ slots
    def _portfolio(self, portfolio_id: str) -> int:
        p = self.portfolio_ids.get(portfolio_id)
        if p < 0:
            raise BookError("UNKNOWN_PORTFOLIO", f"portfolio {portfolio_id!r} is not known")
        return p

    def slot(self, p: int, position_id: str, instrument: int) -> int:
        """The slot of (portfolio p, position_id), allocated on first use.

        Negative results are reasons: -Reason.UNKNOWN_INSTRUMENT, -Reason.INSTRUMENT_MISMATCH.
        """
        s = self.slot_index.get((p, position_id))
        if s is not None:
            return s if int(self.a.positions[s]["instrument"]) == instrument else -Reason.INSTRUMENT_MISMATCH
        if instrument < 0 or not (self.a.instruments[instrument]["flags"] & IF_DEFINED):
            return -Reason.UNKNOWN_INSTRUMENT
        s = int(self.alloc(np.array([p], np.int32), np.array([instrument], np.int32))[0])
        self.slot_index[(p, position_id)] = s
        self.slot_ids[s] = position_id
        if self.alloc_log is not None:  # the engine journals allocations with the run that made them
            self.alloc_log.append((p, position_id, instrument))
        if self.arena:
            self.arena.log_name("slot", s, f"{p}\t{position_id}")
        return s

    def slots(self, rows) -> list[int]:
        """``slot`` of each (portfolio, position_id, instrument) row, in order: the same results,
        slots and allocation log as one call per row, with every new position allocated in one
        ``alloc`` call (which numbers and links rows in order); ~10 us a position less."""
        idx, a = self.slot_index, self.a
        fresh: dict = {}  # (p, position_id) first seen here, with a defined instrument -> (instrument, row)
        n_ins = len(a.instruments)
        for j, (p, pid, k) in enumerate(rows):
            key = (p, pid)
            if key not in idx and key not in fresh and 0 <= k < n_ins and a.instruments[k]["flags"] & IF_DEFINED:
                fresh[key] = (k, j)
        if len(fresh) < 2:
            return [self.slot(p, pid, k) for p, pid, k in rows]
        keys = list(fresh)
        slots = self.alloc(np.array([p for p, _ in keys], np.int32),
                           np.array([k for k, _ in fresh.values()], np.int32)).tolist()
        idx.update(zip(keys, slots))
        for (p, pid), s in zip(keys, slots):
            self.slot_ids[s] = pid
        if self.alloc_log is not None:
            self.alloc_log.extend((p, pid, k) for (p, pid), (k, _) in fresh.items())
        if self.arena:
            for (p, pid), s in zip(keys, slots):
                self.arena.log_name("slot", s, f"{p}\t{pid}")
        # a row before the one that allocated its position found none: its instrument was undefined
        return [-Reason.UNKNOWN_INSTRUMENT if (f := fresh.get((p, pid))) is not None and j < f[1]
                else self.slot(p, pid, k) for j, (p, pid, k) in enumerate(rows)]

    def collapse_huge(self) -> bool:
        """Re-form the private book's huge pages (``HugeArena.collapse``); safe from any thread:
        contents never change, and the arena is held for the call."""
        heap = self._heap
        return heap is not None and heap.collapse()

    def alloc(self, portfolios: np.ndarray, instruments: np.ndarray) -> np.ndarray:
        """Allocate one slot per (portfolio, instrument) row, in bulk. Returns the slots.

        Ids are the caller's business (``slot`` keeps the position_id map); the
        benchmark uses this directly to build ten million slots.
        """
        n = len(portfolios)
        first = len(self.slot_ids)
        self._grow(slots=first + n)
        self.slot_ids.extend([""] * n)
        slots = np.arange(first, first + n, dtype=np.int32)
        heads = self.heads.setdefault(portfolios, instruments, slots)
        done = 0
        self._pools_changed += 1
        while done < n:
            done += alloc_slots_nb(self.a, slots[done:], portfolios[done:], instruments[done:], heads[done:],
                                   META_INST_POOL_USED, META_PF_POOL_USED)
            if done < n:
                self._grow(inst_pool=2 * self._cap["inst_pool"], pf_pool=2 * self._cap["pf_pool"])
        return slots

    # ------------------------------------------------------------ kernels
    def apply_trades(self, kind, portfolio, slot, qty, price, fee, ts):
        n = len(kind)
        out = np.zeros(n, trade_out_dt)
        exp_out = np.zeros((n, 5, 2), np.float64)
        apply_trades_nb(self.a, kind, portfolio, slot, qty, price, fee, ts, out, exp_out)
        return out, exp_out

    def apply_cash_flows(self, portfolio, currency, kind, amount, ts):
        out = np.zeros(len(portfolio), cash_out_dt)
        apply_cash_flows_nb(self.a, portfolio, currency, kind, amount, ts, out)
        return out

    def apply_cash_flow(self, p: int, currency: int, kind: int, amount: float, ts: int) -> tuple[int, int, int, int]:
        """One cash flow: (reason, amount, cash, cash_impact), as a row of ``apply_cash_flows``."""
        a = self.a
        return apply_cash_flow_nb(a.portfolios, a.fx, a.cash, a.exp_currency, p, currency, kind, amount, ts)

    def apply_prices(self, instrument, price, ts):
        reason = np.zeros(len(instrument), np.int32)
        n = apply_prices_nb(self.a, instrument, price, ts, reason)
        return reason, n

    def apply_fx(self, currency, rate, ts):
        reason = np.zeros(len(currency), np.int32)
        n = apply_fx_nb(self.a, currency, rate, ts, self.pivot, reason)
        return reason, n

    def set_status(self, portfolio, slot, status, ts):
        reason = np.zeros(len(slot), np.int32)
        set_status_nb(self.a, portfolio, slot, status, ts, reason)
        return reason

    # ------------------------------------------------------------ checkpoints
    def export_state(self, reuse: dict[str, np.ndarray] | None = None,
                     copy: bool = True) -> tuple[dict[str, np.ndarray], dict]:
        """A consistent copy of everything (arrays + id maps), for a checkpoint. Copies, so the
        engine can go on while a thread writes it. Runs on the engine thread, so nothing here is a
        Python loop over slots: the (portfolio, instrument) -> head map is rebuilt from the arrays.
        ``copy=False``: the live arrays themselves, for a forked child whose view of private
        memory is frozen at the fork (daemon/ckptfork.py)."""
        if not copy:  # (the id lists as they are too: a copy in the child would write every id's
            # reference count, and so copy every page of ids, 600 MB at 10M positions; ADR 0023)
            return dict(self.a._asdict()), self._export_meta(copy=False)
        arrays = {}
        # the slot lists change only when slots are allocated: when these very buffers received
        # them at the last export and none was allocated since, they still hold them (a third of
        # the copy on the engine thread, at a checkpoint)
        last = self._pools_exported
        pools_held = (reuse is not None and last is not None and last[0] == self._pools_changed
                      and reuse.get("inst_pool") is last[1]())
        for k, v in self.a._asdict().items():
            # into the previous checkpoint's buffers when they fit: a copy into memory already
            # touched runs at memory speed; fresh pages fault in one by one (2-5x slower here)
            dst = reuse.get(k) if reuse else None
            if dst is None or dst.shape != v.shape or dst.dtype != v.dtype:
                dst = np.empty_like(v)
            elif pools_held and k in SLOT_LIST_ARRAYS:
                arrays[k] = dst
                continue
            # as bytes: a structured copy goes field by field and leaves junk in the padding
            # between fields, so a checkpoint's bytes would differ from the book's
            np.copyto(dst.view(np.uint8), v.view(np.uint8))
            arrays[k] = dst
        # a weak reference: the book must not keep a caller's snapshot buffers alive
        self._pools_exported = (self._pools_changed, weakref.ref(arrays["inst_pool"]))
        return arrays, self._export_meta()

    def _export_meta(self, copy: bool = True) -> dict:
        return {
            "capacity": dict(self._cap),
            "pivot": self.currency_ids.ids[self.pivot],
            "ids": {name: list(getattr(self, name).ids) for name in _INTERNERS},
            "slot_ids": list(self.slot_ids) if copy else self.slot_ids,
            "portfolio_info": [[p, info] for p, info in self.portfolio_info.items()],
            "instrument_info": [[k, info] for k, info in self.instrument_info.items()],
            "instrument_limits": [[p, k, v] for (p, k), v in self.instrument_limits.items()],
        }

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict, shm_name: str | None = None,
                   shm_dir: str = "/dev/shm") -> "Book":
        """The inverse of export_state (into shared memory when shm_name is given)."""
        book = cls.__new__(cls)
        book._cap = dict(meta["capacity"])
        book.arena = Arena(shm_name, shm_dir) if shm_name else None
        for name in _INTERNERS:
            it = Interner()
            for ident in meta["ids"][name]:
                it.add(ident)
            setattr(book, name, it)
        book.slot_ids = list(meta["slot_ids"])
        book.portfolio_info = {p: info for p, info in meta["portfolio_info"]}
        book.instrument_info = {k: info for k, info in meta["instrument_info"]}
        book.instrument_limits = {(p, k): v for p, k, v in meta["instrument_limits"]}
        book.alloc_log = None
        book._pools_changed, book._pools_exported = 0, None
        book.a = book._build(None)
        for name, arr in arrays.items():
            getattr(book.a, name)[...] = arr
        n = len(book.slot_ids)
        pos = book.a.positions[:n]
        book.slot_index = SlotIndex(book.slot_ids)
        book.slot_index.rebuild(pos["portfolio"])
        book.heads = HeadIndex()
        if "heads" in meta:  # checkpoints written before the map was derived
            book.heads.rebuild(*np.array(meta["heads"], np.int64).reshape(-1, 3).T)  # [[p, k, slot], ...]
        else:
            h = np.flatnonzero(pos["head"] == np.arange(n))
            book.heads.rebuild(pos["portfolio"][h], pos["instrument"][h], h)
        book.pivot = book.currency_ids.get(meta["pivot"])
        if book.arena:
            for kind, name in (("currency", "currency_ids"), ("portfolio", "portfolio_ids"), ("instrument", "instrument_ids")):
                for i, ident in enumerate(getattr(book, name).ids):
                    book.arena.log_name(kind, i, ident)
            for (p, ident), s in book.slot_index.items():
                book.arena.log_name("slot", s, f"{p}\t{ident}")
        return book

    # ------------------------------------------------------------ reads
    def _recompute(self, only_p: int = -1):
        a = self.a
        P = a.portfolios.shape[0]
        agg = np.zeros((P, 6), np.int64)
        expo = [np.zeros_like(x) for x in (a.exp_sector, a.exp_country, a.exp_currency, a.exp_asset)]
        inst_exp = np.zeros(a.positions.shape[0], np.int64)
        mv = np.zeros(a.positions.shape[0], np.int64)
        recompute_nb(a, agg, *expo, inst_exp, mv, only_p)
        return agg, expo, inst_exp, mv

    def audit(self) -> list[str]:
        """Compare every incrementally kept aggregate with a from-scratch recompute."""
        a = self.a
        agg, expo, inst_exp, mv = self._recompute()
        pf = a.portfolios
        issues = []
        for col, name in enumerate(("cash_base", "long_mv", "short_mv", "init_margin", "maint_margin", "position_count")):
            bad = np.nonzero(pf[name] != agg[:, col])[0]
            issues += [f"portfolio {p}: {name} {pf[name][p]} != {agg[p, col]}" for p in bad[:5]]
        for live, ref, name in zip((a.exp_sector, a.exp_country, a.exp_currency, a.exp_asset), expo,
                                   ("sector", "country", "currency", "asset")):
            if not np.array_equal(live, ref):
                issues.append(f"exposure {name} differs at {np.argwhere(live != ref)[:3].tolist()}")
        if not np.array_equal(a.positions["mv"], mv):
            issues.append("position mv differs from a fresh mark")
        if not np.array_equal(a.positions["inst_exp"], inst_exp):
            issues.append("INSTRUMENT exposure differs")
        return issues
