"""Switch: the venet-switch data path, a MAC learning table and forwarding in C.

It moves frames between rings without touching their indices from Python: the
rings are handed to ``vswitch_forward`` whole, through the ring module's
:func:`~vbusfs.ioq._ring.c_handle`, after checking with the rings' public
attributes (side, direction, buffers acquired) that each may take part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ._binding import check, ffi, lib
from ._ring import Ring, c_handle


class SwitchCounts(NamedTuple):
    """What one :meth:`Switch.forward` call did."""

    frames: int  # consumed from the source ring
    bad_size: int  # consumed and dropped: outside the source port's 14 (+ header) .. max_len
    flooded: int  # broadcast, multicast or unknown destination: sent to every other port
    filtered: int  # the destination was learned on the sender's own port: dropped
    unlearned: int  # new source addresses the full table could not learn
    delivered: tuple[int, ...]  # per port: copies published on its ring
    dropped: tuple[int, ...]  # per port: copies lost (no posted buffer, too small, faulted)
    faulted: tuple[int, ...]  # ports whose ring broke the protocol: drop their clients
    gso_dropped: int = 0  # copies not made: a large segment to a bare port that cannot be cut
    signals: int = 1  # times the source's north was told of freed slots
    gso_segmented: int = 0  # copies of large TCP segments cut into frames for a bare port


class Switch:
    """The venet-switch data path: a MAC learning table and forwarding in C.

    Ports are small indices (0 .. :attr:`MAX_PORTS` - 1) the caller keeps stable for as
    long as a client is connected, and forgets (:meth:`forget_port`) when it goes.  Frames
    are copied once, in C, from the sender's data segment into the buffers the other
    ports' clients posted; nothing is created in Python per frame.  The table learns at
    most :attr:`LEARN_MAX` addresses; frames to addresses it does not know are flooded.
    """

    MAX_PORTS: int = lib.VSWITCH_MAX_PORTS
    #: a port in header mode: each message starts with this many bytes (virtio-net)
    VNET_HDR: int = lib.VSWITCH_VNET_HDR
    #: the longest message a port in header mode may send or take, header included
    MAX_SG: int = lib.VSWITCH_MAX_SG
    MAX_FRAME: int = lib.VSWITCH_MAX_FRAME
    LEARN_MAX: int = lib.VSWITCH_LEARN_MAX
    BATCH: int = lib.VSWITCH_BATCH

    def __init__(self) -> None:
        out = ffi.new("struct vswitch **")
        check(lib.vswitch_new(out))
        self._sw = ffi.gc(out[0], lib.vswitch_free)
        self._rings = ffi.new("struct ioq *[]", self.MAX_PORTS)
        self._counts = ffi.new("struct vswitch_counts *")
        self._per_port = ffi.new("struct vswitch_port_counts[]", self.MAX_PORTS)
        self._mac = ffi.new("uint8_t[6]")

    def __len__(self) -> int:
        """How many addresses the table holds."""
        return int(lib.vswitch_learned(self._sw))

    def lookup(self, mac: bytes) -> int | None:
        """The port ``mac`` was last seen on as a source, or None."""
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self._mac[0:6] = bytes(mac)
        port = lib.vswitch_lookup(self._sw, self._mac)
        return None if port < 0 else int(port)

    def forget_port(self, index: int) -> int:
        """Forget every address learned on port ``index``; returns how many."""
        if not 0 <= index < self.MAX_PORTS:
            raise ValueError(f"port must be 0..{self.MAX_PORTS - 1}")
        return int(lib.vswitch_forget_port(self._sw, index))

    def set_port(self, index: int, *, header: bool, max_len: int | None = None) -> None:
        """Port ``index``'s message format: bare Ethernet frames (``header`` False) or a
        virtio-net header first; ``max_len`` the longest message, header included
        (default 1514 bare, :attr:`MAX_SG` with a header).  Frames between ports of
        different formats are converted (behaviour §7.4); ValueError if out of range."""
        hdr = self.VNET_HDR if header else 0
        longest = (self.MAX_SG if header else self.MAX_FRAME) if max_len is None else max_len
        if not 0 <= index < self.MAX_PORTS or not 14 + hdr <= longest <= self.MAX_SG:
            raise ValueError(f"port 0..{self.MAX_PORTS - 1}, max_len {14 + hdr}..{self.MAX_SG}")
        check(lib.vswitch_set_port(self._sw, index, hdr, longest))

    def forward(
        self,
        src_port: int,
        src: Ring,
        ports: Sequence[Ring | None],
        max_messages: int = 64,
        *,
        signal_every: int = 0,
    ) -> SwitchCounts:
        """Take up to ``max_messages`` frames from ``src`` (port ``src_port``'s to-south
        ring) and copy each to the to-north rings in ``ports`` (indexed by port, None for
        a port without a client): a learned unicast destination gets it alone, the rest is
        flooded; never back to ``src_port``; converted to each port's format (`set_port`).
        A ring with no posted buffer left drops its copy.  Each destination is signalled
        once.

        ``signal_every`` hands the source's slots back to its north (one signal each) every
        that many frames, as they are copied; 0: once, at the end.

        IoqEmpty if ``src`` had nothing; IoqFault if ``src`` broke the protocol (the
        sender's fault, nothing copied).  A destination ring that broke the protocol is
        skipped and listed in ``faulted``: that is its own client's fault, not the sender's.
        """
        if not 1 <= len(ports) <= self.MAX_PORTS:
            raise ValueError(f"1..{self.MAX_PORTS} ports")
        if not 0 <= src_port < len(ports):
            raise ValueError(f"src_port must be 0..{len(ports) - 1}")
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        if signal_every < 0:
            raise ValueError("signal_every must be >= 0")
        if src.side != "south" or src.direction != "to_south":
            raise ValueError("the source must be the south side of a to_south ring")
        if src.acquired:
            raise ValueError("the source ring has acquired buffers outstanding")
        rings = self._rings
        seen: set[int] = set()
        for i, ring in enumerate(ports):
            if ring is None:
                rings[i] = ffi.NULL
                continue
            if ring.side != "south" or ring.direction != "to_north":
                raise ValueError(f"port {i}: not the south side of a to_north ring")
            if id(ring) in seen:
                raise ValueError(f"port {i}: the same ring is on two ports")
            if ring.acquired:
                raise ValueError(f"port {i}: the ring has acquired buffers outstanding")
            seen.add(id(ring))
            rings[i] = c_handle(ring)
        n = len(ports)
        counts, per_port = self._counts, self._per_port
        check(
            lib.vswitch_forward(
                self._sw,
                src_port,
                c_handle(src),
                rings,
                n,
                min(max_messages, self.BATCH),
                signal_every,
                counts,
                per_port,
            )
        )
        entries = ffi.unpack(per_port, n)
        return SwitchCounts(
            counts.frames,
            counts.bad_size,
            counts.flooded,
            counts.filtered,
            counts.unlearned,
            tuple(e.delivered for e in entries),
            tuple(e.dropped for e in entries),
            tuple(i for i, e in enumerate(entries) if e.faulted) if counts.faulted else (),
            counts.gso_dropped,
            counts.signals,
            counts.gso_segmented,
        )
