"""The demo in fresh mount, PID and network namespaces, as a container would run it."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.mount,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare"),
]

CONTAINERFILE = pathlib.Path(__file__).parents[2] / "examples" / "container" / "Containerfile"


def test_the_demo_runs_in_its_own_mount_pid_and_network_namespaces():
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--pid",
            "--net",
            "--fork",
            "--mount-proc",
            "--",
            sys.executable,
            "-m",
            "vbusfs",
            "demo",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "vbusfs is mounted at" in out and "unmounted" in out
    assert "virtual-ethernet" in out
    # in its own PID namespace the demo's shell has a small pid, and is a member
    assert "is listed in sys/vbus/instances/client-bus/members" in out


def test_the_containerfile_builds_with_make_setup_and_runs_make_demo():
    text = CONTAINERFILE.read_text()
    assert "RUN make setup" in text and 'CMD ["make", "demo"]' in text
    for package in ("fuse3", "libfuse3-dev", "pkg-config", "python3-venv"):
        assert package in text
