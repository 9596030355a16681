"""The Makefile's set-up on a machine where a .venv was left broken or half-made."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[2]

# each test makes a venv (several seconds): not for make test-fast
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
]


@pytest.fixture
def checkout(tmp_path: pathlib.Path) -> pathlib.Path:
    """The Makefile with an empty build lock, so making a venv needs no network."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "build.txt").write_text("")
    return tmp_path


def venv_ok(checkout: pathlib.Path) -> subprocess.CompletedProcess[str]:
    base = getattr(sys, "_base_executable", sys.executable)
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(checkout), ".venv-ok", f"PY={base}"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def works(venv: pathlib.Path) -> bool:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import pip"]
    return (venv / ".created").exists() and subprocess.run(probe).returncode == 0


def test_a_half_made_venv_is_made_anew(checkout):
    venv = checkout / ".venv"
    venv.mkdir()
    (venv / "leftover").write_text("from an interrupted set-up")  # and no .created mark
    done = venv_ok(checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken or half-made: making it anew" in done.stdout
    assert not (venv / "leftover").exists() and works(venv)


def test_a_venv_whose_interpreter_is_gone_is_made_anew(checkout):
    first = venv_ok(checkout)
    assert first.returncode == 0, first.stdout + first.stderr
    venv = checkout / ".venv"
    for name in ("python", "python3"):
        (venv / "bin" / name).unlink()
        (venv / "bin" / name).symlink_to("/nonexistent/python3")
    done = venv_ok(checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "broken or half-made" in done.stdout and works(venv)


def test_a_working_venv_is_kept(checkout):
    assert venv_ok(checkout).returncode == 0
    mark = checkout / ".venv" / "kept"
    mark.write_text("")
    done = venv_ok(checkout)
    assert done.returncode == 0 and "anew" not in done.stdout and mark.exists()


def test_an_old_python_is_refused_with_the_fix(checkout, tmp_path):
    old = tmp_path / "python-old"
    old.write_text('#!/bin/sh\nif [ "$1" = -V ]; then echo "Python 3.9.2"; exit 0; fi\nexit 1\n')
    old.chmod(0o755)
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(checkout), ".venv-ok", f"PY={old}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "needs Python 3.11 or later" in done.stdout and "Python 3.9.2" in done.stdout
    assert not (checkout / ".venv").exists()
