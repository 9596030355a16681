"""Errors of the vbus model.

Every failure the model reports is a `VbusError` carrying the errno that the
filesystem adapter hands to the caller. A failed operation never changes the
model: operations check everything first, then mutate.
"""

from __future__ import annotations

import errno as _errno


class VbusError(Exception):
    """Base of every model error; `errno` is what the caller of a syscall sees."""

    errno: int = _errno.EIO

    def __init__(self, message: str = "", *, errno: int | None = None) -> None:
        super().__init__(message)
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:
        text = super().__str__()
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"{text} [{name}]" if text else name


class NotFound(VbusError):
    errno = _errno.ENOENT


class AlreadyExists(VbusError):
    errno = _errno.EEXIST


class InvalidValue(VbusError):
    errno = _errno.EINVAL


class Busy(VbusError):
    errno = _errno.EBUSY


class NotEmpty(VbusError):
    errno = _errno.ENOTEMPTY


class NotPermitted(VbusError):
    errno = _errno.EPERM


class AccessDenied(VbusError):
    errno = _errno.EACCES


class NameTooLong(VbusError):
    errno = _errno.ENAMETOOLONG


class NoSpace(VbusError):
    errno = _errno.ENOSPC


class NotADirectory(VbusError):
    errno = _errno.ENOTDIR


class IsADirectory(VbusError):
    errno = _errno.EISDIR


class NoSuchProcess(VbusError):
    errno = _errno.ESRCH


class NoDevice(VbusError):
    """The object behind an open handle is gone (as sysfs answers ENODEV)."""

    errno = _errno.ENODEV


class NotSupported(VbusError):
    """What was asked needs a kernel feature this kernel lacks (pid translation, say)."""

    errno = _errno.EOPNOTSUPP
