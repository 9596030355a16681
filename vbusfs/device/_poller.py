"""A stand-in for `vbusfs.ioq.Poller` until the ring branch provides it.

Same interface (``add``, ``wait``, ``wait_async``, ``close``), far simpler
inside: one registration waits in C on that ring (the GIL released); several
are polled in turn, each waited on for a millisecond. It is correct, never
fast; `vbusfs.ioq.Poller` replaces it (one epoll fd, registrations kept).
"""

from __future__ import annotations

from typing import Literal

from vbusfs.ioq import Ioq, IoqClosed

Op = Literal["receive", "send"]
ALL = -1
_SLICE = 0.001


class Poller:
    """Waits on several (ring, op) pairs in one blocking call."""

    def __init__(self, spin_us: int | str = 0, adaptive: bool = False) -> None:
        self.spin_us = 0 if spin_us == "adaptive" else int(spin_us)
        self._entries: list[tuple[Ioq, Op]] = []

    def add(self, ring: Ioq, op: Op) -> int:
        """Watch `op` ("receive" or "send") on `ring`; the bit `wait` reports it by."""
        if op not in ("receive", "send"):
            raise ValueError(f"op must be 'receive' or 'send', not {op!r}")
        self._entries.append((ring, op))
        return 1 << (len(self._entries) - 1)

    def _ready(self, mask: int) -> int:
        found = 0
        for bit, (ring, op) in self._bits(mask):
            if ring.receivable() if op == "receive" else ring.sendable():
                found |= bit
        return found

    def _bits(self, mask: int) -> list[tuple[int, tuple[Ioq, Op]]]:
        return [(1 << i, e) for i, e in enumerate(self._entries) if mask & (1 << i)]

    def wait(self, timeout: float | None = None, mask: int = ALL) -> int:
        """Block until one of the pairs in `mask` is ready; their bits. TimeoutError,
        or IoqClosed once a watched peer hung up and none is ready."""
        import time

        chosen = self._bits(mask)
        if not chosen:
            raise ValueError("nothing to wait for")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready = self._ready(mask)
            if ready:
                return ready
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("nothing became ready")
            for _, (ring, op) in chosen:
                step = left if len(chosen) == 1 else _SLICE
                try:
                    if op == "receive":
                        ring.wait_receivable(step, spin_us=self.spin_us)
                    else:
                        ring.wait_sendable(step, spin_us=self.spin_us)
                except TimeoutError:
                    continue
                except IoqClosed:
                    if not self._ready(mask):
                        raise
                break

    async def wait_async(self, mask: int = ALL) -> int:
        """`wait` for trio (the stand-in polls every millisecond)."""
        import trio

        while True:
            ready = self._ready(mask)
            if ready:
                await trio.lowlevel.checkpoint()
                return ready
            await trio.sleep(_SLICE)

    def close(self) -> None:
        self._entries = []
