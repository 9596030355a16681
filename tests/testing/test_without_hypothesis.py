"""vbusfs without its `testing` extra: the fixtures and the harness work, the hypothesis
parts say why not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from vbusfs.testing import fuse_problem

# pytest in a process where `import hypothesis` fails as it does when it is not installed
RUNNER = """
import sys

class NoHypothesis:
    def find_spec(self, name, path=None, target=None):
        if name == "hypothesis" or name.startswith("hypothesis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoHypothesis())
import pytest
sys.exit(pytest.main(["-q", "-p", "no:hypothesispytest", "-p", "no:cacheprovider",
                      "-W", "error", "test_user.py"]))
"""

USER_TESTS = """
import pytest

def test_the_model_fixture(vbus_model):
    vbus_model.create_bus("b")
    assert "b" in vbus_model.buses

def test_the_mount_fixture(vbus_mount):
    vbus_mount.sh("mkdir config/vbus/instances/b", check=True)
    assert vbus_mount.sh("ls sys/vbus/instances", check=True).stdout.split() == ["b"]

def test_the_harness_needs_no_hypothesis():
    from vbusfs.device import DeviceClass, RequestResponseConnection, request_response_queues
    from vbusfs.testing import DeviceHarness

    class Echo(RequestResponseConnection):
        def handle(self, request, response):
            response[: len(request)] = request
            return len(request)

    class EchoClass(DeviceClass):
        name = "echo"
        interface_type = "echo"
        versions = frozenset({1})
        queues = request_response_queues(64, 64)

        def open(self, state, interface_state, version):
            return Echo()

    with DeviceHarness(EchoClass) as h:
        rr = h.request_response()
        assert rr.request(b"hi", 5) == b"hi"
        h.end(rr.interface, "close")
        rr.close()

def test_a_strategy_says_what_to_install():
    import vbusfs.testing
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'vbusfs\\[testing\\]'"):
        vbusfs.testing.names
    with pytest.raises(ModuleNotFoundError, match="DeviceClassConformance needs hypothesis"):
        from vbusfs.testing import DeviceClassConformance  # noqa: F401
"""


def test_fixtures_work_and_strategies_name_the_extra_without_hypothesis(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    if fuse_problem() is None:
        assert done.returncode == 0 and "4 passed" in out, out
    else:
        assert done.returncode == 0 and "3 passed, 1 skipped" in out, out
