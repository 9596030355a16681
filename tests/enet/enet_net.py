"""Helpers for `vbusfs enet`'s tests: private network namespaces and driver processes.

Every namespace is made here and deleted after the test, every driver process is
started here and ended by its pid; nothing touches the machine's own network.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vbusfs.testing import LiveMount


def in_ns(ns: str) -> list[str]:
    """The prefix that runs a command in network namespace `ns` and nothing else: not
    `ip netns exec`, whose private mount namespace would hold a copy of the vbusfs mount
    for as long as the command runs (and so hold up its unmount)."""
    return ["nsenter", f"--net=/run/netns/{ns}", "--"]


def ns_run(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run argv in network namespace `ns`."""
    return subprocess.run(
        [*in_ns(ns), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Driver:
    """One `vbusfs enet` process (its pid is the driver's: nsenter and sh exec it)."""

    process: subprocess.Popen[str]
    ns: str
    ifname: str = ""
    banner: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def end(self, signum: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()


@dataclass
class Net:
    """Namespaces and drivers of one test, all cleaned up after it."""

    tag: str
    namespaces: list[str] = field(default_factory=list)
    drivers: list[Driver] = field(default_factory=list)

    def netns(self, name: str) -> str:
        ns = f"{self.tag}-{name}"
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
        self.namespaces.append(ns)
        ns_run(ns, "ip", "link", "set", "lo", "up")
        return ns

    def start(self, mount: LiveMount, bus: str, ns: str, *args: str, wait: bool = True) -> Driver:
        """`vbusfs enet --mount MNT ARGS` as a member of `bus` (None: of none) in `ns`;
        with `wait`, until it says its interface is up (or it exits)."""
        join = f"echo {bus} > {mount.join('proc/self/vbus')} && " if bus else ""
        enet = f"{sys.executable} -m vbusfs enet --mount {mount.path}"
        command = f"{join}exec {enet} {' '.join(args)}"
        proc = subprocess.Popen(
            [*in_ns(ns), "sh", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        driver = Driver(proc, ns)
        self.drivers.append(driver)
        if wait:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            line = proc.stdout.readline() if ready else ""
            assert line.startswith("vbusfs enet: "), (line, driver.end(), driver.stderr())
            driver.banner = line
            driver.ifname = line.split()[2]
        return driver

    def spawn(self, ns: str, *argv: str) -> Driver:
        """A process of the test's (a server) in `ns`, ended after the test."""
        proc = subprocess.Popen(
            [*in_ns(ns), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.drivers.append(Driver(proc, ns))
        return self.drivers[-1]

    def close(self) -> None:
        for d in self.drivers:
            d.end()
            for pipe in (d.process.stdout, d.process.stderr):
                if pipe is not None:
                    pipe.close()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)


def switched(mount: LiveMount, *buses: str, mtu: int | None = None) -> None:
    """A venet-switch `sw` linked into every bus named (each made here)."""
    lines = ["mkdir config/vbus/devices/sw", "echo venet-switch > config/vbus/devices/sw/type"]
    if mtu is not None:
        lines.append(f"echo {mtu} > sys/vbus/devices/sw/mtu")
    for bus in buses:
        lines.append(f"mkdir config/vbus/instances/{bus}")
        lines.append(f"ln -s ../../devices/sw config/vbus/instances/{bus}/")
    mount.sh(" && ".join(lines), check=True)


def wait_for(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
