"""Tools for testing with vbusfs: live mounts that always clean up after themselves."""

from ._mount import LiveMount, fuse_problem, netns_available, stop_all

__all__ = ["LiveMount", "fuse_problem", "netns_available", "stop_all"]
