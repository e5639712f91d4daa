"""PostgreSQL schema: the spec's command-side and query-side tables as versioned migrations.

Owns: ``MIGRATIONS`` (version, name, statements) applied in order at start-up and
recorded in ``schema_migrations``; the time-series DDL in its two forms
(TimescaleDB hypertables when the extension is available, native range
partitioning otherwise) and ``partition_ddl`` that creates native partitions ahead.
Runs on: the write-behind thread (and tests). Imports: nothing of the project.

Tables and indexes are exactly the spec's (names, columns, types, lengths,
defaults); the service adds ``instruments``, ``exposure_limits``,
``cash_balances``, ``instrument_prices`` and ``fx_rates`` (what a takeover needs
to rebuild a book, ADR 0011), ``sink_watermark`` (the journal sequence the rows
cover, per journal) and ``sink_state_watermark`` (the same for the keyed tables,
written on their own connection, ADR 0019).
"""
from __future__ import annotations

import datetime as _dt

COMMAND_SIDE = [
    "CREATE EXTENSION IF NOT EXISTS pgcrypto",  # gen_random_uuid() is core from PostgreSQL 13; harmless
    """CREATE TABLE portfolios (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        portfolio_id VARCHAR(50) NOT NULL UNIQUE,
        portfolio_name VARCHAR(100) NOT NULL,
        base_currency VARCHAR(3) NOT NULL,
        portfolio_type VARCHAR(50) NOT NULL,
        inception_date DATE NOT NULL,
        status VARCHAR(20) NOT NULL,
        benchmark VARCHAR(50),
        created_at TIMESTAMP DEFAULT now(),
        updated_at TIMESTAMP DEFAULT now())""",
    """CREATE TABLE positions (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        position_id VARCHAR(100) NOT NULL UNIQUE,
        portfolio_id VARCHAR(50) NOT NULL,
        instrument_id VARCHAR(20) NOT NULL,
        quantity DECIMAL(15, 6),
        cost_basis DECIMAL(15, 2),
        market_value DECIMAL(15, 2),
        unrealized_pnl DECIMAL(15, 2),
        weight FLOAT,
        status VARCHAR(20) NOT NULL,
        last_updated TIMESTAMP DEFAULT now(),
        created_at TIMESTAMP DEFAULT now())""",
    """CREATE TABLE cash_flows (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        cash_flow_id VARCHAR(100) NOT NULL UNIQUE,
        portfolio_id VARCHAR(50) NOT NULL,
        amount DECIMAL(15, 2),
        currency VARCHAR(3) NOT NULL,
        flow_type VARCHAR(20) NOT NULL,
        description VARCHAR(255),
        timestamp TIMESTAMP NOT NULL,
        created_at TIMESTAMP DEFAULT now())""",
    """CREATE TABLE margin_requirements (
        id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        portfolio_id VARCHAR(50) NOT NULL,
        initial_margin DECIMAL(15, 2),
        maintenance_margin DECIMAL(15, 2),
        excess_liquidity DECIMAL(15, 2),
        buying_power DECIMAL(15, 2),
        last_updated TIMESTAMP DEFAULT now(),
        created_at TIMESTAMP DEFAULT now())""",
    "CREATE INDEX idx_portfolios_id ON portfolios (portfolio_id)",
    "CREATE INDEX idx_positions_portfolio ON positions (portfolio_id, status)",
    "CREATE INDEX idx_positions_instrument ON positions (instrument_id, status)",
    "CREATE INDEX idx_cash_flows_portfolio_time ON cash_flows (portfolio_id, timestamp DESC)",
    "CREATE INDEX idx_margin_requirements_portfolio ON margin_requirements (portfolio_id, last_updated DESC)",
]

SERVICE_TABLES = [
    """CREATE TABLE instruments (
        instrument_id VARCHAR(20) PRIMARY KEY,
        currency VARCHAR(3) NOT NULL,
        sector VARCHAR(100) NOT NULL,
        country VARCHAR(100) NOT NULL,
        asset_class VARCHAR(100) NOT NULL,
        multiplier BIGINT NOT NULL,
        long_initial FLOAT, long_maintenance FLOAT, short_initial FLOAT, short_maintenance FLOAT,
        updated_at TIMESTAMP DEFAULT now())""",
    """CREATE TABLE exposure_limits (
        portfolio_id VARCHAR(50) NOT NULL,
        exposure_type VARCHAR(20) NOT NULL,
        category VARCHAR(100) NOT NULL,
        limit_percentage FLOAT NOT NULL,
        updated_at TIMESTAMP DEFAULT now(),
        PRIMARY KEY (portfolio_id, exposure_type, category))""",
    """CREATE TABLE cash_balances (
        portfolio_id VARCHAR(50) NOT NULL,
        currency VARCHAR(3) NOT NULL,
        amount DECIMAL(15, 2) NOT NULL,
        updated_at TIMESTAMP DEFAULT now(),
        PRIMARY KEY (portfolio_id, currency))""",
    "ALTER TABLE portfolios ADD COLUMN instrument_limit FLOAT",
    """CREATE TABLE sink_watermark (
        journal_id VARCHAR(64) PRIMARY KEY,
        seq BIGINT NOT NULL,
        last_txn VARCHAR(64),
        updated_at TIMESTAMP DEFAULT now())""",
]

#: the last price of each instrument and the FX rates (value of one unit in the pivot currency) a
#: takeover replays before it loads positions (ADR 0011): floats, as the feeds send them
MARKET_TABLES = [
    """CREATE TABLE instrument_prices (
        instrument_id VARCHAR(20) PRIMARY KEY,
        price FLOAT NOT NULL,
        price_time TIMESTAMP,
        updated_at TIMESTAMP DEFAULT now())""",
    """CREATE TABLE fx_rates (
        currency VARCHAR(3) PRIMARY KEY,
        rate FLOAT NOT NULL,
        updated_at TIMESTAMP DEFAULT now())""",
]

#: (table, columns, chunk interval, space partitions, indexes) of the query side
TS_TABLES = {
    "portfolio_state_ts": ("""
        timestamp TIMESTAMP NOT NULL,
        portfolio_id VARCHAR(50) NOT NULL,
        total_value FLOAT, cash_balance FLOAT, invested_value FLOAT, available_cash FLOAT,
        margin_used FLOAT, margin_available FLOAT, leverage_ratio FLOAT, position_count INTEGER,
        daily_return FLOAT, total_return FLOAT, volatility FLOAT, sharpe_ratio FLOAT,
        max_drawdown FLOAT, beta FLOAT, alpha FLOAT,
        created_at TIMESTAMP DEFAULT now()""", "1 day", 8,
        ["CREATE INDEX idx_portfolio_state_portfolio_time ON portfolio_state_ts (portfolio_id, timestamp DESC)"]),
    "position_changes_ts": ("""
        timestamp TIMESTAMP NOT NULL,
        position_id VARCHAR(100) NOT NULL,
        portfolio_id VARCHAR(50) NOT NULL,
        instrument_id VARCHAR(20) NOT NULL,
        quantity FLOAT, market_value FLOAT, weight FLOAT, unrealized_pnl FLOAT,
        quantity_change FLOAT, value_change FLOAT, weight_change FLOAT,
        change_type VARCHAR(20),
        created_at TIMESTAMP DEFAULT now()""", "1 day", 0,
        ["CREATE INDEX idx_position_changes_portfolio_time ON position_changes_ts (portfolio_id, timestamp DESC)",
         "CREATE INDEX idx_position_changes_instrument_time ON position_changes_ts (instrument_id, timestamp DESC)"]),
    "exposures_ts": ("""
        timestamp TIMESTAMP NOT NULL,
        portfolio_id VARCHAR(50) NOT NULL,
        exposure_type VARCHAR(20) NOT NULL,
        category VARCHAR(100) NOT NULL,
        exposure_value FLOAT, exposure_percentage FLOAT, limit_percentage FLOAT, utilization FLOAT,
        created_at TIMESTAMP DEFAULT now()""", "1 hour", 0,
        ["CREATE INDEX idx_exposures_portfolio_type_time ON exposures_ts (portfolio_id, exposure_type, timestamp DESC)"]),
}


def query_side(timescale: bool) -> list[str]:
    """The time-series tables: hypertables (TimescaleDB) or range-partitioned tables (native)."""
    out = []
    if timescale:
        out.append("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for name, (cols, interval, space, indexes) in TS_TABLES.items():
        if timescale:
            out.append(f"CREATE TABLE {name} ({cols})")
            space_arg = f", partitioning_column => 'portfolio_id', number_partitions => {space}" if space else ""
            out.append(f"SELECT create_hypertable('{name}', 'timestamp', chunk_time_interval => INTERVAL '{interval}'"
                       f"{space_arg})")
        else:
            out.append(f"CREATE TABLE {name} ({cols}) PARTITION BY RANGE (timestamp)")
            out.append(f"CREATE TABLE {name}_default PARTITION OF {name} DEFAULT")
        out += indexes
    return out


#: (version, name, statements); a statement list may depend on TimescaleDB being there
MIGRATIONS = [
    (1, "command side (spec tables and indexes)", lambda ts: COMMAND_SIDE),
    (2, "service tables (reference data, limits, cash, watermark)", lambda ts: SERVICE_TABLES),
    (3, "query side (time series)", query_side),
    (4, "market data for takeover (last prices, FX rates)", lambda ts: MARKET_TABLES),
    # a position row is rewritten on every change: room on its page lets PostgreSQL update it in
    # place (HOT, no index entries) instead of moving it (measured with MERGE: +21% sink rows/s)
    (5, "positions fillfactor 70 (in-place updates)", lambda ts: ["ALTER TABLE positions SET (fillfactor = 70)"]),
    # the keyed tables are written on a second connection, committed just before the appended
    # ones: the journal sequence they cover, per journal (ADR 0019)
    (6, "watermark of the keyed tables", lambda ts: ["""CREATE TABLE sink_state_watermark (
        journal_id VARCHAR(64) PRIMARY KEY,
        seq BIGINT NOT NULL,
        updated_at TIMESTAMP DEFAULT now())"""]),
]


def _bounds(table: str, start: _dt.datetime) -> tuple[str, _dt.datetime, _dt.datetime]:
    if TS_TABLES[table][1] == "1 hour":
        lo = start.replace(minute=0, second=0, microsecond=0)
        return f"{table}_{lo:%Y%m%d%H}", lo, lo + _dt.timedelta(hours=1)
    lo = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return f"{table}_{lo:%Y%m%d}", lo, lo + _dt.timedelta(days=1)


def partition_ddl(table: str, start: _dt.datetime, existing: set[str]) -> list[str]:
    """DDL creating the native partition holding ``start`` (naive UTC), unless it exists; a
    space-partitioned table (portfolio_state_ts) gets 8 hash sub-partitions on portfolio_id."""
    name, lo, hi = _bounds(table, start)
    if name in existing:
        return []
    space = TS_TABLES[table][2]
    rng = f"FOR VALUES FROM ('{lo:%Y-%m-%d %H:%M:%S}') TO ('{hi:%Y-%m-%d %H:%M:%S}')"
    if not space:
        return [f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} {rng}"]
    out = [f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} {rng} PARTITION BY HASH (portfolio_id)"]
    out += [f"CREATE TABLE IF NOT EXISTS {name}_h{i} PARTITION OF {name} FOR VALUES WITH (MODULUS {space}, REMAINDER {i})"
            for i in range(space)]
    return out


def step(table: str) -> _dt.timedelta:
    return _dt.timedelta(hours=1) if TS_TABLES[table][1] == "1 hour" else _dt.timedelta(days=1)
