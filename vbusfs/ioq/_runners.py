"""What the ring runners on C threads (`TapRunner`, `SwitchRunner`) share: their stop.

A runner owns a C thread that uses its rings; the thread must stop before the interpreter
frees them. `CThreadRunner` keeps every running runner in one registry, stops those still
running at interpreter exit, and gives each `close` (idempotent) and `__del__`; a runner
says how its thread is stopped and joined (`_free`) and calls `_track` once it runs.
"""

from __future__ import annotations

import atexit
import weakref

#: runners still running: stopped before the interpreter frees what their threads use
_LIVE: weakref.WeakSet[CThreadRunner] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for runner in list(_LIVE):
        runner.close()


class CThreadRunner:
    """The stop of a runner whose thread is C's."""

    _open = False  # until `_track`: a runner whose thread never started has nothing to stop

    def _track(self) -> None:
        """The thread runs: stopped by `close`, by `__del__` or at interpreter exit."""
        self._open = True
        _LIVE.add(self)

    def _free(self) -> None:
        """Stop and join the thread, free its state (called once)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop and join the thread; idempotent."""
        if self._open:
            self._open = False
            _LIVE.discard(self)
            self._free()

    def __del__(self) -> None:
        self.close()
