"""Draw a subtree of the model the way the `tree` program draws a directory.

The demo uses it where no mount is possible, so the in-process model prints
exactly what `LC_ALL=C tree` prints over a live mount.
"""

from __future__ import annotations

from vbusfs.model import Vbus, VbusError

from ._nodes import DirNode, Path, SymlinkNode, children, node
from ._ops import resolve

# tree(1) draws the vertical line followed by two no-break spaces in UTF-8 locales.
_CONTINUE = "│\u00a0\u00a0 "


def render_tree(vbus: Vbus, path: Path, label: str) -> str:
    lines = [label]
    counts = {"dirs": 1, "files": 0}  # tree counts the directory it starts from
    _walk(vbus, path, "", lines, counts)
    dirs = counts["dirs"]
    files = counts["files"]
    lines.append("")
    lines.append(
        f"{dirs} director{'y' if dirs == 1 else 'ies'}, {files} file{'' if files == 1 else 's'}"
    )
    return "\n".join(lines) + "\n"


def _walk(vbus: Vbus, path: Path, prefix: str, lines: list[str], counts: dict[str, int]) -> None:
    names = sorted(children(vbus, path), key=lambda n: n.encode())
    for index, name in enumerate(names):
        last = index == len(names) - 1
        child = (*path, name)
        found = node(vbus, child)
        branch = "└── " if last else "├── "
        if isinstance(found, SymlinkNode):
            lines.append(f"{prefix}{branch}{name} -> {found.target}")
            # tree counts a symlink by what it points at, without descending into it
            counts["dirs" if _points_to_dir(vbus, child) else "files"] += 1
        elif isinstance(found, DirNode):
            lines.append(f"{prefix}{branch}{name}")
            counts["dirs"] += 1
            _walk(vbus, child, prefix + ("    " if last else _CONTINUE), lines, counts)
        else:
            lines.append(f"{prefix}{branch}{name}")
            counts["files"] += 1


def _points_to_dir(vbus: Vbus, path: Path) -> bool:
    try:
        return isinstance(node(vbus, resolve(vbus, path)), DirNode)
    except VbusError:
        return False
