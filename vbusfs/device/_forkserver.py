"""The fork server: a clean process the daemon execs once, which forks device workers.

    python -m vbusfs.device._forkserver FD

FD is a SOCK_SEQPACKET socket to the daemon. Each `spawn` request carries a pickled
recipe (module, factory, args, kwargs; the daemon's own, never a client's) and file
descriptors: the worker's end of its control channel, then the recipe's. The server
imports the recipe's module (once; again when its source file changed since, as after
`vbusfs modprobe --reload`), forks, and answers `spawned` with the worker's pid and a
pidfd of it (or `error` with an errno and why). The worker runs `_worker.run` and
exits. The server never waits for its workers (SIGCHLD is ignored: the kernel reaps
them), holds no trio loop and no FUSE session, and exits when the daemon's end closes.
"""

from __future__ import annotations

import contextlib
import errno
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


def factory_of(module_name: str, name: str) -> Any:
    module, mtime = _imported.get(module_name, (None, 0.0))
    if module is None:
        module = importlib.import_module(module_name)
    elif _source_mtime(module) != mtime:
        module = importlib.reload(module)
    _imported[module_name] = module, _source_mtime(module)
    factory = getattr(module, name)
    if not callable(factory):
        raise TypeError(f"{module_name}.{name} is not callable")
    return factory


def spawn(sock: socket.socket, header: dict[str, Any], payload: bytes, fds: list[int]) -> None:
    reply: dict[str, Any] = {"op": "spawned", "id": header.get("id")}
    if len(fds) < 1:
        send(sock, {**reply, "op": "error", "errno": errno.EINVAL, "message": "no control fd"})
        return
    control, recipe_fds = fds[0], fds[1:]
    try:
        module, name, args, kwargs, nice, attributes = pickle.loads(payload)
        factory = factory_of(module, name)
    except Exception as exc:
        close_all(fds)
        message = f"cannot load the worker factory: {exc!r}"[:512]
        send(sock, {**reply, "op": "error", "errno": errno.ENOEXEC, "message": message})
        return
    try:
        pid = os.fork()
    except OSError as exc:
        close_all(fds)
        send(sock, {**reply, "op": "error", "errno": exc.errno, "message": str(exc)})
        return
    if pid == 0:  # the worker
        status = 1
        try:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            status = run(
                control,
                factory,
                tuple(args),
                dict(kwargs),
                recipe_fds,
                int(nice),
                frozenset(attributes),
            )
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(status)
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


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon's ^C is the daemon's
    while True:
        try:
            header, payload, fds = receive(sock)
        except (EOFError, OSError):
            return 0
        except Exception:
            traceback.print_exc()
            continue
        if header["op"] == "spawn":
            spawn(sock, header, payload, fds)
        else:
            close_all(fds)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
