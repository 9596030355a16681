"""vbusfs: the Linux virtual-bus administrative interface in userspace."""

__version__ = "0.1.0"
