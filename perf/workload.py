"""The benchmark book and its request bodies, shared by perf/bench_daemon.py and the harness (python -m perf).

Owns: ``BookSpec`` (portfolios, instruments, positions as arrays; position references made on
demand, so a 10M-position book costs arrays, not 10M tuples), ``make_book``, ``build_book`` (the
same set-up calls through ``transport.client.Client`` for every server), ``Pool`` (request
templates cycled with a fresh idempotency key spliced into each use) and the encoders of trades,
price ticks and cash flows as msgpack bodies.
Runs on: the benchmark's main process (encoding) and its load-generator processes (``splice``).
Imports: numpy, msgspec, transport, daemon.demo (the demo's world: currencies, sectors, FX).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np

from portfolio_state.daemon.demo import ASSET_CLASSES, COUNTRIES, FX, SECTORS
from portfolio_state.transport import messages as m
from portfolio_state.transport.client import Client

BUY, SELL = 0, 1
KEY_LEN = 16
SENTINEL = "~" * KEY_LEN
_KEY_FIELD = b"\xa3key\xb0" + SENTINEL.encode()  # msgpack: "key" then a 16-byte str


class Refs:
    """(portfolio id, position id, instrument id) of position k, made when asked (index or slice)."""

    def __init__(self, n_pos: int, ref_inst: np.ndarray):
        self.n_pos, self.ref_inst = n_pos, ref_inst

    def __len__(self) -> int:
        return len(self.ref_inst)

    def _one(self, k: int) -> tuple[str, str, str]:
        pid, iid = f"PF{k // self.n_pos:05d}", f"I{int(self.ref_inst[k]):05d}"
        return pid, f"{pid}-{iid}", iid

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._one(i) for i in range(*k.indices(len(self)))]
        return self._one(int(k))


@dataclass
class BookSpec:
    n_portfolios: int
    n_positions: int
    n_instruments: int
    instruments: list = field(default_factory=list)   # m.Instrument
    prices: dict = field(default_factory=dict)        # instrument id -> price
    price_arr: np.ndarray = None                      # price per instrument index
    portfolio_ids: list = field(default_factory=list)
    refs: Refs = None                                 # position k -> (portfolio id, position id, instrument id)
    ref_inst: np.ndarray = None                       # instrument index per position
    opening_qty: np.ndarray = None
    holders: np.ndarray = None                        # positions per instrument

    def hot_instruments(self, n: int) -> np.ndarray:
        """The n instruments held by the most positions (a tick on one revalues that many)."""
        return np.argsort(-self.holders, kind="stable")[:n]


def make_book(n_pf: int, n_pos: int, n_inst: int, rng, popular: bool = False) -> BookSpec:
    """Each portfolio holds n_pos distinct instruments: uniformly chosen, or (popular) by a skewed
    popularity so that a few instruments sit in most portfolios and a long tail in few."""
    b = BookSpec(n_pf, n_pos, n_inst)
    ccys = rng.choice(list(COUNTRIES), n_inst, p=[0.55, 0.2, 0.08, 0.08, 0.05, 0.04])
    for i in range(n_inst):
        ccy = str(ccys[i])
        ac = str(rng.choice(ASSET_CLASSES))
        iid = f"I{i:05d}"
        b.instruments.append(m.Instrument(iid, ccy, str(rng.choice(SECTORS)), str(rng.choice(COUNTRIES[ccy])), ac,
                                          50 if ac == "FUTURE" else 1))
        b.prices[iid] = round(float(rng.lognormal(4.0, 0.8)) / (FX["JPY"] if ccy == "JPY" else 1.0), 4)
    b.portfolio_ids = [f"PF{p:05d}" for p in range(n_pf)]
    if popular:  # Gumbel top-k over log-weights: k distinct instruments per portfolio, weight ~ 1/rank^0.8
        logw = -0.8 * np.log(rng.permutation(n_inst) + 50.0)
        held = np.empty((n_pf, n_pos), np.int64)
        chunk = max(1, 2_000_000 // n_inst)
        for c0 in range(0, n_pf, chunk):
            g = rng.gumbel(size=(min(n_pf, c0 + chunk) - c0, n_inst)) + logw
            held[c0:c0 + len(g)] = np.argpartition(-g, n_pos - 1, axis=1)[:, :n_pos]
        b.ref_inst = held.reshape(-1)
    else:
        b.ref_inst = np.concatenate([rng.choice(n_inst, n_pos, replace=False) for _ in range(n_pf)]).astype(np.int64)
    b.refs = Refs(n_pos, b.ref_inst)
    b.price_arr = np.array([b.prices[f"I{k:05d}"] for k in range(n_inst)])
    b.opening_qty = rng.integers(100, 500, len(b.refs)).astype(np.float64)
    b.holders = np.bincount(b.ref_inst, minlength=n_inst)
    return b


def build_book(c: Client, b: BookSpec, rng, chunk: int = 5000, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Set the book up through the client (the same calls for every server). Returns (slot, portfolio) handles."""
    c.fx(FX)
    for k in range(0, len(b.instruments), 1000):
        c.upsert_instruments(b.instruments[k:k + 1000])
    c.prices(b.prices)
    for p, pid in enumerate(b.portfolio_ids):
        eur = p % 7 == 0
        c.upsert_portfolio(pid, portfolio_name=f"Fund {p}", portfolio_type="LONG_ONLY" if p % 5 == 0 else "LONG_SHORT",
                           base_currency="EUR" if eur else "USD", instrument_limit=0.10)
        c.cash_flow(pid, float(rng.integers(20, 200)) * 1_000_000, currency="EUR" if eur else "USD",
                    key=f"dep-{pid}", cash_flow_id=f"dep-{pid}")
        c.set_limit(pid, "SECTOR", "Technology", 0.30, key=f"lim-{pid}")
    n = len(b.refs)
    slots, pfs = np.empty(n, np.int32), np.empty(n, np.int32)
    for k in range(0, n, chunk):
        r = c.resolve(positions=b.refs[k:k + chunk])
        if r.errors:
            raise RuntimeError(f"resolve refused {len(r.errors)} positions: {r.errors[:3]}")
        slots[k:k + len(r.slots)] = r.slots
        pfs[k:k + len(r.slots)] = r.portfolios[:len(r.slots)]
        sl = slice(k, k + chunk)
        r = c.update_columns(pfs[sl], slots[sl], np.zeros(len(slots[sl]), np.int8), b.opening_qty[sl],
                             b.price_arr[b.ref_inst[sl]], key=f"open-{k}")
        if r.rejected:
            raise RuntimeError(f"opening buys rejected: {r.rejected[:3]}")
        if progress is not None:
            progress(min(n, k + chunk), n)
    return slots, pfs


# ---------------------------------------------------------------- request bodies
def splice_parts(body: bytes) -> tuple[bytes, bytes]:
    """(head, tail) of a body encoded with the SENTINEL key: head + a 16-character key + tail is a request."""
    at = body.find(_KEY_FIELD)
    assert at >= 0 and body.find(_KEY_FIELD, at + 1) < 0, "key sentinel not found once"
    return body[:at + 5], body[at + 5 + KEY_LEN:]


class Pool:
    """Request bodies cycled from templates, each use with its own idempotency key spliced in
    (tag + counter, 16 characters), so a phase is bounded by time, not by how much was pre-encoded,
    and no request is a replay. Costs the client one bytes concatenation per request."""

    def __init__(self, templates: list[bytes], tag: str):
        assert len(tag) <= 4
        self.tag = tag
        self.parts = [splice_parts(body) for body in templates]
        self.n = len(self.parts)
        self.used = 0  # keys handed out so far (keys stay unique across phases that share the pool)

    def bodies(self):
        """A function i -> body of the i-th request of a phase."""
        parts, n, tag, base = self.parts, self.n, self.tag, self.used
        width = KEY_LEN - len(self.tag)

        def body(i: int) -> bytes:
            head, tail = parts[i % n]
            return head + f"{tag}{base + i:0{width}x}".encode() + tail
        return body

    def consumed(self, count: int) -> None:
        self.used += count


def trades(rng, b: BookSpec, n: int):
    """n trades on random positions: 55% BUY / 45% SELL of 1-19 units at the instrument's price ± 0.2%."""
    pick = rng.integers(0, len(b.refs), n)
    kind = np.where(rng.random(n) < 0.55, BUY, SELL).astype(np.int8)
    px = np.round(b.price_arr[b.ref_inst[pick]] * (1 + rng.normal(0, 0.002, n)), 4)
    qty = rng.integers(1, 20, n).astype(np.float64)
    return pick, kind, qty, px


def encode_single(rng, b: BookSpec, n: int) -> list[bytes]:
    enc = msgspec.msgpack.Encoder()
    pick, kind, qty, px = trades(rng, b, n)
    names = ("BUY", "SELL")
    refs = b.refs
    out = []
    for i in range(n):
        pid, pos, iid = refs[pick[i]]
        out.append(enc.encode(m.PositionUpdateRequest(SENTINEL, pid, pos, iid, float(qty[i]), float(px[i]),
                                                      names[kind[i]])))
    return out


def encode_columns(rng, b: BookSpec, slots, pfs, n_frames: int, per: int) -> list[bytes]:
    enc = msgspec.msgpack.Encoder()
    pick, kind, qty, px = trades(rng, b, n_frames * per)
    out = []
    for f in range(n_frames):
        sl = slice(f * per, (f + 1) * per)
        out.append(enc.encode(Client.columns(pfs[pick[sl]], slots[pick[sl]], kind[sl], qty[sl], px[sl], key=SENTINEL)))
    return out


def encode_rows(rng, b: BookSpec, n_frames: int, per: int) -> list[bytes]:
    enc = msgspec.msgpack.Encoder()
    pick, kind, qty, px = trades(rng, b, n_frames * per)
    names = ("BUY", "SELL")
    out = []
    for f in range(n_frames):
        rows = []
        for i in range(f * per, (f + 1) * per):
            pid, pos, iid = b.refs[pick[i]]
            rows.append(m.PositionUpdate(pid, pos, iid, float(qty[i]), float(px[i]), names[kind[i]]))
        out.append(enc.encode(m.PositionUpdateBatch(SENTINEL, rows)))
    return out


def encode_ticks(rng, b: BookSpec, n_frames: int, per: int, hot: int = 50) -> list[bytes]:
    """PriceTicks frames of `per` ticks on the `hot` most-held instruments, at the reference price ± 0.1%."""
    enc = msgspec.msgpack.Encoder()
    ids = b.hot_instruments(hot)
    out = []
    for _ in range(n_frames):
        inst = rng.choice(ids, per, replace=per > len(ids))
        px = np.round(b.price_arr[inst] * (1 + rng.normal(0, 0.001, per)), 4)
        out.append(enc.encode(m.PriceTicks(SENTINEL, [m.PriceTick(f"I{int(k):05d}", float(p))
                                                      for k, p in zip(inst, px)])))
    return out


def encode_cash_flows(rng, b: BookSpec, n: int) -> list[bytes]:
    """Deposits and withdrawals of 1,000-50,000 in the portfolio's base currency on random portfolios."""
    enc = msgspec.msgpack.Encoder()
    pf = rng.integers(0, b.n_portfolios, n)
    amount = np.round(rng.uniform(1_000, 50_000, n), 2)
    out_flow = rng.random(n) < 0.4
    return [enc.encode(m.CashFlowRequest(SENTINEL, f"cf-{i}", b.portfolio_ids[p], float(a),
                                         "EUR" if p % 7 == 0 else "USD", "WITHDRAWAL" if w else "DEPOSIT"))
            for i, (p, a, w) in enumerate(zip(pf.tolist(), amount.tolist(), out_flow.tolist()))]
