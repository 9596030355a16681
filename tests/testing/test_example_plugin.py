"""examples/plugin, as its author runs it, without touching the shared environment.

The plugin is never pip-installed here: an installed deviceclass would be loaded
by every later mount of the suite. Its tests run with `src` on PYTHONPATH, once
as a checkout (the class loaded by name) and once "installed": a dist-info
directory written from the plugin's own pyproject.toml into a temporary
directory makes `importlib.metadata` find its `vbusfs.deviceclasses` entry point.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "plugin"


def fake_install(site: pathlib.Path) -> None:
    """What `pip install` leaves for importlib.metadata: METADATA and entry_points.txt."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
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


# under the ci profile the example's own tests draw the same examples on every run too
SEED = ["--hypothesis-seed=0"] if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else []


def run(
    args: list[str], tmp_path: pathlib.Path, *paths: pathlib.Path
) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(str(p) for p in (PLUGIN / "src", *paths)),
        PYTHONDONTWRITEBYTECODE="1",  # leave no __pycache__ in the example
    )
    env.pop("HYPOTHESIS_PROFILE", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,  # hypothesis keeps its database here, not in the example
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_entry_point_makes_blink_a_discovered_class(tmp_path):
    site = tmp_path / "site"
    fake_install(site)
    code = (
        "from vbusfs.classes import discover\n"
        "from vbusfs.testing import host_free_model\n"
        "print(discover()['blink'].__module__, sorted(host_free_model().classes))\n"
    )
    found = run(["-c", code], tmp_path, site)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split(maxsplit=1) == [
        "vbus_blink",
        "['blink', 'venet-loopback', 'venet-switch', 'venet-tap']\n",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("installed", [False, True], ids=["checkout", "installed"])
def test_the_example_plugins_own_tests_pass(tmp_path, installed):
    site = tmp_path / "site"
    if installed:
        fake_install(site)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *SEED, str(PLUGIN)]
    result = run(args, tmp_path, *([site] if installed else []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
