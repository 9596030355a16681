"""The vbusfs command: help for every command, and the demo on a mount and without one."""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys

import pytest

from vbusfs.cli import parser
from vbusfs.daemon._runtime import sweep_ended
from vbusfs.fuse import read_mountinfo

VBUSFS = [sys.executable, "-m", "vbusfs"]
# every command the parser knows, so a new one cannot go without its help text
COMMANDS = sorted(
    next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
)


def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VBUSFS, *args], capture_output=True, text=True, timeout=120, **kwargs)


def vbusfs_mounts() -> list[str]:
    return [e.mount_point for e in read_mountinfo() if e.fstype == "fuse.vbusfs"]


def test_the_commands_the_issues_name_all_exist():
    named = {"mount", "umount", "run", "demo", "save", "modprobe", "rmmod", "tree", "graph"}
    assert named | {"reset"} <= set(COMMANDS)


def test_top_level_help_lists_every_command():
    done = run("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    done = run(command, "--help")
    assert done.returncode == 0
    assert len(done.stdout.split()) > 20


def test_unknown_command_fails():
    assert run("frobnicate").returncode == 2


def body(text: str) -> list[str]:
    """The walkthrough itself, without the lines that say where it ran."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# "))
    kept = [
        re.sub(r"\(\d+\)", "(PID)", line)
        for line in lines[start:]
        if not line.startswith("unmounted ")
    ]
    while kept and not kept[-1]:
        kept.pop()
    return kept


@pytest.mark.mount
def test_demo_on_a_mount_matches_the_model_replay():
    done = run("demo")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "vbusfs is mounted at" in out
    for expected in (
        "bash: line 1: echo: write error: No such file or directory",
        "../../../vbus/devices/dev0",
        "virtual-ethernet",
        "Device or resource busy",
        "class -> ../../deviceclass/venet-tap",
    ):
        assert expected in out
    # what the demo mounted is gone (its own mountpoint only: other runs on the machine
    # may mount and unmount meanwhile)
    mounted = re.search(r"vbusfs is mounted at ([^\s;]+)", out)
    assert mounted is not None, out
    assert mounted.group(1) not in vbusfs_mounts()
    if shutil.which("tree") is None:
        pytest.skip("tree is not installed: the trees cannot be compared")
    replay = subprocess.run(
        [
            sys.executable,
            "-c",
            "import vbusfs.cli._demo as d; d.run_on_model(__import__('sys').stdout)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert body(out) == body(replay.stdout)


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_demo_without_dev_fuse_explains_and_replays_on_the_model():
    script = (
        "mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && "
        f"exec {sys.executable} -m vbusfs demo"
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "vbusfs cannot mount here: /dev/fuse does not exist" in done.stdout
    assert "--device /dev/fuse --cap-add SYS_ADMIN" in done.stdout
    assert "virtual-ethernet" in done.stdout
    assert "7 directories, 1 file" in done.stdout


MISSING_CLASS = ("--load", "vbusfs_no_such_module:Nothing")


def test_ready_fd_is_hidden_from_help_but_still_works(tmp_path):
    d = str(tmp_path)
    assert "--ready-fd" not in run("mount", "--help").stdout
    read_end, write_end = os.pipe()
    try:
        # a deviceclass that cannot load: the daemon answers on the fd without mounting
        with subprocess.Popen(
            [*VBUSFS, "mount", "--foreground", "--ready-fd", str(write_end), *MISSING_CLASS, d],
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as daemon:
            os.close(write_end)
            write_end = -1
            assert daemon.wait(60) == 1
        answer = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert answer.startswith("error: cannot load a deviceclass: ")
    assert "vbusfs_no_such_module" in answer


@pytest.mark.parametrize(
    "command",
    [
        ["graph", "{d}", "-o", "{d}/picture.svg"],
        ["tree", "{d}"],
        ["save", "{d}", "{d}/saved.json"],
        ["modprobe", "{d}", "venet-tap"],
        ["rmmod", "{d}", "venet-tap"],
        ["modprobe", "--reload", "{d}", "venet-tap"],
        ["reset", "{d}"],
    ],
    ids=lambda command: " ".join(c for c in command if "{" not in c),
)
def test_commands_on_a_plain_directory_say_it_is_not_a_vbusfs_mount(tmp_path, command):
    done = run(*(arg.format(d=tmp_path) for arg in command))
    assert done.returncode == 1
    assert done.stderr == (
        f"vbusfs {command[0]}: {tmp_path} is not a vbusfs mount (no daemon answers there); "
        f"mount one with `vbusfs mount {tmp_path}`\n"
    )
    assert os.listdir(tmp_path) == []  # nothing written


def test_commands_on_a_missing_directory_say_it_does_not_exist(tmp_path):
    done = run("tree", str(tmp_path / "missing"))
    assert done.returncode == 1
    assert f"{tmp_path / 'missing'} does not exist" in done.stderr
    assert "No such file or directory" not in done.stderr


def test_umount_of_a_plain_directory_says_nothing_is_mounted(tmp_path):
    done = run("umount", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == (
        f"vbusfs umount: {tmp_path} is not mounted: no vbusfs daemon serves it, "
        "so there is nothing to unmount\n"
    )


@pytest.mark.mount
@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_run_exits_as_a_shell_would(vbus_mount, tmp_path):
    inside = ("run", "--mount", vbus_mount.path, "--")
    # killed by a signal: 128 + its number, as sh reports it
    done = run(*inside, "sh", "-c", "kill -TERM $$")
    assert (done.returncode, done.stderr) == (143, "")
    # a command that cannot run: the shell's status, said in vbusfs's words only
    plain = tmp_path / "plain"
    plain.write_text("echo hi\n")
    for command, status, why in [
        ("no-such-command-t15", 127, "command not found"),
        (str(plain), 126, "Permission denied"),
    ]:
        done = run(*inside, command)
        assert (done.returncode, done.stderr) == (status, f"vbusfs run: {command}: {why}\n")


@pytest.mark.mount
def test_the_runtime_directory_keeps_no_files_of_ended_mounts(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(runtime))
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()

    def files() -> list[str]:
        return sorted(p.name for p in runtime.rglob("*") if not p.is_dir())

    assert run("mount", str(first)).returncode == 0
    try:
        mine = files()  # state file, log, connector socket
        assert len(mine) == 3, mine
        state = json.loads(next((runtime / "mounts").glob("*.json")).read_text())
        daemon = os.pidfd_open(state["pid"])  # started by our `vbusfs mount`
        try:
            signal.pidfd_send_signal(daemon, signal.SIGKILL)
            assert select.select([daemon], [], [], 10)[0]  # it has ended
        finally:
            os.close(daemon)
        assert files() == mine  # a killed daemon removes nothing itself
        done = run("mount", str(second))
        assert done.returncode == 0, done.stderr
        try:
            assert not set(files()) & set(mine)  # the ended mount's files are gone
            assert len(files()) == 3
            # a live daemon's files are held: no sweep takes them, whatever its pid says
            assert sweep_ended(alive=lambda pid: False) == []
        finally:
            assert run("umount", str(second)).returncode == 0
        # this one's log stays for reading until the next mount or umount
        assert [name.endswith(".log") for name in files()] == [True]
    finally:
        subprocess.run(["fusermount3", "-uz", str(first)], capture_output=True)
