"""Moved to `vbusfs.daemon` (the membership backend is daemon side: it does I/O).

Kept only while tests/views/test_views.py still imports `vbusfs._procfs.ProcFs`;
delete this file once it imports `from vbusfs.daemon import ProcFs`.
"""

from vbusfs.daemon import ProcFs

__all__ = ["ProcFs"]
