"""Benchmarks of portfolio-state and the performance harness (``python -m perf``); see perf/harness.py.

The scripts here import each other as top-level modules (perf/ is put on sys.path), so each also
runs as a plain script: ``python perf/bench_daemon.py``.
"""
