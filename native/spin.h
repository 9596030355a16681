/*
 * Private to native/: the clock and the pace of an idle spin, shared by every
 * loop that polls before it sleeps (poller.c's waits, enet.c's driver loop,
 * the switch's and venet-tap's runners); and what the two runner threads
 * (vswitch_run.c, vtap_run.c) share besides: the lock their owner asks for
 * and the eventfd poke.  Not cdef-safe, never passed to cffi's cdef.
 * Include it after _GNU_SOURCE is defined.
 */
#ifndef VBUSFS_SPIN_H
#define VBUSFS_SPIN_H

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* A peer that keeps waking a wait with nothing to do (an eventfd written in a
 * loop) is backed off, so what it costs is bounded whatever it does: after
 * FREE_EMPTY_WAKEUPS such wake-ups in a row, a pause growing by STEP per
 * further one, up to MAX (an honest peer wakes a wait at most once for
 * nothing). */
#define FREE_EMPTY_WAKEUPS 8
#define BACKOFF_STEP_NS 500000
#define BACKOFF_MAX_NS 10000000

/* The pause after `empty` (>= FREE_EMPTY_WAKEUPS) such wake-ups in a row. */
static inline int64_t backoff_ns(unsigned empty)
{
    int64_t ns = (int64_t)BACKOFF_STEP_NS * (empty - FREE_EMPTY_WAKEUPS + 1);
    return ns < BACKOFF_MAX_NS ? ns : BACKOFF_MAX_NS;
}

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

/*
 * A runner's lock: its thread holds `lock` while it works and lets go only to
 * sleep, or at once when an owner asks for it: the owner counts itself in
 * `want` (atomic) while it waits, and the thread checks `want` between
 * steps.
 */

/* The runner thread: does an owner wait for the lock? */
static inline int lock_wanted(int *want) { return __atomic_load_n(want, __ATOMIC_ACQUIRE) != 0; }

/* The runner thread: let the owners that asked have the lock, then take it
 * back. */
static inline void lock_yield(int *want, pthread_mutex_t *lock)
{
    pthread_mutex_unlock(lock);
    while (lock_wanted(want))
        sched_yield();
    pthread_mutex_lock(lock);
}

/* An owner: take the lock, asking the runner thread for it. */
static inline void lock_ask(int *want, pthread_mutex_t *lock)
{
    __atomic_add_fetch(want, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_lock(lock);
    __atomic_sub_fetch(want, 1, __ATOMIC_ACQ_REL);
}

/* Add 1 to an eventfd's counter, making it readable. */
static inline void poke(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) { /* the counter is full: readable anyway */
    }
}

#endif
