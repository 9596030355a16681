/*
 * Private to native/: what ioq.c and shm_signal.c share but Python must
 * never see (the handle's fields, the atomic access helpers, the layout
 * assertions).  Not cdef-safe, and never passed to cffi's cdef.
 */
#ifndef VBUSFS_IOQ_PRIVATE_H
#define VBUSFS_IOQ_PRIVATE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ioq.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the IOQ v4 layout is little-endian; this build would need byte swaps"
#endif

/* The layout, pinned: identical on 32- and 64-bit builds. */
_Static_assert(sizeof(struct shm_signal_irq) == 3, "irq size");
_Static_assert(sizeof(struct shm_signal_desc) == 16, "signal desc size");
_Static_assert(offsetof(struct shm_signal_desc, magic) == 0, "sig magic");
_Static_assert(offsetof(struct shm_signal_desc, ver) == 4, "sig ver");
_Static_assert(offsetof(struct shm_signal_desc, irq) == 8, "sig irq");
_Static_assert(offsetof(struct shm_signal_irq, enabled) == 0, "enabled");
_Static_assert(offsetof(struct shm_signal_irq, pending) == 1, "pending");
_Static_assert(offsetof(struct shm_signal_irq, dirty) == 2, "dirty");
_Static_assert(sizeof(struct ioq_ring_idx) == 12, "ring idx size");
_Static_assert(offsetof(struct ioq_ring_idx, head) == 0, "idx head");
_Static_assert(offsetof(struct ioq_ring_idx, tail) == 4, "idx tail");
_Static_assert(offsetof(struct ioq_ring_idx, full) == 8, "idx full");
_Static_assert(sizeof(struct ioq_ring_head) == IOQ_HEAD_SIZE, "head size");
_Static_assert(offsetof(struct ioq_ring_head, magic) == 0, "head magic");
_Static_assert(offsetof(struct ioq_ring_head, ver) == 4, "head ver");
_Static_assert(offsetof(struct ioq_ring_head, signal) == 8, "head signal");
_Static_assert(offsetof(struct ioq_ring_head, idx) == 24, "head idx");
_Static_assert(offsetof(struct ioq_ring_head, count) == 48, "head count");
_Static_assert(sizeof(struct ioq_ring_desc) == IOQ_DESC_SIZE, "desc size");
_Static_assert(offsetof(struct ioq_ring_desc, cookie) == 0, "desc cookie");
_Static_assert(offsetof(struct ioq_ring_desc, ptr) == 8, "desc ptr");
_Static_assert(offsetof(struct ioq_ring_desc, len) == 16, "desc len");
_Static_assert(offsetof(struct ioq_ring_desc, valid) == 24, "desc valid");
_Static_assert(offsetof(struct ioq_ring_desc, sown) == 25, "desc sown");

/*
 * Shared fields are declared as plain integers so that ioq.h stays
 * cdef-safe and its layout cannot depend on _Atomic's alignment rules
 * (which differ for 64-bit fields on i386).  Every access goes through
 * these helpers, which view the field as the _Atomic type of the same
 * size; the assertions check that the two have the same representation
 * and are lock-free, so the cast is sound across processes.
 */
_Static_assert(sizeof(_Atomic uint8_t) == 1, "atomic u8");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "atomic u32");
_Static_assert(ATOMIC_CHAR_LOCK_FREE == 2, "u8 atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "u32 atomics must be lock-free");

#define LOAD_ACQ(p) \
    atomic_load_explicit((_Atomic __typeof__(*(p)) *)(p), memory_order_acquire)
#define LOAD_RLX(p) \
    atomic_load_explicit((_Atomic __typeof__(*(p)) *)(p), memory_order_relaxed)
#define STORE_REL(p, v) \
    atomic_store_explicit((_Atomic __typeof__(*(p)) *)(p), (v), memory_order_release)
#define STORE_RLX(p, v) \
    atomic_store_explicit((_Atomic __typeof__(*(p)) *)(p), (v), memory_order_relaxed)
#define STORE_SC(p, v) \
    atomic_store_explicit((_Atomic __typeof__(*(p)) *)(p), (v), memory_order_seq_cst)
#define LOAD_SC(p) \
    atomic_load_explicit((_Atomic __typeof__(*(p)) *)(p), memory_order_seq_cst)
#define XCHG_SC(p, v) \
    atomic_exchange_explicit((_Atomic __typeof__(*(p)) *)(p), (v), memory_order_seq_cst)

/* 64-bit descriptor fields are read and written with relaxed atomics so a
 * hostile peer's concurrent store is a defined (if meaningless) value, never
 * a torn read the compiler may assume stable.  On 32-bit builds these may go
 * through libatomic; on x86-64 they are plain moves. */
#define LOAD64(p) atomic_load_explicit((_Atomic uint64_t *)(p), memory_order_relaxed)
#define STORE64(p, v) atomic_store_explicit((_Atomic uint64_t *)(p), (v), memory_order_relaxed)

#define IOQ_VALID 0
#define IOQ_INUSE 1

struct ioq {
    int side;      /* IOQ_NORTH or IOQ_SOUTH */
    int direction; /* IOQ_TO_SOUTH or IOQ_TO_NORTH */
    uint32_t count;
    uint32_t slot; /* data bytes per descriptor (north's layout) */
    struct ioq_ring_head *head;
    struct ioq_ring_desc *desc;
    uint64_t ring_len;
    uint8_t *data;
    uint64_t data_len;
    /* the mappings include a PROT_NONE guard page on each side, so a bug
     * that strays past a segment faults at once instead of corrupting */
    void *ring_map;
    size_t ring_map_len;
    void *data_map;
    size_t data_map_len;
    int ring_fd, data_fd;
    int efd[2]; /* [IOQ_NORTH] wakes north, [IOQ_SOUTH] wakes south */
    int hup_fd, hup_events; /* the watched peer (ioq_watch), not owned */
    /* private shadows of the shared fields this side writes: the only
     * writer never needs to read its own fields back from shared memory */
    uint32_t head_idx[2];
    uint32_t tail_idx[2];
    uint8_t full_idx[2];
    uint32_t cursor[2];
    /* north: valid descriptors not yet pushed on inuse (the newest ones) */
    uint32_t valid_not_inuse;
    /* zero-copy acquire: validated offsets and capacities, in ring order
     * starting at the current head (recv) or tail (send) */
    uint32_t acquired;
    int acquired_op;
    uint64_t *acq_off;
    uint32_t *acq_len;
    int faulted;
};

int ioq_fault(struct ioq *q);

#endif
