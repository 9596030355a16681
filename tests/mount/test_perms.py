"""Who may join a bus: `config/vbus/instances/B/perms/` on live mounts (behaviour §6).

Every user here is a real process of a throwaway uid (setpriv), joining through
`proc/self/vbus` and connecting through the client library; root sets the perms with
the shell, as an administrator would. The suite runs as root.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

import pytest

from vbusfs.testing import LiveMount

pytestmark = [
    pytest.mark.mount,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv"),
]

USER = 65534  # nobody: neither root nor the bus's creator
OTHER = 65533
GROUP = 4242
VBUSFS = [sys.executable, "-m", "vbusfs"]
PERMS = "config/vbus/instances/B/perms"


def as_user(uid: int = USER, *, gid: int | None = None, groups: tuple[int, ...] = ()) -> list[str]:
    """setpriv for a process of `uid`, primary group `gid` (default: `uid`), and `groups`."""
    wanted = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    return ["setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}", wanted]


def joins(mount: LiveMount, user: list[str], bus: str = "B") -> tuple[str, str]:
    """A process of `user` writes `bus` to its proc/self/vbus: (what it reads then, stderr)."""
    done = subprocess.run(
        [
            *user,
            "bash",
            "-c",
            f"echo {bus} > {mount.path}/proc/self/vbus; cat {mount.path}/proc/self/vbus",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip(), done.stderr


def perms(mount: LiveMount) -> dict[str, str]:
    return {name: read(mount.join(PERMS, name)) for name in sorted(os.listdir(mount.join(PERMS)))}


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def store(mount: LiveMount, name: str, value: str) -> None:
    with open(mount.join(PERMS, name), "w") as f:
        f.write(value)


def write_errno(path: str, value: bytes) -> int:
    """The errno of one write(2) of `value` to `path` (0: stored)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value)
    except OSError as exc:
        return exc.errno or -1
    finally:
        os.close(fd)
    return 0


def open_top() -> str:
    """A mount point other users may reach (pytest's own temporary tree is root's alone)."""
    top = tempfile.mkdtemp(prefix="vbusfs-perms-")
    os.chmod(top, 0o755)
    return top


@pytest.fixture(params=["cgroup", "proc"])
def users(request: pytest.FixtureRequest) -> Iterator[LiveMount]:
    """A mount other users reach, in each membership mode, with bus B made by root."""
    top = open_top()
    mount = LiveMount(top, extra=("--membership", request.param)).start()
    try:
        mount.sh("mkdir config/vbus/instances/B", check=True)
        yield mount
    finally:
        log = mount.stop()
        os.rmdir(top)
    assert "Traceback" not in log, log


def test_a_new_bus_is_its_creators_and_only_root_and_the_creator_may_join(users):
    assert perms(users) == {"group": "0\n", "mode": "0700\n", "owner": "0\n"}
    listing = users.sh(f"ls -ln {PERMS}", check=True).stdout.splitlines()[1:]
    assert [line.split()[0] + " " + line.split()[2] for line in listing] == [
        "-rw-r--r-- 0",
        "-rw-r--r-- 0",
        "-rw-r--r-- 0",
    ]
    # sys/vbus is as it was: perms live in config alone
    assert sorted(os.listdir(users.join("sys/vbus/instances/B"))) == ["devices", "members"]
    # the creator's uid and gid, from the mkdir request (a uid 4243 creator keeps
    # DAC override to make a directory in root's tree at all)
    creator = [
        *as_user(4243, gid=4244),
        "--inh-caps=+dac_override",
        "--ambient-caps=+dac_override",
        "mkdir",
        users.join("config/vbus/instances/C"),
    ]
    made = subprocess.run(creator, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    c_perms = users.join("config/vbus/instances/C/perms")
    assert [read(f"{c_perms}/{n}") for n in ("owner", "group", "mode")] == [
        "4243\n",
        "4244\n",
        "0700\n",
    ]
    assert os.stat(f"{c_perms}/mode").st_uid == 4243 and os.stat(f"{c_perms}/mode").st_gid == 4244
    assert joins(users, as_user(4243, gid=4244), "C")[0] == "C"  # its creator may join it
    assert joins(users, as_user(), "C")[0] == "<none>"
    # root may always join, whatever the mode
    store(users, "mode", "0000")
    assert users.sh("echo B > proc/self/vbus && cat proc/self/vbus").stdout == "B\n"


def test_others_join_by_the_others_bit(users):
    seen, err = joins(users, as_user())
    assert seen == "<none>" and "Permission denied" in err  # EACCES, and nothing changed
    assert os.listdir(users.join("sys/vbus/instances/B/members")) == []
    users.sh(f"echo 0701 > {PERMS}/mode", check=True)
    assert perms(users)["mode"] == "0701\n"
    assert joins(users, as_user()) == ("B", "")
    store(users, "mode", "776")  # r and w for everyone, x for owner and group: no others
    assert perms(users)["mode"] == "0776\n"
    assert joins(users, as_user())[0] == "<none>"


def test_group_members_join_by_the_group_bit(users):
    store(users, "group", str(GROUP))
    store(users, "mode", "0710")
    assert joins(users, as_user(groups=(GROUP,)))[0] == "B"  # a supplementary group
    assert joins(users, as_user(gid=GROUP))[0] == "B"  # the effective gid
    assert joins(users, as_user())[0] == "<none>"  # not in the group
    # as for files, the group's bits decide for a member of the group, even when the
    # others' bits would let it in
    store(users, "mode", "0701")
    assert joins(users, as_user(groups=(GROUP,)))[0] == "<none>"
    assert joins(users, as_user())[0] == "B"


def test_the_owner_joins_by_the_owner_bit_and_alone_with_root_changes_perms(users):
    store(users, "owner", str(USER))
    assert os.stat(users.join(PERMS, "mode")).st_uid == USER
    assert joins(users, as_user())[0] == "B"
    # the owner changes the mode; the owner's bits then decide for it alone
    done = subprocess.run(
        [*as_user(), "bash", "-c", f"echo 0071 > {users.path}/{PERMS}/mode"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert perms(users)["mode"] == "0071\n"
    assert joins(users, as_user())[0] == "<none>"
    assert joins(users, as_user(OTHER))[0] == "B"
    # anyone else may not: the file is the owner's, mode 0644
    for name in ("owner", "group", "mode"):
        done = subprocess.run(
            [*as_user(OTHER), "bash", "-c", f"echo 0777 > {users.path}/{PERMS}/{name}"],
            capture_output=True,
            text=True,
        )
        assert "Permission denied" in done.stderr
    assert perms(users) == {"group": "0\n", "mode": "0071\n", "owner": f"{USER}\n"}


HOLDER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)  # opened while its user owns the bus
print("open", flush=True)
sys.stdin.readline()
try:
    os.write(fd, b"0777")
    print(0)
except OSError as exc:
    print(exc.errno)
"""


def test_a_handle_opened_by_the_owner_stores_nothing_once_the_bus_is_given_away(users):
    store(users, "owner", str(USER))
    with subprocess.Popen(
        [*as_user(), sys.executable, "-c", HOLDER, users.join(PERMS, "mode")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline() == "open\n"
            store(users, "owner", str(OTHER))
            holder.stdin.write("\n")
            holder.stdin.close()
            assert holder.stdout.read().strip() == str(errno.EPERM)
        finally:
            holder.kill()
    assert perms(users) == {"group": "0\n", "mode": "0700\n", "owner": f"{OTHER}\n"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("owner", b"abc"),
        ("owner", b"-1"),
        ("owner", b"4294967295"),  # (uid_t)-1 is no uid
        ("owner", b"99999999999"),
        ("owner", b" 5"),
        ("owner", b"5 "),
        ("owner", b"0x10"),
        ("owner", b"\xd9\xa3"),  # an Arabic-Indic digit
        ("group", b"1.5"),
        ("group", b"5\n\n"),
        ("mode", b"0800"),
        ("mode", b"1000"),
        ("mode", b"01000"),
        ("mode", b"7777"),
        ("mode", b"0o700"),
        ("mode", b"rwx"),
        ("mode", b"+x"),
        ("mode", b"\n"),
    ],
)
def test_a_malformed_value_is_einval_and_changes_nothing(mnt, name, value):
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    before = perms(mnt)
    assert write_errno(mnt.join(PERMS, name), value) == errno.EINVAL
    assert perms(mnt) == before


def test_well_formed_values_and_what_else_perms_refuses(mnt):
    mnt.sh("mkdir config/vbus/instances/B", check=True)
    for name, value, shown in [
        ("owner", b"4294967294\n", "4294967294"),
        ("group", b"007", "7"),
        ("mode", b"755\n", "0755"),
        ("mode", b"0", "0000"),
        ("mode", b"0777", "0777"),
    ]:
        assert write_errno(mnt.join(PERMS, name), value) == 0
        assert read(mnt.join(PERMS, name)) == shown + "\n"
    # perms holds these three files and nothing else
    assert sorted(os.listdir(mnt.join(PERMS))) == ["group", "mode", "owner"]
    for call, code in [
        (lambda: os.mkdir(mnt.join(PERMS, "x")), errno.EPERM),
        (lambda: os.open(mnt.join(PERMS, "x"), os.O_WRONLY | os.O_CREAT), errno.EACCES),
        (lambda: os.unlink(mnt.join(PERMS, "mode")), errno.EPERM),
        (lambda: os.rmdir(mnt.join(PERMS)), errno.EPERM),
        (lambda: os.symlink("../../../devices", mnt.join(PERMS, "x")), errno.EPERM),
    ]:
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == code
    assert sorted(os.listdir(mnt.join(PERMS))) == ["group", "mode", "owner"]


def test_root_cannot_join_another_users_process_the_perms_shut_out(users):
    """The perms are checked against the process that joins, not against the writer."""
    with subprocess.Popen([*as_user(), "sleep", "30"]) as sleeper:
        try:
            _until_it_runs_as(sleeper.pid, USER)  # setpriv is root until it has switched
            target = users.join("proc", str(sleeper.pid), "vbus")
            assert write_errno(target, b"B") == errno.EACCES
            assert read(target) == "<none>\n"
            store(users, "mode", "0701")
            assert write_errno(target, b"B") == 0
            assert read(target) == "B\n"
            assert write_errno(target, b"0") == 0  # leaving is always allowed
        finally:
            sleeper.kill()


def _until_it_runs_as(pid: int, uid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        if all(int(u) == uid for u in uids):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never ran as uid {uid}")


# -- the connector -------------------------------------------------------------------

SETUP = (
    "mkdir config/vbus/devices/L && echo venet-loopback > config/vbus/devices/L/type && "
    "echo 1 > sys/vbus/devices/L/enabled && ln -s ../../devices/L config/vbus/instances/B/"
)

# a member of B (of whatever user runs it): joins, connects, opens interface 0, says so,
# and after a line on stdin asks again
MEMBER = """
import errno, json, sys
from vbusfs import client
m = sys.argv[1]
with open(f"{m}/proc/self/vbus", "w") as f:
    f.write("B")
bus = client.connect(m)
nic = bus.open_venet(0)
nic.send(b"\\x02" * 60)
print(json.dumps({"echo": nic.recv(timeout=5) == b"\\x02" * 60}), flush=True)
sys.stdin.readline()
outcome = {}
for what, call in (("list", bus.interfaces), ("open", lambda: bus.open_venet(0))):
    try:
        call()
        outcome[what] = "served"
    except client.ConnectorError as exc:
        outcome[what] = [exc.errno, str(exc)]
print(json.dumps(outcome), flush=True)
"""

# root's member: joins B and opens interface 0 as soon as no one else has it open
ROOT_OPENER = """
import errno, json, sys, time
from vbusfs import client
m = sys.argv[1]
with open(f"{m}/proc/self/vbus", "w") as f:
    f.write("B")
outcome = "busy"
for _ in range(50):  # the daemon re-checks connections twice a second
    try:
        with client.connect(m) as bus, bus.open_venet(0):
            outcome = "opened"
            break
    except client.ConnectorError as exc:
        if exc.errno != errno.EBUSY:
            outcome = [exc.errno, str(exc)]
            break
        time.sleep(0.1)
print(json.dumps(outcome))
"""

# joins B, waits for a line on stdin, then connects
LATE = """
import json, sys
from vbusfs import client
m = sys.argv[1]
with open(f"{m}/proc/self/vbus", "w") as f:
    f.write("B")
print("joined", flush=True)
sys.stdin.readline()
try:
    client.connect(m).close()
    print(json.dumps("served"))
except client.ConnectorError as exc:
    print(json.dumps([exc.errno, str(exc)]))
"""


def run_python(user: list[str], code: str, mount: LiveMount) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*user, sys.executable, "-c", textwrap.dedent(code), mount.path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_connector_revokes_a_member_the_perms_no_longer_let_in(users):
    users.sh(SETUP, check=True)
    store(users, "mode", "0701")
    with run_python(as_user(), MEMBER, users) as member:
        outcome = _revoked(users, member)
    for what in ("list", "open"):
        code, message = outcome[what]
        assert code == errno.EACCES, outcome
        assert "perms no longer let uid 65534" in message, outcome


def _revoked(users: LiveMount, member: subprocess.Popen[str]) -> dict:
    try:
        assert member.stdout is not None and member.stdin is not None
        line = member.stdout.readline()
        assert json.loads(line) == {"echo": True}, member.stderr and member.stderr.read()
        # while it is connected with the device open, the owner (root) shuts others out
        store(users, "mode", "0700")
        # what it had open is closed: root's own member can open the device
        opener = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(ROOT_OPENER), users.path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(opener.stdout) == "opened", opener.stderr
        member.stdin.write("\n")
        member.stdin.close()
        outcome = json.loads(member.stdout.read().splitlines()[-1])
    finally:
        member.kill()
    return outcome


@pytest.mark.parametrize(
    ("user", "mode", "admitted"),
    [
        (as_user(), "0701", True),
        (as_user(), "0700", False),
        (as_user(groups=(GROUP,)), "0710", True),
        (as_user(groups=(GROUP,)), "0701", False),
    ],
)
def test_the_connector_admits_a_member_only_when_the_perms_let_it_in(users, user, mode, admitted):
    users.sh(SETUP, check=True)
    store(users, "group", str(GROUP))
    store(users, "mode", "0711")  # anyone may join now
    with run_python(user, LATE, users) as late:
        outcome = _connect_late(users, late, mode)
    if admitted:
        assert outcome == "served"
    else:
        code, message = outcome
        assert code == errno.EACCES and "perms do not let uid 65534 use it" in message, outcome


def _connect_late(users: LiveMount, late: subprocess.Popen[str], mode: str) -> object:
    try:
        assert late.stdout is not None and late.stdin is not None
        assert late.stdout.readline() == "joined\n", late.stderr and late.stderr.read()
        store(users, "mode", mode)  # a member already, whatever the perms say now
        late.stdin.write("\n")
        late.stdin.close()
        outcome = json.loads(late.stdout.read().splitlines()[-1])
    finally:
        late.kill()
    return outcome


def test_save_and_restore_keep_the_perms(mnt, tmp_path, tmp_path_factory):
    mnt.sh(
        "mkdir config/vbus/instances/B config/vbus/instances/C && "
        f"echo {USER} > {PERMS}/owner && echo {GROUP} > {PERMS}/group && "
        f"echo 0751 > {PERMS}/mode",
        check=True,
    )
    saved = tmp_path / "vbus.json"
    done = subprocess.run([*VBUSFS, "save", mnt.path, str(saved)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    buses = {bus["name"]: bus for bus in json.loads(saved.read_text())["buses"]}
    assert buses["B"]["perms"] == {"owner": str(USER), "group": str(GROUP), "mode": "0751"}
    with LiveMount(str(tmp_path_factory.mktemp("r")), extra=("--restore", str(saved))) as again:
        assert perms(again) == {"group": f"{GROUP}\n", "mode": "0751\n", "owner": f"{USER}\n"}
        c_perms = again.join("config/vbus/instances/C/perms")
        assert read(f"{c_perms}/mode") == "0700\n"
        assert os.stat(again.join(PERMS, "mode")).st_uid == USER
    # a file saved before buses had perms: its buses are root's, mode 0700
    for bus in buses.values():
        del bus["perms"]
    data = json.loads(saved.read_text())
    data["buses"] = list(buses.values())
    saved.write_text(json.dumps(data))
    with LiveMount(str(tmp_path_factory.mktemp("r")), extra=("--restore", str(saved))) as old:
        assert perms(old) == {"group": "0\n", "mode": "0700\n", "owner": "0\n"}
