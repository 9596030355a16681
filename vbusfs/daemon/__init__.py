"""The vbusfs daemon: the one composition root, and how daemons are started and stopped.

Only this package puts vbusfs together: the model with its deviceclasses
(`vbusfs.classes`), the membership backend over /proc (`ProcFs`, whose `ProcessHandle`
names one process across pid reuse), each caller's pid namespace (`PidNamespaces`,
which makes the `vbusfs.model.PidView` of a caller), the connector,
the FUSE adapter, the membership sweep and the signal handling (`build_model`,
`serve`, `run_daemon`, which `vbusfs mount --foreground` runs).

Process plumbing, for the CLI, the testing kit and the benchmarks alike:
`spawn`/`unmount` start a background daemon and stop it again; `start_daemon`/
`stop_daemon` run and end any daemon that reports readiness on an inherited pipe
(`daemon_command` is a vbusfs daemon's command line; `statfs_with_timeout` asks one
whether it answers); `fuse_problem` and
`explain_mount_failure` say why a mount cannot be made, and `MountError` carries
that to the user; `canonical_mountpoint` and `state_path` name a mount's daemon;
`log_to_stderr` sets up the daemon's log, kept under `LOG_MAX_BYTES` per file.
"""

from ._logfile import LOG_MAX_BYTES, log_to_stderr
from ._pidns import PidNamespaces
from ._problems import MountError, explain_mount_failure, fuse_problem
from ._process import (
    READY,
    daemon_command,
    spawn,
    start_daemon,
    statfs_with_timeout,
    stop_daemon,
    unmount,
)
from ._procfs import ProcessHandle, ProcFs
from ._runtime import canonical_mountpoint, state_path
from ._serve import build_model, run_daemon, serve

__all__ = [
    "LOG_MAX_BYTES",
    "READY",
    "MountError",
    "PidNamespaces",
    "ProcFs",
    "ProcessHandle",
    "build_model",
    "canonical_mountpoint",
    "daemon_command",
    "explain_mount_failure",
    "fuse_problem",
    "log_to_stderr",
    "run_daemon",
    "serve",
    "spawn",
    "start_daemon",
    "state_path",
    "statfs_with_timeout",
    "stop_daemon",
    "unmount",
]
