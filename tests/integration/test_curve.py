"""CURVE on: an allowed client works; an unlisted client and a plain client get nothing in."""
import shutil

import zmq.auth

from portfolio_state.transport.client import Client, CurveKeys
from tests.integration.daemon_proc import DaemonProcess


def test_curve_allow_list(tmp_path):
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    _, server_secret_file = zmq.auth.create_certificates(str(keys), "server")
    ok_public_file, ok_secret_file = zmq.auth.create_certificates(str(keys), "good")
    _, bad_secret_file = zmq.auth.create_certificates(str(keys), "stranger")
    shutil.copy(ok_public_file, allowed / "good.key")
    d = DaemonProcess(tmp_path, "tcp", extra=["--set", f"transport.curve_secret_key_file={server_secret_file}",
                                               "--set", f"transport.curve_clients_dir={allowed}"])
    d.wait_ready()
    try:
        server_public, _ = zmq.auth.load_certificate(server_secret_file)
        good = CurveKeys(*zmq.auth.load_certificate(ok_secret_file), server_public)
        with Client(d.command, timeout=3.0, curve=good) as c:
            assert c.health().status == "ok"
            c.upsert_portfolio("P1")
            assert c.state("P1").portfolio_state.portfolio_id == "P1"
        stranger = CurveKeys(*zmq.auth.load_certificate(bad_secret_file), server_public)
        for curve in (stranger, None):
            with Client(d.command, timeout=0.5, retries=1, curve=curve) as c:
                try:
                    c.upsert_portfolio("INTRUDER")
                    raise AssertionError("an unlisted client got a reply")
                except TimeoutError:
                    pass
        with Client(d.command, timeout=3.0, curve=good) as c:
            assert c.metrics()["portfolios"] == 1  # the intruders changed nothing
    finally:
        assert d.stop() == 0, d.output()
