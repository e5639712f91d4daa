"""The forked checkpoint writer: its report, its failures, its priority, a fork that cannot
happen, and the copy-on-write view that lets it snapshot the book itself."""
import os

import pytest
from portfolio_state.daemon import ckptfork


def test_the_child_sees_the_fork_instant_writes_and_reports(tmp_path):
    window = {"k1": ("d1", b"r1"), "k2": ("d2", b"r2")}

    def job():
        path = tmp_path / "7.out"
        path.write_text(repr(sorted(window.items())))
        return str(path), 6

    pid, r = ckptfork.fork_checkpoint(job)
    window["k3"] = ("d3", b"r3")  # the parent goes on changing it; the child saw the fork's copy
    path, oldest = ckptfork.wait_checkpoint(pid, r)
    assert (path, oldest) == (str(tmp_path / "7.out"), 6)
    assert (tmp_path / "7.out").read_text() == "[('k1', ('d1', b'r1')), ('k2', ('d2', b'r2'))]"


def test_the_child_runs_at_idle_priority(tmp_path):
    """On two cores the writer must not take CPU the engine or its clients want."""
    def job():
        (tmp_path / "policy").write_text(f"{os.sched_getscheduler(0)} {os.nice(0)}")
        return "", 0

    ckptfork.wait_checkpoint(*ckptfork.fork_checkpoint(job))
    policy, nice = map(int, (tmp_path / "policy").read_text().split())
    assert policy == os.SCHED_IDLE or nice == 19


def test_a_failing_child_is_reported_with_its_error():
    def job():
        raise OSError(28, "No space left on device")

    pid, r = ckptfork.fork_checkpoint(job)
    with pytest.raises(RuntimeError, match="exited with 1: OSError: .*No space left"):
        ckptfork.wait_checkpoint(pid, r)


def test_a_fork_that_fails_leaves_no_open_pipe(monkeypatch):
    def no_fork():
        raise OSError(12, "Cannot allocate memory")

    before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(OSError):
        ckptfork.fork_checkpoint(lambda: ("", 0))
    assert set(os.listdir("/proc/self/fd")) == before


def test_the_child_dies_with_its_parent(tmp_path):
    """kill -9 of the daemon is a crash mid-checkpoint: the writer child must not outlive it
    (PR_SET_PDEATHSIG), or it could finish a checkpoint of a process that no longer exists."""
    import signal
    import subprocess
    import sys
    import time

    if not ckptfork.available():
        pytest.skip("no fork here")
    pidfile = tmp_path / "child.pid"
    script = f"""
import time
from portfolio_state.daemon import ckptfork
def job():
    open({str(pidfile)!r}, "w").write(str(__import__("os").getpid()))
    time.sleep(60)
ckptfork.fork_checkpoint(job)
time.sleep(60)
"""
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 20
        while not (pidfile.exists() and pidfile.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        child = int(pidfile.read_text())
        os.kill(child, 0)  # alive while its parent is
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as f:  # a zombie waiting for its reaper counts as dead
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the checkpoint child outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
