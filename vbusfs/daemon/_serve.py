"""The daemon process: the one place where vbusfs is composed and served.

`build_model()` makes the model (the deviceclasses, the membership backend over
/proc, a restored configuration); `serve()` clears a stale mount left by a killed
daemon, mounts it through the FUSE adapter, starts the connector and the membership
sweep, serves until unmounted or signalled (SIGTERM, SIGINT, SIGHUP unmount
cleanly), then releases everything the model holds. `run_daemon()` is both, as
`vbusfs mount --foreground` runs them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import trio

from vbusfs import fuse
from vbusfs.classes import default_model, find_class
from vbusfs.connector import XATTR, Connector
from vbusfs.model import Vbus, VbusError, restore_config

from ._problems import (
    MountError,
    explain_mount_failure,
    fuse_problem,
    mountpoint_problem,
    stderr_captured,
)
from ._process import READY, clear_stale, ready_fd_reporter
from ._procfs import OUT_OF_FDS, ProcFs
from ._runtime import MountState, canonical_mountpoint, connector_path, ensure_runtime_dir

log = logging.getLogger("vbusfs.daemon")

SWEEP_INTERVAL = 0.5


def load_config(path: str) -> Any:
    """Read a saved configuration; ValueError says what is wrong with the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupt?): {exc}") from None


def build_model(
    load: tuple[str, ...] = (), *, restore: str | None = None, empty_on_bad_restore: bool = False
) -> Vbus:
    """The daemon's model: every discovered deviceclass plus `load`, membership over /proc,
    and the configuration saved in `restore`. MountError says what could not be done;
    with `empty_on_bad_restore` a file that cannot be restored is logged and skipped."""
    try:
        vbus = default_model(tuple(load), processes=ProcFs())
    except (ImportError, AttributeError, TypeError, ValueError, VbusError) as exc:
        raise MountError(f"cannot load a deviceclass: {exc}") from exc
    if restore:
        try:
            restore_config(vbus, load_config(restore))
        except (OSError, ValueError, VbusError) as exc:
            if not empty_on_bad_restore:
                raise MountError(f"cannot restore {restore}: {exc}") from exc
            logging.getLogger("vbusfs").warning("starting empty: %s", exc)
    return vbus


def run_daemon(
    mountpoint: str,
    *,
    load: tuple[str, ...] = (),
    restore: str | None = None,
    empty_on_bad_restore: bool = False,
    ready_fd: int | None = None,
    log_path: str | None = None,
) -> int:
    """Build the model and serve it at `mountpoint` in this process; the exit status.

    `ready_fd`, if given, hears "ok" once the mount is live or "error: ..." (then closes).
    """
    ready = ready_fd_reporter(ready_fd) if ready_fd is not None else None
    try:
        vbus = build_model(load, restore=restore, empty_on_bad_restore=empty_on_bad_restore)
    except MountError as exc:
        print(f"vbusfs mount: {exc}", file=sys.stderr)
        if ready is not None:
            ready(f"error: {exc}")
        return 1
    return serve(mountpoint, vbus=vbus, ready=ready, log_path=log_path)


def serve(
    mountpoint: str,
    *,
    vbus: Vbus | None = None,
    ready: Callable[[str], None] | None = None,
    log_path: str | None = None,
) -> int:
    """Mount and serve until unmounted or signalled. `ready` hears "ok" or an error."""
    mountpoint = canonical_mountpoint(mountpoint)
    vbus = vbus if vbus is not None else build_model()
    socket_path = connector_path(mountpoint)
    # Requests are answered only once the connector listens, so the root can name it now.
    xattrs = {XATTR.encode(): os.fsencode(socket_path)} if vbus.membership is not None else {}
    operations = fuse.VbusOperations(vbus, root_xattrs=xattrs)
    try:
        problem = fuse_problem()
        if problem is not None:
            raise MountError(problem)
        ensure_runtime_dir()  # before anything is mounted: refused, nothing to undo
        clear_stale(mountpoint)  # first: a stale mount point is not even a directory
        problem = mountpoint_problem(mountpoint)
        if problem is not None:
            raise MountError(problem)
        with stderr_captured() as libfuse_said:
            try:
                fuse.mount(operations, mountpoint)
            except RuntimeError:
                failed = True  # pyfuse3 says only which call failed; libfuse said why
            else:
                failed = False
        if failed:
            raise MountError(explain_mount_failure(mountpoint, "".join(libfuse_said)))
    except (MountError, OSError) as exc:
        message = str(exc) or type(exc).__name__
        log.error("%s", message)
        if ready is not None:
            ready(f"error: {message}")
        vbus.clear()
        return 1
    state = MountState(os.getpid(), mountpoint, log_path)
    reported: list[str] = []

    def report(message: str) -> None:
        # The readiness pipe hears one line: ready() closes it after the first.
        if ready is not None and not reported:
            ready(message)
        reported.append(message)

    try:
        entry = fuse.mount_at(mountpoint)
        operations.locations.device = entry.device if entry is not None else None
        operations.locations.mount_point = mountpoint
        state.save()
        log.info("serving %s (pid %d), connector at %s", mountpoint, os.getpid(), socket_path)
        trio.run(_serve_until_done, vbus, operations, socket_path, report)
    except Exception as exc:
        if reported:
            raise
        # Failed before it was ready: the mount is refused, with the reason, not a mystery.
        if _out_of_fds(exc):
            message = (
                f"cannot serve {mountpoint}: out of file descriptors (Too many open files); "
                "raise the daemon's limit (ulimit -n)"
            )
            log.error("%s", message)
        else:
            message = f"cannot serve {mountpoint}: {exc!r} (an internal error, see the log)"
            log.exception("%s", message)
        report(f"error: {message}")
        return 1
    finally:
        fuse.close()
        vbus.clear()
        state.remove()
        log.info("unmounted %s", mountpoint)
    return 0


async def _serve_until_done(
    vbus: Vbus,
    operations: fuse.VbusOperations,
    socket_path: str,
    ready: Callable[[str], None] | None,
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        nursery.start_soon(_sweep_members, vbus, operations)
        if vbus.membership is not None:
            await nursery.start(Connector(vbus, socket_path, find_class).serve)
        if ready is not None:
            ready(READY)
        await fuse.handle_requests()
        nursery.cancel_scope.cancel()


def _out_of_fds(error: BaseException) -> bool:
    """True if `error` (or every error in a group) is a lack of file descriptors."""
    if isinstance(error, BaseExceptionGroup):
        return all(_out_of_fds(inner) for inner in error.exceptions)
    return isinstance(error, OSError) and error.errno in OUT_OF_FDS


async def _sweep_members(vbus: Vbus, operations: fuse.VbusOperations) -> None:
    """Remember inherited memberships while parents live; forget exited processes, in the
    model and in the FUSE adapter (the kernel's entries for them).

    A sweep that cannot read /proc for want of fds is skipped (logged once until one
    succeeds again): the next one catches up, and nothing was changed by a failed one."""
    membership = vbus.membership
    if membership is None:
        return
    starved = False
    while True:
        await trio.sleep(SWEEP_INTERVAL)
        try:
            membership.sweep()
            operations.drop_gone_processes()
        except OSError as exc:
            if exc.errno not in OUT_OF_FDS:
                log.exception("internal error in the membership sweep")
                continue
            if not starved:
                log.warning("membership sweep skipped until fds are free again: %s", exc)
            starved = True
            continue
        except Exception:
            log.exception("internal error in the membership sweep")
        if starved:
            log.info("membership sweep reads /proc again")
        starved = False


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            fuse.terminate()
            return
