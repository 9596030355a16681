"""The `vbusfs` command: mount, umount, run, demo, save, modprobe, rmmod, tree, graph.

A front end only: `mount` and `umount` hand over to `vbusfs.daemon`, the admin
commands speak to a live daemon through `vbusfs.client` or read its trees, and
`run` and `demo` start a daemon of their own through `vbusfs.daemon`. Nothing here
composes a daemon.
"""

from ._main import main, parser

__all__ = ["main", "parser"]
