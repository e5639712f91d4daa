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
