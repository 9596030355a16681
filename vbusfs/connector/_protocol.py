"""The connector protocol, with no I/O: datagrams in, messages and events out.

One core for both roles, as h11 has one connection core for client and
server: framing and its limits, sequence numbers, reply matching, the queue of
events heard while waiting for a reply, file descriptors travelling with a
message, and the errno a refusal carries. The daemon's server (`_server`) and
both client faces (`vbusfs.client`, sync and trio) are thin I/O shells over it.

The wire: one JSON object per SOCK_SEQPACKET datagram, at most MAX_MESSAGE
bytes. File descriptors (a queue's ring, data segment and wake-up fds, an open
interface's hang-up socket) travel beside a message as SCM_RIGHTS; bytes
(device call data) travel as base64 text. The daemon speaks first: `hello`,
or an errno and why. Requests carry `op` and a `seq` their reply repeats;
a refused request's reply carries `errno` and `message`; events carry `event`.

How a client finds the daemon: the mount's root directory has the extended
attribute `user.vbusfs.connector`, whose value is the path of the daemon's
socket. It works from any mount namespace that sees the mount.

This module must never do I/O: no sockets, no trio, no os. File descriptors
are plain integers handed back to the shell, which sends, keeps or closes them.
"""

from __future__ import annotations

import base64
import errno
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypeGuard

XATTR = "user.vbusfs.connector"
MAX_MESSAGE = 65536
MAX_FDS = 8
# 2: a queue's fourth fd (what wakes north) is a Unix datagram socket, not an
#    eventfd; the third must be an eventfd not in semaphore mode; data segments
#    over 64 MiB are refused (behaviour §7.2, §7.3)
# 3: `fault` events (with a `message`); a `queue` request may name the ring's
#    `direction`, checked against the class's declared queues (behaviour §7.5)
# 4: `device` events: a device tells its client something (`kind`, `data`), e.g. a
#    venet's carrier (behaviour §7.1, §7.4)
PROTOCOL = 4

CLOSED = "the daemon closed the connection"
#: seconds a client waits for the daemon's answer unless told otherwise
DEFAULT_TIMEOUT = 5.0


class WireError(Exception):
    """A message that is not one: the peer broke the protocol.

    `errno` is what the daemon's refusal of such a request carries (EINVAL unless
    said otherwise, EMSGSIZE for a message over the limit).
    """

    def __init__(self, message: str, code: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.errno = code


class ConnectorError(OSError):
    """The daemon refused a request; `errno` says why."""


class ConnectorTimeout(ConnectorError, TimeoutError):
    """The daemon did not answer in time (stopped, wedged or overloaded): ETIMEDOUT."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(errno.ETIMEDOUT, f"the daemon did not answer {what} within {timeout:g} s")


# -- framing -------------------------------------------------------------------


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes is over {MAX_MESSAGE}", errno.EMSGSIZE)
    return data


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"not a connector message: {exc}") from None
    except RecursionError:
        # json nests by recursion: a deep enough nesting is a bad message, not a bug
        raise WireError("not a connector message: nested too deeply") from None
    if not isinstance(message, dict):
        raise WireError("a connector message is a JSON object")
    return message


def pack_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unpack_bytes(text: Any) -> bytes:
    if not isinstance(text, str):
        raise WireError("bytes travel as base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise WireError(f"bad base64: {exc}") from None


@dataclass(frozen=True, slots=True)
class Datagram:
    """One datagram as the socket gives or takes it: bytes and the fds beside them.

    `truncated`: the kernel cut the bytes or the fds short (MSG_TRUNC, MSG_CTRUNC);
    `fds_cut`: only the fds (MSG_CTRUNC alone): more than MAX_FDS were sent, or the
    receiver had no descriptor left to take them with.
    """

    data: bytes
    fds: tuple[int, ...] = ()
    truncated: bool = False
    fds_cut: bool = False


def _message(datagram: Datagram) -> dict[str, Any]:
    if datagram.fds_cut:
        if len(datagram.fds) >= MAX_FDS:
            raise WireError(f"at most {MAX_FDS} file descriptors travel with a message")
        # the ancillary buffer had room: the kernel could not install them here
        raise WireError(
            "out of file descriptors: the message's could not be received", errno.EMFILE
        )
    if datagram.truncated:
        raise WireError("a message was too long", errno.EMSGSIZE)
    return decode(datagram.data)


# -- errno <-> reply -----------------------------------------------------------


def error_fields(code: int, message: str) -> dict[str, Any]:
    """What a refusal carries: the errno for the caller's OSError, and why."""
    return {"errno": code, "message": message}


def _raise_if_refused(message: dict[str, Any], default: str) -> None:
    if "errno" in message:
        raise ConnectorError(message["errno"], message.get("message", default))


# -- what the client side hears ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """The daemon's `hello`: who this process is to it."""

    bus: str | None  # None: an administrator on no bus
    admin: bool
    pid: int | None
    protocol: int | None


@dataclass(frozen=True, slots=True)
class InterfaceEntry:
    """An interface on the caller's bus, as `list` gives it."""

    id: int
    type: str


#: the kinds of event a client hears
EVENT_KINDS = ("add", "drop", "fault", "device")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to an interface of the caller's bus. `kind`: 'add' or
    'drop' (linked to or unlinked from the bus), 'fault' (the device's loop failed
    while this client had it open: its calls now fail with EIO; `message` says why), or
    'device' (the device this client has open told it something: `device_kind` says
    what, `data` the details, e.g. venet's 'linkstate' with {"up": True})."""

    kind: str
    interface_id: int
    interface_type: str
    message: str = ""
    device_kind: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """The reply to the request being waited for; `result()` raises if it was refused."""

    message: dict[str, Any]
    fds: tuple[int, ...] = ()

    def result(self) -> dict[str, Any]:
        _raise_if_refused(self.message, "")
        return self.message


@dataclass(frozen=True, slots=True)
class Stray:
    """A message nobody waits for (a reply to an abandoned request): its fds are the shell's
    to close."""

    message: dict[str, Any]
    fds: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer hung up."""

    fds: tuple[int, ...] = ()


Heard = Reply | Event | Stray | Closed


@dataclass(eq=False)
class ClientConnection:
    """The client's side: numbers requests, matches replies, queues events.

    One request is awaited at a time; a newer request abandons an older one,
    whose late reply then arrives as a `Stray`.
    """

    welcome: Welcome | None = None
    closed: bool = False
    _seq: int = 0
    _awaiting: int | None = None
    _events: deque[Event] = field(default_factory=deque)

    def receive_welcome(self, datagram: Datagram) -> Welcome:
        """The daemon's first message; ConnectorError if it refuses this process."""
        hello = _message(datagram)
        _raise_if_refused(hello, "refused")
        body = hello.get("hello")
        if not isinstance(body, dict) or "bus" not in body:
            raise WireError("the daemon's first message is its hello")
        self.welcome = Welcome(
            bus=body["bus"],
            admin=body.get("admin", False),
            pid=body.get("pid"),
            protocol=body.get("protocol"),
        )
        return self.welcome

    def send_request(self, op: str, fds: tuple[int, ...] = (), **fields: Any) -> Datagram:
        """The datagram that asks `op`; its reply is the one `receive` now waits for."""
        data = encode({"op": op, "seq": self._seq + 1, **fields})
        self._seq += 1
        self._awaiting = self._seq
        return Datagram(data, tuple(fds))

    def receive(self, datagram: Datagram) -> Heard:
        """What one datagram from the daemon means; an event is also queued."""
        if not datagram.data:
            self.closed = True
            return Closed(datagram.fds)
        message = _message(datagram)
        if "event" in message:
            event = _event(message)
            self._events.append(event)
            if datagram.fds:
                return Stray(message, datagram.fds)
            return event
        if self._awaiting is not None and message.get("seq") == self._awaiting:
            self._awaiting = None
            return Reply(message, datagram.fds)
        return Stray(message, datagram.fds)

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def next_event_nowait(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events_nowait(self) -> list[Event]:
        """Every event queued so far, oldest first; the queue is left empty."""
        taken = list(self._events)
        self._events.clear()
        return taken


def _event(message: dict[str, Any]) -> Event:
    kind, interface_id, interface_type = message["event"], message.get("id"), message.get("type")
    text = message.get("message", "")
    device_kind, data = message.get("kind", ""), message.get("data", {})
    if (
        kind not in EVENT_KINDS
        or not _is_int(interface_id)
        or not isinstance(interface_type, str)
        or not isinstance(text, str)
        or not isinstance(device_kind, str)
        or not isinstance(data, dict)
    ):
        raise WireError(f"not an event: {message!r}")
    return Event(kind, interface_id, interface_type, text, device_kind, data)


def interface_entries(reply: dict[str, Any]) -> list[InterfaceEntry]:
    """The interfaces a `list` reply names."""
    return [InterfaceEntry(i["id"], i["type"]) for i in reply["interfaces"]]


# -- what the daemon side hears -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One request from a client. `seq` is echoed whatever it is; the fds are the shell's
    to close once the request is served."""

    op: Any
    seq: Any
    fields: dict[str, Any]
    fds: tuple[int, ...] = ()

    def integer(self, key: str) -> int:
        value = self.fields.get(key)
        if not _is_int(value):
            raise WireError(f"{key} must be an integer")
        return value

    def data(self, key: str = "data") -> bytes:
        return unpack_bytes(self.fields.get(key, ""))

    def text(self, key: str, complaint: str) -> str:
        value = self.fields.get(key)
        if not isinstance(value, str):
            raise WireError(complaint)
        return value


class DaemonConnection:
    """The daemon's side of one client: reads requests, frames replies and events.

    It holds no state: the client numbers its requests and the daemon repeats them.
    """

    def hello(self, bus: str | None, pid: int, admin: bool) -> bytes:
        return encode({"hello": {"bus": bus, "pid": pid, "admin": admin, "protocol": PROTOCOL}})

    def refuse(self, code: int, message: str) -> bytes:
        """Instead of `hello`: why this peer may not connect."""
        return encode(error_fields(code, message))

    def receive(self, datagram: Datagram) -> Request | Closed:
        """The request one datagram carries; WireError if it is none."""
        if not datagram.data and not datagram.truncated:
            return Closed(datagram.fds)
        message = _message(datagram)
        seq, op = message.get("seq"), message.get("op")
        # seq is echoed: only a number, so a reply can never be bigger or deeper than asked
        if not (_is_int(seq) and -(2**63) <= seq < 2**63):
            raise WireError("seq must be a 64-bit integer")
        if not isinstance(op, str):
            raise WireError("op must be a string")
        return Request(op, seq, message, datagram.fds)

    def reply(self, request: Request, fields: dict[str, Any]) -> bytes:
        return encode({**fields, "seq": request.seq})

    def refusal(self, seq: Any, code: int, message: str) -> bytes:
        """The reply refusing a request (`seq` None when the datagram was no request)."""
        return encode({**error_fields(code, message[:1024]), "seq": seq if _is_int(seq) else None})

    def event(self, kind: str, interface_id: int, interface_type: str, message: str = "") -> bytes:
        event: dict[str, Any] = {"event": kind, "id": interface_id, "type": interface_type}
        if message:
            event["message"] = message[:1024]
        return encode(event)

    def device_event(
        self, interface_id: int, interface_type: str, kind: str, data: dict[str, Any]
    ) -> bytes:
        """A device's own event for its client (`kind` and JSON `data` are the device's)."""
        event = {"event": "device", "id": interface_id, "type": interface_type}
        return encode({**event, "kind": kind[:64], "data": data})


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
