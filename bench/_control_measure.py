"""The measuring half of bench/control.py: the peers, the operations, the timing, the results.

Peers take short alternating turns at each operation and every turn's cost per
item is kept, so a burst of noise hits all peers alike; see control.py's docstring.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

KINDS = ("vbusfs", "minimal", "tmpfs", "before")
DEVICES_PER_BUS = 10
TYPE_BYTES = "venet-loopback\n"


@dataclass(frozen=True)
class Settings:
    scales: tuple[int, int]
    rounds: int
    batch: int  # devices made and removed again per round and peer
    chunks: int  # the batch is made in this many turns, alternating the peers
    sample: int  # existing devices that stat and read cycle through
    turns: int  # turns per round for stat and read
    turn_time: float  # seconds per turn for stat and read
    listing_turns: int
    listing_time: float
    scandir_turns: int


FULL = Settings(
    scales=(1_000, 10_000),
    rounds=4,
    batch=120,
    chunks=6,
    sample=300,
    turns=6,
    turn_time=0.02,
    listing_turns=4,
    listing_time=0.05,
    scandir_turns=2,
)
QUICK = replace(
    FULL,
    scales=(300, 3_000),
    rounds=3,
    batch=40,
    chunks=4,
    sample=100,
    turns=4,
    listing_turns=2,
    scandir_turns=1,
)


# -- the peers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One filesystem at one population: where its trees live.

    vbusfs computes `type`, `sys/vbus/devices/D/` and its attributes from the
    model; the other kinds get plain files and directories at the same paths.
    """

    kind: str
    scale: int
    root: str

    @property
    def computed(self) -> bool:
        return self.kind in ("vbusfs", "before")

    @property
    def label(self) -> str:
        return f"{self.kind}@{self.scale}"

    def device(self, d: str) -> str:
        return f"{self.root}/config/vbus/devices/{d}"

    def bus(self, b: str) -> str:
        return f"{self.root}/config/vbus/instances/{b}"

    def type_file(self, d: str) -> str:
        return f"{self.root}/config/vbus/devices/{d}/type"

    def sys_device(self, d: str) -> str:
        return f"{self.root}/sys/vbus/devices/{d}"

    def attribute(self, d: str) -> str:
        return f"{self.root}/sys/vbus/devices/{d}/enabled"

    def devices_dir(self) -> str:
        return f"{self.root}/config/vbus/devices"


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def bus_of(index: int) -> str:
    return f"b{index // DEVICES_PER_BUS}"


# -- timing --------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Failure(Exception):
    """An operation failed: which peer, which operation, which path."""


Action = Callable[[str], object]


def _guarded(peer: Peer, op: str, action: Action) -> Action:
    def run(path: str) -> object:
        try:
            return action(path)
        except OSError as exc:
            raise Failure(f"{peer.label}: {op} {path}: {exc}") from exc

    return run


def _rotated(peers: Sequence[Peer], turn: int) -> list[Peer]:
    shift = turn % len(peers)
    return [*peers[shift:], *peers[:shift]]


Samples = dict[Peer, list[float]]


def time_batches(
    peers: Sequence[Peer], items: dict[Peer, list[str]], action: dict[Peer, Action], chunks: int
) -> Samples:
    """Seconds per item of each turn: each peer's items done once in `chunks` alternating turns."""
    samples: Samples = {peer: [] for peer in peers}
    with _quiet_gc():
        for turn in range(chunks):
            for peer in _rotated(peers, turn):
                act = action[peer]
                part = items[peer][turn::chunks]
                start = time.perf_counter()
                for item in part:
                    act(item)
                samples[peer].append((time.perf_counter() - start) / len(part))
    return samples


def time_turns(
    peers: Sequence[Peer],
    items: dict[Peer, list[str]],
    action: dict[Peer, Action],
    turns: int,
    turn_time: float,
) -> Samples:
    """Seconds per item of each turn: peers take `turns` alternating turns of `turn_time`.

    Every turn does at least one item, so a slow listing runs once per turn.
    """
    samples: Samples = {peer: [] for peer in peers}
    done = dict.fromkeys(peers, 0)
    clock = time.perf_counter
    with _quiet_gc():
        for turn in range(turns):
            for peer in _rotated(peers, turn):
                act = action[peer]
                cycle = items[peer]
                position = done[peer]
                start = clock()
                now = start
                while now - start < turn_time or position == done[peer]:
                    act(cycle[position % len(cycle)])
                    position += 1
                    now = clock()
                samples[peer].append((now - start) / (position - done[peer]))
                done[peer] = position
    return samples


def _type_write(path: str) -> None:
    with open(path, "w") as f:
        f.write(TYPE_BYTES)


def _read_small(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 4096)
    finally:
        os.close(fd)


def _listdir(path: str) -> None:
    os.listdir(path)


def _scandir_stat(path: str) -> None:
    # Through a directory descriptor, each stat is one fstatat() relative to it,
    # as find(1) does, so the cost is the entry's and not the path's depth.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                entry.stat()
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Op:
    key: str
    label: str
    per_entry: bool = False  # a listing: compared per directory entry


OPS = (
    Op("mkdir", "mkdir device"),
    Op("type", "type write"),
    Op("link_abs", "link, absolute target"),
    Op("link_rel", "link, relative target"),
    Op("unlink", "unlink link"),
    Op("rmdir", "rmdir device"),
    Op("stat_dir", "stat device dir"),
    Op("stat_file", "stat attribute file"),
    Op("read", "attr open+read+close"),
    Op("listdir", "listdir", per_entry=True),
    Op("scandir", "scandir + stat each", per_entry=True),
)
OP_BY_KEY = {op.key: op for op in OPS}


@dataclass
class Results:
    # (kind, scale, op key) -> seconds per op (per listing for listings), one per turn
    runs: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)
    entries: dict[int, int] = field(default_factory=dict)  # scale -> entries per listing

    def add(self, op: str, measured: Samples) -> None:
        for peer, samples in measured.items():
            self.runs.setdefault((peer.kind, peer.scale, op), []).extend(samples)

    def turns(self, op: str) -> int:
        return min((len(v) for (_, _, key), v in self.runs.items() if key == op), default=0)

    def best(self, kind: str, scale: int, op: str) -> float | None:
        runs = self.runs.get((kind, scale, op))
        return min(runs) if runs else None

    def per_item(self, kind: str, scale: int, op: str) -> float | None:
        best = self.best(kind, scale, op)
        if best is None or not OP_BY_KEY[op].per_entry:
            return best
        return best / self.entries[scale]


def measure_round(
    peers: Sequence[Peer], round_no: int, settings: Settings, results: Results
) -> None:
    """One round: every operation on every peer, peers alternating within each operation."""
    order = _rotated(peers, round_no)
    names = [f"m{round_no}n{i}" for i in range(settings.batch)]
    half = len(names) // 2

    def bus_for(peer: Peer, index: int) -> str:
        return peer.bus(f"b{(index * 7919) % (peer.scale // DEVICES_PER_BUS)}")

    def batch(
        op: str, paths: Callable[[Peer], list[str]], action: Callable[[Peer], Action]
    ) -> None:
        items = {peer: paths(peer) for peer in order}
        guarded = {peer: _guarded(peer, op, action(peer)) for peer in order}
        results.add(op, time_batches(order, items, guarded, settings.chunks))

    def links(peer: Peer, part: range) -> list[str]:
        return [f"{bus_for(peer, i)}/{names[i]}" for i in part]

    def symlink_to(peer: Peer, relative: bool) -> Action:
        def action(link: str) -> None:
            name = link.rsplit("/", 1)[1]
            os.symlink(f"../../devices/{name}" if relative else peer.device(name), link)

        return action

    # Devices made in this round are removed again at its end: each peer keeps
    # exactly its population for the stats and listings.
    batch("mkdir", lambda p: [p.device(m) for m in names], lambda p: os.mkdir)
    for peer in peers:
        if not peer.computed:  # vbusfs makes `type` with the device; the peers get a file
            for m in names:
                write_file(peer.type_file(m), "\n")
    batch("type", lambda p: [p.type_file(m) for m in names], lambda p: _type_write)
    batch("link_abs", lambda p: links(p, range(half)), lambda p: symlink_to(p, False))
    batch("link_rel", lambda p: links(p, range(half, len(names))), lambda p: symlink_to(p, True))
    batch("unlink", lambda p: links(p, range(len(names))), lambda p: os.unlink)
    for peer in peers:
        if not peer.computed:
            for m in names:
                os.unlink(peer.type_file(m))
    batch("rmdir", lambda p: [p.device(m) for m in names], lambda p: os.rmdir)

    def turns(op: str, paths: Callable[[Peer], list[str]], action: Action, listing: bool) -> None:
        items = {peer: paths(peer) for peer in order}
        guarded = {peer: _guarded(peer, op, action) for peer in order}
        count = settings.listing_turns if listing else settings.turns
        seconds = settings.listing_time if listing else settings.turn_time
        results.add(op, time_turns(order, items, guarded, count, seconds))

    samples = {
        peer: [f"d{i}" for i in random.Random(round_no).sample(range(peer.scale), settings.sample)]
        for peer in peers
    }
    turns("stat_dir", lambda p: [p.device(d) for d in samples[p]], os.stat, False)
    turns("stat_file", lambda p: [p.attribute(d) for d in samples[p]], os.stat, False)
    turns("read", lambda p: [p.attribute(d) for d in samples[p]], _read_small, False)
    turns("listdir", lambda p: [p.devices_dir()], _listdir, True)
    # one pass per turn: a pass over 10,000 entries takes most of a second on FUSE
    results.add(
        "scandir",
        time_turns(
            order,
            {peer: [peer.devices_dir()] for peer in order},
            {peer: _guarded(peer, "scandir", _scandir_stat) for peer in order},
            settings.scandir_turns,
            0.0,
        ),
    )
