"""The exceptions of vbusfs.ioq: one base with an errno, one subclass per meaning.

Pure Python: it imports nothing from the compiled module, so the error table in
``_binding`` can map C return codes onto these classes.
"""

from __future__ import annotations


class IoqError(OSError):
    """Base of every ioq error; ``errno`` says what kind."""


class IoqFull(IoqError):
    """Nothing can be sent or pushed now: every descriptor is in use."""


class IoqEmpty(IoqError):
    """Nothing can be received or popped now."""


class IoqClosed(IoqError):
    """The ioq was closed here, or the watched peer hung up."""


class IoqFault(IoqError):
    """The peer broke the protocol (a bad index, descriptor or length).

    The handle is dead afterwards: every further operation raises this again.
    A south side treats it as the client's fault and drops the client.
    """
