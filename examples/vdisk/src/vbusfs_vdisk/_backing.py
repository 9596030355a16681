"""Where a vdisk's bytes live: anonymous memory, or a file.

A memory backing is a memfd, so a device worker process maps the same bytes.
A backing reads into and writes from buffers the caller gives (memoryviews of
a ring's data segment on the device's path), so data moves once: a file with
`os.preadv`/`os.pwritev` straight between the file and the buffer, memory with
one copy between the mapping and the buffer. Offsets and lengths are checked
by the caller (`Disk`); a backing trusts them.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat

#: the largest memory-backed disk (the mapping is lazily zeroed, but it is still memory)
MAX_MEMORY_SIZE = 1 << 30


class Backing:
    """The bytes of a disk: `size` of them, read and written at byte offsets."""

    size: int
    #: the open memfd or file (a worker process is handed it; the C block server
    #: duplicates it)
    fd: int

    def read_into(self, buffer: memoryview, offset: int) -> None:
        """Fill `buffer` with the bytes at `offset` (OSError on an I/O failure)."""
        raise NotImplementedError

    def write_from(self, data: memoryview, offset: int) -> None:
        """Store `data` at `offset` (OSError on an I/O failure)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make every write so far durable (OSError on an I/O failure)."""

    def close(self) -> None:
        """Release what the backing holds; idempotent."""


class MemoryBacking(Backing):
    """Memory (a memfd), zero until written; kept for a device's life across its opens.

    The memfd (`fd`) lets a device worker process map the same bytes (`adopt`)."""

    def __init__(self, size: int, *, fd: int | None = None) -> None:
        if not 0 < size <= MAX_MEMORY_SIZE:
            raise ValueError(f"a memory disk holds 1 to {MAX_MEMORY_SIZE} bytes, not {size}")
        self.size = size
        if fd is None:
            fd = os.memfd_create("vdisk", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
            except BaseException:
                os.close(fd)
                raise
        self.fd = fd
        try:
            if os.fstat(fd).st_size < size:
                raise OSError(errno.EINVAL, "the memory disk's memfd is shorter than its size")
            self._map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        self._view = memoryview(self._map)

    @classmethod
    def adopt(cls, fd: int, size: int) -> MemoryBacking:
        """The memory disk whose memfd is `fd` (owned from now on), as a worker maps it."""
        return cls(size, fd=fd)

    def read_into(self, buffer: memoryview, offset: int) -> None:
        buffer[:] = self._view[offset : offset + len(buffer)]

    def write_from(self, data: memoryview, offset: int) -> None:
        self._view[offset : offset + len(data)] = data

    def resized(self, size: int) -> MemoryBacking:
        """A new memory backing of `size` bytes that starts with this one's bytes (what
        fits); this one is closed."""
        new = MemoryBacking(size)
        keep = min(size, self.size)
        new._view[:keep] = self._view[:keep]
        self.close()
        return new

    def close(self) -> None:
        if not self._map.closed:
            self._view.release()
            self._map.close()
            os.close(self.fd)


class FileBacking(Backing):
    """The first `size` bytes of a file, read and written in place with preadv/pwritev.

    Past the file's end (a file truncated after it was opened) reads give zeros.
    """

    def __init__(self, path: str, size: int, *, readonly: bool, fd: int | None = None) -> None:
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        self._fd = os.open(path, flags) if fd is None else fd
        try:
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, f"{path} is not a regular file")
            if info.st_size < size:
                raise OSError(
                    errno.ENOSPC, f"{path} holds {info.st_size} bytes, fewer than size {size}"
                )
        except BaseException:
            os.close(self._fd)
            raise
        self.path = path
        self.size = size

    def read_into(self, buffer: memoryview, offset: int) -> None:
        done = os.preadv(self._fd, [buffer], offset)
        while done < len(buffer):
            more = os.preadv(self._fd, [buffer[done:]], offset + done)
            if more == 0:  # end of file: what lies past it reads as zeros
                buffer[done:] = bytes(len(buffer) - done)
                return
            done += more

    def write_from(self, data: memoryview, offset: int) -> None:
        done = os.pwritev(self._fd, [data], offset)
        while done < len(data):
            done += os.pwritev(self._fd, [data[done:]], offset + done)

    @property
    def fd(self) -> int:
        """The open file (for a worker process to be handed)."""
        return self._fd

    def flush(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def check_backing_file(path: str) -> int:
    """The size of the regular file at `path`; OSError (ENOENT, EINVAL ...) if it is not one."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return info.st_size
