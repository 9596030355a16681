"""The original walkthrough, replayed with real shell commands on a live mount."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess

import pytest

from vbusfs.testing import LiveMount

pytestmark = pytest.mark.mount


@pytest.fixture
def mnt(vbus_mount):
    """The session's shared daemon, reset after each test: these tests use only the trees
    (and processes of their own), never the daemon's process, log start or resources."""
    return vbus_mount


START = """\
config d 755
config/vbus d 755
config/vbus/devices d 755
config/vbus/instances d 755
sys d 755
sys/vbus d 755
sys/vbus/deviceclass d 755
sys/vbus/deviceclass/venet-loopback d 755
sys/vbus/deviceclass/venet-switch d 755
sys/vbus/deviceclass/venet-tap d 755
sys/vbus/devices d 755
sys/vbus/instances d 755
sys/vbus/version f 444
"""

LINKED = """\
config d 755
config/vbus d 755
config/vbus/devices d 755
config/vbus/devices/D d 755
config/vbus/devices/D/type f 644
config/vbus/instances d 755
config/vbus/instances/B d 755
config/vbus/instances/B/D l 777 ../../../vbus/devices/D
config/vbus/instances/B/perms d 755
config/vbus/instances/B/perms/group f 644
config/vbus/instances/B/perms/mode f 644
config/vbus/instances/B/perms/owner f 644
sys d 755
sys/vbus d 755
sys/vbus/deviceclass d 755
sys/vbus/deviceclass/venet-loopback d 755
sys/vbus/deviceclass/venet-switch d 755
sys/vbus/deviceclass/venet-tap d 755
sys/vbus/devices d 755
sys/vbus/devices/D d 755
sys/vbus/devices/D/burstthresh f 644
sys/vbus/devices/D/class l 777 ../../deviceclass/venet-tap
sys/vbus/devices/D/client_mac f 644
sys/vbus/devices/D/enabled f 644
sys/vbus/devices/D/host_mac f 444
sys/vbus/devices/D/ifname f 444
sys/vbus/devices/D/interfaces d 755
sys/vbus/devices/D/interfaces/0 l 777 ../../../instances/B/devices/0
sys/vbus/devices/D/mtu f 644
sys/vbus/devices/D/txmitigation f 644
sys/vbus/instances d 755
sys/vbus/instances/B d 755
sys/vbus/instances/B/devices d 755
sys/vbus/instances/B/devices/0 d 755
sys/vbus/instances/B/devices/0/device l 777 ../../../../devices/D
sys/vbus/instances/B/devices/0/type f 444
sys/vbus/instances/B/members d 755
sys/vbus/version f 444
"""


def tree_of(mnt: LiveMount) -> str:
    listing = mnt.sh("find config sys -printf '%p %y %m %l\\n' | sort", check=True).stdout
    return "\n".join(line.rstrip() for line in listing.splitlines()) + "\n"


def test_walkthrough_builds_and_tears_down_exact_trees(mnt):
    assert tree_of(mnt) == START
    assert mnt.sh("cat sys/vbus/version").stdout == "1\n"
    mnt.sh("mkdir config/vbus/instances/B && mkdir config/vbus/devices/D", check=True)
    assert mnt.sh("cat config/vbus/devices/D/type").stdout == "\n"
    assert mnt.sh("ls -A config/vbus/instances/B").stdout == "perms\n"
    assert mnt.sh("ls -A sys/vbus/instances/B").stdout == "devices\nmembers\n"
    assert mnt.sh("ls -A sys/vbus/devices/D").stdout == "interfaces\n"

    bad = mnt.sh("echo foo > config/vbus/devices/D/type")
    assert bad.returncode != 0 and "No such file or directory" in bad.stderr
    assert mnt.sh("cat config/vbus/devices/D/type").stdout == "\n"

    mnt.sh("echo venet-tap > config/vbus/devices/D/type", check=True)
    assert mnt.sh("cat config/vbus/devices/D/type").stdout == "venet-tap\n"
    mnt.sh(
        f"ln -s {mnt.path}/config/vbus/devices/D {mnt.path}/config/vbus/instances/B/", check=True
    )
    assert tree_of(mnt) == LINKED
    assert mnt.sh("readlink config/vbus/instances/B/D").stdout == "../../../vbus/devices/D\n"
    assert mnt.sh("cat sys/vbus/instances/B/devices/0/type").stdout == "virtual-ethernet\n"
    resolved = mnt.sh("readlink -f sys/vbus/devices/D/interfaces/0/device").stdout
    assert resolved == f"{mnt.path}/sys/vbus/devices/D\n"
    assert mnt.sh("cd sys/vbus/instances/B/devices/0/device && ls class").returncode == 0

    mnt.sh(
        "rm config/vbus/instances/B/D && rmdir config/vbus/devices/D "
        "&& rmdir config/vbus/instances/B",
        check=True,
    )
    assert tree_of(mnt) == START
    # the class can be unloaded again: nothing is typed
    assert mnt.sh("ls sys/vbus/devices").stdout == ""


@pytest.mark.parametrize(
    "link_command",
    [
        "ln -s $M/config/vbus/devices/D $M/config/vbus/instances/B/",
        "ln -s $M/config/vbus/devices/D/ $M/config/vbus/instances/B/D",
        "ln -s $M/config/vbus/devices/D config/vbus/instances/B/any-name",
        "ln -s ../../devices/D config/vbus/instances/B/D",
        "ln -s ../../devices/D/ config/vbus/instances/B/D",
        "ln -s $M/config//vbus/./devices/../devices/D config/vbus/instances/B/D",
        "cd config/vbus/instances/B && ln -s ../../devices/D .",
    ],
)
def test_link_forms_all_read_back_canonically(mnt, link_command):
    mnt.sh("mkdir config/vbus/instances/B config/vbus/devices/D", check=True)
    mnt.sh("echo venet-loopback > config/vbus/devices/D/type", check=True)
    done = mnt.sh(f"M={mnt.path}; {link_command}")
    assert done.returncode == 0, done.stderr
    names = os.listdir(mnt.join("config/vbus/instances/B"))
    (link,) = [n for n in names if n != "perms"]
    assert os.readlink(mnt.join("config/vbus/instances/B", link)) == "../../../vbus/devices/D"
    assert os.listdir(mnt.join("sys/vbus/instances/B/devices")) == ["0"]


def test_find_follows_sys_links_inside_the_mount(mnt):
    mnt.sh(
        "mkdir config/vbus/instances/B config/vbus/devices/D && "
        "echo venet-tap > config/vbus/devices/D/type && "
        "ln -s ../../devices/D config/vbus/instances/B/D",
        check=True,
    )
    followed = mnt.sh("find -L sys/vbus/instances/B/devices/0/device/ -maxdepth 1 -name class")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.strip().endswith("class")


@pytest.mark.skipif(shutil.which("tree") is None, reason="tree is not installed")
def test_tree_program_draws_the_sys_tree(mnt):
    mnt.sh("mkdir config/vbus/instances/B config/vbus/devices/D", check=True)
    drawn = mnt.sh("tree sys/vbus/instances").stdout
    assert drawn.splitlines()[1:] == [
        "└── B",
        "    ├── devices",
        "    └── members",
        "",
        "4 directories, 0 files",
    ]


@pytest.mark.skipif(shutil.which("tree") is None, reason="tree is not installed")
def test_the_readme_tree_after_the_link_is_what_tree_prints(mnt):
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    walkthrough = readme.split("## The walkthrough", 1)[1].split("```sh\n", 1)[1]
    steps = walkthrough.split("```", 1)[0].splitlines()
    first = next(n for n, s in enumerate(steps) if s.startswith("mkdir config/vbus/instances"))
    link = next(n for n, s in enumerate(steps) if s.startswith("ln -s "))
    commands = [s.split("#", 1)[0].strip() for s in steps[first : link + 1]]
    commands = [c.replace("/tmp/vbus", mnt.path) for c in commands if "echo foo" not in c]
    mnt.sh(" && ".join(commands), check=True)
    shown = readme.split("After the link, `tree sys/vbus` shows:", 1)[1].split("```\n", 2)[1]
    drawn = mnt.sh("tree sys/vbus").stdout.replace("\u00a0", " ")  # tree's indent
    assert drawn.split("\n\n", 1)[0] + "\n" == shown


def test_changes_are_seen_by_the_next_call_of_another_process(mnt):
    # a reader that keeps its cwd in sys sees config changes immediately
    mnt.sh("mkdir config/vbus/devices/D", check=True)
    assert os.path.isdir(mnt.join("sys/vbus/devices/D"))
    assert not os.path.exists(mnt.join("sys/vbus/devices/D/class"))
    with open(mnt.join("config/vbus/devices/D/type"), "w") as f:
        f.write("venet-loopback")
    assert (
        mnt.sh("readlink sys/vbus/devices/D/class").stdout == "../../deviceclass/venet-loopback\n"
    )
    assert os.path.exists(mnt.join("sys/vbus/devices/D/enabled"))
    mnt.sh("rmdir config/vbus/devices/D", check=True)
    assert not os.path.exists(mnt.join("sys/vbus/devices/D"))
    assert mnt.sh("ls sys/vbus/devices").stdout == ""


@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_absolute_targets_are_read_as_the_caller_sees_the_mount(mnt, tmp_path):
    # In a private mount namespace config/vbus is bind-mounted elsewhere, as
    # `vbusfs run` does; a link typed with that path must still be understood.
    alias = tmp_path / "alias"
    alias.mkdir()
    script = (
        f"mount --bind {mnt.path}/config/vbus {alias} && cd {alias} && "
        "mkdir instances/B devices/D && echo venet-tap > devices/D/type && "
        f"ln -s {alias}/devices/D {alias}/instances/B/ && "
        f"ln -s {alias}/devices {alias}/instances/B/bad; echo $?"
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "1", done.stderr  # the second link: EINVAL
    assert "Invalid argument" in done.stderr
    assert os.readlink(mnt.join("config/vbus/instances/B/D")) == "../../../vbus/devices/D"
    # the alias exists only in that namespace: here the same text names nothing, and the
    # kernel's walk of it fails as any walk would
    with pytest.raises(OSError) as info:
        os.symlink(f"{alias}/devices/D", mnt.join("config/vbus/instances/B/again"))
    assert info.value.errno == errno.ENOENT
