"""Attribute files (behaviour §4): one value per open, one store per write(2)."""

from __future__ import annotations

import errno
import os

import pytest

pytestmark = pytest.mark.mount


@pytest.fixture
def mnt(vbus_mount):
    """The session's shared daemon, reset after each test: these tests use only the trees
    (and processes of their own), never the daemon's process, log start or resources."""
    return vbus_mount


@pytest.fixture
def tap(mnt):
    mnt.sh("mkdir config/vbus/devices/D && echo venet-tap > config/vbus/devices/D/type", check=True)
    return mnt


def attr(mnt, name: str) -> str:
    return mnt.join("sys/vbus/devices/D", name)


def test_attribute_files_report_size_4096_and_modes(tap):
    for name, mode in [("client_mac", 0o644), ("host_mac", 0o444), ("enabled", 0o644)]:
        st = os.stat(attr(tap, name))
        assert st.st_size == 4096
        assert st.st_mode & 0o777 == mode
    assert os.stat(tap.join("config/vbus/devices/D/type")).st_size == 4096


def test_value_is_taken_at_open_and_served_at_the_offset(tap):
    path = attr(tap, "burstthresh")
    with open(path, "rb", buffering=0) as early:
        assert early.read(1) == b"2"
        tap.sh(f"echo 12345 > {path}", check=True)
        assert early.read() == b"0\n"  # still the value of its own open
    with open(path, "rb", buffering=0) as late:
        assert late.read() == b"12345\n"
    assert tap.sh(f"dd if={path} bs=1 skip=2 status=none").stdout == "345\n"


def test_each_write_is_one_store_whatever_the_offset(tap):
    fd = os.open(attr(tap, "burstthresh"), os.O_RDWR)
    try:
        assert os.pwrite(fd, b"77\n", 1000) == 3
        assert os.pwrite(fd, b"8", 3) == 1
        assert os.pread(fd, 100, 0) == b"8\n"  # re-rendered after the write
    finally:
        os.close(fd)
    assert tap.sh(f"cat {attr(tap, 'burstthresh')}").stdout == "8\n"


def test_one_trailing_newline_is_stripped_and_no_more(tap):
    with open(attr(tap, "client_mac"), "w") as f:
        f.write("02:aa:bb:cc:dd:ee")  # no newline
    assert tap.sh("cat sys/vbus/devices/D/client_mac").stdout == "02:aa:bb:cc:dd:ee\n"
    with pytest.raises(OSError) as info, open(attr(tap, "client_mac"), "w") as f:
        f.write("02:aa:bb:cc:dd:ef\n\n")
    assert info.value.errno == errno.EINVAL
    assert tap.sh("cat sys/vbus/devices/D/client_mac").stdout == "02:aa:bb:cc:dd:ee\n"


def test_zero_length_write_stores_nothing(tap):
    fd = os.open(attr(tap, "enabled"), os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.write(fd, b"") == 0
    finally:
        os.close(fd)
    assert tap.sh("cat sys/vbus/devices/D/enabled").stdout == "0\n"


def test_a_store_of_exactly_4096_bytes_is_accepted(tap):
    fd = os.open(attr(tap, "burstthresh"), os.O_WRONLY)
    try:
        assert os.write(fd, b"0" * 4094 + b"7\n") == 4096
        with pytest.raises(OSError) as info:
            os.write(fd, b"0" * 4096 + b"\n")
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert tap.sh("cat sys/vbus/devices/D/burstthresh").stdout == "7\n"


def test_o_trunc_and_o_append_are_ignored(tap):
    fd = os.open(attr(tap, "burstthresh"), os.O_WRONLY | os.O_APPEND | os.O_TRUNC)
    try:
        os.write(fd, b"31\n")
    finally:
        os.close(fd)
    tap.sh("echo 32 >> sys/vbus/devices/D/burstthresh", check=True)
    assert tap.sh("cat sys/vbus/devices/D/burstthresh").stdout == "32\n"


def test_invalid_utf8_is_einval(tap):
    fd = os.open(attr(tap, "client_mac"), os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            os.write(fd, b"\xff\xfe")
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_venet_defaults_and_formats(tap):
    read = {
        n: tap.sh(f"cat sys/vbus/devices/D/{n}").stdout
        for n in ("enabled", "ifname", "burstthresh", "host_mac", "client_mac")
    }
    assert read["enabled"] == "0\n"
    assert read["ifname"] == "<disabled>\n"
    assert read["burstthresh"] == "20\n"
    for mac in (read["host_mac"], read["client_mac"]):
        octets = bytes.fromhex(mac.strip().replace(":", ""))
        assert len(octets) == 6 and octets[0] & 3 == 2
        assert mac == mac.lower()


def test_a_handle_on_a_removed_device_fails_cleanly(tap):
    fd = os.open(attr(tap, "burstthresh"), os.O_WRONLY)
    try:
        tap.sh("rmdir config/vbus/devices/D", check=True)
        with pytest.raises(OSError) as info:
            os.write(fd, b"5\n")
        assert info.value.errno == errno.ENODEV
    finally:
        os.close(fd)


def test_loopback_and_switch_attributes(mnt):
    mnt.sh(
        "mkdir config/vbus/devices/L config/vbus/devices/S "
        "config/vbus/instances/B config/vbus/instances/C && "
        "echo venet-loopback > config/vbus/devices/L/type && "
        "echo venet-switch > config/vbus/devices/S/type && "
        "ln -s ../../devices/S config/vbus/instances/B/ && "
        "ln -s ../../devices/S config/vbus/instances/C/",
        check=True,
    )
    assert sorted(os.listdir(mnt.join("sys/vbus/devices/L"))) == [
        "burstthresh",
        "class",
        "client_mac",
        "enabled",
        "host_mac",
        "interfaces",
        "mtu",
        "txmitigation",
    ]
    mnt.sh("echo 1 > sys/vbus/devices/L/enabled", check=True)
    assert mnt.sh("cat sys/vbus/devices/L/enabled").stdout == "1\n"
    assert mnt.sh("cat sys/vbus/devices/S/ports").stdout == "B.0 C.0\n"
    assert sorted(os.listdir(mnt.join("sys/vbus/devices/S/interfaces"))) == ["B.0", "C.0"]
    port = mnt.join("sys/vbus/instances/C/devices/0/client_mac")
    mnt.sh(f"echo 02:00:00:00:00:0c > {port}", check=True)
    assert mnt.sh(f"cat {port}").stdout == "02:00:00:00:00:0c\n"
    other = mnt.sh("cat sys/vbus/instances/B/devices/0/client_mac").stdout
    assert other != "02:00:00:00:00:0c\n"
