"""The connector's protocol core, both roles, with no socket and no mount."""

from __future__ import annotations

import array
import ast
import copy
import errno
import json
import pathlib
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vbusfs.connector import (
    MAX_FDS,
    MAX_MESSAGE,
    PROTOCOL,
    ClientConnection,
    Closed,
    ConnectorError,
    DaemonConnection,
    Datagram,
    Event,
    InterfaceEntry,
    Reply,
    Request,
    Stray,
    Welcome,
    WireError,
    error_fields,
    interface_entries,
    pack_bytes,
    received,
    rights,
    unpack_bytes,
)
from vbusfs.connector import _protocol as protocol_module
from vbusfs.connector import venet as venet_module

daemon = DaemonConnection()


def welcomed(bus: str | None = "B", admin: bool = False) -> ClientConnection:
    client = ClientConnection()
    client.receive_welcome(Datagram(daemon.hello(bus, 42, admin)))
    return client


def reply_to(request: Datagram, fields: dict, fds: tuple[int, ...] = ()) -> Datagram:
    """What the daemon answers `request` with: the daemon's own framing of `fields`."""
    served = daemon.receive(request)
    assert isinstance(served, Request)
    return Datagram(daemon.reply(served, fields), fds)


def event(kind: str = "add", interface_id: int = 1) -> Datagram:
    return Datagram(daemon.event(kind, interface_id, "virtual-ethernet"))


def state(client: ClientConnection) -> dict:
    return copy.deepcopy(vars(client))


# -- framing ---------------------------------------------------------------------


def test_protocol_frames_one_json_object_per_datagram():
    message = {"op": "call", "seq": 3, "data": pack_bytes(b"\x00\xff")}
    assert json.loads(protocol_module.encode(message)) == message
    assert protocol_module.decode(protocol_module.encode(message)) == message
    assert unpack_bytes(message["data"]) == b"\x00\xff"


def test_protocol_refuses_a_message_over_the_limit():
    fits = {"x": "a" * (MAX_MESSAGE - len('{"x":""}'))}
    assert len(protocol_module.encode(fits)) == MAX_MESSAGE
    with pytest.raises(WireError, match=f"message of {MAX_MESSAGE + 1} bytes is over 65536"):
        protocol_module.encode({"x": "a" * (MAX_MESSAGE + 1 - len('{"x":""}'))})


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"not json", "not a connector message"),
        (b"\xff\xfe", "not a connector message"),
        (b"[1, 2]", "a connector message is a JSON object"),
        (b'"op"', "a connector message is a JSON object"),
    ],
)
def test_protocol_bad_datagrams_are_wire_errors(data, complaint):
    with pytest.raises(WireError, match=complaint):
        daemon.receive(Datagram(data))
    with pytest.raises(WireError, match=complaint):
        welcomed().receive(Datagram(data))


@pytest.mark.parametrize(
    ("text", "complaint"), [(7, "bytes travel as base64 text"), ("a!==", "bad base64")]
)
def test_protocol_bytes_travel_as_base64_text(text, complaint):
    with pytest.raises(WireError, match=complaint):
        unpack_bytes(text)


# -- the daemon's side -------------------------------------------------------------


def test_daemon_hello_names_the_bus_and_the_protocol():
    hello = json.loads(daemon.hello("B", 42, True))
    assert hello == {"hello": {"bus": "B", "pid": 42, "admin": True, "protocol": PROTOCOL}}


def test_daemon_reads_a_request_and_its_fds():
    request = daemon.receive(Datagram(b'{"op":"queue","seq":5,"handle":1,"index":0}', (7, 8)))
    assert isinstance(request, Request)
    assert (request.op, request.seq, request.fds) == ("queue", 5, (7, 8))
    assert request.integer("handle") == 1 and request.integer("index") == 0


def test_daemon_echoes_the_seq_the_client_sent():
    for seq in (1, 0, -5, 2**63 - 1):
        request = daemon.receive(Datagram(protocol_module.encode({"op": "list", "seq": seq})))
        assert isinstance(request, Request)
        assert json.loads(daemon.reply(request, {"interfaces": []}))["seq"] == seq


@pytest.mark.parametrize(
    "message",
    [
        {"op": "list", "seq": "x"},
        {"op": "list", "seq": None},
        {"op": "list", "seq": [1]},
        {"op": "list", "seq": True},
        {"op": "list", "seq": 2**63},
        {"op": "list"},
        {"op": 3, "seq": 1},
        {"seq": 1},
    ],
)
def test_daemon_a_request_needs_an_integer_seq_and_a_text_op(message):
    # seq is echoed: a structure there would make the reply as big and deep as the request
    with pytest.raises(WireError) as info:
        daemon.receive(Datagram(protocol_module.encode(message)))
    assert info.value.errno == errno.EINVAL


def test_daemon_deep_nesting_is_a_bad_message_not_a_recursion_error():
    for data in (b"[" * 200_000, b'{"a":' * 60_000 + b"1" + b"}" * 60_000):
        with pytest.raises(WireError, match="nested too deeply") as info:
            daemon.receive(Datagram(data))
        assert info.value.errno == errno.EINVAL


def test_daemon_fds_cut_short_say_why():
    request = b'{"op":"list","seq":1}'
    full = tuple(range(3, 3 + MAX_FDS))
    with pytest.raises(WireError, match=f"at most {MAX_FDS} file descriptors") as info:
        daemon.receive(Datagram(request, full, truncated=True, fds_cut=True))
    assert info.value.errno == errno.EINVAL
    with pytest.raises(WireError, match="out of file descriptors") as info:
        daemon.receive(Datagram(request, (3,), truncated=True, fds_cut=True))
    assert info.value.errno == errno.EMFILE


def test_daemon_refusal_names_the_seq_only_when_it_is_one():
    assert json.loads(daemon.refusal(4, errno.EINVAL, "no")) == {
        "errno": errno.EINVAL,
        "message": "no",
        "seq": 4,
    }
    assert json.loads(daemon.refusal([4], errno.EINVAL, "x" * 5000))["seq"] is None
    assert len(json.loads(daemon.refusal(None, errno.EINVAL, "x" * 5000))["message"]) == 1024


def test_daemon_an_empty_datagram_is_a_hang_up():
    assert daemon.receive(Datagram(b"")) == Closed()


def test_daemon_a_truncated_datagram_breaks_the_protocol():
    # the kernel cut it short: too long, however it decodes (even empty)
    for data in (b"", b'{"op":"list","seq":1}'):
        with pytest.raises(WireError, match="a message was too long") as info:
            daemon.receive(Datagram(data, (3,), truncated=True))
        assert info.value.errno == errno.EMSGSIZE


@pytest.mark.parametrize("value", [None, "1", 1.0, True, [1]])
def test_daemon_integer_fields_must_be_integers(value):
    request = Request("call", 1, {"op": "call", "handle": value})
    with pytest.raises(WireError, match="handle must be an integer"):
        request.integer("handle")


def test_daemon_text_and_data_fields():
    request = Request("modprobe", 1, {"deviceclass": 3, "data": pack_bytes(b"ab")})
    with pytest.raises(WireError, match="modprobe needs a class name"):
        request.text("deviceclass", "modprobe needs a class name")
    assert request.data() == b"ab"
    assert Request("call", 1, {}).data() == b""  # no data: no bytes


def test_daemon_event_and_refusal_shapes():
    assert json.loads(daemon.event("drop", 3, "virtual-ethernet")) == {
        "event": "drop",
        "id": 3,
        "type": "virtual-ethernet",
    }
    assert json.loads(daemon.refuse(errno.EACCES, "no bus")) == {
        "errno": errno.EACCES,
        "message": "no bus",
    }


def test_a_fault_event_carries_why_the_device_failed():
    data = daemon.event("fault", 2, "echo", "device loop failed: RuntimeError('x')")
    assert json.loads(data) == {
        "event": "fault",
        "id": 2,
        "type": "echo",
        "message": "device loop failed: RuntimeError('x')",
    }
    client = welcomed()
    heard = client.receive(Datagram(data))
    assert heard == Event("fault", 2, "echo", "device loop failed: RuntimeError('x')")
    assert client.events_nowait() == [heard]
    # add and drop carry no message, as before
    assert "message" not in json.loads(daemon.event("add", 1, "echo"))


# -- the client's side --------------------------------------------------------------


def test_client_welcome_says_who_we_are():
    client = ClientConnection()
    welcome = client.receive_welcome(Datagram(daemon.hello(None, 42, True)))
    assert welcome == client.welcome == Welcome(None, True, 42, PROTOCOL)


def test_client_refused_welcome_raises_with_the_errno():
    why = "process 42 is not a member of any bus"
    with pytest.raises(ConnectorError) as info:
        ClientConnection().receive_welcome(Datagram(daemon.refuse(errno.EACCES, why)))
    assert (info.value.errno, info.value.strerror) == (errno.EACCES, why)
    with pytest.raises(ConnectorError) as info:
        ClientConnection().receive_welcome(Datagram(b'{"errno":13}'))
    assert info.value.strerror == "refused"


@pytest.mark.parametrize("data", [b"{}", b'{"hello": 1}', b'{"hello": {}}', b""])
def test_client_a_welcome_that_is_not_one_is_a_wire_error(data):
    client = ClientConnection()
    with pytest.raises(WireError):
        client.receive_welcome(Datagram(data))
    assert client.welcome is None


def test_client_numbers_requests_from_one():
    client = welcomed()
    first = client.send_request("list")
    second = client.send_request("call", (5, 6), handle=1, function=2, data="")
    assert json.loads(first.data) == {"op": "list", "seq": 1}
    assert json.loads(second.data) == {
        "op": "call",
        "seq": 2,
        "handle": 1,
        "function": 2,
        "data": "",
    }
    assert (first.fds, second.fds) == ((), (5, 6))


def test_client_a_request_too_big_to_send_changes_nothing():
    client = welcomed()
    before = state(client)
    with pytest.raises(WireError):
        client.send_request("call", data="a" * MAX_MESSAGE)
    assert state(client) == before
    assert json.loads(client.send_request("list").data)["seq"] == 1


def test_client_matches_the_reply_to_the_request_it_waits_for():
    client = welcomed()
    request = client.send_request("list")
    heard = client.receive(reply_to(request, {"interfaces": [{"id": 0, "type": "t"}]}))
    assert isinstance(heard, Reply)
    assert interface_entries(heard.result()) == [InterfaceEntry(0, "t")]
    # the same reply again, or one to no request, is nobody's
    assert isinstance(client.receive(reply_to(request, {})), Stray)


def test_client_a_late_reply_to_an_abandoned_request_is_stray_with_its_fds():
    client = welcomed()
    abandoned = client.send_request("open", id=0, version=1)
    current = client.send_request("list")
    late = client.receive(reply_to(abandoned, {"handle": 1}, fds=(9,)))
    assert late == Stray({"handle": 1, "seq": 1}, (9,))
    assert isinstance(client.receive(reply_to(current, {"interfaces": []})), Reply)


def test_client_events_before_a_reply_are_queued_in_order():
    client = welcomed()
    request = client.send_request("stats", handle=1)
    heard = [
        client.receive(event("add", 1)),
        client.receive(event("drop", 0)),
        client.receive(reply_to(request, {"stats": {}})),
        client.receive(event("add", 2)),
    ]
    assert heard[:2] == [Event("add", 1, "virtual-ethernet"), Event("drop", 0, "virtual-ethernet")]
    assert isinstance(heard[2], Reply) and heard[2].result() == {"stats": {}, "seq": 1}
    assert client.has_events
    assert client.next_event_nowait() == Event("add", 1, "virtual-ethernet")
    assert client.events_nowait() == [
        Event("drop", 0, "virtual-ethernet"),
        Event("add", 2, "virtual-ethernet"),
    ]
    assert client.events_nowait() == [] and client.next_event_nowait() is None


@pytest.mark.parametrize(
    "message",
    [
        {"event": "moved", "id": 1, "type": "t"},
        {"event": "add", "id": "1", "type": "t"},
        {"event": "add", "id": True, "type": "t"},
        {"event": "add", "id": 1},
        {"event": "fault", "id": 1, "type": "t", "message": 3},
    ],
)
def test_client_a_bad_event_changes_nothing(message):
    client = welcomed()
    request = client.send_request("list")
    client.receive(event("add", 1))
    before = state(client)
    with pytest.raises(WireError, match="not an event"):
        client.receive(Datagram(protocol_module.encode(message)))
    assert state(client) == before
    assert isinstance(client.receive(reply_to(request, {"interfaces": []})), Reply)


def test_client_a_bad_datagram_changes_nothing():
    client = welcomed()
    request = client.send_request("list")
    before = state(client)
    for bad in (Datagram(b"junk"), Datagram(b'{"seq":1}', truncated=True)):
        with pytest.raises(WireError):
            client.receive(bad)
        assert state(client) == before
    assert isinstance(client.receive(reply_to(request, {"interfaces": []})), Reply)


def test_client_an_event_that_brings_fds_is_queued_and_its_fds_handed_back():
    client = welcomed()
    heard = client.receive(Datagram(daemon.event("add", 1, "t"), (4,)))
    assert isinstance(heard, Stray) and heard.fds == (4,)
    assert client.events_nowait() == [Event("add", 1, "t")]


def test_client_hang_up_is_closed():
    client = welcomed()
    client.send_request("list")
    assert client.receive(Datagram(b"")) == Closed()
    assert client.closed


@pytest.mark.parametrize(
    "code", [errno.EACCES, errno.EPERM, errno.EBUSY, errno.ENODEV, errno.EINVAL, errno.EBADF]
)
def test_errno_travels_from_the_daemon_to_the_caller(code):
    client = welcomed()
    request = client.send_request("call", handle=1, function=9, data="")
    heard = client.receive(reply_to(request, error_fields(code, "why not")))
    assert isinstance(heard, Reply)
    with pytest.raises(ConnectorError) as info:
        heard.result()
    assert (info.value.errno, info.value.strerror) == (code, "why not")
    assert isinstance(info.value, OSError)


def test_errno_without_a_message_is_an_empty_one():
    with pytest.raises(ConnectorError) as info:
        Reply({"errno": errno.ENOENT, "seq": 1}).result()
    assert (info.value.errno, info.value.strerror) == (errno.ENOENT, "")


@given(
    st.lists(st.sampled_from(["event", "stray"]), max_size=20),
    st.lists(st.sampled_from(["event", "stray"]), max_size=20),
)
def test_client_gets_its_reply_and_every_event_in_order_whatever_comes_between(before, after):
    client = welcomed()
    abandoned = client.send_request("list")
    request = client.send_request("stats", handle=1)
    sent: list[Event] = []
    replies = 0

    def deliver(what: str) -> None:
        if what == "event":
            sent.append(Event("add", len(sent), "virtual-ethernet"))
            assert client.receive(event("add", len(sent) - 1)) == sent[-1]
        else:
            assert isinstance(client.receive(reply_to(abandoned, {})), Stray)

    for what in before:
        deliver(what)
    heard = client.receive(reply_to(request, {"stats": {"n": 1}}))
    assert isinstance(heard, Reply) and heard.result()["stats"] == {"n": 1}
    replies += 1
    for what in after:
        deliver(what)
    assert client.events_nowait() == sent and replies == 1


# -- fds beside a datagram ---------------------------------------------------------


def test_rights_build_the_ancillary_data_for_fds():
    assert rights([]) == []
    ((level, kind, payload),) = rights([3, 4])
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    assert array.array("i", payload).tolist() == [3, 4]


def test_received_collects_every_fd_and_notices_truncation():
    payload = array.array("i", [5, 6]).tobytes()
    ancillary = [
        (socket.SOL_SOCKET, socket.SCM_RIGHTS, payload),
        (socket.SOL_SOCKET, socket.SCM_CREDENTIALS, bytes(12)),  # not fds: ignored
        (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [7]).tobytes() + b"\x00"),
    ]
    assert received((b"{}", ancillary, 0, None)) == Datagram(b"{}", (5, 6, 7))
    assert received((b"{}", [], socket.MSG_CTRUNC, None)).truncated
    assert received((b"{}", [], socket.MSG_CTRUNC, None)).fds_cut
    assert received((b"{}", [], socket.MSG_TRUNC, None)).truncated
    both = received((b"{}", [], socket.MSG_TRUNC | socket.MSG_CTRUNC, None))
    assert both.truncated and not both.fds_cut  # too long first of all
    assert MAX_FDS >= 4  # a queue's four fds fit


# -- what the core may import --------------------------------------------------------

IO_MODULES = {"os", "socket", "select", "trio", "pyfuse3", "cffi", "subprocess", "io", "fcntl"}


def imports_of(module: object) -> set[str]:
    source = pathlib.Path(module.__file__).read_text()  # type: ignore[attr-defined]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(("." * node.level) + node.module.split(".")[0])
    return found


def test_protocol_core_imports_nothing_that_does_io():
    assert imports_of(protocol_module) & IO_MODULES == set()
    assert not {name for name in imports_of(protocol_module) if name.startswith(("vbusfs", "."))}


def test_venet_abi_module_imports_nothing():
    assert imports_of(venet_module) == {"__future__"}
