"""The benchmarks run (quick mode, nothing written): they must produce figures. How fast is never
asserted here; perf/RESULTS.md holds the measured numbers."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script,expect", [
    ("bench_kernels.py", "ns/trade"),
    ("bench_recovery.py", "updates/s"),
    ("bench_daemon.py", "updates/s"),
    ("bench_checkpoint.py", "with a checkpoint"),
])
def test_benchmark_quick_mode_produces_figures(script, expect):
    out = subprocess.run([sys.executable, str(ROOT / "perf" / script), "--quick", "--no-write"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert expect in out.stdout
