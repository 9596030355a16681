"""The demo in fresh mount, PID and network namespaces, as a container would run it; and the
shape of the container build (examples/container/), which CI cannot run."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[2]
CONTAINER = ROOT / "examples" / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
IGNORE_FILES = (ROOT / ".containerignore", ROOT / ".dockerignore")

# What only building needs; none of it may reach the final image.
BUILD_ONLY = ("gcc", "libc6-dev", "python3-dev", "libfuse3-dev", "pkg-config", "make")


@pytest.mark.mount
@pytest.mark.root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_the_demo_runs_in_its_own_mount_pid_and_network_namespaces():
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--pid",
            "--net",
            "--fork",
            "--mount-proc",
            "--",
            sys.executable,
            "-m",
            "vbusfs",
            "demo",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "vbusfs is mounted at" in out and "unmounted" in out
    assert "virtual-ethernet" in out
    # in its own PID namespace the demo's shell has a small pid, and is a member
    assert "is listed in sys/vbus/instances/client-bus/members" in out


def _instructions(text: str) -> list[str]:
    """The Containerfile's instructions, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def _stages(text: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for instruction in _instructions(text):
        if instruction.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _apt_packages(stage: list[str]) -> set[str]:
    packages: set[str] = set()
    for instruction in stage:
        for command in instruction.split("&&"):
            words = command.split()
            if "apt-get" in words and "install" in words:
                after = words[words.index("install") + 1 :]
                packages.update(w for w in after if not w.startswith(("-", "$")))
    return packages


def test_the_containerfile_builds_wheels_in_one_stage_and_runs_them_in_a_slim_one():
    text = CONTAINERFILE.read_text()
    assert re.search(r"^ARG BASE=debian:bookworm-slim$", text, re.MULTILINE)
    stages = _stages(text)
    assert len(stages) >= 2
    assert all(stage[0].split()[1] == "${BASE}" for stage in stages)

    builders = [s for s in stages if s[0].split()[-1] == "builder"]
    assert len(builders) == 1
    builder = builders[0]
    assert {"gcc", "python3-dev", "libfuse3-dev", "pkg-config", "python3-venv"} <= _apt_packages(
        builder
    )
    built = " ".join(builder)
    # pyfuse3 and the other dependencies from the hash-locked file, then vbusfs itself
    assert "--require-hashes" in built and "runtime.txt" in built and "build.txt" in built
    assert built.count("pip wheel") >= 2

    final = stages[-1]
    assert len(final[0].split()) == 2, "the final stage is the unnamed last one"
    packages = _apt_packages(final)
    assert {"python3", "fuse3", "libfuse3-3", "tree"} <= packages
    assert not packages & set(BUILD_ONLY)
    assert not [p for p in packages if p.endswith("-dev")]
    copies = [i for i in final if i.upper().startswith(("COPY", "ADD"))]
    assert copies and all(i.startswith("COPY --from=builder ") for i in copies), copies
    assert 'CMD ["vbusfs", "demo"]' in final


def test_the_build_context_leaves_out_venvs_build_outputs_caches_and_git():
    first, second = (path.read_text() for path in IGNORE_FILES)
    assert first == second, ".containerignore and .dockerignore differ"
    patterns = {line.strip() for line in first.splitlines() if not line.startswith("#")}
    for needed in (
        ".venv",
        ".git",
        "build",
        "dist",
        "**/*.egg-info",
        "**/__pycache__",
        "**/*.so",
        "vbusfs/_ioq_cffi*",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
    ):
        assert needed in patterns, needed
    # nothing the build needs is left out
    for kept in ("vbusfs", "native", "requirements", "pyproject.toml", "setup.py"):
        assert kept not in patterns, kept


def test_the_container_readme_gives_the_flags_the_demo_needs():
    text = (CONTAINER / "README.md").read_text()
    assert "--device /dev/fuse --cap-add SYS_ADMIN" in text
    assert "--device /dev/net/tun --cap-add NET_ADMIN" in text
    assert "make image" in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(
    "script", ["examples/container/debian-base.sh", "tools/fresh-debian.sh"], ids=str
)
def test_the_helper_scripts_parse(script):
    done = subprocess.run(["bash", "-n", ROOT / script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
