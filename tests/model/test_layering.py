"""The model and the views do no I/O: they import nothing that could."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import vbusfs

PACKAGE = pathlib.Path(vbusfs.__file__).parent
FORBIDDEN = {"pyfuse3", "trio", "os", "cffi", "socket", "subprocess", "io", "fcntl", "shutil"}


def imported_modules(folder: pathlib.Path) -> set[str]:
    found = set()
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_model_imports_nothing_that_does_io():
    assert imported_modules(PACKAGE / "model") & FORBIDDEN == set()


def test_views_import_nothing_that_does_io():
    assert imported_modules(PACKAGE / "views") & FORBIDDEN == set()


def test_importing_the_model_loads_no_fuse_or_trio():
    code = (
        "import sys, vbusfs.model, vbusfs.views\n"
        "print(sorted({'pyfuse3', 'trio', 'cffi'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
