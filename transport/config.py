"""Transport settings: sockets, sizes, security. One frozen Struct, every field documented.

Owns: ``TransportConfig``. Runs on: any thread. Imports: msgspec.
"""
from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct


def doc(text: str) -> Meta:
    return Meta(description=text)


class TransportConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    command_endpoint: Annotated[str, doc("ROUTER socket for commands and queries (tcp:// or ipc://). Default tcp://127.0.0.1:7755, loopback only.")] = "tcp://127.0.0.1:7755"
    event_endpoint: Annotated[str, doc("PUB socket for portfolio_state_updated events. Default tcp://127.0.0.1:7756.")] = "tcp://127.0.0.1:7756"
    max_message_bytes: Annotated[int, doc("Largest command frame accepted, bytes; larger ones get TOO_LARGE. ZeroMQ drops peers sending over 4x this. Default 16 MiB.")] = 16 * 1024 * 1024
    max_drain: Annotated[int, doc("Most messages taken from the socket per wake-up and applied as one batch. Default 4096.")] = 4096
    price_feeds: Annotated[list[str], doc("Endpoints of price publishers to SUBscribe to (frames: msgpack [[instrument_id, price], ...]). Default none.")] = []
    fx_feeds: Annotated[list[str], doc("Endpoints of FX publishers (frames: msgpack [[currency, rate], ...]). Default none.")] = []
    curve_secret_key_file: Annotated[str, doc("Server CURVE secret key file (zmq.auth certificate). Empty: CURVE off. Default empty.")] = ""
    curve_clients_dir: Annotated[str, doc("Directory of allowed client public key certificates; required with CURVE. Default empty.")] = ""
    sndhwm: Annotated[int, doc("Send high-water mark of both sockets, messages (events beyond it are dropped for slow subscribers). Default 100000.")] = 100_000
