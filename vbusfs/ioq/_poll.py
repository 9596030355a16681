"""poll_ready: spin on a ring in C, never sleeping, for callers that sleep elsewhere.

A device loop on a shared event loop (the venet classes, whose `burstthresh` says how
long to poll) spins here first, and sleeps in its own event loop only if this found
nothing, so it can tell a wait met by polling from one that slept.
"""

from __future__ import annotations

import time
from typing import Literal

from ._binding import E_TIMEDOUT, RECV, SEND, check, lib
from ._ring import Ring, c_handle


def poll_ready(ring: Ring, op: Literal["receive", "send"], spin_us: int) -> bool:
    """Spin up to ``spin_us`` µs (in C, the GIL held) until a receive (or a send) on
    ``ring`` could proceed; True if it can.  Never sleeps; IoqClosed or IoqFault as the
    ring's waits raise them."""
    if isinstance(spin_us, bool) or not isinstance(spin_us, int) or spin_us < 0:
        raise ValueError(f"spin_us must be an int >= 0, not {spin_us!r}")
    h, code = c_handle(ring), RECV if op == "receive" else SEND
    deadline = time.perf_counter() + spin_us / 1e6
    while True:
        left = int((deadline - time.perf_counter()) * 1e6)
        if left <= 0:
            return bool(check(lib.ioq_ready(h, code)))
        rc = lib.ioq_wait(h, code, 0, left)
        if rc == E_TIMEDOUT:
            return False
        check(rc)
        # a wait also ends on a wake-up left over from earlier (its count is drained
        # now): only a ring that is ready ends the poll
        if check(lib.ioq_ready(h, code)):
            return True
