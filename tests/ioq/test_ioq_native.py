"""The C code itself: warning-free builds and a hostile-peer run under ASan and UBSan."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"
SOURCES = sorted(NATIVE.glob("*.c"))
DRIVER = Path(__file__).with_name("ioq_fuzz_driver.c")

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def gcc(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gcc", *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


@needs_gcc
def test_native_sources_exist() -> None:
    assert {p.name for p in SOURCES} == {
        "blk.c",
        "enet.c",
        "gso.c",
        "ioq.c",
        "poller.c",
        "shm_signal.c",
        "venet.c",
        "vswitch.c",
        "vswitch_run.c",
        "vtap_run.c",
    }


@needs_gcc
@pytest.mark.parametrize("std", ["c11", "gnu11"])
@pytest.mark.parametrize("opt", ["-O0", "-O2", "-O3"])
def test_native_code_compiles_without_warnings(std: str, opt: str) -> None:
    for src in SOURCES:
        out = gcc(
            f"-std={std}",
            opt,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            NATIVE,
            "-c",
            src,
            "-o",
            "/dev/null",
        )
        assert out.returncode == 0, out.stderr


@needs_gcc
def test_native_warning_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int f(int unused) { return 0; }\n")
    assert gcc("-Wall", "-Wextra", "-Werror", "-c", bad, "-o", "/dev/null").returncode != 0


@needs_gcc
def test_native_layout_asserts_hold_on_32_bit(tmp_path: Path) -> None:
    probe = tmp_path / "probe.c"
    probe.write_text("#include <stdint.h>\nint main(void) { return 0; }\n")
    if gcc("-m32", "-fsyntax-only", probe).returncode != 0:
        pytest.skip("no 32-bit C headers (gcc-multilib) on this machine")
    for src in SOURCES:
        out = gcc(
            "-m32", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I", NATIVE, "-fsyntax-only", src
        )
        assert out.returncode == 0, out.stderr


@needs_gcc
@pytest.mark.slow
def test_native_ring_survives_a_hostile_peer_under_asan(tmp_path: Path) -> None:
    exe = tmp_path / "ioq_fuzz"
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    if gcc(*flags, probe, "-o", tmp_path / "probe").returncode != 0:
        pytest.skip("gcc cannot link with -fsanitize=address,undefined (libasan missing)")
    built = gcc(
        "-std=gnu11",
        "-g",
        "-O1",
        "-fno-omit-frame-pointer",
        "-Wall",
        "-Wextra",
        "-Werror",
        *flags,
        "-I",
        NATIVE,
        *SOURCES,
        DRIVER,
        "-o",
        exe,
    )
    assert built.returncode == 0, built.stderr
    # its own session, so a timeout can end the driver and its hostile child together
    proc = subprocess.Popen(
        [str(exe), "20000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "PATH": "/usr/bin:/bin"},
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, out + err
    assert "AddressSanitizer" not in err and "runtime error" not in err
    assert out.rstrip().endswith("ok")


@needs_gcc
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_native_ring_survives_a_hostile_peer_under_valgrind(tmp_path: Path) -> None:
    exe = tmp_path / "ioq_fuzz_plain"
    built = gcc(
        "-std=gnu11",
        "-g",
        "-O1",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-I",
        NATIVE,
        *SOURCES,
        DRIVER,
        "-o",
        exe,
    )
    assert built.returncode == 0, built.stderr
    proc = subprocess.Popen(
        ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full", str(exe), "2000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # 99: valgrind found an invalid access or a leak; 2: a check in the driver failed
    assert proc.returncode == 0, out + err
    assert out.rstrip().endswith("ok")
