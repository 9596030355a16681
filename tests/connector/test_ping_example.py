"""examples/venet_ping.sh runs as a new user would run it, and cleans up after itself."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from vbusfs.fuse import read_mountinfo
from vbusfs.testing import reply_to

pytestmark = [pytest.mark.mount, pytest.mark.root]
EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "venet_ping.sh"


@pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping (iputils-ping)")
def test_the_ping_example_gets_its_replies():
    done = subprocess.run(
        ["bash", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 packets transmitted, 3 received" in done.stdout
    left = [e.mount_point for e in read_mountinfo() if "vbusfs-ping-" in e.mount_point]
    assert left == []
    assert not any(n.startswith("vbusfs-ping-") for n in os.listdir("/run/netns"))
    assert not any(n.startswith("vbusfs-ping-") for n in os.listdir("/tmp"))


def test_the_tiny_host_answers_only_for_its_address():
    mac, ip = bytes.fromhex("020000000002"), bytes([10, 213, 0, 2])
    asker = bytes.fromhex("020000000001")
    arp = b"\xff" * 6 + asker + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01"
    request = arp + asker + bytes([10, 213, 0, 1]) + bytes(6) + ip
    answer = reply_to(request, mac, ip)
    assert answer is not None and answer[:6] == asker and answer[20:22] == b"\x00\x02"
    assert reply_to(request[:-1] + b"\x03", mac, ip) is None
