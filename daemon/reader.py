"""Read-only access to a running book from another process on the same host.

Owns: ``BookReader``: attach to a book's shared-memory arena and take a
consistent snapshot of one portfolio without ever blocking the writer.
Runs on: any thread of any process. Imports: numpy, daemon.shm, kernels.

Consistency is a per-portfolio seqlock: the writer makes ``version`` odd before
it changes anything of the portfolio and even after. A snapshot reads the
version, copies the rows, reads the version again, and keeps the copy only when
both reads are the same even number; otherwise it retries. A version of MOVED
means the arrays grew into a new generation: the reader re-attaches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from portfolio_state.kernels.layout import SCHEMA_VERSION
from portfolio_state.kernels.views import margin_requirement, portfolio_state

from .shm import MOVED, NameLog, attach


class ReaderError(RuntimeError):
    pass


@dataclass
class Snapshot:
    """One portfolio, consistent as of ``version``. Raw rows plus derived views."""

    portfolio_id: str
    version: int
    portfolio: np.void          # portfolio_dt row
    slots: np.ndarray           # int32 slot numbers
    positions: np.ndarray       # position_dt rows of those slots
    heads: np.ndarray           # position_dt rows of the INSTRUMENT-exposure heads, by slot
    cash: np.ndarray            # int64 cents per currency
    exposures: dict             # name -> int64 row (sector, country, currency, asset)
    retries: int

    @property
    def state(self) -> dict:
        return {"portfolio_id": self.portfolio_id, **portfolio_state(self.portfolio)}

    @property
    def margin(self) -> dict:
        return margin_requirement(self.portfolio)


class BookReader:
    """Attach read-only to the arena ``name`` (see ``daemon.shm``)."""

    def __init__(self, name: str, directory: str = "/dev/shm"):
        self.name = name
        self.directory = directory
        self.portfolio_names = NameLog(name, "portfolio", directory)
        self.instrument_names = NameLog(name, "instrument", directory)
        self.slot_names = NameLog(name, "slot", directory)
        self._attach()

    def _attach(self) -> None:
        for _ in range(100):
            try:
                header, arrays = attach(self.name, self.directory)
                break
            except FileNotFoundError:  # the writer retired a generation between header and files
                time.sleep(0.001)
        else:
            raise ReaderError(f"cannot attach to book {self.name!r} in {self.directory}")
        if header["schema_version"] != SCHEMA_VERSION:
            raise ReaderError(f"book schema {header['schema_version']}, reader knows {SCHEMA_VERSION}")
        self.generation = header["generation"]
        self.arrays = arrays

    def portfolio_index(self, portfolio_id: str) -> int:
        if portfolio_id not in self.portfolio_names.by_id:
            self.portfolio_names.refresh()
        p = self.portfolio_names.by_id.get(portfolio_id)
        if p is None:
            raise KeyError(portfolio_id)
        return p

    def snapshot(self, portfolio_id: str, max_retries: int = 100_000) -> Snapshot:
        p = self.portfolio_index(portfolio_id)
        retries = 0
        while retries <= max_retries:
            a = self.arrays
            if p >= a["portfolios"].shape[0]:
                self._attach()
                retries += 1
                continue
            versions = a["portfolios"]["version"]
            v1 = int(versions[p])
            if v1 == MOVED:
                self._attach()
                retries += 1
                continue
            if v1 & 1:
                retries += 1
                continue
            row = a["portfolios"][p].copy()
            start, n = int(a["pf_start"][p]), int(a["pf_len"][p])
            slots = a["pf_pool"][start:start + n].copy()
            if slots.size and (slots.max() >= a["positions"].shape[0] or slots.min() < 0):
                retries += 1
                continue
            positions = a["positions"][slots]
            heads = a["positions"][np.unique(positions["head"])] if slots.size else positions[:0]
            cash = a["cash"][p].copy()
            exposures = {k: a[f"exp_{k}"][p].copy() for k in ("sector", "country", "currency", "asset")}
            if int(versions[p]) == v1:
                return Snapshot(portfolio_id, v1, row, slots, positions, heads, cash, exposures, retries)
            retries += 1
        raise ReaderError(f"no consistent read of {portfolio_id} in {max_retries} tries")
