"""Settings: defaults, TOML file, PSTATE_* environment, --set flags, in that order; bad ones refused."""
import pathlib
import subprocess
import sys

import pytest

from portfolio_state.daemon.config import Settings, SettingsError, describe, load

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_defaults_need_no_external_service():
    s = load(environ={})
    assert s == Settings()
    assert s.transport.command_endpoint.startswith("tcp://127.0.0.1:")
    assert s.book.shm_name == ""


def test_precedence_file_env_flags(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[transport]\nmax_drain = 10\ncommand_endpoint = "tcp://127.0.0.1:1"\n[engine]\nevents = false\n')
    s = load(str(f), ["transport.max_drain=30"], environ={"PSTATE_TRANSPORT__MAX_DRAIN": "20",
                                                        "PSTATE_TRANSPORT__COMMAND_ENDPOINT": "ipc:///tmp/x"})
    assert s.transport.max_drain == 30 and s.transport.command_endpoint == "ipc:///tmp/x" and s.engine.events is False


def test_example_file_loads():
    s = load(str(ROOT / "systemd" / "pstate.toml.example"), environ={})
    assert s.book.shm_name == "pstate"


@pytest.mark.parametrize("override", ["transport.max_drain=many", "transport.nope=1", "engine.events=3", "nodots"])
def test_bad_settings_are_refused(override):
    with pytest.raises(SettingsError):
        load(overrides=[override], environ={})


def test_every_setting_is_documented():
    rows = describe()
    assert len(rows) > 15
    assert all(text for _, _, text in rows), [n for n, _, t in rows if not t]


def test_cli_help_and_bad_flag():
    out = subprocess.run([sys.executable, "-m", "portfolio_state.daemon.cli", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "transport.command_endpoint" in out.stdout and "engine.event_cpu_budget" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "portfolio_state.daemon.cli", "run", "--set", "transport.max_drain=x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "bad setting" in bad.stderr
