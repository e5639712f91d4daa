"""The compiled msgpack writers write what msgspec writes, at every boundary of every form."""
import math
import struct

import msgspec
import numpy as np
import pytest

from portfolio_state.transport.msgpack_nb import (Pool, decimal_digits_nb, literals, put_array_header_nb, put_float_nb,
                                                  put_int_nb, put_iso_nb, put_item_nb, put_nil_nb,
                                                  put_str_header_nb)

enc = msgspec.msgpack.encode


def written(fn, *args) -> bytes:
    buf = np.full(256, 0xEE, np.uint8)
    w = fn(buf, 3, *args)
    assert (buf[:3] == 0xEE).all() and (buf[w:] == 0xEE).all()  # nothing outside [3, w)
    return buf[3:w].tobytes()


INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
        -1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769, -2**31, -2**31 - 1, -2**63]


@pytest.mark.parametrize("x", INTS)
def test_integers_take_their_smallest_form(x):
    assert written(put_int_nb, x) == enc(x)


@pytest.mark.parametrize("x", [0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, -5e-324, math.inf, -math.inf, 0.1 + 0.2])
def test_floats_are_float64_with_their_bits(x):
    cell = np.empty(1, np.float64)
    assert written(put_float_nb, x, cell, cell.view(np.int64)) == enc(x)


def test_nan_keeps_its_sign_and_payload():
    cell = np.empty(1, np.float64)
    for bits in (0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001):
        x = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
        assert written(put_float_nb, x, cell, cell.view(np.int64)) == b"\xcb" + bits.to_bytes(8, "big") == enc(x)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536])
def test_string_and_array_headers(n):
    assert written(put_str_header_nb, n) == enc("x" * n)[: len(enc("x" * n)) - n]
    assert written(put_array_header_nb, n) == enc([0] * n)[: len(enc([0] * n)) - n]


def test_nil_items_and_digits():
    assert written(put_nil_nb) == enc(None)
    data, offs = literals("event", "portfolio_state_updated", "é" * 40, 7, None)
    for i, v in enumerate(["event", "portfolio_state_updated", "é" * 40, 7, None]):
        assert written(put_item_nb, data, offs, i) == enc(v)
    for x in (0, 9, 10, 99, 100, 123456789, 2**63 - 1):
        assert written(decimal_digits_nb, x) == str(x).encode()


def test_a_pool_encodes_what_its_list_gains_and_grows_past_its_first_block():
    names = ["P0", "ü-portfolio", ""]
    pool = Pool(names)
    pool.sync()
    names += ["x" * 40, "y" * 300, "z" * 70000] + [f"id-{i}" for i in range(500)]
    pool.sync()
    pool.sync()  # nothing new: nothing changes
    assert pool.n == len(names) and len(pool.offs) >= len(names) + 1
    for i, s in enumerate(names):
        assert pool.data[pool.offs[i]:pool.offs[i + 1]].tobytes() == enc(s)


def test_iso_timestamps_are_numpys_to_the_millisecond_and_microsecond():
    """Against numpy's datetime_as_string over the whole int64 range of nanoseconds, the epoch,
    leap days and century years, and instants before 1970 (floored, as numpy floors)."""
    rng = np.random.default_rng(5)
    special = [0, 1, -1, 999_999, 1_000_000, -1_000_000, 951_782_400 * 10**9, 951_868_799_999_999_999,  # 2000-02-29
               4_107_542_400 * 10**9, -2_208_988_800 * 10**9 - 1, 1_764_000_000_123_456_789,
               np.iinfo(np.int64).max, np.iinfo(np.int64).min + 1]
    values = np.concatenate([np.array(special, np.int64),
                             rng.integers(np.iinfo(np.int64).min + 1, np.iinfo(np.int64).max, 20_000, dtype=np.int64),
                             rng.integers(1_600_000_000 * 10**9, 1_900_000_000 * 10**9, 20_000, dtype=np.int64)])
    buf = np.empty(64, np.uint8)
    for unit, digits in (("ms", 3), ("us", 6)):
        want = np.datetime_as_string(values.astype("datetime64[ns]"), unit=unit)
        for ns, s in zip(values.tolist(), want.tolist()):
            w = put_iso_nb(buf, 0, ns, digits)
            assert buf[:w].tobytes() == enc(s + "Z"), (ns, unit)
