"""Real PostgreSQL 15 and Redis 7 for integration tests: the machine's own, or throwaway ones.

A test gets its own database (created, dropped after) and its own Redis key
prefix (deleted after). When nothing answers on 127.0.0.1:5432 / :6379 (a
fresh machine), a throwaway server is started from the installed binaries in a
temporary directory for the session and stopped at its end. ``RedisServer``
also serves tests that must stop and restart Redis.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

from tests.integration.daemon_proc import free_port


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return path


class ThrowawayPostgres:
    """initdb + pg_ctl in a temp dir on a free port, trust auth (as user postgres when run as root)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pstate-pg-")
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([_pg_bin("initdb"), "-D", f"{self.dir}/data", "-U", "postgres", "-A", "trust"])
        self._run([_pg_bin("pg_ctl"), "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-o",
                   f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start"])
        self.dsn_base = f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, cmd):
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        try:
            self._run([_pg_bin("pg_ctl"), "-D", f"{self.dir}/data", "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A private redis-server on a free port (no persistence); stop() and start() keep the port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc = None
        self.start()

    def start(self):
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not answers(self.port):
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def new_database(dsn_base: str) -> tuple[str, str]:
    """Create a uniquely named database; returns (name, dsn)."""
    name = f"pstate_test_{uuid.uuid4().hex[:12]}"
    psql(dsn_base + "/postgres", f"CREATE DATABASE {name}")
    return name, f"{dsn_base}/{name}"


def drop_database(dsn_base: str, name: str) -> None:
    psql(dsn_base + "/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def psql(dsn: str, sql: str) -> list[tuple]:
    """Run SQL with asyncpg (no psql binary needed); rows as tuples."""
    import asyncio

    import asyncpg

    async def go():
        c = await asyncpg.connect(dsn)
        try:
            if sql.lstrip().upper().startswith(("SELECT", "WITH")):
                return [tuple(r) for r in await c.fetch(sql)]
            await c.execute(sql)
            return []
        finally:
            await c.close()

    return asyncio.run(go())
