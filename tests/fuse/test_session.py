"""The session's close: invalidations still queued when the mount goes log no traceback."""

from __future__ import annotations

import logging
import sys

from vbusfs.fuse import _session


def test_an_invalidation_failing_after_close_is_one_debug_line():
    try:
        raise OSError(22, "fuse_lowlevel_notify_inval_entry returned: Invalid argument")
    except OSError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "pyfuse3",
        logging.ERROR,
        __file__,
        1,
        "Failed to submit invalidate_entry request for parent inode %d, name %r",
        (24, b"1847"),
        exc_info,
    )
    assert _session._after_close(record)
    assert record.levelno == logging.DEBUG and record.levelname == "DEBUG"
    assert record.exc_info is None
    assert "Traceback" not in logging.Formatter().format(record)


def test_other_pyfuse3_errors_keep_their_level_and_traceback():
    record = logging.LogRecord(
        "pyfuse3", logging.ERROR, __file__, 1, "handler failed", (), (OSError, OSError(5), None)
    )
    assert _session._after_close(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None
