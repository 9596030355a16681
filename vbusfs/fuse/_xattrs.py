"""Extended attributes: the root's, as given; nothing else has any, and none is set.

The daemon names its connector's socket in the root's `user.vbusfs.connector`, so
member processes can find it from nothing but the mount point.

Only the `user.` namespace exists here: a name in any other (`security.selinux`,
`system.posix_acl_access`, `trusted.`) is EOPNOTSUPP, not "no such attribute". Tools
that ask such a name of every file (`ls -l` asks `security.selinux`) take EOPNOTSUPP as
"this filesystem has none" and stop asking, where ENODATA would cost one request per
file listed.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence

import pyfuse3

from ._errno import answers_errno, fail
from ._inodes import ROOT_INODE

# the one namespace vbusfs has extended attributes in
USER_NAMESPACE = b"user."


class RootXattrs:
    """The xattr handlers of `VbusOperations`, over its `root_xattrs`."""

    # the root's read-only extended attributes, given by whoever composes the daemon
    root_xattrs: Mapping[bytes, bytes]

    @answers_errno
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if inode == ROOT_INODE and name in self.root_xattrs:
            return self.root_xattrs[name]
        if not name.startswith(USER_NAMESPACE):
            raise fail(errno.EOPNOTSUPP)
        raise fail(pyfuse3.ENOATTR)

    @answers_errno
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        if inode == ROOT_INODE:
            return list(self.root_xattrs)
        return []

    @answers_errno
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise fail(errno.EPERM)

    @answers_errno
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise fail(errno.EPERM)
