"""The checkpoint file's array writer: numpy's .npy bytes exactly, paced writeback over many chunks,
and the plain fdatasync path where sync_file_range is missing."""
import io

import numpy as np
import pytest

from portfolio_state.kernels.layout import position_dt
from portfolio_state.persistence import checkpoint as ckpt


def _arrays():
    rng = np.random.default_rng(5)
    pos = np.zeros(1000, position_dt)
    pos["qty"] = rng.integers(-10**9, 10**9, 1000)
    return {
        "positions": pos,                                    # structured, aligned
        "cash": rng.integers(0, 10**12, (37, 5)),            # 2-D
        "fortran": np.asfortranarray(rng.random((6, 4))),    # not C-contiguous: written in C order
        "empty": np.zeros(0, np.int32),
        "big": rng.integers(0, 255, 3_000_001, dtype=np.uint8),  # several pieces and chunks
    }


def test_arrays_are_written_as_numpy_writes_them():
    for name, arr in _arrays().items():
        want = io.BytesIO()
        np.lib.format.write_array(want, np.ascontiguousarray(arr), allow_pickle=False)
        got = io.BytesIO()
        w = ckpt._CrcWriter(got)
        w.write_array(arr)
        assert got.getvalue() == want.getvalue(), name


@pytest.mark.parametrize("sfr", [True, False])
def test_a_checkpoint_over_many_chunks_reads_back(tmp_path, monkeypatch, sfr):
    monkeypatch.setattr(ckpt, "SYNC_CHUNK", 64 << 10)
    monkeypatch.setattr(ckpt, "WRITE_PIECE", 48 << 10)
    synced = []
    if not sfr:
        monkeypatch.setattr(ckpt, "_SFR", None)
    monkeypatch.setattr(ckpt.os, "fdatasync", lambda fd, real=ckpt.os.fdatasync: (synced.append(fd), real(fd)))
    arrays = _arrays()
    meta = bytes(range(256)) * 2000  # 512 KB: paced like the arrays
    ckpt.write_checkpoint(str(tmp_path), 42, arrays, meta)
    seq, back, meta2 = ckpt.load_newest(str(tmp_path))
    assert seq == 42 and meta2 == meta and back.keys() == arrays.keys()
    for k, v in arrays.items():
        assert np.array_equal(back[k], v) and back[k].dtype == v.dtype, k
    # the plain path syncs every chunk (~40 of them: 3.8 MB in 48 KB pieces, a chunk per 64 KB or
    # more); the paced one leaves that to sync_file_range
    assert (len(synced) < 5) if sfr and ckpt._SFR is not None else (len(synced) > 30)


def test_an_object_array_is_refused(tmp_path):
    with pytest.raises(ckpt.CheckpointError):
        ckpt.write_checkpoint(str(tmp_path), 1, {"o": np.array([object()])}, b"")


class _FakeSfr:
    """sync_file_range standing in: fails with `err` on call number `at` (once), else succeeds."""

    def __init__(self, err, at=3):
        self.err, self.at, self.calls = err, at, 0

    def __call__(self, fd, off, n, flags):
        self.calls += 1
        return -1 if self.calls == self.at else 0


def _with_fake(monkeypatch, err):
    fake = _FakeSfr(err)
    monkeypatch.setattr(ckpt, "_SFR", fake)
    monkeypatch.setattr(ckpt.ctypes, "get_errno", lambda: fake.err)
    monkeypatch.setattr(ckpt, "SYNC_CHUNK", 64 << 10)
    monkeypatch.setattr(ckpt, "WRITE_PIECE", 48 << 10)
    return fake


def test_a_writeback_error_fails_the_checkpoint(tmp_path, monkeypatch):
    import errno

    _with_fake(monkeypatch, errno.EIO)  # the third call is a wait: the kernel has cleared the error
    with pytest.raises(OSError, match="sync_file_range"):
        ckpt.write_checkpoint(str(tmp_path), 7, _arrays(), b"m")
    assert ckpt.list_checkpoints(str(tmp_path)) == []  # never renamed into place


@pytest.mark.parametrize("err", ["EINVAL", "ENOSYS", "EINTR"])
def test_unsupported_or_interrupted_writeback_still_writes(tmp_path, monkeypatch, err):
    import errno

    fake = _with_fake(monkeypatch, getattr(errno, err))  # EINVAL/ENOSYS: fdatasync instead; EINTR: again
    arrays = _arrays()
    ckpt.write_checkpoint(str(tmp_path), 8, arrays, b"m")
    seq, back, _ = ckpt.load_newest(str(tmp_path))
    assert seq == 8 and all(np.array_equal(back[k], v) for k, v in arrays.items())
    assert fake.calls > 3


def test_release_follows_each_piece_and_spares_shared_memory(tmp_path, monkeypatch):
    """``release`` gets every byte of an array once it is in the file, in pieces cut at multiples
    of WRITE_PIECE; an array whose memory a later one may share is never released. The release
    here zeroes what it gets, so a byte written after its release would read back as zero."""
    import ctypes

    monkeypatch.setattr(ckpt, "WRITE_PIECE", 64 << 10)
    arrays = {k: v.copy() for k, v in _arrays().items()}
    base = np.arange(300_000, dtype=np.int64)
    arrays["head"] = base[:1000]        # shares memory with "whole", written after it: not released
    arrays["whole"] = base
    other = np.arange(300_000, dtype=np.int64)
    arrays["first"] = other             # a later one shares its memory: not released
    arrays["tail"] = other[-1000:]
    want = {k: v.copy() for k, v in arrays.items()}
    got = []

    def release(addr, n):
        got.append((addr, n))
        ctypes.memset(addr, 0, n)

    ckpt.write_checkpoint(str(tmp_path), 7, arrays, b"meta", release)
    _, back, _ = ckpt.load_newest(str(tmp_path))
    for k, v in want.items():
        assert np.array_equal(back[k], v), k
    for k, v in arrays.items():
        if k in ("head", "first") or not v.nbytes or not v.flags.c_contiguous:
            continue  # (a Fortran-order array is written, and released, from a C-order copy)
        lo = v.ctypes.data
        mine = sorted(p for p in got if lo <= p[0] < lo + v.nbytes)
        assert sum(n for _, n in mine) == v.nbytes, k
        assert all(a % (64 << 10) == 0 for a, _ in mine[1:]), k  # cut at multiples of WRITE_PIECE
        assert all(a + n == b for (a, n), (b, _) in zip(mine, mine[1:])), k
        assert not v.view(np.uint8).any(), k  # released (zeroed by this test's release)
    assert sum(a == base.ctypes.data for a, _ in got) == 1  # "whole"'s first piece, never "head"'s
    assert np.array_equal(other[:-1000], np.arange(299_000))  # "first" kept; "tail" released


def test_a_version_1_file_is_still_read(tmp_path):
    """PSTCKPT1 (the meta before the arrays), as checkpoints were written before ADR 0023."""
    import struct

    from crc32c import crc32c

    arrays, meta = _arrays(), b"the meta" * 1000
    body = io.BytesIO()
    body.write(ckpt.MAGIC_V1 + struct.pack("<QI", 9, len(meta)) + meta + struct.pack("<I", len(arrays)))
    for name, arr in arrays.items():
        body.write(struct.pack("<H", len(name)) + name.encode())
        np.lib.format.write_array(body, np.ascontiguousarray(arr), allow_pickle=False)
    data = body.getvalue()
    (tmp_path / f"{9:020d}.ckpt").write_bytes(data + struct.pack("<I", crc32c(data)))
    seq, back, meta2 = ckpt.load_newest(str(tmp_path))
    assert seq == 9 and meta2 == meta and back.keys() == arrays.keys()
    for k, v in arrays.items():
        assert np.array_equal(back[k], v), k


def test_the_meta_may_come_from_a_function_called_after_the_arrays(tmp_path):
    arrays = {"a": np.arange(10)}
    seen = []

    def meta():
        seen.append(arrays["a"].sum())
        return b"late"

    ckpt.write_checkpoint(str(tmp_path), 3, arrays, meta, lambda addr, n: seen.append("released"))
    assert seen == ["released", 45]
    assert ckpt.load_newest(str(tmp_path))[2] == b"late"


def test_a_meta_length_past_the_crc_is_refused(tmp_path):
    import struct

    from crc32c import crc32c

    path = ckpt.write_checkpoint(str(tmp_path), 4, {"a": np.arange(3)}, b"m" * 10)
    import pathlib

    data = bytearray(pathlib.Path(path).read_bytes()[:-4])
    off = len(data) - 10 - 8
    assert struct.unpack_from("<Q", data, off)[0] == 10
    struct.pack_into("<Q", data, off, 11)
    pathlib.Path(path).write_bytes(bytes(data) + struct.pack("<I", crc32c(bytes(data))))
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_checkpoint(path)
