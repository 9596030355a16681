"""The vdisk deviceclass in an in-process model: the conformance machine, the attribute
rules (a file backing sets the size; EBUSY while open), the open steps and the calls."""

from __future__ import annotations

import errno

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from vbusfs_vdisk import MAX_MEMORY_SIZE, SECTOR, Vdisk
from vbusfs_vdisk import protocol as p

from vbusfs.model import Vbus, VbusError
from vbusfs.testing import AttributeValues, DeviceClassConformance, choice_values, host_free_model

SIZES = AttributeValues(
    valid=st.one_of(
        st.integers(1, MAX_MEMORY_SIZE // SECTOR).map(lambda n: str(n * SECTOR)),
        st.sampled_from(["0512", "00001024"]),
    ),
    invalid=st.one_of(
        st.sampled_from(["0", "511", "513", "-512", "+512", " 512", "512 ", "1k", "0x200", ""]),
        st.integers(1, 1 << 40).filter(lambda n: n % SECTOR).map(str),
        st.integers(MAX_MEMORY_SIZE // SECTOR + 1, 1 << 40).map(lambda n: str(n * SECTOR)),
        st.text(max_size=8).filter(lambda t: not t.isdigit()),
    ).filter(lambda t: t and not t.endswith("\n")),
    shows=lambda text: str(int(text)),
)
# a relative path, or anything else that is neither `memory` nor an absolute path
BACKINGS = AttributeValues(
    valid=st.just("memory"),
    invalid=st.one_of(
        st.sampled_from(["Memory", "memory ", "mem", "disk.img", "./disk.img", "~/disk.img"]),
        st.text(max_size=12),
    ).filter(lambda t: t and t != "memory" and not t.startswith("/") and not t.endswith("\n")),
)
SPINS = AttributeValues(
    valid=st.one_of(st.integers(0, 10_000).map(str), st.just("adaptive")),
    invalid=st.one_of(
        st.sampled_from(["10001", "-1", "Adaptive", "adaptive ", "1.5", "", "1e3"]),
        st.text(max_size=8),
    ).filter(
        lambda t: (
            t
            and t != "adaptive"
            and not (t.isascii() and t.isdigit() and int(t) <= 10_000)
            and not t.endswith("\n")
        )
    ),
    shows=lambda text: text if text == "adaptive" else str(int(text)),
)


class VdiskConformance(DeviceClassConformance):
    deviceclass = Vdisk
    values = {
        "backing": BACKINGS,
        "size": SIZES,
        "readonly": choice_values(["0", "1"]),
        "spin_us": SPINS,
    }
    # a file backing sets the size; none of the four may change while a client has it open
    affects = {"backing": ("size",)}
    busy_while_open = frozenset({"backing", "size", "readonly", "spin_us"})
    # reads and flushes of the first sectors (a read past the end answers an errno)
    requests = st.one_of(
        st.builds(
            p.read_request,
            st.integers(0, 1 << 32),
            st.integers(0, 7).map(lambda n: n * SECTOR),
            st.sampled_from([SECTOR, 2 * SECTOR]),
        ),
        st.builds(p.flush_request, st.integers(0, 1 << 32)),
    )

    def check_response(self, opened, request: bytes, response: bytes) -> None:
        asked, answer = p.parse_request(request), p.parse_response(response)
        assert answer.tag == asked.tag

    def class_state(self) -> object:
        return sorted(self.instance.live)  # type: ignore[attr-defined]

    def check_device(self, device) -> None:
        if not any(o.device == device.name for o in self.opens):
            assert device.state.connection is None  # every open was closed
            assert self.vbus.show_attribute(device, "opened") == "0"


TestVdiskConformance = VdiskConformance.TestCase
TestVdiskConformance.settings = settings(max_examples=15, stateful_step_count=20, deadline=None)


@pytest.fixture
def vbus() -> Vbus:
    vbus = host_free_model(("vbusfs_vdisk:Vdisk",))
    vbus.create_bus("b")
    vbus.create_device("d")
    vbus.set_device_type("d", "vdisk")
    vbus.link("b", "d", "d")
    return vbus


def show(vbus: Vbus, name: str) -> str:
    return vbus.show_attribute(vbus.devices["d"], name)


def store(vbus: Vbus, name: str, value: str) -> None:
    vbus.store_attribute(vbus.devices["d"], name, value)


def refused(code: int, action, *args) -> VbusError:
    with pytest.raises(VbusError) as info:
        action(*args)
    assert info.value.errno == code, info.value
    return info.value


def test_a_new_vdisk_is_16_mib_of_writable_memory(vbus):
    assert {n: show(vbus, n) for n in ("backing", "size", "readonly", "spin_us", "opened")} == {
        "backing": "memory",
        "size": str(16 << 20),
        "readonly": "0",
        "spin_us": "0",
        "opened": "0",
    }


def test_a_file_backing_sets_the_size_to_the_files_rounded_down(vbus, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(3 * SECTOR + 100))
    store(vbus, "backing", str(image))
    assert (show(vbus, "backing"), show(vbus, "size")) == (str(image), str(3 * SECTOR))
    store(vbus, "size", str(2 * SECTOR))  # smaller than the file: fine
    assert show(vbus, "size") == str(2 * SECTOR)
    refused(errno.EINVAL, store, vbus, "size", str(4 * SECTOR))  # more than the file holds
    assert show(vbus, "size") == str(2 * SECTOR)


def test_a_backing_that_is_not_a_usable_file_is_refused_and_changes_nothing(vbus, tmp_path):
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(bytes(SECTOR - 1))
    for value, code in [
        (str(tmp_path / "missing.img"), errno.ENOENT),
        (str(tmp_path), errno.EINVAL),  # a directory
        (str(tiny), errno.EINVAL),  # less than one block
        ("disk.img", errno.EINVAL),  # relative
        ("/dev/null", errno.EINVAL),  # not a regular file
    ]:
        refused(code, store, vbus, "backing", value)
        assert (show(vbus, "backing"), show(vbus, "size")) == ("memory", str(16 << 20))


def test_back_to_memory_needs_a_size_memory_can_hold(vbus, tmp_path):
    image = tmp_path / "big.img"
    with open(image, "wb") as f:
        f.truncate(MAX_MEMORY_SIZE + SECTOR)  # sparse
    store(vbus, "backing", str(image))
    refused(errno.EINVAL, store, vbus, "backing", "memory")
    assert show(vbus, "backing") == str(image)
    store(vbus, "size", str(MAX_MEMORY_SIZE))
    store(vbus, "backing", "memory")
    assert (show(vbus, "backing"), show(vbus, "size")) == ("memory", str(MAX_MEMORY_SIZE))


def test_one_client_at_a_time_and_no_attribute_changes_while_open(vbus):
    connection = vbus.open_interface("b", 0, p.VERSION)
    try:
        assert show(vbus, "opened") == "1"
        refused(errno.EBUSY, vbus.open_interface, "b", 0, p.VERSION)
        for name, value in [
            ("backing", "memory"),
            ("size", "512"),
            ("readonly", "1"),
            ("spin_us", "adaptive"),
        ]:
            refused(errno.EBUSY, store, vbus, name, value)
        refused(errno.EACCES, store, vbus, "opened", "0")
    finally:
        connection.close()
    assert show(vbus, "opened") == "0"
    store(vbus, "readonly", "1")


def test_the_calls_answer_capacity_and_flush_and_refuse_the_rest(vbus):
    store(vbus, "size", str(8 * SECTOR))
    store(vbus, "readonly", "1")
    connection = vbus.open_interface("b", 0, p.VERSION)
    try:
        capacity = p.parse_capacity(connection.call(p.CAPACITY_CALL, b""))
        assert capacity == p.Capacity(8 * SECTOR, SECTOR, True)
        assert connection.call(p.FLUSH_CALL, b"") == b""
        assert connection.stats()["flushes"] == 1
        refused(errno.EINVAL, connection.call, 2, b"")
        refused(errno.EINVAL, connection.call, p.CAPACITY_CALL, b"x")
    finally:
        connection.close()


def test_only_version_1_opens(vbus):
    refused(errno.EINVAL, vbus.open_interface, "b", 0, 2)


def test_a_memory_disk_keeps_its_bytes_across_opens_and_resizes(vbus):
    def request(message: bytes) -> bytes:
        connection = vbus.open_interface("b", 0, p.VERSION)
        try:
            response = memoryview(bytearray(p.RESPONSE_SIZE + SECTOR))
            n = connection.handle(memoryview(bytearray(message)), response)
            return bytes(response[:n])
        finally:
            connection.close()

    assert request(p.write_request(1, 0, b"\x42" * SECTOR)) == p.pack_response(1)
    assert request(p.read_request(2, 0, SECTOR)) == p.pack_response(2, 0, b"\x42" * SECTOR)
    store(vbus, "size", str(4 * SECTOR))  # keeps what fits
    assert request(p.read_request(3, 0, SECTOR)) == p.pack_response(3, 0, b"\x42" * SECTOR)


def test_an_open_of_a_file_that_went_away_or_shrank_is_refused(vbus, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4 * SECTOR))
    store(vbus, "backing", str(image))
    image.write_bytes(bytes(SECTOR))  # shrank below size
    refused(errno.ENOSPC, vbus.open_interface, "b", 0, p.VERSION)
    image.unlink()
    refused(errno.ENOENT, vbus.open_interface, "b", 0, p.VERSION)
    assert show(vbus, "opened") == "0"


def test_removing_every_device_leaves_the_class_empty(vbus):
    connection = vbus.open_interface("b", 0, p.VERSION)
    connection.close()
    vbus.unlink("b", "d")
    vbus.remove_device("d")
    assert vbus.classes["vdisk"].live == {}  # type: ignore[attr-defined]
