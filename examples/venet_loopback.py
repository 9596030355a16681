"""Example: send Ethernet frames through a venet-loopback device and get them back.

    python examples/venet_loopback.py [MOUNTPOINT]

With a MOUNTPOINT it uses the vbusfs already mounted there; without one it
mounts a fresh vbusfs on a temporary directory and unmounts it at the end.
Every step is a plain file operation, the same as the shell commands in the
comments, followed by the client library (`vbusfs.client`):

1. create a bus and a venet-loopback device, enable it, link it into the bus;
2. join the bus (this process becomes a member);
3. connect, open interface 0 as a virtual-ethernet NIC, read its MAC;
4. send a few frames, receive them back, print them and the device's counters;
5. tear down in reverse: leave the bus, unlink, rmdir, unmount.

It never leaves anything behind: each step it took is undone in a `finally`,
even when a later step fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

from vbusfs import client
from vbusfs.daemon import spawn, unmount

BUS = "example-bus"
DEVICE = "loop0"
ETHERTYPE = 0x88B5  # IEEE 802 local experimental ethertype
BROADCAST = b"\xff" * 6
FRAMES = 5


def mac_text(mac: bytes) -> str:
    return ":".join(f"{octet:02x}" for octet in mac)


def write_attribute(path: str, value: str) -> None:
    """`echo value > path`: one write(2) of the whole value."""
    with open(path, "w") as f:
        f.write(value + "\n")


def read_attribute(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def ethernet_frame(dest: bytes, src: bytes, payload: bytes) -> bytes:
    """A bare Ethernet frame: destination, source, ethertype, payload (no FCS)."""
    return dest + src + ETHERTYPE.to_bytes(2, "big") + payload


def describe(frame: bytes) -> str:
    dest, src = frame[0:6], frame[6:12]
    ethertype = int.from_bytes(frame[12:14], "big")
    payload = frame[14:]
    return (
        f"{mac_text(src)} -> {mac_text(dest)} type 0x{ethertype:04x} "
        f"{len(frame)} bytes: {payload.decode(errors='replace')!r}"
    )


@contextlib.contextmanager
def mounted(mountpoint: str | None) -> Iterator[str]:
    """The mount point to use: the given one, or a fresh mount on a temporary directory."""
    if mountpoint is not None:
        yield mountpoint
        return
    path = tempfile.mkdtemp(prefix="vbusfs-example-")
    try:
        spawn(path)
        print(f"mounted vbusfs on {path}")
        try:
            yield path
        finally:
            unmount(path)
            print(f"unmounted {path}")
    finally:
        os.rmdir(path)


@contextlib.contextmanager
def loopback_on_bus(mnt: str) -> Iterator[None]:
    """Build the bus and the device with file operations; take them down again at the end."""
    config = os.path.join(mnt, "config", "vbus")
    sysfs = os.path.join(mnt, "sys", "vbus")
    bus_dir = os.path.join(config, "instances", BUS)
    device_dir = os.path.join(config, "devices", DEVICE)
    link = os.path.join(bus_dir, DEVICE)
    with contextlib.ExitStack() as undo:
        os.mkdir(bus_dir)  # mkdir config/vbus/instances/example-bus
        undo.callback(os.rmdir, bus_dir)
        os.mkdir(device_dir)  # mkdir config/vbus/devices/loop0
        undo.callback(os.rmdir, device_dir)
        # echo venet-loopback > config/vbus/devices/loop0/type
        write_attribute(os.path.join(device_dir, "type"), "venet-loopback")
        # echo 1 > sys/vbus/devices/loop0/enabled
        write_attribute(os.path.join(sysfs, "devices", DEVICE, "enabled"), "1")
        # ln -s MNT/config/vbus/devices/loop0 config/vbus/instances/example-bus/
        os.symlink(device_dir, link)
        undo.callback(os.unlink, link)
        print(f"bus {BUS!r} holds device {DEVICE!r} (venet-loopback) as interface 0")
        interface_type = read_attribute(
            os.path.join(sysfs, "instances", BUS, "devices", "0", "type")
        )
        print(f"  sys/vbus/instances/{BUS}/devices/0/type: {interface_type}")

        # echo example-bus > MNT/proc/self/vbus: this process becomes a member
        membership = os.path.join(mnt, "proc", "self", "vbus")
        write_attribute(membership, BUS)
        undo.callback(write_attribute, membership, "0")  # echo 0: leave the bus
        members = os.listdir(os.path.join(sysfs, "instances", BUS, "members"))
        print(f"joined {BUS!r}: members {members} (this process is {os.getpid()})")
        yield
    print("left the bus, removed the link, the device and the bus")


def exchange_frames(mnt: str) -> None:
    with client.connect(mnt) as bus:
        print(f"connected to bus {bus.name!r}; interfaces:")
        for interface in bus.interfaces():
            print(f"  {interface.id}: {interface.type}")
        with bus.open_venet(0) as nic:
            mac = nic.mac
            print(f"opened interface 0 as venet, MAC {mac_text(mac)}")
            sent = [
                ethernet_frame(BROADCAST, mac, f"hello vbus, frame {i}".encode())
                for i in range(FRAMES)
            ]
            nic.send_batch(sent, timeout=5)
            print(f"sent {len(sent)} frames")
            received: list[bytes] = []
            while len(received) < len(sent):
                received += nic.recv_batch(len(sent) - len(received), timeout=5)
            print(f"received {len(received)} frames:")
            for frame in received:
                print(f"  {describe(frame)}")
            if received != sent:
                raise SystemExit("error: the frames that came back differ from those sent")
            print("every frame came back unchanged")
            stats = nic.stats()
            print("device stats: " + ", ".join(f"{k}={v}" for k, v in sorted(stats.items())))


def main(argv: list[str]) -> int:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        print("usage: python examples/venet_loopback.py [MOUNTPOINT]", file=sys.stderr)
        return 2
    with mounted(argv[1] if len(argv) == 2 else None) as mnt, loopback_on_bus(mnt):
        exchange_frames(mnt)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
