/*
 * Private to native/: how C reads and writes shared memory (atomics viewed
 * through plain integer fields) and the byte order the layout assumes.  Used
 * by the ring (ioq.c) and the shm-signal (shm_signal.c) alike; it knows
 * neither.  Not cdef-safe, and never passed to cffi's cdef.
 */
#ifndef VBUSFS_SHM_ATOMIC_H
#define VBUSFS_SHM_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the IOQ v4 layout is little-endian; this build would need byte swaps"
#endif

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

#endif
