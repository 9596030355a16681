"""`vbusfs monitor MOUNTPOINT [--json]`: every change on a mount, as it happens.

One line (or one JSON object) per record, flushed as each batch arrives, so `| head` and
`| jq` see records as they happen. The first, `monitoring`, is printed (and flushed) once
the daemon has answered the monitor request: every change made after a script has read it
is heard, so a script waits for that line rather than guessing (behaviour §9). It ends
with status 0 at the unmount (after printing that record), on SIGINT or SIGTERM, and when
its reader goes (a broken pipe); with 1 when it may not monitor, when a member's process
leaves the bus it watched, or when the daemon goes without an unmount.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

from vbusfs._mountinfo import canonical_mountpoint
from vbusfs.connector import Record


class _Stop(Exception):
    """SIGTERM arrived: end as SIGINT ends."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@contextlib.contextmanager
def _sigterm_ends() -> Iterator[None]:
    before = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _write(out: TextIO, records: Iterator[Record] | list[Record], as_json: bool) -> None:
    for record in records:
        text = json.dumps(record.as_json()) if as_json else record.line()
        out.write(text + "\n")
    out.flush()


def listening(mountpoint: str, bus: str | None) -> Record:
    """The first record: the daemon has taken the monitor request, so every change made
    from now on is heard. It carries seq 0 (the daemon's own records count from 1) and
    `bus` only for a member's monitor (the bus it hears)."""
    fields: dict[str, str] = {"mountpoint": canonical_mountpoint(mountpoint)}
    if bus is not None:
        fields["bus"] = bus
    return Record("monitoring", seq=0, time=round(time.time(), 6), fields=fields)


def run(mountpoint: str, as_json: bool, out: TextIO | None = None) -> int:
    from vbusfs import client

    from ._admin import require_mount

    out = out if out is not None else sys.stdout
    try:
        with _sigterm_ends():
            require_mount(mountpoint)
            with client.monitor(mountpoint) as watch:
                # only now: the daemon has answered, so it hears every change from here
                _write(out, [listening(mountpoint, watch.bus)], as_json)
                while True:
                    try:
                        batch = watch.receive()
                    except client.ConnectorError:
                        print(
                            "vbusfs monitor: the daemon went away without an unmount",
                            file=sys.stderr,
                        )
                        return 1
                    _write(out, batch, as_json)
                    if watch.ended:
                        last = batch[-1]
                        if last.event == "revoked":
                            why = last.fields.get("why", "")
                            print(f"vbusfs monitor: {why}", file=sys.stderr)
                            return 1
                        return 0
    except (KeyboardInterrupt, _Stop):
        return 0
    except BrokenPipeError:
        # the reader went (`| head`): nothing more to say, and nowhere to say it
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
        return 0
    except ValueError as exc:
        print(f"vbusfs monitor: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else "failed"
        detail = f"{exc.strerror} ({reason})" if exc.strerror and exc.strerror != reason else reason
        print(f"vbusfs monitor: {detail}", file=sys.stderr)
        return 1
