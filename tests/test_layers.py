"""The layer map: which package of vbusfs may import which. A new arrow fails here.

Read from the sources (every import statement, at any depth, relative ones resolved), so a
lazy import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import pathlib

import vbusfs

PACKAGE = pathlib.Path(vbusfs.__file__).parent

# package -> the vbusfs packages it may import. Anything not listed may import nothing
# of vbusfs. "*" means any: only the composition root, the CLI and the testing kit.
MAY_IMPORT: dict[str, set[str]] = {
    "model": set(),  # pure: deviceclasses, devices, buses, interfaces, members
    "views": {"model"},  # pure: the trees as functions of the model
    "fuse": {"model", "views", "_mountinfo"},  # the only pyfuse3 importer: the adapter alone
    "ioq": {"_ioq_cffi"},  # the ring binding: the only importer of the compiled module
    "device": {"model", "ioq"},  # what a deviceclass author imports: contract + helpers
    "connector": {"model", "ioq", "device", "_unixaddr"},  # the protocol core and the daemon side
    "classes": {"model", "ioq", "connector", "device", "_tun"},  # deviceclasses (venet numbers)
    "client": {"connector", "ioq", "_mountinfo", "_unixaddr"},  # the member process's library
    "enet": {"client", "connector", "ioq", "_tun"},  # the userspace vbus-enet driver (a member)
    "_mountinfo": set(),  # /proc/self/mountinfo parsed: shared by fuse and client
    "_unixaddr": set(),  # AF_UNIX addresses for long socket paths
    "_tun": set(),  # TAP ioctls through /dev/net/tun: shared by classes and enet
    "daemon": {"*"},  # the one composition root
    "cli": {"*"},
    "testing": {"*"},  # the public kit drives everything
    "__main__": {"cli"},
}

# Modules that must import nothing of vbusfs and no I/O at all.
PURE_MODULES = {"connector/_protocol.py", "connector/venet.py"}
IO_MODULES = {"os", "socket", "select", "trio", "pyfuse3", "cffi", "subprocess", "fcntl"}


def unit_of(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imports_of(path: pathlib.Path, text: str | None = None) -> set[str]:
    """Every module `path` (or `text`, as if it sat at `path`) imports, as dotted names."""
    # the package a module belongs to (an __init__'s is its own); relative imports climb it
    package = ("vbusfs", *path.relative_to(PACKAGE).parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module or "")
            if node.module == "vbusfs":  # from vbusfs import daemon
                found |= {f"vbusfs.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join((*base, node.module)))
            else:
                found |= {".".join((*base, alias.name)) for alias in node.names}
    return found


def arrows() -> set[tuple[str, str, str]]:
    """(importing unit, imported unit, file) for every import between two units."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        unit = unit_of(path)
        for module in imports_of(path):
            parts = module.split(".")
            if parts[0] != "vbusfs" or len(parts) < 2 or parts[1] == unit:
                continue
            found.add((unit, parts[1], str(path.relative_to(PACKAGE))))
    return found


def test_every_unit_is_on_the_map():
    units = {unit_of(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert units - MAY_IMPORT.keys() == set(), "a new package needs a row in MAY_IMPORT"


def test_no_package_imports_what_the_map_forbids():
    wrong = sorted(
        f"{where}: {unit} -> {target}"
        for unit, target, where in arrows()
        if "*" not in MAY_IMPORT.get(unit, set()) and target not in MAY_IMPORT.get(unit, set())
    )
    assert wrong == []


def test_the_map_catches_a_new_arrow():
    # the check itself can fail: a views module importing the connector or the daemon
    text = (
        "from vbusfs.connector import XATTR\nfrom ..daemon import spawn\n"
        "from . import _nodes\nfrom vbusfs import ioq\n"
    )
    found = imports_of(PACKAGE / "views" / "bad.py", text)
    assert found == {
        "vbusfs",
        "vbusfs.connector",
        "vbusfs.daemon",
        "vbusfs.ioq",
        "vbusfs.views._nodes",
    }


def test_the_pure_modules_do_no_io():
    for name in sorted(PURE_MODULES):
        roots = {m.split(".")[0] for m in imports_of(PACKAGE / name)}
        assert roots & IO_MODULES == set(), name
        assert not any(m.startswith("vbusfs") for m in imports_of(PACKAGE / name)), name


def test_no_python_module_is_over_500_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
