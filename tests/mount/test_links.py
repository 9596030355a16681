"""Link targets resolve as the kernel resolves configfs's (behaviour §5): relative ones from
the caller's cwd, absolute ones through its root, symlinks, bind mounts and /proc; real
shells, on the session's shared daemon."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

pytestmark = pytest.mark.mount

# S, T, V: switches (a switch may sit on several buses, once on each); U untyped
SETUP = (
    "mkdir config/vbus/instances/B config/vbus/instances/C config/vbus/instances/E "
    "config/vbus/devices/S config/vbus/devices/T config/vbus/devices/V "
    "config/vbus/devices/U && "
    "for d in S T V; do echo venet-switch > config/vbus/devices/$d/type; done"
)


@pytest.fixture
def populated(vbus_mount):
    vbus_mount.sh(SETUP, check=True)
    return vbus_mount


def sh(command: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    # sh, not the fixture's bash: the daemon must see this shell's own cwd and root
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=30
    )


def on_bus(mount, bus: str) -> list[str]:
    """The devices bus `bus` holds, read from the sys tree."""
    base = mount.join("sys/vbus/instances", bus, "devices")
    return sorted(os.path.basename(os.readlink(f"{base}/{i}/device")) for i in os.listdir(base))


def test_relative_targets_resolve_from_the_callers_cwd(populated):
    mnt = populated
    # the configfs idiom (USB gadgets' `ln -s functions/x configs/c.1`)
    done = sh("cd config/vbus && ln -s devices/S instances/B/", mnt.path)
    assert done.returncode == 0, done.stderr
    assert os.readlink(mnt.join("config/vbus/instances/B/S")) == "../../../vbus/devices/S"
    # from a cwd outside the mount, through it
    parent, base = os.path.split(mnt.path)
    done = sh(f"ln -s {base}/config/vbus/devices/T {mnt.path}/config/vbus/instances/B/", parent)
    assert done.returncode == 0, done.stderr
    # from a bus directory, with `..`
    done = sh("cd config/vbus/instances/C && ln -s ../../devices/S .", mnt.path)
    assert done.returncode == 0, done.stderr
    # where the cwd names nothing on the mount, from the bus directory, as before
    done = sh(f"ln -s ../../devices/V {mnt.path}/config/vbus/instances/E/", "/")
    assert done.returncode == 0, done.stderr
    assert (on_bus(mnt, "B"), on_bus(mnt, "C"), on_bus(mnt, "E")) == (["S", "T"], ["S"], ["V"])
    # what the cwd names decides the errno; a refusal changes nothing
    for target, error in [
        ("devices/S/type", "Not a directory"),
        ("instances/B", "Invalid argument"),
        ("devices/U", "Invalid argument"),  # untyped
        ("devices/none", "No such file or directory"),
        ("devices/S", "Device or resource busy"),  # already on B
    ]:
        done = sh(f"cd config/vbus && ln -s {target} instances/B/z", mnt.path)
        assert done.returncode == 1 and error in done.stderr, (target, done.stderr)
    assert sorted(os.listdir(mnt.join("config/vbus/instances/B"))) == ["S", "T", "perms"]


def test_the_links_own_name_and_place_are_refused_before_its_target_is_resolved(populated):
    # FUSE passes names up to 1,024 bytes: a long name, an existing name and a wrong
    # directory get their own errno whatever the target (here one that names nothing)
    mnt = populated
    long_name = "x" * 300
    for where, name in [
        ("config/vbus/instances/B", long_name),
        ("config/vbus/instances/B", "perms"),
        ("config/vbus/devices", "z"),
    ]:
        for target in (mnt.join("config/vbus/devices/none"), "../../devices/none"):
            link = mnt.join(where, name)
            with pytest.raises(OSError) as refused:
                os.symlink(target, link)
            expected = {long_name: errno.ENAMETOOLONG, "perms": errno.EEXIST}.get(name, errno.EPERM)
            assert refused.value.errno == expected, (where, name, target)
    assert sorted(os.listdir(mnt.join("config/vbus/instances/B"))) == ["perms"]


def test_absolute_targets_resolve_through_symlinks_and_proc_self(populated, tmp_path):
    mnt = populated
    # a chain of symlinks to the mount: an absolute one, then a relative one
    (tmp_path / "real").symlink_to(mnt.path)
    (tmp_path / "alias").symlink_to("real")
    done = sh(f"ln -s {tmp_path}/alias/config/vbus/devices/S {mnt.path}/config/vbus/instances/B/")
    assert done.returncode == 0, done.stderr
    # /proc/self is the shell that asks (the daemon's own cwd is elsewhere), and so is
    # /proc/thread-self
    done = sh("ln -s /proc/self/cwd/config/vbus/devices/S config/vbus/instances/C/", mnt.path)
    assert done.returncode == 0, done.stderr
    done = sh("ln -s /proc/thread-self/cwd/devices/T instances/C/", mnt.join("config/vbus"))
    assert done.returncode == 0, done.stderr
    # through a link in a bus directory to its device, into that very directory: the
    # daemon walks the bus directory in its model, never with a lookup that would wait
    # for the directory the kernel has locked for this symlink(2)
    done = sh(f"ln -s {mnt.path}/config/vbus/instances/B/S {mnt.path}/config/vbus/instances/B/x")
    assert done.returncode == 1 and "Device or resource busy" in done.stderr
    done = sh(f"ln -s {mnt.path}/config/vbus/instances/B/none {mnt.path}/config/vbus/instances/B/y")
    assert done.returncode == 1 and "No such file or directory" in done.stderr
    assert (on_bus(mnt, "B"), on_bus(mnt, "C")) == (["S"], ["S", "T"])
    # outside the mount: EPERM if it exists, else as the kernel's walk fails
    (tmp_path / "loop").symlink_to("loop")
    for target, error in [
        ("/etc", "Operation not permitted"),
        (f"{tmp_path}/alias/sys/vbus/devices/V", "Operation not permitted"),
        (f"{tmp_path}/missing/V", "No such file or directory"),
        (f"{tmp_path}/loop/V", "Too many levels of symbolic links"),
    ]:
        done = sh(f"ln -s {target} {mnt.path}/config/vbus/instances/E/V")
        assert done.returncode == 1 and error in done.stderr, (target, done.stderr)
    assert on_bus(mnt, "E") == []


@pytest.mark.root
def test_absolute_targets_resolve_through_a_bind_mount(populated, tmp_path):
    mnt = populated
    bound = tmp_path / "bound"
    bound.mkdir()
    subprocess.run(["mount", "--bind", mnt.join("config/vbus"), str(bound)], check=True)
    try:
        done = sh(f"ln -s {bound}/devices/S {bound}/instances/B/")
        assert done.returncode == 0, done.stderr
        # a cwd in the bind mount, whose root is config/vbus
        done = sh("ln -s devices/T instances/C/", str(bound))
        assert done.returncode == 0, done.stderr
        assert (on_bus(mnt, "B"), on_bus(mnt, "C")) == (["S"], ["T"])
    finally:
        subprocess.run(["umount", str(bound)], check=True)


def test_every_entry_name_fits_name_max_for_cp_and_tar(vbus_mount, tmp_path):
    mnt = vbus_mount
    # two 255-byte bus names sharing their first 254 bytes, a switch linked into both
    first, second = "b" * 254 + "1", "b" * 254 + "2"
    mnt.sh(
        f"mkdir config/vbus/instances/{first} config/vbus/instances/{second} "
        "config/vbus/devices/S && echo venet-switch > config/vbus/devices/S/type && "
        f"ln -s ../../devices/S config/vbus/instances/{first}/ && "
        f"ln -s ../../devices/S config/vbus/instances/{second}/",
        check=True,
    )
    names = sorted(os.listdir(mnt.join("sys/vbus/devices/S/interfaces")))
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names), names
    assert [n[:230] for n in names] == ["b" * 230] * 2 and all(n.endswith(".0") for n in names)
    for name in names:  # each still leads to its own bus's interface
        bus = os.path.basename(
            os.path.dirname(
                os.path.dirname(os.readlink(mnt.join("sys/vbus/devices/S/interfaces", name)))
            )
        )
        assert bus in (first, second)
    # the whole tree copies with tools nobody here wrote
    done = subprocess.run(
        ["cp", "-a", mnt.join("sys"), mnt.join("config"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "sys/vbus/devices/S/interfaces")) == names
    done = subprocess.run(
        f"tar -cf - -C {mnt.path} sys config | tar -tf - | grep -c interfaces/",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "3", done.stderr  # the directory and its two entries


@pytest.mark.root
def test_proc_self_is_the_caller_in_its_own_pid_namespace(populated):
    mnt = populated
    # a shell in a new pid namespace with its own /proc: there, /proc/self is its pid
    # in that namespace (1 or 2), which means another process in the daemon's /proc
    done = subprocess.run(
        [
            "unshare", "--pid", "--fork", "--mount", "--mount-proc", "sh", "-c",
            "cd config/vbus && ln -s /proc/self/cwd/devices/S instances/B/",
        ],
        cwd=mnt.path,
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert on_bus(mnt, "B") == ["S"]
