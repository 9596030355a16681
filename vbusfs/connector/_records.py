"""Monitor records, with no I/O: the model's changes as the lines `vbusfs monitor` prints.

A monitor is a connector connection that asked `monitor`: from then on the daemon sends it
every change on the mount as records, several to a datagram, `{"records": [...]}`. Each
record is a JSON object with `seq` (counting from 1 per monitor), `time` (the daemon's
clock, seconds since the epoch), `event` (its kind) and the kind's fields:

| event | fields |
|---|---|
| created, removed | object ("device" or "bus"), name |
| type | device, class |
| linked, unlinked | bus, interface (its id), device, link |
| stored, changed | device, or bus and interface; attribute (changed: said by its class) |
| perm | bus, attribute (a store in perms/) |
| joined, left | bus, pid, how ("write", "fork", "exit", "moved") |
| opened, closed | bus, interface, device, pid (the client's process) |
| loaded, unloaded | class |
| unmounted | mountpoint: the last record |
| dropped | count, first: the monitor fell behind; records first .. first+count-1 are lost |
| revoked | why: a member's monitor whose process left its bus: the last record |

Who hears what is decided here too (`Scope`): the daemon's owner and root hear every
record; a member process hears the records of its own bus (and the unmount).

`Backlog` is a monitor's bounded buffer: it never refuses and never grows past its
capacity; what does not fit is counted and reported in order as one `dropped` record, so
every change is either seen or counted. This module must never do I/O, nor know the
model (the client side reads records with it): `_monitor` turns changes into records,
passes the time in and moves the bytes.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._protocol import MAX_MESSAGE, WireError, decode

#: records a monitor holds before it counts what it cannot hold as dropped
BUFFER = 4096
#: what a batch datagram holds at most (a margin under MAX_MESSAGE)
BATCH_BYTES = MAX_MESSAGE // 2
#: the record kinds after which a monitor ends
FINAL = ("unmounted", "revoked")
#: a record's audience: None, the administrators alone; EVERYONE; else these buses' members
Audience = frozenset[str] | None
EVERYONE: frozenset[str] = frozenset({"\0everyone"})


@dataclass(frozen=True, slots=True)
class Scope:
    """What one monitor hears: everything (`bus` None, an administrator) or its bus."""

    bus: str | None

    def hears(self, audience: Audience) -> bool:
        if self.bus is None or audience is EVERYONE:
            return True
        return audience is not None and self.bus in audience


_encode = json.JSONEncoder(separators=(",", ":")).encode


def body(record: dict[str, Any], time: float) -> str:
    """A record's JSON text without its seq (shared by every monitor that hears it)."""
    return f'{{"time":{time:.6f},{_encode(record)[1:]}'


class Body:
    """A record and its time, made into its text (`body`) only when first sent: a record
    dropped costs no encoding, and every monitor that hears it shares one."""

    __slots__ = ("_text", "record", "time")

    def __init__(self, record: dict[str, Any], time: float) -> None:
        self.record = record
        self.time = time
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = body(self.record, self.time)
        return self._text


class Backlog:
    """One monitor's bounded buffer of records, in order; never blocks, never grows past
    `capacity`.

    `push` numbers every record it is given, kept or not; one that finds the buffer full
    is counted, and the count is reported as a `dropped` record in its place in the order
    (before the next record kept, or at the end of what `pack` takes).
    """

    def __init__(self, capacity: int = BUFFER) -> None:
        if capacity < 2:
            raise ValueError("a backlog holds at least 2 records")
        self.capacity = capacity
        # (seq, body); seq 0: a dropped record
        self._queue: deque[tuple[int, str | Body]] = deque()
        self.seq = 0  # the last number given
        self._dropped = 0  # lost since the last dropped record
        self._first = 0  # the first of them
        self.lost = 0  # in all

    @property
    def pending(self) -> bool:
        """Is there anything to send (records, or a count of dropped ones)?"""
        return bool(self._queue or self._dropped)

    def __len__(self) -> int:
        """The records held (a count of dropped ones waiting to be reported is not one)."""
        return len(self._queue)

    def push(self, text: str | Body, *, final: bool = False) -> bool:
        """Take one record's body (`body`, or a `Body` to encode when sent); False if it
        was counted as dropped. A `final`
        record (the last a monitor hears) is always kept, past the capacity if need be."""
        self.seq += 1
        need = 2 if self._dropped else 1
        if len(self._queue) + need > self.capacity and not final:
            if not self._dropped:
                self._first = self.seq
            self._dropped += 1
            self.lost += 1
            return False
        self._mark_dropped()
        self._queue.append((self.seq, text))
        return True

    def _mark_dropped(self) -> None:
        if self._dropped:
            marker = json.dumps({"event": "dropped", "count": self._dropped, "first": self._first})
            self._queue.append((0, marker))
            self._dropped = 0

    def pack(self, limit: int = BATCH_BYTES) -> bytes | None:
        """The next datagram (`{"records": [...]}`, at most `limit` bytes but always at
        least one record), its records taken out; None when there is nothing to send."""
        if not self._queue:
            self._mark_dropped()
        if not self._queue:
            return None
        parts: list[str] = []
        size = len('{"records":[]}')
        while self._queue:
            seq, item = self._queue[0]
            text = item if isinstance(item, str) else item.text
            part = f'{{"seq":{seq},{text[1:]}' if seq else text
            if parts and size + len(part) + 1 > limit:
                break
            self._queue.popleft()
            parts.append(part)
            size += len(part) + 1
            if not self._queue:
                self._mark_dropped()
        return ('{"records":[' + ",".join(parts) + "]}").encode()


# -- the client side -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record as a monitor receives it: `seq` (None for a dropped record), `time`,
    `event` and the kind's `fields`."""

    event: str
    seq: int | None = None
    time: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {} if self.seq is None else {"seq": self.seq}
        if self.time is not None:
            found["time"] = self.time
        return {**found, "event": self.event, **self.fields}

    @property
    def final(self) -> bool:
        return self.event in FINAL

    def line(self) -> str:
        """The record as one line: `[time] event key=value ...` (values quoted as JSON
        strings where they hold a space, a quote or anything unprintable)."""
        when = f"[{self.time:.6f}]" if self.time is not None else "[-]"
        # in the order the daemon gave them (the table's, above)
        words = " ".join(f"{key}={_word(value)}" for key, value in self.fields.items())
        return f"{when} {self.event:<9} {words}".rstrip()


# a value that needs no quoting on a line: no space, quote, `=` or backslash
_PLAIN = re.compile(r'[^\s"=\\]+')


def _word(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if not _PLAIN.fullmatch(text) or not text.isprintable():
        return json.dumps(text)
    return text


def decode_records(data: bytes) -> list[Record]:
    """The records one datagram from the daemon carries; WireError if it carries none."""
    message = decode(data)
    found = message.get("records")
    if not isinstance(found, list):
        raise WireError("a monitor datagram carries records")
    return [_record(item) for item in found]


def _record(item: Any) -> Record:
    if not isinstance(item, dict):
        raise WireError("a record is a JSON object")
    fields = dict(item)
    event, seq, time = fields.pop("event", None), fields.pop("seq", None), fields.pop("time", None)
    if not isinstance(event, str):
        raise WireError(f"a record names its event: {item!r:.200}")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise WireError(f"a record's seq is an integer: {item!r:.200}")
    if time is not None and not isinstance(time, int | float):
        raise WireError(f"a record's time is a number: {item!r:.200}")
    return Record(event, seq, time, fields)


def lost_between(records: Iterable[Record]) -> int:
    """How many records the dropped records among `records` count."""
    return sum(r.fields.get("count", 0) for r in records if r.event == "dropped")
