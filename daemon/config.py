"""Settings of the daemon: one frozen tree, loaded once from file + environment + flags.

Owns: ``Settings`` (root), ``BookConfig``, ``EngineConfig`` and ``load()``.
Runs on: the main thread at start-up. Imports: msgspec, tomllib, transport.config, persistence.config.

Precedence, lowest first: defaults, TOML file (``--config``), environment
variables ``PSTATE_<SECTION>__<FIELD>`` (e.g. PSTATE_TRANSPORT__COMMAND_ENDPOINT),
then ``--set section.field=value`` flags. Values from the environment and flags
are parsed as TOML values when they parse (numbers, booleans, lists), else strings.
"""
from __future__ import annotations

import os
import tomllib
from typing import Annotated, get_type_hints

import msgspec
from msgspec import Meta, Struct

from portfolio_state.persistence.config import JournalConfig, SinkConfig
from portfolio_state.transport.config import TransportConfig, doc


class BookConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pivot_currency: Annotated[str, doc("Currency FX rates are quoted against (its rate is 1). Default USD.")] = "USD"
    shm_name: Annotated[str, doc("Name of the shared-memory arena readers attach to; empty = private memory. Default empty.")] = ""
    shm_dir: Annotated[str, doc("Directory of the shared-memory files (a tmpfs). Default /dev/shm.")] = "/dev/shm"
    portfolios: Annotated[int, doc("Initial portfolio capacity (doubles when reached). Default 1024.")] = 1024
    slots: Annotated[int, doc("Initial position-slot capacity (doubles when reached). Default 65536.")] = 65536
    instruments: Annotated[int, doc("Initial instrument capacity (doubles when reached). Default 1024.")] = 1024


class EngineConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    idempotency_window: Annotated[int, doc("Idempotency keys remembered (oldest forgotten first), keys. Default 1000000.")] = 1_000_000
    events: Annotated[bool, doc("Publish portfolio_state_updated events. Default true.")] = True
    revaluation_events: Annotated[bool, doc("Also publish events for portfolios changed only by price/FX ticks. Default true.")] = True
    event_interval_ms: Annotated[float, doc("Publish coalesced events at most this often, ms; 0 = after every batch. Events leave after the replies either way. Default 5.")] = 5.0
    max_events_per_flush: Annotated[int, doc("Most events built in one flush; the rest go in the next, taken round robin, so a flush never holds the loop long; 0 = no cap. Default 64.")] = 64
    max_positions_per_flush: Annotated[int, doc("Most changed positions one flush reports, past its first event (each costs ~2.5 us of the loop with its exposure rows and encoding); 0 = no cap. Default 64.")] = 64
    event_cpu_budget: Annotated[float, doc("Most of the loop's time event building may take, fraction; under load the interval stretches to keep to it (events coalesce harder, replies never wait). Default 0.25.")] = 0.25


class Settings(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    transport: TransportConfig = TransportConfig()
    book: BookConfig = BookConfig()
    engine: EngineConfig = EngineConfig()
    journal: JournalConfig = JournalConfig()
    sink: SinkConfig = SinkConfig()
    log_level: Annotated[str, doc("Logging level: DEBUG, INFO, WARNING, ERROR. Default INFO.")] = "INFO"


class SettingsError(ValueError):
    pass


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _put(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def load(config_file: str | None = None, overrides: list[str] = (), environ=None) -> Settings:
    """Build Settings from defaults, a TOML file, PSTATE_* variables and key=value overrides."""
    environ = os.environ if environ is None else environ
    tree: dict = {}
    if config_file:
        with open(config_file, "rb") as f:
            tree = tomllib.load(f)
    for name, value in environ.items():
        if name.startswith("PSTATE_") and name not in ("PSTATE_CONFIG",):
            dotted = name[len("PSTATE_"):].lower().replace("__", ".")
            _put(tree, dotted, _parse_value(value))
    for item in overrides:
        if "=" not in item:
            raise SettingsError(f"--set wants section.field=value, got {item!r}")
        k, v = item.split("=", 1)
        _put(tree, k.strip(), _parse_value(v.strip()))
    try:
        return msgspec.convert(tree, Settings)
    except msgspec.ValidationError as e:
        raise SettingsError(f"bad setting: {e}") from None


def describe(cls=Settings, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every setting, for --help and the docs."""
    rows = []
    hints = get_type_hints(cls, include_extras=True)
    defaults = cls()
    for name in cls.__struct_fields__:
        value = getattr(defaults, name)
        if isinstance(value, Struct):
            rows += describe(type(value), f"{prefix}{name}.")
            continue
        meta = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Meta)]
        rows.append((f"{prefix}{name}", repr(value), meta[0].description if meta else ""))
    return rows
