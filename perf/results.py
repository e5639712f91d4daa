"""Shared by the benchmarks: machine facts, the commit, and writing one section of RESULTS.md.

Owns: ``machine``, ``git_commit``, ``stamp``, ``write_section`` (each benchmark rewrites only
its own "## ..." section), ``log`` (a progress line, flushed) and ``Terminated`` / ``on_sigterm``
(SIGTERM as an exception, so that a benchmark stops its servers on the way out).
Imports: numpy, numba, psutil, stdlib.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

import numba
import numpy as np
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
RESULTS_HEADER = """# Performance results

Benchmarks of portfolio-state, one section per benchmark script. Each script
rewrites only its own section (date, commit, machine, command, figures against
their bars) when run without `--no-write`. Numbers from a shared or busy machine
are indicative only; rerun on a quiet machine before quoting them.
"""


def log(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Terminated(Exception):
    pass


def on_sigterm(signum, frame):
    raise Terminated()


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} cores, {model}, {mem:.1f} GiB RAM; Linux {platform.release()}; "
            f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}")


def git_commit() -> str:
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                           check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True).stdout.strip()
        return c + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"Date: {now}. Commit: {git_commit()}."


def write_section(text: str, section: str | None = None, path: str = RESULTS) -> None:
    """Replace (or append) the section whose header line is ``section`` (default: text's first line) of
    the results file at ``path`` (default: perf/RESULTS.md; created with the header when missing)."""
    section = section or text.splitlines()[0].strip()
    body = open(path).read() if os.path.exists(path) else RESULTS_HEADER
    lines = body.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == section), None)
    if start is None:
        new = body.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        rest = "\n".join(lines[end:])
        new = "\n".join(lines[:start]).rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + (
            "\n" + rest.rstrip("\n") + "\n" if rest.strip() else "")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)
