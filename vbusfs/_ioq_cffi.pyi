"""Types for the compiled module vbusfs._ioq_cffi (native/ioq.h through cffi, API mode).

Only ``vbusfs.ioq._binding`` imports it.  ``lib`` lists every function and constant
of native/ioq.h with its C signature in Python terms, so mypy checks every C call;
tests/ioq/test_ioq_stub.py checks this file against the compiled module (the same
names, the same number of arguments, integers where C has integers).  The CData
classes name the C types the package allocates with ``ffi.new``; they exist only
here, for the type checker.
"""

from collections.abc import Callable, Iterator
from typing import Literal, TypeVar, overload

from typing_extensions import Buffer

_T = TypeVar("_T")

class CData:
    """Any cffi C object."""

class NullPtr(CData):
    """ffi.NULL"""

class IoqPtr(CData):
    """struct ioq * (opaque)"""

class VswitchPtr(CData):
    """struct vswitch * (opaque)"""

class VswitchRunnerPtr(CData):
    """struct vswitch_runner * (opaque)"""

class VswitchRunnerPtrOut(CData):
    """struct vswitch_runner **"""

    def __getitem__(self, i: int, /) -> VswitchRunnerPtr: ...

class VtapRunnerPtr(CData):
    """struct vtap_runner * (opaque)"""

class VtapRunnerPtrOut(CData):
    """struct vtap_runner **"""

    def __getitem__(self, i: int, /) -> VtapRunnerPtr: ...

class VtapConfig(CData):
    """struct vtap_config *"""

    tap_fd: int
    loop: int
    link_up: int
    min_len: int
    max_len: int
    every: int
    spin_us: int

class VtapCounts(CData):
    """struct vtap_counts *"""

    tx_frames: int
    tx_signals: int
    rx_frames: int
    oversize: int
    dropped: int
    polled: int
    slept: int
    faulted: int

class VswitchRunCounts(CData):
    """struct vswitch_run_counts *"""

    tx_frames: int
    bad_size: int
    gso_dropped: int
    gso_segmented: int
    signals: int
    rx_delivered: int
    rx_dropped: int
    polled: int
    slept: int
    faulted: int

class BlkPtr(CData):
    """struct blk * (opaque)"""

class BlkPtrOut(CData):
    """struct blk **"""

    def __getitem__(self, i: int, /) -> BlkPtr: ...

class BlkLayout(CData):
    """struct blk_layout *"""

    request_size: int
    response_size: int
    sector: int
    op_read: int
    op_write: int
    tag_at: int
    offset_at: int
    length_at: int
    op_at: int
    flags_at: int
    resp_tag_at: int
    resp_status_at: int
    resp_length_at: int

class BlkCounts(CData):
    """struct blk_counts *"""

    reads: int
    writes: int
    read_bytes: int
    written_bytes: int
    batches: int
    signals: int
    slept: int

class PollerPtr(CData):
    """struct ioq_poller * (opaque)"""

class PollerPtrOut(CData):
    """struct ioq_poller **"""

    def __getitem__(self, i: int, /) -> PollerPtr: ...

class U64Out(CData):
    """uint64_t *"""

    def __getitem__(self, i: int, /) -> int: ...

class IoqPtrOut(CData):
    """struct ioq **"""

    def __getitem__(self, i: int, /) -> IoqPtr: ...

class VswitchPtrOut(CData):
    """struct vswitch **"""

    def __getitem__(self, i: int, /) -> VswitchPtr: ...

class IoqPtrArray(CData):
    """struct ioq *[]"""

    def __setitem__(self, i: int, v: IoqPtr | NullPtr, /) -> None: ...

class IntArray(CData):
    """int[]"""

    def __getitem__(self, i: int, /) -> int: ...
    def __iter__(self) -> Iterator[int]: ...
    def __len__(self) -> int: ...

class U32Array(CData):
    """uint32_t[]"""

    def __getitem__(self, i: int, /) -> int: ...
    def __setitem__(self, i: int, v: int, /) -> None: ...
    def __len__(self) -> int: ...

class U64Array(CData):
    """uint64_t[]"""

    def __getitem__(self, i: int, /) -> int: ...
    def __len__(self) -> int: ...

class CharArray(CData):
    """char[] (also what ffi.from_buffer makes of a Python buffer)"""

    def __len__(self) -> int: ...

class U8Array(CData):
    """uint8_t[]"""

    def __setitem__(self, i: slice, v: bytes, /) -> None: ...

class IoqDesc(CData):
    """struct ioq_desc *"""

    cookie: int
    ptr: int
    len: int
    valid: int
    sown: int

class IoqFdCounts(CData):
    """struct ioq_fd_counts *"""

    dropped: int
    bad_size: int

class FdpumpCounts(CData):
    """struct fdpump_counts *"""

    to_device: int
    to_host: int
    host_dropped: int
    bad_size: int
    flushed: int
    polled: int
    slept: int

class VswitchCounts(CData):
    """struct vswitch_counts *"""

    frames: int
    bad_size: int
    flooded: int
    filtered: int
    unlearned: int
    delivered: int
    dropped: int
    faulted: int
    gso_dropped: int
    signals: int
    gso_segmented: int

class VswitchPortCounts(CData):
    """struct vswitch_port_counts"""

    delivered: int
    dropped: int
    faulted: int

class VswitchPortCountsArray(CData):
    """struct vswitch_port_counts[]"""

    def __getitem__(self, i: int, /) -> VswitchPortCounts: ...

class _FFI:
    NULL: NullPtr
    @overload
    def new(self, cdecl: Literal["struct ioq **"], /) -> IoqPtrOut: ...
    @overload
    def new(self, cdecl: Literal["struct vswitch **"], /) -> VswitchPtrOut: ...
    @overload
    def new(self, cdecl: Literal["struct ioq_poller **"], /) -> PollerPtrOut: ...
    @overload
    def new(self, cdecl: Literal["uint64_t *"], /) -> U64Out: ...
    @overload
    def new(self, cdecl: Literal["struct ioq *[]"], n: int, /) -> IoqPtrArray: ...
    @overload
    def new(self, cdecl: Literal["int[4]"], /) -> IntArray: ...
    @overload
    def new(self, cdecl: Literal["char[]"], n: int, /) -> CharArray: ...
    @overload
    def new(self, cdecl: Literal["uint32_t[]"], n: int, /) -> U32Array: ...
    @overload
    def new(self, cdecl: Literal["uint64_t[]"], n: int, /) -> U64Array: ...
    @overload
    def new(self, cdecl: Literal["uint8_t[6]"], /) -> U8Array: ...
    @overload
    def new(self, cdecl: Literal["struct ioq_desc *"], /) -> IoqDesc: ...
    @overload
    def new(self, cdecl: Literal["struct ioq_fd_counts *"], /) -> IoqFdCounts: ...
    @overload
    def new(self, cdecl: Literal["struct vswitch_counts *"], /) -> VswitchCounts: ...
    @overload
    def new(self, cdecl: Literal["struct fdpump_counts *"], /) -> FdpumpCounts: ...
    @overload
    def new(self, cdecl: Literal["struct vswitch_runner **"], /) -> VswitchRunnerPtrOut: ...
    @overload
    def new(self, cdecl: Literal["struct blk **"], /) -> BlkPtrOut: ...
    @overload
    def new(self, cdecl: Literal["struct blk_layout *"], /) -> BlkLayout: ...
    @overload
    def new(self, cdecl: Literal["struct blk_counts *"], /) -> BlkCounts: ...
    @overload
    def new(self, cdecl: Literal["struct vswitch_run_counts *"], /) -> VswitchRunCounts: ...
    @overload
    def new(self, cdecl: Literal["struct vtap_runner **"], /) -> VtapRunnerPtrOut: ...
    @overload
    def new(self, cdecl: Literal["struct vtap_config *"], /) -> VtapConfig: ...
    @overload
    def new(self, cdecl: Literal["struct vtap_counts *"], /) -> VtapCounts: ...
    @overload
    def new(
        self, cdecl: Literal["struct vswitch_port_counts[]"], n: int, /
    ) -> VswitchPortCountsArray: ...
    def gc(self, cdata: _T, destructor: Callable[[_T], object], /) -> _T: ...
    def buffer(self, cdata: U32Array | U64Array, /) -> Buffer: ...
    def release(self, cdata: CData, /) -> None: ...
    @overload
    def from_buffer(self, python_buffer: Buffer, /, require_writable: bool = ...) -> CharArray: ...
    @overload
    def from_buffer(
        self, cdecl: Literal["uint32_t[]"], python_buffer: Buffer, /, require_writable: bool = ...
    ) -> U32Array: ...
    @overload
    def unpack(self, cdata: CharArray, length: int, /) -> bytes: ...
    @overload
    def unpack(self, cdata: U32Array | U64Array, length: int, /) -> list[int]: ...
    @overload
    def unpack(self, cdata: VswitchPortCountsArray, length: int, /) -> list[VswitchPortCounts]: ...

class _Lib:
    FDPUMP_BATCH: int
    FDPUMP_EVENT: int
    FDPUMP_STOPPED: int
    IOQ_ABI_VERSION: int
    IOQ_DESC_SIZE: int
    IOQ_E_BADRING: int
    IOQ_E_BUSY: int
    IOQ_E_CLOSED: int
    IOQ_E_EMPTY: int
    IOQ_E_FAULT: int
    IOQ_E_FULL: int
    IOQ_E_INVAL: int
    IOQ_E_MSGSIZE: int
    IOQ_E_SIDE: int
    IOQ_E_TIMEDOUT: int
    IOQ_FD_BATCH: int
    IOQ_HEAD_SIZE: int
    IOQ_IDX_BOTH: int
    IOQ_IDX_INUSE: int
    IOQ_IDX_VALID: int
    IOQ_MAX_COUNT: int
    IOQ_MAX_DATA: int
    IOQ_SOUTH_MAX_DATA: int
    IOQ_NORTH: int
    IOQ_POLLER_MAX: int
    IOQ_RING_POLLERS: int
    IOQ_OK: int
    IOQ_RING_MAGIC: int
    IOQ_RING_VER: int
    IOQ_SEEK_HEAD: int
    IOQ_SEEK_NEXT: int
    IOQ_SEEK_PREV: int
    IOQ_SEEK_SET: int
    IOQ_SEEK_TAIL: int
    IOQ_SOUTH: int
    IOQ_SPIN_ADAPTIVE: int
    IOQ_SPIN_GROW_US: int
    IOQ_SPIN_MAX_US: int
    IOQ_SPIN_SHRINK_US: int
    IOQ_TO_NORTH: int
    IOQ_TO_SOUTH: int
    IOQ_WAIT_RECV: int
    IOQ_WAIT_SEND: int
    SHM_SIGNAL_MAGIC: int
    SHM_SIGNAL_VER: int
    VSWITCH_BATCH: int
    VSWITCH_LEARN_MAX: int
    VSWITCH_MAX_FRAME: int
    VSWITCH_VNET_HDR: int
    VSWITCH_MAX_SG: int
    VSWITCH_MAX_PORTS: int
    VSWITCH_MIN_FRAME: int
    VSWITCH_TABLE: int
    VTAP_BATCH: int
    VTAP_HOST_PAUSE_MS: int

    def ioq_abi_version(self) -> int: ...
    def ioq_north_create(
        self, count: int, data_len: int, direction: int, out: IoqPtrOut, /
    ) -> int: ...
    def ioq_south_attach(
        self,
        ring_fd: int,
        data_fd: int,
        efd_to_south: int,
        efd_to_north: int,
        direction: int,
        out: IoqPtrOut,
        /,
    ) -> int: ...
    def ioq_close(self, q: IoqPtr, /) -> None: ...
    def ioq_fds(self, q: IoqPtr, fds: IntArray, /) -> None: ...
    def ioq_side(self, q: IoqPtr, /) -> int: ...
    def ioq_count_slots(self, q: IoqPtr, /) -> int: ...
    def ioq_data_len(self, q: IoqPtr, /) -> int: ...
    def ioq_faulted(self, q: IoqPtr, /) -> int: ...
    def ioq_push(self, q: IoqPtr, which: int, cookie: int, ptr: int, len: int, /) -> int: ...
    def ioq_pop(self, q: IoqPtr, which: int, out: IoqDesc, /) -> int: ...
    def ioq_count(self, q: IoqPtr, which: int, /) -> int: ...
    def ioq_remain(self, q: IoqPtr, which: int, /) -> int: ...
    def ioq_full(self, q: IoqPtr, which: int, /) -> int: ...
    def ioq_empty(self, q: IoqPtr, which: int, /) -> int: ...
    def ioq_seek(self, q: IoqPtr, which: int, whence: int, offset: int, /) -> int: ...
    def ioq_desc_at(self, q: IoqPtr, pos: int, out: IoqDesc, /) -> int: ...
    def ioq_send_batch(
        self, q: IoqPtr, buf: bytes | CharArray, lens: U32Array | list[int], n: int, signal: int, /
    ) -> int: ...
    def ioq_recv_batch(
        self, q: IoqPtr, buf: CharArray, buflen: int, lens: U32Array, n: int, signal: int, /
    ) -> int: ...
    def ioq_send_one(self, q: IoqPtr, buf: bytes | CharArray, len: int, signal: int, /) -> int: ...
    def ioq_recv_one(self, q: IoqPtr, buf: CharArray, cap: int, signal: int, /) -> int: ...
    def ioq_acquire(
        self, q: IoqPtr, op: int, n: int, offs: U64Array | NullPtr, lens: U32Array | NullPtr, /
    ) -> int: ...
    def ioq_commit(
        self,
        q: IoqPtr,
        op: int,
        k: int,
        lens: U32Array | list[int] | tuple[int, ...] | NullPtr,
        signal: int,
        /,
    ) -> int: ...
    def ioq_unacquire(self, q: IoqPtr, k: int, /) -> int: ...
    def ioq_commit_acquire(
        self,
        q: IoqPtr,
        op: int,
        k: int,
        lens: U32Array | list[int] | tuple[int, ...] | NullPtr,
        signal: int,
        n: int,
        offs: U64Array,
        acq_lens: U32Array,
        /,
    ) -> int: ...
    def ioq_recv_to_fd(
        self, q: IoqPtr, fd: int, max: int, min_len: int, max_len: int, counts: IoqFdCounts, /
    ) -> int: ...
    def ioq_send_from_fd(
        self, q: IoqPtr, fd: int, max: int, max_len: int, counts: IoqFdCounts, /
    ) -> int: ...
    def venet_recv_batch(
        self,
        q: IoqPtr,
        buf: CharArray,
        buflen: int,
        lens: U32Array,
        max: int,
        every: int,
        signals: U32Array,
        /,
    ) -> int: ...
    def venet_recv_to_fd(
        self,
        q: IoqPtr,
        fd: int,
        max: int,
        min_len: int,
        max_len: int,
        every: int,
        counts: IoqFdCounts,
        signals: U32Array,
        /,
    ) -> int: ...
    def blk_new(
        self,
        fd: int,
        size: int,
        readonly: int,
        map: int,
        layout: BlkLayout,
        out: BlkPtrOut,
        /,
    ) -> int: ...
    def blk_free(self, b: BlkPtr, /) -> None: ...
    def blk_serve(
        self,
        b: BlkPtr,
        req: IoqPtr,
        resp: IoqPtr,
        batch: int,
        every: int,
        timeout_ms: int,
        spin_us: int,
        counts: BlkCounts,
        /,
    ) -> int: ...
    def fdpump_run(
        self,
        rx: IoqPtr,
        tx: IoqPtr,
        fd: int,
        stop_fd: int,
        event_fd: int,
        hup_fd: int,
        max_len: int,
        spin_us: int,
        counts: FdpumpCounts,
        /,
    ) -> int: ...
    def ioq_ready(self, q: IoqPtr, op: int, /) -> int: ...
    def ioq_watch(self, q: IoqPtr, hup_fd: int, hup_events: int, /) -> None: ...
    def ioq_wait(self, q: IoqPtr, op: int, timeout_ms: int, spin_us: int, /) -> int: ...
    def ioq_send_one_wait(
        self, q: IoqPtr, buf: bytes | CharArray, len: int, timeout_ms: int, spin_us: int, /
    ) -> int: ...
    def ioq_recv_one_wait(
        self, q: IoqPtr, buf: CharArray, cap: int, timeout_ms: int, spin_us: int, /
    ) -> int: ...
    def ioq_wait_arm(self, q: IoqPtr, op: int, arm: int, /) -> int: ...
    def ioq_wake_fd(self, q: IoqPtr, /) -> int: ...
    def ioq_signal(self, q: IoqPtr, /) -> int: ...
    def ioq_wait_fd(self, q: IoqPtr, op: int, /) -> int: ...
    def ioq_spin_budget(self, q: IoqPtr, /) -> int: ...
    def ioq_poller_spin_budget(self, p: PollerPtr, /) -> int: ...
    def ioq_poller_new(self, out: PollerPtrOut, /) -> int: ...
    def ioq_poller_free(self, p: PollerPtr, /) -> None: ...
    def ioq_poller_fd(self, p: PollerPtr, /) -> int: ...
    def ioq_poller_add(self, p: PollerPtr, q: IoqPtr, op: int, /) -> int: ...
    def ioq_poller_remove(self, p: PollerPtr, bit: int, /) -> int: ...
    def ioq_poller_wait(
        self, p: PollerPtr, mask: int, timeout_ms: int, spin_us: int, ready: U64Out, /
    ) -> int: ...
    def ioq_poller_arm(self, p: PollerPtr, mask: int, ready: U64Out, /) -> int: ...
    def ioq_poller_disarm(self, p: PollerPtr, mask: int, ready: U64Out, /) -> int: ...
    def vswitch_new(self, out: VswitchPtrOut, /) -> int: ...
    def vswitch_runner_new(
        self, sw: VswitchPtr, spin_us: int, out: VswitchRunnerPtrOut, /
    ) -> int: ...
    def vswitch_runner_free(self, r: VswitchRunnerPtr, /) -> None: ...
    def vswitch_runner_lock(self, r: VswitchRunnerPtr, /) -> None: ...
    def vswitch_runner_unlock(self, r: VswitchRunnerPtr, /) -> None: ...
    def vswitch_runner_port(
        self,
        r: VswitchRunnerPtr,
        port: int,
        tx: IoqPtr | NullPtr,
        rx: IoqPtr | NullPtr,
        every: int,
        fault_fd: int,
        /,
    ) -> int: ...
    def vswitch_runner_tune(self, r: VswitchRunnerPtr, spin_us: int, every: int, /) -> int: ...
    def vswitch_runner_counts(
        self, r: VswitchRunnerPtr, port: int, out: VswitchRunCounts, /
    ) -> int: ...
    def vtap_runner_new(self, tx: IoqPtr, rx: IoqPtr, out: VtapRunnerPtrOut, /) -> int: ...
    def vtap_runner_free(self, r: VtapRunnerPtr, /) -> None: ...
    def vtap_runner_lock(self, r: VtapRunnerPtr, /) -> None: ...
    def vtap_runner_unlock(self, r: VtapRunnerPtr, /) -> None: ...
    def vtap_runner_set(self, r: VtapRunnerPtr, config: VtapConfig, /) -> int: ...
    def vtap_runner_counts(self, r: VtapRunnerPtr, out: VtapCounts, /) -> int: ...
    def vtap_runner_fault_fd(self, r: VtapRunnerPtr, /) -> int: ...
    def vswitch_free(self, sw: VswitchPtr, /) -> None: ...
    def vswitch_forget_port(self, sw: VswitchPtr, port: int, /) -> int: ...
    def vswitch_lookup(self, sw: VswitchPtr, mac: U8Array | bytes, /) -> int: ...
    def vswitch_learned(self, sw: VswitchPtr, /) -> int: ...
    def vswitch_set_port(self, sw: VswitchPtr, port: int, hdr_len: int, max_len: int, /) -> int: ...
    def vswitch_forward(
        self,
        sw: VswitchPtr,
        src_port: int,
        src_tx: IoqPtr,
        ports_rx: IoqPtrArray,
        nports: int,
        max: int,
        every: int,
        counts: VswitchCounts,
        per_port: VswitchPortCountsArray | NullPtr,
        /,
    ) -> int: ...

ffi: _FFI
lib: _Lib
