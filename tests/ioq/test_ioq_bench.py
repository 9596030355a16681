"""bench/ioq.py runs, small, prints every table with numbers, and leaves no child behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ioq.py"


def table(out: str, title: str) -> list[str]:
    """The rows under a table's title line and its header, up to the next blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line)
    return rows


@pytest.mark.slow
def test_the_ioq_bench_measures_zero_copy_and_waits_and_cleans_up() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--rounds", "1", "--seconds", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, out + err
    assert "failed" not in out, out
    zero_copy = table(out, "zero-copy vs copy")
    assert len(zero_copy) == 3 * 3 * 2  # sizes x calls x ways
    for row in zero_copy:
        assert re.search(r"\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+x", row), row
    waits = table(out, "waits:")
    assert [r.split()[0] for r in waits] == [
        "Ioq.receive",
        "Poller.wait",
        "Ioq.receive",
        "Poller.wait",
        "AsyncIoq.wait_receivable",
        "Poller.wait_async",
    ]
    for row in waits:
        assert re.search(r"\d+\.\d", row), row
    # every child was killed and reaped: nothing is left in the bench's session
    left = subprocess.run(
        ["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True, check=False
    )
    assert left.stdout.strip() == ""
