"""The wire schema: every command, reply and event as a msgspec Struct, named after the spec.

Owns: request Structs (one tagged union, ``Request``), reply Structs, the event
``PortfolioStateUpdatedEvent``, and ``ERROR_CODES``. Field names follow
portfolio-state-service.md; additions are documented in docs/protocol.md.
Runs on: any thread. Imports: msgspec, stdlib.

Numbers that kernels validate (quantities, prices, amounts) carry no Struct
constraint on purpose: the kernel's reason code (BAD_PRICE, BAD_QUANTITY, ...)
is a clearer error than a generic validation failure, and one rule lives in one place.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

import msgspec
from msgspec import Meta, Struct

# ids are printable: no control characters (a NUL could never reach PostgreSQL's text columns and
# would stall the write-behind behind it); free text may hold anything but NUL
_PRINTABLE = "^[^\x00-\x1f\x7f]*$"
_NO_NUL = "^[^\x00]*$"
Id50 = Annotated[str, Meta(min_length=1, max_length=50, pattern=_PRINTABLE)]
Id100 = Annotated[str, Meta(min_length=1, max_length=100, pattern=_PRINTABLE)]
Id20 = Annotated[str, Meta(min_length=1, max_length=20, pattern=_PRINTABLE)]
Key = Annotated[str, Meta(min_length=1, max_length=128)]
Ns = Annotated[int, Meta(ge=0, le=2**63 - 1)]  # ns since the epoch, within int64 (a wider one is INVALID)
Ccy = Annotated[str, Meta(pattern="^[A-Z]{3}$")]
TransactionType = Literal["BUY", "SELL", "SHORT", "COVER", "ADJUST", "TRANSFER_IN", "TRANSFER_OUT", "SPLIT"]
FlowType = Literal["DEPOSIT", "WITHDRAWAL", "DIVIDEND", "INTEREST", "FEE"]
StatusName = Literal["ACTIVE", "PENDING", "CLOSED", "SUSPENDED"]
ExposureTypeName = Literal["INSTRUMENT", "SECTOR", "GEOGRAPHIC", "CURRENCY", "ASSET_CLASS"]

# gc=False: messages never form reference cycles, so the cyclic GC need not track them (a
# million replies kept in the idempotency window would otherwise be rescanned on every full collection)
_cmd = dict(tag_field="type", forbid_unknown_fields=True, omit_defaults=True, gc=False)
_out = dict(tag_field="type", omit_defaults=False, gc=False)


# ----------------------------------------------------------------- requests
class PositionUpdateRequest(Struct, tag="position_update", **_cmd):
    """One trade (or correction) on one position. quantity_change is a magnitude
    except for ADJUST (signed) and SPLIT (the ratio)."""

    key: Key
    portfolio_id: Id50
    position_id: Id100
    instrument_id: Id20
    quantity_change: float
    price: float
    transaction_type: TransactionType
    fee: float = 0.0
    timestamp: Optional[Ns] = None  # ns since epoch; default: receive time


class PositionUpdate(Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True):
    """A row of a PositionUpdateBatch (a PositionUpdateRequest without key/type)."""

    portfolio_id: Id50
    position_id: Id100
    instrument_id: Id20
    quantity_change: float
    price: float
    transaction_type: TransactionType
    fee: float = 0.0
    timestamp: Optional[Ns] = None


class PositionUpdateBatch(Struct, tag="position_update_batch", **_cmd):
    """Many updates in one frame, applied in order by one kernel call. ``detail``
    asks for a PositionUpdateResponse per row instead of the compact BatchResponse."""

    key: Key
    updates: list[PositionUpdate]
    detail: bool = False


class PositionUpdateColumns(Struct, tag="position_update_columns", **_cmd):
    """Many updates as columns of raw little-endian arrays (msgpack bin): slot and
    portfolio are int32 handles from ``resolve``; kind int8 (TradeKind); qty, price,
    fee float64; timestamp int64 ns (optional: empty = receive time)."""

    key: Key
    portfolio: bytes
    slot: bytes
    kind: bytes
    qty: bytes
    price: bytes
    fee: bytes = b""
    timestamp: bytes = b""


class PositionRef(Struct, gc=False, array_like=True, forbid_unknown_fields=True):
    portfolio_id: Id50
    position_id: Id100
    instrument_id: Id20


class ResolveRequest(Struct, tag="resolve", **_cmd):
    """Intern ids once per connection: returns the int handles columns carry.
    Creates position slots (FREE, invisible) for new positions. Idempotent, no key."""

    positions: list[PositionRef] = []
    portfolio_ids: list[Id50] = []
    instrument_ids: list[Id20] = []


class CashFlowRequest(Struct, tag="cash_flow", **_cmd):
    key: Key
    cash_flow_id: Id100
    portfolio_id: Id50
    amount: float
    currency: Ccy
    flow_type: FlowType
    description: Annotated[str, Meta(max_length=255, pattern=_NO_NUL)] = ""
    timestamp: Optional[Ns] = None


class PriceTick(Struct, gc=False, array_like=True, forbid_unknown_fields=True):
    instrument_id: Id20
    price: float


class PriceTicks(Struct, tag="prices", **_cmd):
    key: Key
    ticks: list[PriceTick]
    timestamp: Optional[Ns] = None


class FxRate(Struct, gc=False, array_like=True, forbid_unknown_fields=True):
    currency: Ccy
    rate: float  # value of one unit in the pivot currency


class FxTicks(Struct, tag="fx", **_cmd):
    key: Key
    rates: list[FxRate]
    timestamp: Optional[Ns] = None


class Portfolio(Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True):
    """The spec's Portfolio, plus the default single-instrument limit."""

    portfolio_id: Id50
    portfolio_name: Annotated[str, Meta(max_length=100, pattern=_NO_NUL)] = ""
    base_currency: Ccy = "USD"
    portfolio_type: Annotated[str, Meta(max_length=50)] = "LONG_SHORT"
    inception_date: Optional[str] = None
    status: Annotated[str, Meta(max_length=20)] = "ACTIVE"
    benchmark: Optional[Annotated[str, Meta(max_length=50, pattern=_NO_NUL)]] = None
    instrument_limit: Optional[float] = None


class PortfolioUpsert(Struct, tag="portfolio", **_cmd):
    key: Key
    portfolio: Portfolio


class Instrument(Struct, gc=False, forbid_unknown_fields=True, omit_defaults=True):
    instrument_id: Id20
    currency: Ccy = "USD"
    sector: Annotated[str, Meta(min_length=1, max_length=100)] = "UNKNOWN"
    country: Annotated[str, Meta(min_length=1, max_length=100)] = "UNKNOWN"
    asset_class: Annotated[str, Meta(min_length=1, max_length=100)] = "EQUITY"
    multiplier: int = 1
    margin: Optional[tuple[float, float, float, float]] = None  # long init, long maint, short init, short maint


class InstrumentUpsert(Struct, tag="instruments", **_cmd):
    key: Key
    instruments: list[Instrument]


class ExposureLimit(Struct, tag="exposure_limit", **_cmd):
    key: Key
    portfolio_id: Id50
    exposure_type: ExposureTypeName
    category: Id100
    limit_percentage: Optional[float]  # fraction of total_value; null clears


class PositionStatusChange(Struct, tag="position_status", **_cmd):
    key: Key
    portfolio_id: Id50
    position_id: Id100
    instrument_id: Id20
    status: StatusName


class PortfolioStateRequest(Struct, tag="state", **_cmd):
    portfolio_id: Id50
    include_positions: bool = True
    include_exposures: bool = True
    include_performance: bool = False
    as_of_timestamp: Optional[Ns] = None


class ExposuresRequest(Struct, tag="exposures", **_cmd):
    portfolio_id: Id50


class MetricsRequest(Struct, tag="metrics", **_cmd):
    pass


class HealthRequest(Struct, tag="health", **_cmd):
    pass


Request = Union[
    PositionUpdateRequest, PositionUpdateBatch, PositionUpdateColumns, ResolveRequest, CashFlowRequest,
    PriceTicks, FxTicks, PortfolioUpsert, InstrumentUpsert, ExposureLimit, PositionStatusChange,
    PortfolioStateRequest, ExposuresRequest, MetricsRequest, HealthRequest,
]
MUTATING = (PositionUpdateRequest, PositionUpdateBatch, PositionUpdateColumns, CashFlowRequest, PriceTicks,
            FxTicks, PortfolioUpsert, InstrumentUpsert, ExposureLimit, PositionStatusChange)


# ----------------------------------------------------------------- replies
class Position(Struct, gc=False):
    position_id: str
    instrument_id: str
    quantity: float
    market_value: float
    cost_basis: float
    unrealized_pnl: float
    weight: float
    status: str
    last_updated: Optional[str]
    realized_pnl: float = 0.0
    average_price: float = 0.0
    last_price: float = 0.0


class PortfolioImpact(Struct, gc=False):
    value_change: float
    weight_change: float
    risk_change: float
    cash_impact: float


class ExposureChange(Struct, gc=False):
    exposure_type: str
    category: str
    old_percentage: float
    new_percentage: float
    change: float


class PositionUpdateResponse(Struct, tag="position_update_response", **_out):
    key: str
    updated_position: Position
    portfolio_impact: PortfolioImpact
    exposure_changes: list[ExposureChange]
    processing_time_ms: float


class RowError(Struct, gc=False, array_like=True):
    index: int
    code: str
    message: str


class BatchResponse(Struct, tag="batch_response", **_out):
    key: str
    accepted: int
    rejected: list[RowError]
    processing_time_ms: float
    results: Optional[list[PositionUpdateResponse]] = None


class ResolveResponse(Struct, tag="resolve_response", **_out):
    slots: list[int]          # per position ref; -1 where refused (see errors)
    portfolios: list[int]     # per portfolio id of the position refs, then of portfolio_ids
    instruments: list[int]
    errors: list[RowError]


class Ack(Struct, tag="ack", **_out):
    key: str
    result: dict


class ErrorReply(Struct, tag="error", **_out):
    code: str
    message: str
    key: Optional[str] = None


class PortfolioState(Struct, gc=False):
    portfolio_id: str
    total_value: float
    cash_balance: float
    invested_value: float
    available_cash: float
    margin_used: float
    margin_available: float
    leverage_ratio: float
    position_count: int


class Exposure(Struct, gc=False):
    exposure_id: str
    exposure_type: str
    category: str
    exposure_value: float
    exposure_percentage: float
    limit_percentage: float
    utilization: float


class PerformanceMetrics(Struct, gc=False):
    """Fractions (0.01 = 1%); definitions in analytics/performance.py and docs/protocol.md. Null where
    undefined: volatility and sharpe below two completed days, beta and alpha without a priced
    benchmark instrument."""
    total_return: float
    daily_return: float
    volatility: Optional[float]
    sharpe_ratio: Optional[float]
    max_drawdown: float
    beta: Optional[float]
    alpha: Optional[float]


class MarginRequirement(Struct, gc=False):
    requirement_id: str
    portfolio_id: str
    initial_margin: float
    maintenance_margin: float
    excess_liquidity: float
    buying_power: float
    last_updated: Optional[str]


class PortfolioStateResponse(Struct, tag="state_response", **_out):
    portfolio_state: PortfolioState
    positions: list[Position]
    exposures: dict[str, list[Exposure]]
    performance_metrics: Optional[PerformanceMetrics]
    margin: MarginRequirement
    cash: dict[str, float]
    last_updated: Optional[str]
    sequence: int              # last event published for the portfolio; this state includes all it described
                               # (and maybe more: the next event then repeats it, so a re-sync loses nothing)


class ExposuresResponse(Struct, tag="exposures_response", **_out):
    portfolio_id: str
    exposures: dict[str, list[Exposure]]
    sequence: int


class MetricsResponse(Struct, tag="metrics_response", **_out):
    metrics: dict


class HealthResponse(Struct, tag="health_response", **_out):
    status: str                # "ok", "degraded" or "unhealthy"
    details: dict


Reply = Union[PositionUpdateResponse, BatchResponse, ResolveResponse, Ack, ErrorReply, PortfolioStateResponse,
              ExposuresResponse, MetricsResponse, HealthResponse]


# ----------------------------------------------------------------- events
class PortfolioStatePayload(Struct, gc=False):
    portfolio_id: str
    total_value: float
    cash_balance: float
    invested_value: float
    leverage_ratio: float
    position_count: int
    last_updated: Optional[str]


class PositionChangePayload(Struct, gc=False):
    position_id: str
    instrument_id: str
    old_quantity: float
    new_quantity: float
    quantity_change: float
    market_value: float
    weight: float
    change_type: str  # OPEN, INCREASE, DECREASE, CLOSE, REVERSE, STATUS, REVALUE


class ExposureChangePayload(Struct, gc=False):
    exposure_type: str
    category: str
    old_percentage: float
    new_percentage: float
    change: float
    limit_percentage: float
    utilization: float


class PortfolioStateUpdatedEvent(Struct, tag="portfolio_state_updated", tag_field="event", gc=False):
    event_id: str
    timestamp: str
    sequence: int     # per portfolio, +1 per event; a gap means missed events: re-sync by a state request
    portfolio_state: PortfolioStatePayload
    position_changes: list[PositionChangePayload]
    exposure_changes: list[ExposureChangePayload]


#: Every error code a reply can carry (docs/protocol.md explains each).
ERROR_CODES = {
    "MALFORMED": "the frame is not valid msgpack or JSON",
    "INVALID": "a field is missing, of the wrong type, out of range, or unknown; or the command type is unknown",
    "TOO_LARGE": "the frame exceeds the maximum message size",
    "KEY_CONFLICT": "this idempotency key was used before with a different body",
    "UNKNOWN_PORTFOLIO": "no such portfolio",
    "UNKNOWN_INSTRUMENT": "no such instrument (send its reference data first)",
    "UNKNOWN_POSITION": "no such position in that portfolio",
    "INSTRUMENT_MISMATCH": "the position exists with another instrument",
    "BAD_QUANTITY": "quantity is zero, not finite, negative where a magnitude is required, or too large",
    "BAD_PRICE": "price is not finite, <= 0, or too large",
    "BAD_AMOUNT": "amount is not finite, <= 0 (after rounding to cents), or too large",
    "BAD_FEE": "fee is negative or not finite",
    "BAD_RATIO": "split ratio is not finite or <= 0",
    "BAD_KIND": "unknown transaction or flow type",
    "BAD_STATUS": "that status change is not allowed from the current status",
    "NO_FX_RATE": "no FX rate from that currency to the portfolio's base currency",
    "NO_PRICE": "the instrument has no price yet",
    "OVERFLOW": "the result would exceed the book's numeric range",
    "SUSPENDED": "the position is SUSPENDED",
    "LONG_ONLY_SHORT": "a long-only portfolio cannot go short",
    "LONG_ONLY_OVERSELL": "a long-only portfolio cannot sell more than it holds",
    "CROSSES_ZERO": "an ADJUST or TRANSFER_OUT may not take the position through zero",
    "BAD_CURRENCY": "currency must be three capital letters",
    "BAD_CATEGORY": "category names are 1 to 100 characters",
    "BAD_MULTIPLIER": "multiplier must be an integer from 1 to 1,000,000",
    "BAD_MARGIN": "margin rates are four fractions between 0 and 10",
    "BAD_LIMIT": "limit_percentage must be a positive fraction or null",
    "BAD_EXPOSURE_TYPE": "unknown exposure type",
    "UNKNOWN_CATEGORY": "no instrument uses that category yet",
    "BASE_CURRENCY_FIXED": "the base currency cannot change once the portfolio holds anything",
    "CURRENCY_FIXED": "an instrument's currency cannot change once it is held",
    "BAD_PORTFOLIO_ID": "portfolio_id must be 1 to 50 characters",
    "BAD_INSTRUMENT_ID": "instrument_id must be 1 to 20 characters",
    "NOT_SUPPORTED": "this daemon cannot answer that (as_of_timestamp with no journal configured)",
    "HISTORY_RETIRED": "the journal no longer holds the records before that as_of_timestamp (retired behind a checkpoint): ask for a later time",
    "SHUTTING_DOWN": "the daemon is stopping and takes no new commands",
    "DISK_FULL": "the journal's disk is full: no change is accepted until an operator frees space and restarts",
    "JOURNAL_IO": "the journal could not be written or synced: this command's outcome is unknown (retry it with the same key once the daemon has restarted); the daemon stops and recovers by restart",
    "INTERNAL": "an unexpected error; the command was not applied",
}

msgspec_types = (msgspec.ValidationError, msgspec.DecodeError)
