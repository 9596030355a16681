"""The daemon process: the one place where vbusfs is composed and served.

`build_model()` makes the model (the deviceclasses, the membership backend: cgroups
where the daemon may, else inference over /proc; a restored configuration);
`serve()` clears a stale mount left by a killed daemon, mounts it through the FUSE
adapter, starts the connector and the membership sweep, serves until unmounted or
signalled (SIGTERM, SIGINT, SIGHUP unmount cleanly), then releases everything the model
holds. `run_daemon()` is both, as
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
from vbusfs.classes import Catalog, default_model
from vbusfs.connector import XATTR, Connector, Limits
from vbusfs.model import Inferred, MembershipBackend, Unmounted, Vbus, VbusError, restore_config

from ._cgroup import CgroupMembership, CgroupUnavailable
from ._memberwatch import MemberWatch
from ._pidns import PidNamespaces
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
# how long monitors get, at unmount, to send what they hold and their last record
MONITOR_DRAIN = 2.0
# the root's extended attribute that says who keeps membership: "cgroup" or "proc"
MEMBERSHIP_XATTR = "user.vbusfs.membership"


def load_config(path: str) -> Any:
    """Read a saved configuration; ValueError says what is wrong with the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupt?): {exc}") from None


def build_model(
    load: tuple[str, ...] = (),
    *,
    restore: str | None = None,
    empty_on_bad_restore: bool = False,
    mountpoint: str | None = None,
    membership: str = "auto",
) -> Vbus:
    """The daemon's model: every discovered deviceclass plus `load`, a membership backend
    (`membership_backend`), and the configuration saved in `restore`. MountError says what
    could not be done; with `empty_on_bad_restore` a file that cannot be restored is
    logged and skipped. The caller ends the backend with `close_model`."""
    backend = membership_backend(membership, mountpoint)
    try:
        vbus = default_model(tuple(load), membership=backend)
    except (ImportError, AttributeError, TypeError, ValueError, VbusError) as exc:
        close_membership(backend)
        raise MountError(f"cannot load a deviceclass: {exc}") from exc
    if restore:
        try:
            restore_config(vbus, load_config(restore))
        except (OSError, ValueError, VbusError) as exc:
            if not empty_on_bad_restore:
                close_model(vbus)
                raise MountError(f"cannot restore {restore}: {exc}") from exc
            logging.getLogger("vbusfs").warning("starting empty: %s", exc)
    return vbus


def membership_backend(mode: str, mountpoint: str | None) -> MembershipBackend:
    """Who keeps membership (behaviour §6): "cgroup" (the kernel; MountError if the daemon
    may not), "proc" (inferred), or "auto": cgroup where the daemon may, else proc, with
    the reason logged. Without a mount point (a model served by no mount): proc."""
    table = ProcFs()
    if mode not in ("auto", "cgroup", "proc"):
        raise MountError(f"--membership takes auto, cgroup or proc, not {mode!r}")
    if mode == "proc" or mountpoint is None:
        return Inferred(table)
    try:
        return CgroupMembership(table, mountpoint)
    except (CgroupUnavailable, OSError) as exc:
        if mode == "cgroup":
            raise MountError(f"--membership cgroup: {exc}") from None
        log.info("membership inferred from /proc: %s", exc)
        return Inferred(table)


def close_membership(backend: MembershipBackend | None) -> None:
    if isinstance(backend, CgroupMembership):
        backend.close()


def close_model(vbus: Vbus) -> None:
    """Release everything the model holds: devices, buses, the membership backend."""
    try:
        vbus.clear()
    finally:
        close_membership(vbus.membership)


def run_daemon(
    mountpoint: str,
    *,
    load: tuple[str, ...] = (),
    restore: str | None = None,
    empty_on_bad_restore: bool = False,
    membership: str = "auto",
    ready_fd: int | None = None,
    log_path: str | None = None,
    limits: Limits | None = None,
) -> int:
    """Build the model and serve it at `mountpoint` in this process; the exit status.

    `ready_fd`, if given, hears "ok" once the mount is live or "error: ..." (then closes).
    `limits` caps the connector (the defaults of `Limits` if None).
    """
    ready = ready_fd_reporter(ready_fd) if ready_fd is not None else None
    try:
        vbus = build_model(
            load,
            restore=restore,
            empty_on_bad_restore=empty_on_bad_restore,
            mountpoint=canonical_mountpoint(mountpoint),
            membership=membership,
        )
    except MountError as exc:
        print(f"vbusfs mount: {exc}", file=sys.stderr)
        if ready is not None:
            ready(f"error: {exc}")
        return 1
    return serve(mountpoint, vbus=vbus, ready=ready, log_path=log_path, limits=limits, load=load)


def serve(
    mountpoint: str,
    *,
    vbus: Vbus | None = None,
    ready: Callable[[str], None] | None = None,
    log_path: str | None = None,
    limits: Limits | None = None,
    load: tuple[str, ...] = (),
) -> int:
    """Mount and serve until unmounted or signalled. `ready` hears "ok" or an error;
    `limits` caps the connector; `load` names the classes the model was given besides
    the discovered ones (a reset keeps them)."""
    mountpoint = canonical_mountpoint(mountpoint)
    vbus = vbus if vbus is not None else build_model(mountpoint=mountpoint)
    socket_path = connector_path(mountpoint)
    # Requests are answered only once the connector listens, so the root can name it now.
    xattrs = {}
    if vbus.membership is not None:
        xattrs[XATTR.encode()] = os.fsencode(socket_path)
        xattrs[MEMBERSHIP_XATTR.encode()] = vbus.membership.mode.encode()
    # each caller's pids are read in its own pid namespace (behaviour §6)
    namespaces = PidNamespaces()
    operations = fuse.VbusOperations(vbus, root_xattrs=xattrs, pid_views=namespaces.view_of)
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
        close_model(vbus)
        namespaces.close()
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
        log.info(
            "serving %s (pid %d), connector at %s, membership kept by %s",
            mountpoint,
            os.getpid(),
            socket_path,
            _keeper(vbus),
        )
        # the administrators' deviceclasses; a reset or rmmod removes what the kernel may
        # hold entries for, which the adapter then drops
        catalog = Catalog(load, changed=operations.drop_removed)
        trio.run(
            _serve_until_done, vbus, operations, socket_path, report, limits, catalog, mountpoint
        )
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
        close_model(vbus)
        namespaces.close()
        state.remove()
        log.info("unmounted %s", mountpoint)
    return 0


def _keeper(vbus: Vbus) -> str:
    if vbus.membership is None:
        return "nobody"
    if vbus.membership.mode == "cgroup":
        return "the kernel (a cgroup per bus)"
    return "inference from /proc"


async def _serve_until_done(
    vbus: Vbus,
    operations: fuse.VbusOperations,
    socket_path: str,
    ready: Callable[[str], None] | None,
    limits: Limits | None,
    catalog: Catalog,
    mountpoint: str = "",
) -> None:
    # the model lives in this thread: a deviceclass's notify from a device thread comes here
    vbus.changes.serve_from(trio.lowlevel.current_trio_token().run_sync_soon)
    connector = Connector(vbus, socket_path, catalog, limits)
    # forks, exits and moves, told to monitors (and looked for only while there are some)
    watch = MemberWatch(vbus, lambda: bool(connector.monitors))
    connector.monitors.on_first = watch.sweep
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signal)
            nursery.start_soon(_sweep_members, vbus, operations, watch)
            if vbus.membership is not None:
                await nursery.start(connector.serve)
            if ready is not None:
                ready(READY)
            await fuse.handle_requests()
            # the last record every monitor hears; they get a moment to send it
            vbus.changes.publish(Unmounted(mountpoint))
            await connector.monitors.drained(MONITOR_DRAIN)
            nursery.cancel_scope.cancel()
    finally:
        watch.close()


def _out_of_fds(error: BaseException) -> bool:
    """True if `error` (or every error in a group) is a lack of file descriptors."""
    if isinstance(error, BaseExceptionGroup):
        return all(_out_of_fds(inner) for inner in error.exceptions)
    return isinstance(error, OSError) and error.errno in OUT_OF_FDS


async def _sweep_members(vbus: Vbus, operations: fuse.VbusOperations, watch: MemberWatch) -> None:
    """Remember inherited memberships while parents live (the fallback only); forget
    exited processes, in the model and in the FUSE adapter (the kernel's entries for them:
    both modes). Its work follows the members and the entries held, never the process
    table.

    A sweep that cannot read /proc for want of fds is skipped (logged once until one
    succeeds again): the next one catches up, and nothing was changed by a failed one."""
    membership = vbus.membership
    if membership is None:
        return
    starved = False
    while True:
        await trio.sleep(SWEEP_INTERVAL)
        try:
            if membership.mode != "cgroup":  # the kernel keeps cgroup membership itself
                membership.sweep()
            operations.drop_gone_processes()
            watch.sweep()
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
