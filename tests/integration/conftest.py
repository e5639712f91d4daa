import pytest

from tests.integration.daemon_proc import DaemonProcess


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Every kernel compiled once, here, before the first daemon starts. Each daemon's warm-up then
    loads them from the on-disk cache (about a second) instead of compiling (about 30 s on a fresh
    machine's cold cache, more on a busy one), which would eat the first fixture's ready timeout."""
    from portfolio_state.daemon.server import warm_up

    warm_up()


@pytest.fixture(params=["tcp", "ipc"])
def daemon(request, tmp_path):
    d = DaemonProcess(tmp_path, request.param)
    d.wait_ready()
    yield d
    assert d.stop() == 0, d.output()


@pytest.fixture
def tcp_daemon(tmp_path):
    d = DaemonProcess(tmp_path, "tcp")
    d.wait_ready()
    yield d
    assert d.stop() == 0, d.output()


def seed(c):
    """A small book through the client: two portfolios, three instruments, deposits, prices."""
    c.upsert_portfolio("P1", base_currency="USD", portfolio_type="LONG_SHORT", portfolio_name="Alpha")
    c.upsert_portfolio("P2", base_currency="USD", portfolio_type="LONG_ONLY")
    c.upsert_instruments([
        {"instrument_id": "AAPL", "sector": "Technology", "country": "US"},
        {"instrument_id": "XOM", "sector": "Energy", "country": "US"},
        {"instrument_id": "SAP", "currency": "EUR", "sector": "Technology", "country": "DE"},
    ])
    c.fx({"EUR": 1.1})
    c.prices({"AAPL": 190.0, "XOM": 110.0, "SAP": 120.0})
    c.cash_flow("P1", 1_000_000)
    c.cash_flow("P2", 500_000)


# ---------------------------------------------------------------- PostgreSQL and Redis

@pytest.fixture(scope="session")
def pg_base():
    """postgresql://user@host:port of a real PostgreSQL: the machine's, or a throwaway one."""
    from tests.integration.servers import ThrowawayPostgres, answers

    if answers(5432):
        yield "postgresql://postgres@127.0.0.1:5432"
        return
    server = ThrowawayPostgres()
    try:
        yield server.dsn_base
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(pg_base):
    """A database of this test's own, dropped afterwards."""
    from tests.integration.servers import drop_database, new_database

    name, dsn = new_database(pg_base)
    try:
        yield dsn
    finally:
        drop_database(pg_base, name)


@pytest.fixture(scope="session")
def redis_url():
    from tests.integration.servers import RedisServer, answers

    if answers(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import uuid

    import redis

    prefix = f"pstate-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(f"{prefix}*"))
    if keys:
        r.delete(*keys)
    r.close()
