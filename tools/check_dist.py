"""Build the sdist and the wheel, and prove both install and work outside the checkout.

Run by `make check-dist` and CI, with the development venv's Python (the locked build
tools). In a temporary directory outside the checkout it:

1. builds the sdist, then the wheel from the sdist (`python -m build`), and checks the wheel:
   tagged cp311-abi3, carrying py.typed, the ring's .pyi stub, the LICENSE, classifiers,
   project URLs, the version of vbusfs.__version__, hypothesis only behind `testing`;
2. builds a wheelhouse of the locked runtime dependencies (pyfuse3 from its sdist, once);
3. installs the wheel into a fresh venv with no hypothesis, runs `vbusfs demo` there, and a
   throwaway pytest project whose test uses the `vbus_mount` fixture;
4. installs the sdist into another fresh venv (building the C ring from it) and imports the
   ring there.

It never writes into the checkout except `dist/`, and removes its temporary directory.
"""

from __future__ import annotations

import email.parser
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"

# The pytest family from the development lock, for the throwaway project.
PYTEST_FAMILY = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")

THROWAWAY_TEST = """
def test_a_user_mounts_and_builds_a_bus(vbus_mount):
    vbus_mount.sh("mkdir config/vbus/instances/b config/vbus/devices/d", check=True)
    vbus_mount.sh("echo venet-loopback > config/vbus/devices/d/type", check=True)
    vbus_mount.sh("ln -s $PWD/config/vbus/devices/d config/vbus/instances/b/", check=True)
    got = vbus_mount.sh("cat sys/vbus/instances/b/devices/0/type", check=True).stdout
    assert got == "virtual-ethernet\\n"
"""


def step(text: str) -> None:
    print(f"check-dist: {text}", flush=True)


def run(*args: str | pathlib.Path, cwd: pathlib.Path, **kwargs: object) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,  # type: ignore[call-overload]
    )
    if done.returncode != 0:
        sys.exit(f"check-dist: {' '.join(map(str, args))} failed:\n{done.stdout}{done.stderr}")
    return str(done.stdout)


def lock_subset(lock: pathlib.Path, names: tuple[str, ...], out: pathlib.Path) -> pathlib.Path:
    """The entries (pin and hashes) of `names` in a hash-locked requirements file."""
    keep, taking = [], False
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace():
            name = re.split(r"[=<>; ]", line, maxsplit=1)[0].lower()
            taking = name in names
        if taking and not line.lstrip().startswith("#"):
            keep.append(line)
    out.write_text("\n".join(keep) + "\n")
    return out


def check_wheel(wheel: pathlib.Path, version: str) -> None:
    if not re.fullmatch(rf"vbusfs-{re.escape(version)}-cp311-abi3-linux_\w+\.whl", wheel.name):
        sys.exit(f"check-dist: wheel {wheel.name} is not tagged cp311-abi3 for {version}")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(info).decode())
    wanted = {
        "vbusfs/py.typed": "vbusfs/py.typed" in names,
        "the ring's stub": "vbusfs/_ioq_cffi.pyi" in names,
        "LICENSE": any(n.endswith(".dist-info/licenses/LICENSE") for n in names),
        "abi3 ring": any(re.fullmatch(r"vbusfs/_ioq_cffi\.abi3\.so", n) for n in names),
        "classifiers": len(metadata.get_all("Classifier") or []) >= 5,
        "project URLs": len(metadata.get_all("Project-URL") or []) >= 2,
        "version": metadata["Version"] == version,
        "hypothesis only in [testing]": all(
            "extra ==" in r for r in metadata.get_all("Requires-Dist") or [] if "hypothesis" in r
        ),
        "no tests or native sources": not any(
            n.startswith(("tests/", "native/", "bench/")) for n in names
        ),
    }
    missing = [what for what, ok in wanted.items() if not ok]
    if missing:
        sys.exit(f"check-dist: the wheel lacks: {', '.join(missing)}")


def check_sdist(sdist: pathlib.Path) -> None:
    import tarfile

    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    needed = {"native/build_ioq.py", "native/ioq.h", "native/ioq.c", "setup.py", "LICENSE"}
    if needed - names:
        sys.exit(f"check-dist: the sdist lacks {sorted(needed - names)}")


def fresh_venv(path: pathlib.Path, cwd: pathlib.Path) -> pathlib.Path:
    # the interpreter the development venv was made from, so the two agree
    base = getattr(sys, "_base_executable", sys.executable)
    run(base, "-m", "venv", path, cwd=cwd)
    return path / "bin" / "python"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from vbusfs import __version__

    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    step("building the sdist, then the wheel from it")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT, cwd=ROOT)
    (sdist,) = dist.glob("vbusfs-*.tar.gz")
    (wheel,) = dist.glob("vbusfs-*.whl")
    check_sdist(sdist)
    check_wheel(wheel, __version__)
    step(f"built {sdist.name} and {wheel.name}")

    with tempfile.TemporaryDirectory(prefix="vbusfs-dist-") as tmp:
        work = pathlib.Path(tmp)
        pip = ("-m", "pip", "--disable-pip-version-check", "install", "-q")
        houses = work / "wheels"
        step("building the wheelhouse of the locked runtime dependencies")
        run(
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--require-hashes",
            "--no-deps",
            "--no-build-isolation",
            "-r",
            LOCKS / "runtime.txt",
            "-w",
            houses,
            cwd=work,
        )
        runtime_wheels = sorted(houses.glob("*.whl"))

        step("installing the wheel into a fresh venv (no hypothesis)")
        wpy = fresh_venv(work / "wheel-env", work)
        run(wpy, *pip, "--no-index", "--no-deps", *runtime_wheels, wheel, cwd=work)
        subset = lock_subset(LOCKS / "dev.txt", PYTEST_FAMILY, work / "pytest.txt")
        run(wpy, *pip, "--require-hashes", "--no-deps", "-r", subset, cwd=work)
        run(wpy, "-m", "pip", "check", cwd=work)
        probe = (
            "import importlib.util, pathlib, vbusfs, vbusfs.ioq\n"
            f"assert not pathlib.Path(vbusfs.__file__).is_relative_to({str(ROOT)!r})\n"
            "assert (pathlib.Path(vbusfs.__file__).parent / 'py.typed').exists()\n"
            "assert importlib.util.find_spec('hypothesis') is None\n"
            "print(vbusfs.__version__)\n"
        )
        assert run(wpy, "-c", probe, cwd=work).strip() == __version__
        demo = run(work / "wheel-env" / "bin" / "vbusfs", "demo", cwd=work)
        if "unmounted" not in demo or "virtual-ethernet" not in demo:
            sys.exit(f"check-dist: vbusfs demo from the wheel said:\n{demo}")
        step("vbusfs demo ran from the installed wheel")
        project = work / "project"
        project.mkdir()
        (project / "test_user.py").write_text(textwrap.dedent(THROWAWAY_TEST))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        tested = run(wpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project, env=env)
        if "1 passed" not in tested:
            sys.exit(f"check-dist: the throwaway project's vbus_mount test said:\n{tested}")
        step("a throwaway pytest project used vbus_mount from the installed wheel")

        step("installing the sdist into a fresh venv (the C ring built from it)")
        spy = fresh_venv(work / "sdist-env", work)
        run(spy, *pip, "--require-hashes", "--no-deps", "-r", LOCKS / "build.txt", cwd=work)
        run(spy, *pip, "--no-index", "--no-deps", *runtime_wheels, cwd=work)
        run(spy, *pip, "--no-deps", "--no-build-isolation", sdist, cwd=work)
        ring = run(spy, "-c", "import vbusfs.ioq as q; print(q.__file__)", cwd=work)
        if str(ROOT) in ring:
            sys.exit("check-dist: the sdist's vbusfs was imported from the checkout")
        run(work / "sdist-env" / "bin" / "vbusfs", "--help", cwd=work)
        step("the sdist built and its ring imports outside the checkout")
    print("check-dist: 4 passed, 0 failed")


if __name__ == "__main__":
    main()
