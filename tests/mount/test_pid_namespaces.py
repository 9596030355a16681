"""proc/ and members/ read in the caller's pid namespace (behaviour §6), through real
`unshare --pid --fork --mount-proc` namespaces against a live mount."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = [
    pytest.mark.mount,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare"),
]


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def inside(mnt, script: str) -> list[str]:
    """Run `script` with sh as pid 1 of a new pid namespace (its own /proc); its lines."""
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        cwd=mnt.path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_pids_are_read_in_the_callers_namespace(mode_mnt):
    mnt = mode_mnt
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    host_kthreadd = read("/proc/2/stat").split()[1]
    out = inside(
        mnt,
        "sleep 30 </dev/null >/dev/null 2>&1 & kid=$!; "
        "echo $$ $kid; readlink proc/self; "
        "echo B > proc/$kid/vbus && cat proc/$kid/vbus; "
        "ls sys/vbus/instances/B/members; "
        "host=$(grep -l kthreadd /proc/[0-9]*/comm 2>/dev/null | wc -l); echo $host; "
        "cat /proc/$kid/status | grep NSpid | tr -d '\\t' ; kill $kid",
    )
    shell, kid, self_link, joined, listed, kthreadd_seen = out[:6]
    assert shell == "1" and kid != "1"
    # proc/self: the caller's pid as its namespace numbers it (the 3rd process there)
    assert 1 < int(self_link) < 10 and self_link != kid
    assert joined == "B"
    assert listed == kid  # members/ in the caller's numbers
    assert kthreadd_seen == "0" and host_kthreadd == "(kthreadd)"
    # the host process with the inner number was not touched
    if os.path.exists(f"/proc/{kid}"):
        assert read(mnt.join("proc", kid, "vbus")) == "<none>\n"
    assert read(mnt.join("proc/2/vbus")) == "<none>\n"
    mnt.sh("rmdir config/vbus/instances/B", check=True)  # no member left behind


def test_host_pids_do_not_exist_inside(mode_mnt):
    mnt = mode_mnt
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    with subprocess.Popen(["sleep", "30"]) as host:
        try:
            with open(mnt.join("proc", str(host.pid), "vbus"), "w") as f:
                f.write("B")
            out = inside(
                mnt,
                f"test -e proc/{host.pid} && echo seen || echo unseen; "
                f"echo B > proc/{host.pid}/vbus 2>/dev/null && echo wrote || echo refused; "
                "ls sys/vbus/instances/B/members | wc -l; ls proc | wc -l",
            )
            # the host member is neither reachable nor listed inside; the listing of
            # proc/ holds self only
            assert out == ["unseen", "refused", "0", "1"] or (
                out[:3] == ["seen", "wrote", "0"] and host.pid < 10
            )
            assert host.pid in {
                int(p) for p in os.listdir(mnt.join("sys/vbus/instances/B/members"))
            }
        finally:
            host.kill()


def test_nested_namespaces_translate_twice(mode_mnt):
    mnt = mode_mnt
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    out = inside(
        mnt,
        "unshare --pid --fork --mount-proc sh -c '"
        "sleep 30 </dev/null >/dev/null 2>&1 & kid=$!; echo $kid; exec 3>&1; "
        "readlink proc/self; "
        "echo B > proc/$kid/vbus; ls sys/vbus/instances/B/members; kill $kid'",
    )
    kid, self_link, listed = out
    assert 1 < int(self_link) < 10 and listed == kid
