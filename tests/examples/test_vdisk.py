"""examples/vdisk, as its author runs it: its own test suite, from a checkout and "installed".

The package is never pip-installed here (an installed deviceclass would be loaded by
every later mount of the suite): its tests run with `src` on PYTHONPATH, once as a
checkout (the class loaded by name) and once with a dist-info directory written from
its own pyproject.toml, so that `importlib.metadata` finds its entry point and the
daemon discovers the class as it would an installed one.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
VDISK = ROOT / "examples" / "vdisk"

# under the ci profile the example's own tests draw the same examples on every run too
SEED = ["--hypothesis-seed=0"] if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else []


def fake_install(site: pathlib.Path) -> None:
    """What `pip install` leaves for importlib.metadata: METADATA and entry_points.txt."""
    project = tomllib.loads((VDISK / "pyproject.toml").read_text())["project"]
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


def run(args: list[str], cwd: pathlib.Path, *paths: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(str(p) for p in (VDISK / "src", *paths)),
        PYTHONDONTWRITEBYTECODE="1",  # leave no __pycache__ in the example
    )
    env.pop("HYPOTHESIS_PROFILE", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,  # hypothesis keeps its database here, not in the example
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_entry_point_makes_vdisk_a_discovered_class(tmp_path):
    site = tmp_path / "site"
    fake_install(site)
    code = (
        "from vbusfs.classes import discover\n"
        "from vbusfs.testing import host_free_model\n"
        "print(discover()['vdisk'].__module__, 'vdisk' in host_free_model().classes)\n"
    )
    found = run(["-c", code], tmp_path, site)
    assert found.returncode == 0, found.stderr
    assert found.stdout == "vbusfs_vdisk._deviceclass True\n"


def test_a_client_imports_neither_the_model_nor_trio(tmp_path):
    code = (
        "import sys\n"
        "from vbusfs_vdisk import VdiskClient, protocol\n"
        "print(sorted(m for m in ('vbusfs.model', 'vbusfs.device', 'trio', 'pyfuse3')"
        " if m in sys.modules))\n"
    )
    done = run(["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


@pytest.mark.slow
@pytest.mark.mount
def test_the_vdisk_examples_own_tests_pass(tmp_path):
    # installed only: the example plugin's tests already run from a checkout as well
    site = tmp_path / "site"
    fake_install(site)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *SEED, str(VDISK)]
    result = run(args, tmp_path, site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
    assert "skipped" not in result.stdout, result.stdout  # the mount tests ran too
