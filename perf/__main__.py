"""``python -m perf``: the performance harness (perf/harness.py), run from the repository's root.

Puts perf/ on sys.path (its modules import each other as top-level names, like the scripts beside
them), checks that the optional dependencies are there, and runs ``harness.main``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    missing = []
    for mod, pkg in (("matplotlib", "matplotlib"),):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing and "--smoke" not in sys.argv:
        sys.stderr.write(f"python -m perf needs {', '.join(missing)}: pip install -e \".[perf]\" "
                         "(the perf extra: matplotlib, nautilus_trader)\n")
        sys.exit(2)
    import harness

    sys.exit(harness.main())
