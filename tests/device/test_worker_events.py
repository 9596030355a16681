"""A device's own events and notices from its loop, in a worker process and in a thread,
through a real mount: the client hears `send_event`s in the order they were sent; a
worker's `notify` wakes a poller of the attribute and reaches a monitor."""

from __future__ import annotations

import json
import os
import select

import pytest

from vbusfs import client

pytestmark = pytest.mark.mount


def _events(child, count: int) -> list[tuple[str, dict]]:
    out = []
    for _ in range(count):
        answer = child.ask("wait_event 10")
        prefix = "events device:0:"
        assert answer.startswith(prefix), answer
        kind, _, data = answer[len(prefix) :].partition(":")
        out.append((kind, json.loads(data)))
    return out


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_loop_sends_its_client_device_events_in_order(echo_mount, pecho_mount, isolation):
    mount = pecho_mount if isolation == "process" else echo_mount
    child = mount.child()
    for i in range(12):
        assert child.ask(f"submit event:{i}") == "ok"
    assert [child.ask("complete 10") for _ in range(12)] == [f"resp event:{i}" for i in range(12)]
    heard = _events(child, 12)
    assert [kind for kind, _ in heard] == ["echoed"] * 12
    assert [data["text"] for _, data in heard] == [str(i) for i in range(12)]
    assert child.ask("events") == "events "  # nothing more
    # the next open's client hears its own events, not those of an earlier one
    assert child.ask("close") == "ok"
    again = mount.child()
    assert again.ask("request event:x") == "resp event:x"
    assert _events(again, 1)[0][1]["text"] == "x"


def test_a_worker_notify_wakes_a_poller_and_reaches_a_monitor(pecho_mount):
    path = pecho_mount.mount.join("sys/vbus/devices/E/note")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == b"\n"
        with client.monitor(pecho_mount.path, timeout=10) as monitor:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            child = pecho_mount.child()
            assert not poller.poll(100)  # nothing changed yet
            assert child.ask("request note:hello") == "resp note:hello"
            assert poller.poll(10_000), "the poller was not woken"
            assert os.pread(fd, 4096, 0) == b"hello\n"
            changed = []
            while not changed:
                changed = [r for r in monitor.receive(10) if r.event == "changed"]
            assert changed[0].fields == {"device": "E", "attribute": "note"}
    finally:
        os.close(fd)


def test_a_worker_may_notify_only_attributes_its_class_declares(pecho_mount):
    child = pecho_mount.child()
    assert child.ask("request notify:nope") == "resp ValueError"
    assert child.ask("request notify:served") == "resp ok"
    assert child.ask("request two") == "resp two"  # the worker goes on
    assert "notify was refused" not in pecho_mount.mount.log
