"""`vbusfs modprobe --reload` and `--load` over a discovered class, on real mounts.

The class under edit lives in a module in a temporary directory on the daemon's
PYTHONPATH; the test rewrites the file between reloads, as its author would, and reads
the new behaviour back through the mount.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from vbusfs.testing import LiveMount, netns_available

pytestmark = pytest.mark.mount

VBUSFS = [sys.executable, "-m", "vbusfs"]

MODULE = """
from vbusfs.model import Attribute, DeviceClass

GREETING = {greeting!r}


class Edited(DeviceClass):
    name = {name!r}
    interface_type = "edited-interface"
    attributes = (Attribute("greeting", lambda state: GREETING),{extra})
"""


def write_module(folder, *, greeting="hello", name="edited", extra="", raw=None) -> None:
    text = raw if raw is not None else MODULE.format(greeting=greeting, name=name, extra=extra)
    (folder / "edited_class.py").write_text(textwrap.dedent(text))


def vbusfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VBUSFS, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def source(tmp_path, monkeypatch):
    folder = tmp_path / "src"
    folder.mkdir()
    write_module(folder)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    # as most users' daemons do, it keeps a bytecode cache: a reload must see past it
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    return folder


def mount_with(tmp_path, *load: str) -> LiveMount:
    (tmp_path / "mnt").mkdir()
    return LiveMount(str(tmp_path / "mnt"), private_netns=netns_available(), load=load)


def greeting(mount: LiveMount, device: str = "d") -> str:
    return mount.sh(f"cat sys/vbus/devices/{device}/greeting", check=True).stdout


def test_reload_runs_the_edited_module(tmp_path, source):
    with mount_with(tmp_path, "edited_class:Edited") as mount:
        mount.sh("mkdir config/vbus/devices/d && echo edited > config/vbus/devices/d/type")
        assert greeting(mount) == "hello\n"
        mount.sh("rmdir config/vbus/devices/d", check=True)

        # an edit of the same size within the same second (its time set back to make
        # sure): the bytecode cache the first import wrote looks fresh, yet the reload
        # reads the source
        before = os.stat(source / "edited_class.py")
        write_module(source, greeting="howdy")
        os.utime(source / "edited_class.py", ns=(before.st_atime_ns, before.st_mtime_ns))
        assert list((source / "__pycache__").glob("edited_class.*.pyc"))
        done = vbusfs("modprobe", "--reload", mount.path, "edited")
        assert done.returncode == 0 and done.stdout == "edited\n", done.stderr
        mount.sh("mkdir config/vbus/devices/d && echo edited > config/vbus/devices/d/type")
        assert greeting(mount) == "howdy\n"
        mount.sh("rmdir config/vbus/devices/d", check=True)

        # a new attribute appears with the new class
        extra = '\n                  Attribute("colour", lambda state: "blue"),'
        write_module(source, greeting="howdy", extra=extra)
        assert vbusfs("modprobe", "--reload", mount.path, "edited").returncode == 0
        mount.sh("mkdir config/vbus/devices/d && echo edited > config/vbus/devices/d/type")
        assert mount.sh("cat sys/vbus/devices/d/colour", check=True).stdout == "blue\n"
        log = mount.log
    assert "deviceclass edited reloaded from edited_class:Edited" in log
    assert "Traceback" not in log


def test_reload_is_refused_while_devices_exist_and_for_unloaded_classes(tmp_path, source):
    with mount_with(tmp_path, "edited_class:Edited") as mount:
        mount.sh("mkdir config/vbus/devices/d && echo edited > config/vbus/devices/d/type")
        write_module(source, greeting="later")
        busy = vbusfs("modprobe", "--reload", mount.path, "edited")
        assert busy.returncode == 1 and "Device or resource busy" in busy.stderr
        assert "1 device(s)" in busy.stderr
        assert greeting(mount) == "hello\n"  # the old class goes on serving its device
        missing = vbusfs("modprobe", "--reload", mount.path, "never-loaded")
        assert missing.returncode == 1 and "No such file or directory" in missing.stderr
        assert "never-loaded is not loaded" in missing.stderr
        mount.sh("rmdir config/vbus/devices/d", check=True)
        assert vbusfs("modprobe", "--reload", mount.path, "edited").returncode == 0
        mount.sh("mkdir config/vbus/devices/e && echo edited > config/vbus/devices/e/type")
        assert greeting(mount, "e") == "later\n"


def test_a_module_that_no_longer_imports_keeps_the_old_class(tmp_path, source):
    with mount_with(tmp_path, "edited_class:Edited") as mount:
        write_module(source, raw="class Edited(:\n")
        broken = vbusfs("modprobe", "--reload", mount.path, "edited")
        assert broken.returncode == 1 and "Invalid argument" in broken.stderr
        assert "SyntaxError" in broken.stderr
        mount.sh("mkdir config/vbus/devices/d && echo edited > config/vbus/devices/d/type")
        assert greeting(mount) == "hello\n"
        mount.sh("rmdir config/vbus/devices/d", check=True)
        write_module(source, raw="Edited = 3\n")
        not_a_class = vbusfs("modprobe", "--reload", mount.path, "edited")
        assert not_a_class.returncode == 1 and "no longer a DeviceClass" in not_a_class.stderr
        os.unlink(source / "edited_class.py")
        gone = vbusfs("modprobe", "--reload", mount.path, "edited")
        assert gone.returncode == 1 and "No such file or directory" in gone.stderr
        write_module(source, greeting="fixed")
        assert vbusfs("modprobe", "--reload", mount.path, "edited").returncode == 0
        mount.sh("mkdir config/vbus/devices/d && echo edited > config/vbus/devices/d/type")
        assert greeting(mount) == "fixed\n"


def test_load_of_a_discovered_name_takes_its_place_with_a_warning(tmp_path, source):
    write_module(source, greeting="mine", name="venet-loopback")
    with mount_with(tmp_path, "edited_class:Edited") as mount:  # no EEXIST: it mounts
        mount.sh(
            "mkdir config/vbus/devices/d && echo venet-loopback > config/vbus/devices/d/type",
            check=True,
        )
        assert greeting(mount) == "mine\n"
        assert (
            "deviceclass venet-loopback from edited_class:Edited replaces the discovered one "
            "from vbusfs.classes._venet_loopback:VenetLoopback"
        ) in mount.log
        # the same spec again: loaded already, success (modprobe(8)); another spec of
        # that name meets the loaded one, not a discovered one: EEXIST
        again = vbusfs("modprobe", mount.path, "edited_class:Edited")
        assert again.returncode == 0 and again.stdout == "venet-loopback\n", again.stderr
        (source / "other_class.py").write_text(
            MODULE.format(greeting="x", name="venet-loopback", extra="")
        )
        other = vbusfs("modprobe", mount.path, "other_class:Edited")
        assert other.returncode == 1 and "File exists" in other.stderr
        mount.sh("rmdir config/vbus/devices/d", check=True)
        # the daemon started with it: a reset keeps it
        assert vbusfs("reset", mount.path).returncode == 0
        mount.sh("mkdir config/vbus/devices/d && echo venet-loopback > config/vbus/devices/d/type")
        assert greeting(mount) == "mine\n"


def test_modprobe_of_a_discovered_name_takes_its_place_unless_devices_use_it(tmp_path, source):
    write_module(source, greeting="mine", name="venet-switch")
    with mount_with(tmp_path) as mount:
        mount.sh("mkdir config/vbus/devices/s && echo venet-switch > config/vbus/devices/s/type")
        busy = vbusfs("modprobe", mount.path, "edited_class:Edited")
        assert busy.returncode == 1 and "Device or resource busy" in busy.stderr
        assert not os.path.exists(mount.join("sys/vbus/devices/s/greeting"))
        mount.sh("rmdir config/vbus/devices/s", check=True)
        done = vbusfs("modprobe", mount.path, "edited_class:Edited")
        assert done.returncode == 0 and done.stdout == "venet-switch\n", done.stderr
        mount.sh("mkdir config/vbus/devices/s && echo venet-switch > config/vbus/devices/s/type")
        assert greeting(mount, "s") == "mine\n"
        assert "replaces the discovered one" in mount.log
        # a discovered class named as a spec of itself stays, said in the log
        same = vbusfs("modprobe", mount.path, "vbusfs.classes:VenetTap")
        assert same.returncode == 0 and same.stdout == "venet-tap\n", same.stderr
        assert "is the discovered deviceclass venet-tap itself" in mount.log
        # modprobe added it at run time: a reset gives back the discovered class
        mount.sh("rmdir config/vbus/devices/s", check=True)
        assert vbusfs("reset", mount.path).returncode == 0
        mount.sh("mkdir config/vbus/devices/s && echo venet-switch > config/vbus/devices/s/type")
        assert not os.path.exists(mount.join("sys/vbus/devices/s/greeting"))
