"""Serialization as a pair of functions: bytes -> Request, Reply/Event -> bytes.

Owns: ``Codec`` (one typed msgpack Decoder and one JSON Decoder built once, two
Encoders reused) and the encoding detection rule. Transport sockets see bytes only.
Runs on: the engine thread (one Codec per thread). Imports: msgspec, transport.

Encoding rule: a body whose first non-blank byte is ``{`` is JSON, anything else
msgpack. The reply uses the request's encoding. (``{`` is 0x7b, a bare integer in
msgpack, which can never be a request, so the rule is unambiguous.)
"""
from __future__ import annotations

import msgspec

from .messages import Request


class Codec:
    __slots__ = ("_mp_dec", "_js_dec", "_mp_enc", "_js_enc")

    def __init__(self) -> None:
        self._mp_dec = msgspec.msgpack.Decoder(Request)
        self._js_dec = msgspec.json.Decoder(Request)
        self._mp_enc = msgspec.msgpack.Encoder()
        self._js_enc = msgspec.json.Encoder()

    @staticmethod
    def is_json(body: bytes) -> bool:
        return body[:1] == b"{" or body.lstrip()[:1] == b"{"

    def decode(self, body: bytes, is_json: bool):
        """Raises msgspec.DecodeError (malformed) or msgspec.ValidationError (invalid)."""
        return (self._js_dec if is_json else self._mp_dec).decode(body)

    def encode(self, obj, is_json: bool = False) -> bytes:
        return (self._js_enc if is_json else self._mp_enc).encode(obj)

    def canonical(self, obj) -> bytes:
        """The bytes two equal commands share whatever their wire encoding (for key conflicts)."""
        return self._mp_enc.encode(obj)
