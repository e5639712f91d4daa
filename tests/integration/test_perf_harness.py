"""The performance harness runs: ``python -m perf --smoke`` (the quick mode's smallest scenario: ours
and the dict keeper, trades in batch frames, on a tiny book) into a temporary directory, never the
repository's perf/RESULTS.md. It must produce figures; how fast is never asserted here.
Needs no optional dependency (no matplotlib, nautilus_trader, Redis or PostgreSQL)."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_smoke_run_produces_figures(tmp_path):
    out = subprocess.run([sys.executable, "-m", "perf", "--smoke", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.loads((tmp_path / "harness-smoke.json").read_text())
    for system in ("ours", "dict"):
        entry = rec["systems"][f"50x20/{system}"]
        assert "error" not in entry, entry["error"]
        steps = entry["results"]["trades/batch"]["steps"]
        assert steps and all(s["done"] > 0 and s["p99"] > 0 and s["achieved"] > 0 for s in steps), steps
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Harness, smoke run (python -m perf --smoke)" in text
    assert "Max updates/s at p99 ≤ 50 ms" in text and "updates/s" in out.stdout
