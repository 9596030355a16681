"""The documented generic client through a real mount: find_mounts, open on both faces,
every attached queue watching the hang-up socket, events."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from vbusfs import client

pytestmark = pytest.mark.mount


def run(code: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_find_mounts_lists_this_mount_and_nothing_else(echo_mount, tmp_path):
    found = client.find_mounts()
    assert echo_mount.path in found
    assert str(tmp_path) not in found and "/" not in found and "/proc" not in found
    # a member process finds it the same way, with nothing but the library
    lines = run(
        """
        from vbusfs import client
        print(client.find_mounts())
        """
    )
    assert echo_mount.path in lines[0]


TRIO_CLIENT = """
import sys, trio
from vbusfs import client
from vbusfs.ioq import IoqClosed

async def main(mnt):
    with open(f"{mnt}/proc/self/vbus", "w") as f:
        f.write("B")
    async with await client.connect_async(mnt) as bus:
        (entry,) = await bus.interfaces()
        print(entry.type)
        dev = await bus.open(entry.id, 1)
        rr = await client.AsyncRequestResponseClient.open(
            dev, count=8, slot_size=256, response_slot_size=4096
        )
        print((await rr.request(b"ping")).decode())
        for i in range(20):
            await rr.submit(b"%d" % i)
        got = []
        while rr.pending:
            got += await rr.complete_batch(8)
        print(got == [b"%d" % i for i in range(20)], (await dev.stats())["served"])
        print("unlink", flush=True)
        sys.stdin.readline()
        try:
            await rr.responses.wait_receivable()
        except IoqClosed:
            print("closed")
        event = await bus.wait_event()
        print(event.kind, event.interface_id)
        await rr.aclose()

trio.run(main, sys.argv[1])
"""


def test_the_trio_face_opens_serves_and_hears_the_drop(echo_mount):
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TRIO_CLIENT), echo_mount.path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        lines = [child.stdout.readline().strip() for _ in range(4)]
        assert lines == ["echo", "ping", "True 21", "unlink"], child.communicate(timeout=30)
        echo_mount.mount.sh("rm config/vbus/instances/B/E", check=True)
        child.stdin.write("\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=30)
        assert out.split("\n")[:2] == ["closed", "drop 0"], err
        assert child.returncode == 0, err
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert echo_mount.wait_for(lambda: echo_mount.closes() == (1, 0))
