"""Monitor records with no socket and no mount: the backlog's accounting, the records a
model's changes make, their round trip through a datagram, and who hears what."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vbusfs.classes import default_model
from vbusfs.connector import (
    MAX_MESSAGE,
    MONITOR_BUFFER,
    Backlog,
    Record,
    Scope,
    WireError,
    decode_records,
    lost_between,
)
from vbusfs.connector._monitor import records_of
from vbusfs.connector._records import EVERYONE, body
from vbusfs.model import InterfaceClosed, InterfaceOpened, MembershipChanged, Unmounted
from vbusfs.testing import names

# one step: push this many records (the last of them final, maybe), or pack one datagram
# of at most this many bytes
steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 40), st.booleans()),
        st.tuples(st.just("pack"), st.integers(1, 4000), st.just(False)),
    ),
    max_size=60,
)


def drain(backlog: Backlog, limit: int = MAX_MESSAGE // 2) -> list[Record]:
    got: list[Record] = []
    while (datagram := backlog.pack(limit)) is not None:
        assert len(datagram) <= max(limit, 200)
        got.extend(decode_records(datagram))
    return got


def check_accounting(seen: list[Record], pushed: int) -> None:
    """Every number from 1 to `pushed` is a record seen or one a dropped record counts,
    in order: the dropped record stands where its records would have."""
    expected = 1
    for record in seen:
        if record.event == "dropped":
            assert record.fields["first"] == expected
            assert record.fields["count"] >= 1
            expected += record.fields["count"]
        else:
            assert record.seq == expected
            expected += 1
    assert expected == pushed + 1


@given(capacity=st.integers(2, 50), plan=steps)
def test_backlog_every_record_seen_or_counted_in_order(capacity, plan):
    backlog = Backlog(capacity)
    seen: list[Record] = []
    pushed = 0
    for op, n, final in plan:
        if op == "push":
            for i in range(n):
                pushed += 1
                last = final and i == n - 1
                text = body({"event": "stored", "device": f"d{pushed}", "attribute": "a"}, 1.5)
                kept = backlog.push(text, final=last)
                assert kept or not last  # the last record a monitor hears is never lost
            # never past its capacity but for the final records, which always fit
            assert len(backlog) <= capacity + 2 * sum(1 for o, _, f in plan if f)
        else:
            datagram = backlog.pack(n)
            if datagram is not None:
                seen.extend(decode_records(datagram))
    seen.extend(drain(backlog))
    check_accounting(seen, pushed)
    assert backlog.lost == lost_between(seen)
    assert backlog.pack() is None


def test_backlog_of_a_burst_keeps_its_capacity_and_counts_the_rest():
    backlog = Backlog()
    for i in range(10_000):
        backlog.push(body({"event": "created", "object": "device", "name": str(i)}, 0.0))
    assert len(backlog) == MONITOR_BUFFER == 4096
    seen = drain(backlog)
    check_accounting(seen, 10_000)
    assert [r.event for r in seen[-2:]] == ["created", "dropped"]
    assert seen[-1].fields == {"count": 10_000 - 4096, "first": 4097}
    assert seen[-2].fields["name"] == "4095"


def test_backlog_reports_the_drop_before_the_next_record_kept():
    backlog = Backlog(3)
    for i in range(5):  # 1..3 kept, 4 and 5 dropped
        backlog.push(body({"event": "created", "object": "bus", "name": str(i)}, 0.0))
    # two sent: room for the next and the dropped record that goes before it
    first = decode_records(backlog.pack(1)) + decode_records(backlog.pack(1))
    backlog.push(body({"event": "removed", "object": "bus", "name": "x"}, 0.0))
    rest = drain(backlog)
    events = [(r.event, r.seq) for r in first + rest]
    assert events == [
        ("created", 1),
        ("created", 2),
        ("created", 3),
        ("dropped", None),
        ("removed", 6),
    ]
    assert rest[1].fields == {"count": 2, "first": 4}


def test_backlog_refuses_a_capacity_below_two():
    with pytest.raises(ValueError):
        Backlog(1)


simple = st.text("abcdefgh-_. é", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..", "0", "perms")
)


def model_records(vbus):
    got = []
    vbus.changes.subscribe(lambda change: got.extend(records_of(change)))
    return got


@given(bus=names("bus"), device=names("device"), link=names("link"))
def test_records_of_a_walkthrough_round_trip(bus, device, link):
    vbus = default_model()
    got = model_records(vbus)
    vbus.create_bus(bus)
    vbus.create_device(device)
    vbus.set_device_type(device, "venet-loopback")
    interface = vbus.link(bus, link, device)
    vbus.store_attribute(vbus.device(device), "client_mac", "02:00:00:00:00:01")
    vbus.changes.publish(MembershipChanged(41, None, bus, "fork"))
    vbus.changes.publish(InterfaceOpened(interface, 41))
    vbus.changes.publish(InterfaceClosed(interface, 41))
    vbus.changes.publish(MembershipChanged(41, bus, None, "exit"))
    vbus.unlink(bus, link)
    vbus.remove_device(device)
    vbus.remove_bus(bus)
    vbus.changes.publish(Unmounted("/mnt/x y"))
    expected = [
        {"event": "created", "object": "bus", "name": bus},
        {"event": "created", "object": "device", "name": device},
        {"event": "type", "device": device, "class": "venet-loopback"},
        {"event": "linked", "bus": bus, "interface": 0, "device": device, "link": link},
        {"event": "stored", "device": device, "attribute": "client_mac"},
        {"event": "joined", "bus": bus, "pid": 41, "how": "fork"},
        {"event": "opened", "bus": bus, "interface": 0, "device": device, "pid": 41},
        {"event": "closed", "bus": bus, "interface": 0, "device": device, "pid": 41},
        {"event": "left", "bus": bus, "pid": 41, "how": "exit"},
        {"event": "unlinked", "bus": bus, "interface": 0, "device": device, "link": link},
        {"event": "removed", "object": "device", "name": device},
        {"event": "removed", "object": "bus", "name": bus},
        {"event": "unmounted", "mountpoint": "/mnt/x y"},
    ]
    assert [record for record, _ in got] == expected
    backlog = Backlog()
    for record, _ in got:
        backlog.push(body(record, 1234.5))
    seen = drain(backlog)
    assert [r.as_json() for r in seen] == [
        {"seq": n, "time": 1234.5, **record} for n, record in enumerate(expected, 1)
    ]
    assert seen[-1].final and not any(r.final for r in seen[:-1])
    for record in seen:  # one line each, whatever the names hold
        line = record.line()
        assert "\n" not in line and line.startswith("[1234.500000] " + record.event)


def test_a_move_between_buses_is_a_leave_and_a_join():
    change = MembershipChanged(7, "A", "B", "write")
    assert [r for r, _ in records_of(change)] == [
        {"event": "left", "bus": "A", "pid": 7, "how": "write"},
        {"event": "joined", "bus": "B", "pid": 7, "how": "write"},
    ]
    assert records_of(MembershipChanged(7, "A", "A", "write")) == []


def test_a_member_hears_its_own_bus_and_the_unmount_only():
    vbus = default_model()
    got = model_records(vbus)
    for bus in ("mine", "theirs"):
        vbus.create_bus(bus)
        vbus.create_device(f"d-{bus}")
        vbus.set_device_type(f"d-{bus}", "venet-loopback")
        vbus.link(bus, "l", f"d-{bus}")
        vbus.store_attribute(vbus.device(f"d-{bus}"), "client_mac", "02:00:00:00:00:02")
    vbus.create_device("loose")
    vbus.changes.publish(Unmounted("/m"))
    member, admin = Scope("mine"), Scope(None)
    heard = [r for r, audience in got if member.hears(audience)]
    assert heard == [
        {"event": "created", "object": "bus", "name": "mine"},
        {"event": "linked", "bus": "mine", "interface": 0, "device": "d-mine", "link": "l"},
        {"event": "stored", "device": "d-mine", "attribute": "client_mac"},
        {"event": "unmounted", "mountpoint": "/m"},
    ]
    assert all(admin.hears(audience) for _, audience in got)
    assert Scope("mine").hears(EVERYONE) and not Scope("mine").hears(None)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"name": "plain"}, "name=plain"),
        ({"name": "two words"}, 'name="two words"'),
        ({"name": 'a"b=c'}, 'name="a\\"b=c"'),
        ({"name": "new\nline"}, 'name="new\\nline"'),
        ({"name": ""}, 'name=""'),
        ({"pid": 12, "bus": "B"}, "pid=12 bus=B"),  # in the order given
    ],
)
def test_record_lines_quote_what_would_split_them(fields, words):
    assert Record("created", 3, 1.0, fields).line() == f"[1.000000] created   {words}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.one_of(json_values, st.dictionaries(st.sampled_from(["event", "seq", "time"]), json_values))
)
def test_decode_records_takes_a_record_whole_or_refuses_it(item):
    try:
        (record,) = decode_records(json.dumps({"records": [item]}).encode())
    except WireError:
        return
    assert isinstance(item, dict) and isinstance(item["event"], str)
    assert record.as_json() == {k: v for k, v in item.items() if v is not None or k == "event"}


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"records": 3}',
        b'{"records": [{"seq": 1}]}',
        b'{"records": [{"event": "created", "seq": true}]}',
        b'{"records": [{"event": "created", "time": "now"}]}',
    ],
)
def test_decode_records_refuses_malformed_batches(data):
    with pytest.raises(WireError):
        decode_records(data)


def test_an_interfaces_store_and_a_class_coming_and_going_are_recorded_with_their_audience():
    vbus = default_model()
    vbus.create_bus("B")
    vbus.create_device("S")
    vbus.set_device_type("S", "venet-switch")
    interface = vbus.link("B", "L", "S")
    got = model_records(vbus)
    vbus.store_attribute(interface, "client_mac", "02:00:00:00:00:02")
    vbus.unlink("B", "L")
    vbus.remove_device("S")
    switch = vbus.unload_class("venet-switch")
    vbus.load_class(switch)
    assert got[0] == (
        {"event": "stored", "bus": "B", "interface": 0, "attribute": "client_mac"},
        frozenset({"B"}),  # an interface's store: its bus's members hear it
    )
    assert got[-2:] == [  # classes: the administrators alone
        ({"event": "unloaded", "class": "venet-switch"}, None),
        ({"event": "loaded", "class": "venet-switch"}, None),
    ]
