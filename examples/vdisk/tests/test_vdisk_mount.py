"""vdisk through a live mount: made with shell commands, used by member processes through
`VdiskClient` and `AsyncVdiskClient`, refused with the right errno, and released when a
client dies; a differential test against a model disk through the rings."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time

import pytest
import trio
from conftest import BUS, DISK, join
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_disk import ModelDisk
from vbusfs_vdisk import SECTOR, AsyncVdiskClient, VdiskClient
from vbusfs_vdisk import protocol as p

from vbusfs import client
from vbusfs.ioq import IoqClosed
from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount

MIB = 1 << 20


def attribute(mount: LiveMount, name: str) -> str:
    return mount.sh(f"cat sys/vbus/devices/{DISK}/{name}", check=True).stdout.strip()


def set_attribute(mount: LiveMount, name: str, value: str) -> None:
    mount.sh(f"echo {value} > sys/vbus/devices/{DISK}/{name}", check=True)


def test_the_shell_sets_up_a_vdisk_and_bad_values_are_refused(disk_mount):
    assert disk_mount.sh("cat sys/vbus/instances/B/devices/0/type", check=True).stdout == (
        "virtual-disk\n"
    )
    assert attribute(disk_mount, "size") == str(MIB)
    for name, value, message in [
        ("size", "1000", "Invalid argument"),
        ("readonly", "2", "Invalid argument"),
        ("backing", "disk.img", "Invalid argument"),
        ("backing", "/no/such/file", "No such file or directory"),
        ("opened", "1", "Permission denied"),
    ]:
        done = disk_mount.sh(f"echo {value} > sys/vbus/devices/{DISK}/{name}")
        assert done.returncode != 0 and message in done.stderr, (name, done.stderr)
    assert attribute(disk_mount, "size") == str(MIB)


def test_a_member_writes_reads_and_flushes_through_the_rings(disk_mount):
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0) as disk:
        assert disk.capacity == p.Capacity(MIB, SECTOR, False)
        assert attribute(disk_mount, "opened") == "1"
        data = bytes(range(256)) * 16
        disk.write(8 * SECTOR, data)
        assert disk.read(8 * SECTOR, len(data)) == data
        assert disk.read(0, SECTOR) == bytes(SECTOR)  # never written: zeros
        disk.flush()
        disk.sync()
        assert disk.stats() == {
            "reads": 2,
            "writes": 1,
            "flushes": 2,
            "errors": 0,
            "read_bytes": len(data) + SECTOR,
            "written_bytes": len(data),
        }
    assert attribute(disk_mount, "opened") == "0"


def test_refused_requests_answer_their_errno_and_the_disk_goes_on(disk_mount):
    with (
        client.connect(disk_mount.path) as bus,
        VdiskClient.open(bus, 0, max_transfer=8192) as disk,
    ):
        for action, code in [
            (lambda: disk.read(MIB, SECTOR), errno.EINVAL),  # past the end
            (lambda: disk.read(MIB - SECTOR, 2 * SECTOR), errno.EINVAL),  # across the end
            (lambda: disk.write(MIB, bytes(SECTOR)), errno.ENOSPC),
            (lambda: disk.read(100, SECTOR), errno.EINVAL),  # misaligned
            (lambda: disk.write(0, bytes(100)), errno.EINVAL),
            (lambda: disk.read(0, 16384), errno.EINVAL),  # more than this client's slots hold
        ]:
            with pytest.raises(OSError) as refused:
                action()
            assert refused.value.errno == code
        # a request the protocol does not know: EOPNOTSUPP, in order with the rest
        disk.driver.submit(p.pack_request(9, 77))
        assert p.parse_response(disk.driver.complete(timeout=10))[:2] == (77, errno.EOPNOTSUPP)
        disk.write(0, b"\x01" * SECTOR)
        assert disk.read(0, SECTOR) == b"\x01" * SECTOR
        assert disk.stats()["errors"] == 7
        with pytest.raises(ValueError):  # larger than a request slot: never sent
            disk.write(0, bytes(16384))
        assert disk.read(0, SECTOR) == b"\x01" * SECTOR


def test_a_read_only_disk_refuses_writes_with_erofs(disk_mount):
    set_attribute(disk_mount, "readonly", "1")
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0) as disk:
        assert disk.capacity.readonly
        with pytest.raises(OSError) as refused:
            disk.write(0, bytes(SECTOR))
        assert refused.value.errno == errno.EROFS
        assert disk.read(0, SECTOR) == bytes(SECTOR)
        busy = disk_mount.sh(f"echo 0 > sys/vbus/devices/{DISK}/readonly")
        assert "Device or resource busy" in busy.stderr
    assert attribute(disk_mount, "readonly") == "1"


def test_a_file_backing_holds_what_the_client_wrote(disk_mount, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(64 * SECTOR + 7))
    set_attribute(disk_mount, "backing", str(image))
    assert attribute(disk_mount, "size") == str(64 * SECTOR)
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0) as disk:
        disk.write(3 * SECTOR, b"\xab" * SECTOR)
        disk.flush()
        assert image.read_bytes()[3 * SECTOR : 4 * SECTOR] == b"\xab" * SECTOR
    image.write_bytes(b"\xcd" * 64 * SECTOR)  # and reads see the file
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0) as disk:
        assert disk.read(63 * SECTOR, SECTOR) == b"\xcd" * SECTOR


def test_many_in_flight_come_back_in_order_with_their_data(disk_mount):
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0, count=16) as disk:
        for block in range(64):
            disk.submit_write(block * SECTOR, bytes([block]) * SECTOR)
        done = []
        while disk.in_flight:
            done += disk.complete_batch(64, timeout=10)
        assert [c.status for c in done] == [0] * 64
        disk.submit_reads([block * SECTOR for block in reversed(range(64))], SECTOR, timeout=10)
        done = []
        while disk.in_flight:
            done += disk.complete_batch(64, timeout=10)
        assert [bytes(c.data) for c in done] == [bytes([b]) * SECTOR for b in reversed(range(64))]
        assert [c.tag for c in done] == sorted(c.tag for c in done)


def test_the_trio_client_does_the_same(disk_mount):
    async def main() -> bytes:
        async with (
            await client.connect_async(disk_mount.path) as bus,
            await AsyncVdiskClient.open(bus, 0) as disk,
        ):
            assert disk.capacity.size == MIB
            await disk.write(SECTOR, b"\x33" * SECTOR)
            await disk.flush()
            await disk.sync()
            with pytest.raises(OSError) as refused:
                await disk.write(MIB, bytes(SECTOR))
            assert refused.value.errno == errno.ENOSPC
            return await disk.read(SECTOR, SECTOR)

    assert trio.run(main) == b"\x33" * SECTOR


def test_queues_outside_the_declaration_are_refused(disk_mount):
    with client.connect(disk_mount.path) as bus, bus.open(0, p.VERSION) as interface:
        # a response slot smaller than a response header
        with pytest.raises(client.ConnectorError) as refused:
            client.RequestResponseClient(interface, slot_size=64, response_slot_size=8)
        assert refused.value.errno == errno.EINVAL
    with client.connect(disk_mount.path) as bus, pytest.raises(client.ConnectorError) as refused:
        bus.open(0, 2)
    assert refused.value.errno == errno.EINVAL


CHILD = textwrap.dedent(
    """
    import sys, time
    from vbusfs import client
    from vbusfs_vdisk import VdiskClient
    bus = client.connect(sys.argv[1])
    disk = VdiskClient.open(bus, 0)
    disk.write(0, b"\\x77" * 512)
    print("open", flush=True)
    time.sleep(60)
    """
)


def test_a_client_that_dies_lets_the_next_one_open_the_disk(disk_mount):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, disk_mount.path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "open\n", child.stderr.read() if child.stderr else ""
        with client.connect(disk_mount.path) as bus:
            with pytest.raises(client.ConnectorError) as refused:
                VdiskClient.open(bus, 0)
            assert refused.value.errno == errno.EBUSY
    finally:
        child.kill()
        child.communicate()
    deadline = time.monotonic() + 10
    while attribute(disk_mount, "opened") != "0" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attribute(disk_mount, "opened") == "0"
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0) as disk:
        assert disk.read(0, SECTOR) == b"\x77" * SECTOR  # a memory disk outlives its clients


def test_unlinking_an_open_disk_ends_the_clients_waits(disk_mount):
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0) as disk:
        disk.write(0, bytes(SECTOR))
        disk_mount.sh(f"rm config/vbus/instances/{BUS}/{DISK}", check=True)
        # the close order runs (the disk's worker stops and exits, then the daemon lets go)
        deadline = time.monotonic() + 10
        while attribute(disk_mount, "opened") != "0" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert attribute(disk_mount, "opened") == "0"
        with pytest.raises(IoqClosed):  # the daemon let go: the rings' waits end
            disk.read(0, SECTOR, timeout=10)


SMALL = 40 * SECTOR  # the disk of the differential test: small, so that its end is reached
blocks = st.one_of(st.integers(36, 41), st.integers(0, 41))  # often at the end
requests = st.lists(
    st.one_of(
        st.tuples(st.just("read"), blocks, st.integers(0, 4)),
        st.tuples(st.just("write"), blocks, st.integers(0, 4)),
        st.tuples(st.just("flush"), st.just(0), st.just(0)),
    ),
    max_size=30,
)


@given(requests)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_through_the_rings_the_disk_agrees_with_a_model(disk_mount, steps):
    """Random reads, writes and flushes, many in flight, answer what a bytearray answers."""
    set_attribute(disk_mount, "size", str(SMALL))
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0, count=8) as disk:
        model = bytearray(disk.read(0, SMALL, timeout=10))  # whatever earlier examples left
        expected = []
        for n, (op, block, blocks) in enumerate(steps):
            offset, length = block * SECTOR, blocks * SECTOR
            in_range = offset + length <= SMALL
            if op == "read":
                disk.submit_read(offset, length, timeout=10)
                data = bytes(model[offset : offset + length])
                expected.append((0, data) if in_range else (errno.EINVAL, b""))
            elif op == "write":
                data = bytes([n % 256]) * length
                disk.submit_write(offset, data, timeout=10)
                if in_range:
                    model[offset : offset + length] = data
                expected.append((0, b"") if in_range else (errno.ENOSPC, b""))
            else:
                disk.submit_flush(timeout=10)
                expected.append((0, b""))
        got = []
        while disk.in_flight:
            got += [(c.status, bytes(c.data)) for c in disk.complete_batch(8, timeout=10)]
        assert got == expected
        assert disk.read(0, SMALL, timeout=10) == bytes(model)


def test_leaving_the_bus_fails_the_next_open(disk_mount):
    join(disk_mount, "0")
    with client.connect(disk_mount.path) as bus, pytest.raises(client.ConnectorError) as refused:
        VdiskClient.open(bus, 0)
    assert refused.value.errno == errno.EACCES
    join(disk_mount, BUS)
    assert os.path.exists(disk_mount.join("sys/vbus/devices", DISK))


junk = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda op, offset, length, extra: p.pack_request(op, 5, offset, length, bytes(extra)),
        st.integers(0, 5),
        st.integers(0, SMALL + 1024),
        st.integers(0, 2048),
        st.integers(0, 600),
    ),
)


@given(st.lists(junk, min_size=1, max_size=20))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_bytes_on_the_request_ring_get_the_answer_a_model_gives(disk_mount, messages):
    """Whatever a client puts on the ring is answered, in order, as the model disk answers
    it (an error response for anything malformed), and the device goes on serving."""
    set_attribute(disk_mount, "size", str(SMALL))
    with client.connect(disk_mount.path) as bus, VdiskClient.open(bus, 0, count=8) as disk:
        model = ModelDisk(SMALL, readonly=False)
        model.bytes[:] = disk.read(0, SMALL, timeout=10)
        room = p.RESPONSE_SIZE + disk.max_transfer
        answers = []
        for message in messages:
            disk.driver.submit(message, timeout=10)
            answers.append(model.answer(message, room))
        got = [disk.driver.complete(timeout=10) for _ in messages]
        assert got == answers
        assert disk.read(0, SMALL, timeout=10) == bytes(model.bytes)
