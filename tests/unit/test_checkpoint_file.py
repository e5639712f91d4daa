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
