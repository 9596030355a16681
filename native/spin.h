/*
 * Private to native/: the clock and the pace of an idle spin, shared by every
 * loop that polls before it sleeps (poller.c's waits, enet.c's driver loop,
 * the switch's and venet-tap's runners).  Not cdef-safe, never passed to
 * cffi's cdef.  Include it after _GNU_SOURCE is defined.
 */
#ifndef VBUSFS_SPIN_H
#define VBUSFS_SPIN_H

#include <sched.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/*
 * The pause after turn i (counted from 0) of a spin that polled and found
 * nothing; 1 once the spin's budget (`end`, in now_ns time) is spent.
 *
 * A few pauses between polls: each poll of a line the peer owns costs the
 * peer a transfer.  Every 16 turns the clock is read, and the CPU is offered
 * to whatever else is runnable (sched_yield returns at once when nothing is):
 * on a machine with more runnable threads than CPUs the peer a spin waits
 * for may be queued behind it.
 */
static inline int spin_pause(unsigned i, int64_t end)
{
    for (int k = 0; k < 4; k++)
        cpu_relax();
    if ((i & 15) != 15)
        return 0;
    if (now_ns() >= end)
        return 1;
    sched_yield();
    return 0;
}

#endif
