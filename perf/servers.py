"""Servers the benchmarks start as children and always stop: the daemon, the dict keeper, and
throwaway Redis and PostgreSQL instances on loopback ports of their own.

Owns: ``ServerProcess`` (a child ready when its log shows a marker; SIGTERM then SIGKILL; it gets
SIGTERM if the benchmark dies: PR_SET_PDEATHSIG), ``free_port``, ``start_redis`` (redis-server,
appendonly yes, no RDB snapshots) and ``start_postgres`` (initdb of a cluster in a temporary
directory, then postgres on a free port with synchronous_commit=on and fsync=on; as the
``postgres`` user when run as root, which PostgreSQL requires). The system's PostgreSQL on 5432
and Redis on 6379 are never touched.
Runs on: the benchmark's main process. Imports: psutil and the standard library.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psutil

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server child: started on an endpoint, ready when its log shows `marker`, always stopped."""

    def __init__(self, name: str, argv: list[str], log_path: str, cwd: str, marker: str = "ready:",
                 user: pwd.struct_passwd | None = None, env: dict | None = None):
        self.name, self.argv, self.log_path, self.marker = name, argv, log_path, marker
        self._log = open(log_path, "w")

        def pre_exec():
            die_with_parent()
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=pre_exec,
                                     env=env)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            if self.marker in self.output():
                return time.perf_counter() - t0
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.ps] + self.ps.children(recursive=True)
        except psutil.Error:
            return []

    def cpu(self) -> float:
        """CPU seconds of the server and its child processes (PostgreSQL runs a process per connection)."""
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self._tree():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ---------------------------------------------------------------- Redis
def redis_available() -> str | None:
    return shutil.which("redis-server")


def start_redis(tmp: str, appendfsync: str) -> tuple[ServerProcess, int]:
    """redis-server on a free loopback port, AOF on (appendonly yes, appendfsync `appendfsync`) in tmp."""
    port = free_port()
    data = os.path.join(tmp, f"redis-{port}")
    os.makedirs(data)
    argv = [redis_available(), "--port", str(port), "--bind", "127.0.0.1", "--dir", data, "--appendonly", "yes",
            "--appendfsync", appendfsync, "--save", "", "--auto-aof-rewrite-percentage", "0", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", "", "--io-threads", "1"]
    srv = ServerProcess(f"redis-{appendfsync}", argv, os.path.join(tmp, f"redis-{port}.log"), cwd=data,
                        marker="Ready to accept connections")
    srv.wait_ready(30)
    return srv, port


# ---------------------------------------------------------------- PostgreSQL
def pg_bin() -> str | None:
    found = sorted(glob.glob(PG_BIN_GLOB), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    return found[-1] if found and os.path.exists(os.path.join(found[-1], "initdb")) else None


def start_postgres(log_dir: str) -> tuple[ServerProcess, str, str]:
    """A throwaway cluster: initdb in a new temporary directory (removed by the caller through the returned
    path), postgres on a free loopback port, durable commits. Returns (server, dsn, cluster directory)."""
    bindir = pg_bin()
    user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    root = tempfile.mkdtemp(prefix="pstate-perf-pg-")  # not under log_dir: a root-only 0700 parent blocks postgres
    data = os.path.join(root, "data")
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)

    def as_user():
        die_with_parent()
        if user is not None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
    out = subprocess.run([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                          "--no-instructions", "-E", "UTF8", "--no-locale"], capture_output=True, text=True,
                         preexec_fn=as_user, cwd=root)
    if out.returncode != 0:
        raise RuntimeError(f"initdb failed: {out.stdout[-1500:]}{out.stderr[-1500:]}")
    port = free_port()
    argv = [os.path.join(bindir, "postgres"), "-D", data, "-p", str(port), "-k", root,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on",
            "-c", "full_page_writes=on", "-c", "shared_buffers=512MB", "-c", "max_connections=50",
            "-c", "max_wal_size=4GB", "-c", "checkpoint_timeout=30min", "-c", "autovacuum=off",
            "-c", "logging_collector=off"]
    log_path = os.path.join(log_dir, f"postgres-{port}.log")
    srv = ServerProcess("postgres", argv, log_path, cwd=root, marker="ready to accept connections", user=user)
    srv.wait_ready(60)
    return srv, f"postgresql://postgres@127.0.0.1:{port}/postgres", root
