"""The runtime directory is a trust boundary: real attackers, as another user.

An attacker (uid 65534) makes the runtime directory first, world-writable, with a
symlink where the daemon's log goes and a socket of its own where the connector goes.
The daemon must refuse it, naming the directory and the fix, touch nothing of it, and
never write through the symlink. A shared sticky directory keeps its mode.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from vbusfs.daemon import LOG_MAX_BYTES, state_path
from vbusfs.fuse import mount_at
from vbusfs.testing import LiveMount

pytestmark = [
    pytest.mark.mount,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv"),
]

VBUSFS = [sys.executable, "-m", "vbusfs"]
ATTACKER = 65534
AS_ATTACKER = ["setpriv", f"--reuid={ATTACKER}", f"--regid={ATTACKER}", "--clear-groups"]
VICTIM_TEXT = "the victim's own file\n"

# Run as the attacker: a world-writable runtime directory with a planted log symlink
# and a socket bound where the connector goes.
PLANT = """
import os, socket, sys
top, log, victim, sock = sys.argv[1:]
os.umask(0)
for d in (top, os.path.join(top, "mounts"), os.path.join(top, "connectors")):
    os.mkdir(d, 0o777)
os.symlink(victim, log)
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sock)
"""


def vbusfs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VBUSFS, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def base() -> Iterator[pathlib.Path]:
    """A directory every user may enter (pytest's own tmp_path is root's alone)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="vbusfs-trust-"))
    path.chmod(0o1777)  # like /tmp: anyone may make the runtime directory first
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def victim_file(base: pathlib.Path) -> pathlib.Path:
    victim = base / "victim"
    victim.write_text(VICTIM_TEXT)
    victim.chmod(0o666)  # even a file the attacker could name and the daemon could write
    return victim


def plant(top: pathlib.Path, mountpoint: str, victim: pathlib.Path, env: dict[str, str]) -> None:
    log = state_path(mountpoint)[: -len(".json")] + ".log"
    from vbusfs.daemon._runtime import connector_path

    sock = connector_path(mountpoint)
    assert log.startswith(str(top)) and sock.startswith(str(top))
    subprocess.run(
        [*AS_ATTACKER, sys.executable, "-c", PLANT, str(top), log, str(victim), sock],
        check=True,
        env=env,
    )


def test_a_runtime_dir_another_user_made_is_refused(base, monkeypatch):
    top = base / "run"
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(top))
    mountpoint = base / "m"
    mountpoint.mkdir()
    victim = victim_file(base)
    plant(top, str(mountpoint), victim, dict(os.environ))
    before = {p: p.lstat() for p in (top, top / "mounts", top / "connectors")}

    done = vbusfs("mount", str(mountpoint), env=dict(os.environ))
    assert done.returncode == 1
    assert f"the runtime directory {top} is not safe to use" in done.stderr
    assert f"uid {ATTACKER}" in done.stderr and "Fix: point VBUSFS_RUNTIME_DIR" in done.stderr
    assert f"{top}/vbusfs-" not in done.stderr  # never a directory inside theirs
    # The foreground daemon refuses it too, before mounting anything.
    with pytest.raises(RuntimeError, match=f"runtime directory {top} is not safe"):
        LiveMount(str(mountpoint)).start()

    assert victim.read_text() == VICTIM_TEXT
    assert mount_at(str(mountpoint)) is None
    for path, found in before.items():  # not chmod'ed, not chown'ed
        now = path.lstat()
        assert (now.st_mode, now.st_uid) == (found.st_mode, found.st_uid)
    assert stat.S_ISSOCK(os.lstat(next((top / "connectors").iterdir())).st_mode)


def test_the_default_tmp_runtime_dir_of_a_user_is_refused_when_planted(base):
    """Without XDG_RUNTIME_DIR a user's runtime directory is /tmp/vbusfs-UID: anyone
    could make it first. (The user cannot mount here, /dev/fuse is root's: the refusal
    must come before.)"""
    user = 54321
    top = pathlib.Path(f"/tmp/vbusfs-{user}")
    if top.exists() or top.is_symlink():
        pytest.skip(f"{top} exists already")
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VBUSFS_", "XDG_"))}
    mountpoint = base / "m"
    mountpoint.mkdir()
    os.chown(mountpoint, user, user)
    victim = victim_file(base)
    try:
        log = top / "mounts" / (_quoted(mountpoint) + ".log")
        subprocess.run(
            [
                *AS_ATTACKER,
                sys.executable,
                "-c",
                PLANT,
                str(top),
                str(log),
                str(victim),
                str(top / "connectors" / "x.sock"),
            ],
            check=True,
            env=env,
        )
        done = subprocess.run(
            [*as_user, *VBUSFS, "mount", str(mountpoint)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 1
        assert f"the runtime directory {top} is not safe to use" in done.stderr
        assert f"rm -rf {top}" in done.stderr
        assert victim.read_text() == VICTIM_TEXT
        assert stat.S_IMODE(top.lstat().st_mode) == 0o777
        shutil.rmtree(top)

        # Unplanted, the user's directory is made private: 0700, the user's own.
        subprocess.run(
            [*as_user, *VBUSFS, "mount", str(mountpoint)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        for path in (top, top / "mounts", top / "connectors"):
            found = path.lstat()
            assert stat.S_ISDIR(found.st_mode) and found.st_uid == user
            assert stat.S_IMODE(found.st_mode) == 0o700
    finally:
        shutil.rmtree(top, ignore_errors=True)
        assert mount_at(str(mountpoint)) is None


def _quoted(mountpoint: pathlib.Path) -> str:
    import urllib.parse

    return urllib.parse.quote(str(mountpoint), safe="")


def test_a_shared_sticky_runtime_dir_keeps_its_mode_and_is_refused(base, monkeypatch):
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    mountpoint = base / "m"
    mountpoint.mkdir()
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(shared))
    done = vbusfs("mount", str(mountpoint), env=dict(os.environ))
    assert done.returncode == 1
    assert f"the runtime directory {shared} is not safe to use" in done.stderr
    assert "other users may write to it (mode 1777)" in done.stderr
    private = shared / f"vbusfs-{os.getuid()}"
    assert f"mkdir -m 0700 {private}" in done.stderr  # the fix
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert list(shared.iterdir()) == []

    # The fix works: the private directory inside it serves.
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(private))
    done = vbusfs("mount", str(mountpoint), env=dict(os.environ))
    try:
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(private.stat().st_mode) == 0o755  # root: members reach it
        assert stat.S_IMODE((private / "mounts").stat().st_mode) == 0o700
        state = pathlib.Path(state_path(str(mountpoint)))
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        log = state.with_suffix(".log")
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        vbusfs("umount", str(mountpoint), env=dict(os.environ))
        assert mount_at(str(mountpoint)) is None
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_the_log_file_stays_under_its_bound_in_a_flood(tmp_path, monkeypatch):
    monkeypatch.setenv("VBUSFS_RUNTIME_DIR", str(tmp_path / "run"))
    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    done = vbusfs("mount", "--debug", str(mountpoint), env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    log = pathlib.Path(state_path(str(mountpoint))).with_suffix(".log")
    try:
        # Every refused request is a log line with --debug: a user can flood it.
        flood = (
            "import os, sys\n"
            "os.mkdir(os.path.join(sys.argv[1], 'config/vbus/devices/D'))\n"
            "fd = os.open(os.path.join(sys.argv[1], 'config/vbus/devices/D/type'), os.O_WRONLY)\n"
            "for i in range(int(sys.argv[2])):\n"
            "    try: os.write(fd, b'no-such-class-%08d' % i)\n"
            "    except OSError: pass\n"
        )
        lines = LOG_MAX_BYTES // 40  # each line is longer than 40 bytes
        subprocess.run([sys.executable, "-c", flood, str(mountpoint), str(lines)], check=True)
        assert (mountpoint / "sys/vbus/version").read_text() == "1\n"
        older = log.with_name(log.name + ".1")
        assert older.exists()
        assert log.stat().st_size <= LOG_MAX_BYTES + 4096
        assert older.stat().st_size <= LOG_MAX_BYTES + 4096
        assert "no-such-class" in log.read_text()
    finally:
        done = vbusfs("umount", str(mountpoint), env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "unmounted" in log.read_text()
