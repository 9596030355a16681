"""The guide's step 1 package (its pyproject.toml, as written) builds and registers its class."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

GUIDE = pathlib.Path(__file__).parents[2] / "docs" / "deviceclass-guide.md"


def step_one_toml() -> str:
    (block,) = [
        part.split("```", 1)[0]
        for part in GUIDE.read_text().split("```toml\n")[1:]
        if "vbusfs.deviceclasses" in part.split("```", 1)[0]
    ]
    return "\n".join(line.removeprefix("   ") for line in block.splitlines()) + "\n"


def test_the_step_one_package_builds_with_its_entry_point(tmp_path):
    package = tmp_path / "pkg"
    (package / "src" / "mypackage").mkdir(parents=True)
    (package / "pyproject.toml").write_text(step_one_toml())
    (package / "src" / "mypackage" / "__init__.py").write_text("class Upper: ...\n")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "dist"),
            str(package),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mypackage-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "mypackage/__init__.py" in names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "[vbusfs.deviceclasses]" in text and "upper = mypackage:Upper" in text
