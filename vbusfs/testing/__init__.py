"""Tools for testing with vbusfs: live mounts that always clean up, a tiny IPv4 host."""

from ._host import checksum, reply_to, serve_host
from ._mount import LiveMount, fuse_problem, netns_available, stop_all

__all__ = [
    "LiveMount",
    "checksum",
    "fuse_problem",
    "netns_available",
    "reply_to",
    "serve_host",
    "stop_all",
]
