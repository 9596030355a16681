"""The deviceclass guide's examples are real code that works as the guide says."""

from __future__ import annotations

import errno
import pathlib
import socket
import threading

from vbusfs.device import DeviceNames, Ioq, IoqClosed, Queues

GUIDE = pathlib.Path(__file__).parents[2] / "docs" / "deviceclass-guide.md"


def python_blocks() -> list[str]:
    text = GUIDE.read_text()
    return [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]


def example(marker: str) -> dict:
    (block,) = [b for b in python_blocks() if marker in b]
    namespace: dict = {}
    exec(compile(block, str(GUIDE), "exec"), namespace)
    return namespace


def serve_in_thread(connection, specs, north):
    watched, stopper = socket.socketpair()
    south = {}
    for spec in specs:
        south[spec.index] = Ioq.attach(north[spec.index].fds, direction=spec.direction)
        south[spec.index].watch_peer(watched)
    queues = Queues(
        south, {s.index: s for s in specs}, DeviceNames("c", "d", "B/0"), stop_socket=stopper
    )
    ended: list[BaseException] = []

    def run():
        try:
            connection.serve(queues)
        except BaseException as exc:
            ended.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop():
        queues.stop()
        thread.join(5)
        assert not thread.is_alive()
        for ring in south.values():
            ring.close()
        watched.close()
        return ended

    return stop


def test_the_request_response_example_answers_and_refuses():
    scope = example("class Upper(DeviceClass)")
    upper = scope["Upper"]()
    specs = upper.queues
    assert [(s.index, s.direction, s.name) for s in specs] == [
        (0, "to_south", "requests"),
        (1, "to_north", "responses"),
    ]
    north = {
        0: Ioq.create(8, 4096, direction="to_south"),
        1: Ioq.create(8, 4096, direction="to_north"),
    }
    stop = serve_in_thread(upper.open(None, None, 1), specs, north)
    try:
        north[0].send_batch([b"hello", b"", b"abc"], 5)
        got = [north[1].receive(5) for _ in range(3)]
        assert got == [b"HELLO", errno.EINVAL.to_bytes(4, "little"), b"ABC"]
    finally:
        ended = stop()
        for ring in north.values():
            ring.close()
    assert len(ended) == 1 and isinstance(ended[0], IoqClosed)


def test_the_serve_example_counts_what_it_receives():
    from vbusfs.device import QueueSpec

    scope = example("class CounterConnection(DeviceConnection)")
    connection = scope["CounterConnection"]()
    spec = QueueSpec(0, "to_south", "inbox")
    north = {0: Ioq.create(8, 64, direction="to_south")}
    stop = serve_in_thread(connection, [spec], north)
    try:
        north[0].send_batch([b"12345", b"678"], 5)
        deadline = threading.Event()
        for _ in range(100):
            if connection.count == 8:
                break
            deadline.wait(0.02)
        assert connection.count == 8
    finally:
        stop()
        north[0].close()


def test_the_block_server_example_serves_reads_in_c_and_refuses_the_rest():
    import os
    import struct

    scope = example("class BlockDiskConnection(RequestResponseConnection)")
    fd = os.memfd_create("guide-disk", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 << 16)
    os.pwrite(fd, b"\x42" * 512, 512)
    connection = scope["BlockDiskConnection"](fd, 1 << 16)
    from vbusfs.device import request_response_queues

    specs = request_response_queues(4096, 4096)
    north = {
        0: Ioq.create(8, 4096, direction="to_south"),
        1: Ioq.create(8, 4096, direction="to_north"),
    }
    stop = serve_in_thread(connection, specs, north)
    try:
        read = struct.pack("<QQIHH", 1, 512, 512, 1, 0)
        flush = struct.pack("<QQIHH", 2, 0, 0, 3, 0)
        north[0].send_batch([read, flush], 5)
        got = [north[1].receive(5) for _ in range(2)]
        assert got == [
            struct.pack("<QII", 1, 0, 512) + b"\x42" * 512,
            struct.pack("<QII", 2, errno.EINVAL, 0),
        ]
    finally:
        ended = stop()
        for ring in north.values():
            ring.close()
        os.close(fd)
    assert len(ended) == 1 and isinstance(ended[0], IoqClosed)
