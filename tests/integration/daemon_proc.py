"""Start and stop real daemon processes for integration tests."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time

from portfolio_state.transport.client import Client


PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_HANDED_OUT: set[int] = set()  # never hand the same port to two endpoints of one test run


def free_port() -> int:
    """A free loopback port *below* the kernel's ephemeral range: a daemon restarted on it (crash
    tests) cannot find it taken by an outgoing connection's source port (or a client's TCP
    self-connect while nothing listened), which an ephemeral port can be."""
    lo = 32768
    if os.path.exists(PORT_RANGE):
        with open(PORT_RANGE) as f:
            lo = int(f.read().split()[0])
    for _ in range(1000):
        port = random.randrange(max(1024, lo - 12000), lo)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


class DaemonProcess:
    """A daemon child process. With ``transport="tcp"`` its ports are chosen here, and a start that
    loses a port race (another process bound it between the choice and the daemon's bind) is
    retried on fresh ports by ``wait_ready``: read ``command`` / ``events`` after it returns."""

    BIND_RETRIES = 5

    def __init__(self, tmp_path, transport="tcp", extra=(), env=None, data_dir=None):
        self.tmp_path, self.transport, self.extra, self.env = tmp_path, transport, list(extra), env
        self.data_dir = data_dir or str(tmp_path / "data")
        self.log = None
        self._spawn()

    def _spawn(self) -> None:
        if self.transport == "tcp":
            self.command = f"tcp://127.0.0.1:{free_port()}"
            self.events = f"tcp://127.0.0.1:{free_port()}"
        else:
            self.command = f"ipc://{self.tmp_path}/cmd.sock"
            self.events = f"ipc://{self.tmp_path}/events.sock"
        if self.log is not None:
            self.log.close()
        self.log_path = self.tmp_path / f"daemon-{time.time_ns()}.log"
        args = [sys.executable, "-m", "portfolio_state.daemon.cli", "run", "--command", self.command,
                "--events", self.events, "--set", f"journal.data_dir={self.data_dir}", *self.extra]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})})

    def wait_ready(self, timeout=120.0, **client_kw) -> None:
        """Until the daemon logs ``ready:``. A daemon that does not get there is killed before the
        error is raised: a fixture that fails in set-up never reaches its stop(), and a child left
        running would fail an unrelated later test (its Popen's ResourceWarning is an error here)."""
        deadline = time.time() + timeout
        retries = 0
        while time.time() < deadline:
            if self.proc.poll() is not None:
                text = self.log_path.read_text()
                if self.transport == "tcp" and "Address already in use" in text and retries < self.BIND_RETRIES:
                    retries += 1
                    self._spawn()
                    continue
                self.stop()
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {text}")
            if "ready:" in self.log_path.read_text():
                return
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise TimeoutError(f"daemon not ready in {timeout:.0f} s: {self.log_path.read_text()}")

    def client(self, **kw) -> Client:
        kw.setdefault("timeout", 5.0)
        return Client(self.command, **kw)

    def stop(self, sig=signal.SIGTERM, timeout=20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text()
