"""A fuzzer of the connector protocol: random datagrams from a member to a real daemon.

Random JSON shapes (the real operations with fields of every type, and junk),
raw bytes, deep nesting, and beside them file descriptors of every kind (memfds
of any size, sealed or read-only, eventfds, pipes, sockets, directories, files on
the mount itself, a real ring's), sent in any order on one connection. Every
datagram must be answered (a reply, or a refusal with an errno) and the daemon
must log no internal error. `HYPOTHESIS_PROFILE=deep` runs it long.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from vbusfs import client
from vbusfs.connector import RECEIVE, received, rights
from vbusfs.ioq import Ioq
from vbusfs.testing import LiveMount, netns_available

pytestmark = pytest.mark.mount

OPS = ["list", "open", "call", "queue", "stats", "close", "save", "modprobe", "rmmod", "nope"]
FD_KINDS = [
    "memfd",
    "memfd-sealed",
    "memfd-readonly",
    "memfd-huge",
    "eventfd",
    "eventfd-semaphore",
    "pipe",
    "socket",
    "devnull",
    "directory",
    "mount-file",
    "ring",
    "ring-whole",  # all four of one real ring's, in order: a queue that can attach
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
small_ints = st.integers(min_value=-2, max_value=4) | st.integers()
field_values = small_ints | json_values


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One datagram's bytes: mostly requests that look real, sometimes anything."""
    kind = draw(st.sampled_from(["request", "request", "request", "real", "json", "bytes", "deep"]))
    if kind == "real":  # what a driver sends, so the fuzz reaches open devices and rings
        seq = draw(st.integers(min_value=1, max_value=100))
        handle = draw(st.integers(min_value=1, max_value=3))
        return json.dumps(
            draw(
                st.sampled_from(
                    [
                        {"op": "open", "seq": seq, "id": 0, "version": 1},
                        {"op": "open", "seq": seq, "id": 0, "version": 1},
                        {"op": "queue", "seq": seq, "handle": handle, "index": 0},
                        {"op": "queue", "seq": seq, "handle": handle, "index": 1},
                        {"op": "call", "seq": seq, "handle": handle, "function": 0},
                        {"op": "stats", "seq": seq, "handle": handle},
                        {"op": "close", "seq": seq, "handle": handle},
                    ]
                )
            )
        ).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(min_value=500, max_value=30000))
        return draw(st.sampled_from([b"[", b'{"op":', b'{"a":['])) * depth
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    message: dict[str, Any] = {"op": draw(st.sampled_from(OPS) | st.text(max_size=10))}
    if draw(st.booleans()):
        message["seq"] = draw(st.integers(min_value=0, max_value=1000))
    else:
        message["seq"] = draw(field_values)
    for key in ("handle", "id", "version", "index", "function", "data", "deviceclass"):
        if draw(st.booleans()):
            if key == "data" and draw(st.booleans()):
                message[key] = draw(st.sampled_from(["", "AAAA", "not base64!", "AA=="]))
            elif key in ("handle", "id", "version", "index", "function"):
                message[key] = draw(small_ints | field_values)
            else:
                message[key] = draw(field_values)
    return json.dumps(message).encode()


@st.composite
def datagram(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    data = draw(requests())
    if b'"queue"' in data[:40] and draw(st.booleans()):
        return data, ["ring-whole"]  # a queue that can attach, or fail in its own ways
    return data, draw(st.lists(st.sampled_from(FD_KINDS), max_size=10))


datagrams = st.lists(datagram(), min_size=1, max_size=8)


class Fds:
    """The descriptors one example sends, all closed at its end."""

    def __init__(self, mount: LiveMount) -> None:
        self.mount = mount
        self.fds: list[int] = []
        self.rings: list[Ioq] = []

    def make(self, kinds: list[str]) -> list[int]:
        made: list[int] = []
        for kind in kinds:
            if kind == "ring-whole":
                ring = Ioq.create(8, 256, direction="to_south")
                self.rings.append(ring)
                made += (os.dup(fd) for fd in ring.fds)
            else:
                made.append(self._make(kind))
        self.fds += made
        return made[:10]  # more than MAX_FDS too

    def _make(self, kind: str) -> int:
        if kind.startswith("memfd"):
            fd = os.memfd_create("fuzz", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
            os.ftruncate(fd, (1 << 44) if kind == "memfd-huge" else 56 + 32 * 8)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
            if kind == "memfd-sealed":
                seals |= fcntl.F_SEAL_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            if kind == "memfd-readonly":
                readonly = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                os.close(fd)
                return readonly
            return fd
        if kind.startswith("eventfd"):
            flags = os.EFD_CLOEXEC | (os.EFD_SEMAPHORE if kind == "eventfd-semaphore" else 0)
            return os.eventfd(0, flags)
        if kind == "pipe":
            r, w = os.pipe()
            self.fds.append(w)
            return r
        if kind == "socket":
            a, b = socket.socketpair()
            self.fds.append(a.detach())
            return b.detach()
        if kind == "devnull":
            return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if kind == "directory":
            return os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if kind == "mount-file":
            return os.open(self.mount.join("sys", "vbus", "version"), os.O_RDONLY | os.O_CLOEXEC)
        assert kind == "ring"
        ring = Ioq.create(8, 256, direction="to_south")
        self.rings.append(ring)
        return os.dup(ring.fds[len(self.rings) % 4])

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for ring in self.rings:
            ring.close()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMount]:
    top = tmp_path_factory.mktemp("fuzz")
    mount = LiveMount(str(top), private_netns=netns_available(), debug=False).start()
    try:
        mount.sh(
            "mkdir config/vbus/instances/B config/vbus/devices/L && "
            "echo venet-loopback > config/vbus/devices/L/type && "
            "echo 1 > sys/vbus/devices/L/enabled && "
            "ln -s ../../devices/L config/vbus/instances/B/",
            check=True,
        )
        with open(mount.join("proc", "self", "vbus"), "w") as f:
            f.write("B")
        yield mount
    finally:
        log = mount.stop()
    assert "internal error" not in log and "Traceback" not in log, log


@given(datagrams=datagrams)
def test_every_datagram_is_answered_and_nothing_is_an_internal_error(fuzzed, datagrams):
    fds = Fds(fuzzed)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(10)
    try:
        sock.connect(client.find_connector(fuzzed.path, 5))
        hello = json.loads(sock.recv(65536))
        assert hello["hello"]["bus"] == "B"
        for data, kinds in datagrams:
            sending = fds.make(kinds)
            try:
                sock.sendmsg([data], rights(sending))
            except OSError:
                continue  # the kernel refused it (too long for the socket): not the daemon's
            got = received(sock.recvmsg(*RECEIVE))
            for fd in got.fds:
                os.close(fd)
            if not got.data:  # an empty datagram is how a client hangs up: the daemon does too
                assert not data, "the daemon hung up on a member's bad request"
                break
            reply = json.loads(got.data)
            assert "seq" in reply
            with contextlib.suppress(ValueError, AttributeError, RecursionError):
                event(f"{json.loads(data).get('op')!r}: {reply.get('errno', 'served')}")
            if "errno" in reply:
                assert isinstance(reply["errno"], int) and reply["errno"] > 0, reply
                assert isinstance(reply["message"], str)
    finally:
        sock.close()
        fds.close()
    # whatever it sent, the daemon serves the next one
    with client.connect(fuzzed.path) as bus:
        assert bus.interfaces() == [client.InterfaceEntry(0, "virtual-ethernet")]
