"""The fork server: a clean process the daemon execs once, which forks device workers.

    python -m vbusfs.device._forkserver FD

FD is a SOCK_SEQPACKET socket to the daemon. A `spawn` request carries one file
descriptor, the worker's end of its control channel (`_control`); the server forks a
worker and answers `spawned` with its pid and a pidfd of it (or `error` with an errno
and why). The worker waits on its channel for its first message, `recipe`: a pickled
(module, factory, args, kwargs, nice, the attribute names its connection may
`notify`; the daemon's own, never a client's) with the recipe's fds beside it. It
imports the factory (again when its source changed since, as after `vbusfs modprobe
--reload`), runs `_worker.run` and exits. So the daemon can ask for a worker before it
has anything for it to do (it keeps one forked ahead of the next open), and an open
waits for no fork.

A `preload` message (a module name, no answer) imports a module here, so that the
workers forked after it hold it already, and freezes what the server has imported out
of the garbage collector's reach (`gc.freeze`), so a worker does not copy the pages
the server's objects live on when it collects.

The server never waits for its workers (SIGCHLD is ignored: the kernel reaps them),
holds no trio loop and no FUSE session, and exits when the daemon's end closes.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import os
import pickle
import signal
import socket
import sys
import traceback
from types import ModuleType
from typing import Any

from ._control import close_all, receive, send
from ._worker import run

_imported: dict[str, tuple[ModuleType, float]] = {}


def _source_mtime(module: ModuleType) -> float:
    path = getattr(module, "__file__", None)
    try:
        return os.stat(path).st_mtime if path else 0.0
    except OSError:
        return 0.0


def module_of(module_name: str) -> ModuleType:
    """`module_name` imported, or reloaded if its source changed since it was."""
    module, mtime = _imported.get(module_name, (None, 0.0))
    if module is None:
        module = importlib.import_module(module_name)
    elif _source_mtime(module) != mtime:
        module = importlib.reload(module)
    _imported[module_name] = module, _source_mtime(module)
    return module


def factory_of(module_name: str, name: str) -> Any:
    factory = getattr(module_of(module_name), name)
    if not callable(factory):
        raise TypeError(f"{module_name}.{name} is not callable")
    return factory


def spawn(sock: socket.socket, header: dict[str, Any], fds: list[int]) -> None:
    reply: dict[str, Any] = {"op": "spawned", "id": header.get("id")}
    if len(fds) != 1:
        close_all(fds)
        send(sock, {**reply, "op": "error", "errno": errno.EINVAL, "message": "one fd"})
        return
    try:
        pid = os.fork()
    except OSError as exc:
        close_all(fds)
        send(sock, {**reply, "op": "error", "errno": exc.errno, "message": str(exc)})
        return
    if pid == 0:  # the worker
        sock.close()
        worker_life(fds[0])
    close_all(fds)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:  # it is gone already (and reaped)
        send(sock, {**reply, "op": "error", "errno": exc.errno, "message": "the worker died"})
        return
    try:
        send(sock, {**reply, "pid": pid}, b"", [pidfd])
    finally:
        os.close(pidfd)


def worker_life(control: int) -> None:
    """A forked worker: wait for the recipe on `control`, run it, exit."""
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        chan = socket.socket(fileno=control)
        try:
            header, payload, fds = receive(chan)
        except (EOFError, OSError):
            os._exit(0)  # let go before it had anything to do
        if header.get("op") != "recipe":
            close_all(fds)
            raise ValueError(f"a worker's first message is its recipe, not {header['op']!r}")
        try:
            module, name, args, kwargs, nice, attributes = pickle.loads(payload)
            factory = factory_of(module, name)
        except Exception as exc:
            close_all(fds)
            message = f"cannot load the worker factory: {exc!r}"[:512]
            with contextlib.suppress(OSError):
                send(chan, {"op": "ended", "kind": "error", "message": message})
            os._exit(1)
        chan.detach()  # run() makes the channel its own
        status = run(
            control, factory, tuple(args), dict(kwargs), fds, int(nice), frozenset(attributes)
        )
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(status)


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon's ^C is the daemon's
    gc.freeze()
    while True:
        try:
            header, _, fds = receive(sock)
        except (EOFError, OSError):
            return 0
        except Exception:
            traceback.print_exc()
            continue
        if header["op"] == "spawn":
            try:
                spawn(sock, header, fds)
            except OSError:  # the daemon went while it forked (its end closed): so do we
                return 0
            continue
        close_all(fds)
        if header["op"] == "preload":
            try:
                module_of(str(header.get("module")))
            except Exception:
                traceback.print_exc()
            gc.freeze()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
