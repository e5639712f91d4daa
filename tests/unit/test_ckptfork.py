"""The forked checkpoint writer: its report, its failures, and a fork that cannot happen."""
import os
import types

import pytest

from portfolio_state.daemon import ckptfork


def _engine(window):
    return types.SimpleNamespace(window=window)


def test_the_child_lists_the_window_writes_and_reports(tmp_path):
    def write(engine, settings, snap, floor):
        seq, arrays, meta = snap
        path = tmp_path / f"{seq}.out"
        path.write_text(repr(sorted(meta["window"])) + f" {arrays['x']} {floor}")
        return str(path), seq - 1

    window = {"k1": ("d1", b"r1"), "k2": ("d2", b"r2")}
    pid, r = ckptfork.fork_checkpoint(write, _engine(window), None, (7, {"x": 3}, {}), 5)
    window["k3"] = ("d3", b"r3")  # the parent goes on changing it; the child saw the fork's copy
    path, oldest = ckptfork.wait_checkpoint(pid, r)
    assert (path, oldest) == (str(tmp_path / "7.out"), 6)
    assert (tmp_path / "7.out").read_text() == "[('k1', ('d1', b'r1')), ('k2', ('d2', b'r2'))] 3 5"


def test_a_failing_child_is_reported_with_its_error():
    def write(engine, settings, snap, floor):
        raise OSError(28, "No space left on device")

    pid, r = ckptfork.fork_checkpoint(write, _engine({}), None, (1, {}, {}), None)
    with pytest.raises(RuntimeError, match="exited with 1: OSError: .*No space left"):
        ckptfork.wait_checkpoint(pid, r)


def test_a_fork_that_fails_leaves_no_open_pipe(monkeypatch):
    def no_fork():
        raise OSError(12, "Cannot allocate memory")

    before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(OSError):
        ckptfork.fork_checkpoint(lambda *a: None, _engine({}), None, (1, {}, {}), None)
    assert set(os.listdir("/proc/self/fd")) == before
