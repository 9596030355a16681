"""The monitor's core with no socket: datagrams the daemon's backlog packs go in, the
records come out, and both faces (blocking, trio) end where it says."""

from __future__ import annotations

import os

import pytest

from vbusfs.client._monitor import MonitorStream
from vbusfs.connector import Backlog, ConnectorError, Datagram, WireError
from vbusfs.connector._records import body


def packed(*events: str) -> bytes:
    backlog = Backlog()
    for event in events:
        backlog.push(body({"event": event, "object": "bus", "name": "b"}, 1.5))
    datagram = backlog.pack()
    assert datagram is not None
    return datagram


def test_the_answer_says_what_the_monitor_watches():
    assert MonitorStream({"bus": "b", "buffer": 64}).bus == "b"
    everything = MonitorStream({"buffer": "4096"})
    assert (everything.bus, everything.buffer, everything.ended) == (None, 4096, False)


def test_records_come_out_in_order_until_the_final_one():
    stream = MonitorStream({})
    got = stream.feed(Datagram(packed("created", "removed")))
    assert [(r.seq, r.event, r.fields["name"]) for r in got] == [
        (1, "created", "b"),
        (2, "removed", "b"),
    ]
    assert not stream.ended
    stream.expect()  # more may come
    last = stream.feed(Datagram(packed("created", "unmounted")))
    assert [r.event for r in last] == ["created", "unmounted"]
    assert stream.ended
    with pytest.raises(ConnectorError, match="ended"):
        stream.expect()


def test_an_empty_datagram_is_the_daemon_going():
    stream = MonitorStream({})
    with pytest.raises(ConnectorError, match="closed"):
        stream.feed(Datagram(b""))
    assert stream.ended


def test_a_datagram_that_is_no_batch_is_refused_and_ends_nothing():
    stream = MonitorStream({})
    for data in (b"not json", b'{"records": 3}', b'{"records": [{"seq": 1}]}'):
        with pytest.raises(WireError):
            stream.feed(Datagram(data))
    assert not stream.ended
    assert [r.event for r in stream.feed(Datagram(packed("created")))] == ["created"]


def test_fds_beside_a_datagram_are_closed_not_kept():
    stream = MonitorStream({})
    r, w = os.pipe()
    stream.feed(Datagram(packed("created"), (r, w)))
    for fd in (r, w):
        with pytest.raises(OSError):
            os.fstat(fd)
