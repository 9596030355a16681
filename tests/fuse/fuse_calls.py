"""The pyfuse3 handlers called directly: a fake request context and the calls every test
of the adapter makes (imported by name: the test directory is on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass

import pyfuse3
import pytest
import trio

from vbusfs.fuse import VbusOperations
from vbusfs.fuse._inodes import ROOT_INODE


@dataclass
class Ctx:
    pid: int = 0
    uid: int = 0
    gid: int = 0
    umask: int = 0o022


CTX = Ctx()


def run(coroutine_fn, *args):
    return trio.run(coroutine_fn, *args)


def lookup_path(ops: VbusOperations, path: str) -> int:
    ino = ROOT_INODE
    for part in path.split("/"):
        ino = run(ops.lookup, ino, part.encode(), CTX).st_ino
    return ino


def fuse_errno(call, *args) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        run(call, *args)
    return info.value.errno
