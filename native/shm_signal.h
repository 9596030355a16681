/*
 * Private to native/: the shm-signal (behaviour §7.3), the notification half of an
 * IOQ, as its own object.  It knows one signal descriptor in shared memory
 * (whose layout, struct shm_signal_desc, is part of the IOQ ABI in ioq.h),
 * which side it is, and the two eventfds; it knows nothing of rings.  The
 * ring (ioq.c) embeds one and drives it; nothing else calls these, and
 * Python never does: a wait is armed and disarmed through ioq_wait_arm.
 * Not cdef-safe, and never passed to cffi's cdef.
 */
#ifndef VBUSFS_SHM_SIGNAL_H
#define VBUSFS_SHM_SIGNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ioq_abi.h"

/* The layout, pinned: identical on 32- and 64-bit builds. */
_Static_assert(sizeof(struct shm_signal_irq) == 3, "irq size");
_Static_assert(sizeof(struct shm_signal_desc) == 16, "signal desc size");
_Static_assert(offsetof(struct shm_signal_desc, magic) == 0, "sig magic");
_Static_assert(offsetof(struct shm_signal_desc, ver) == 4, "sig ver");
_Static_assert(offsetof(struct shm_signal_desc, irq) == 8, "sig irq");
_Static_assert(offsetof(struct shm_signal_irq, enabled) == 0, "enabled");
_Static_assert(offsetof(struct shm_signal_irq, pending) == 1, "pending");
_Static_assert(offsetof(struct shm_signal_irq, dirty) == 2, "dirty");

struct shm_signal {
    struct shm_signal_desc *desc; /* in shared memory */
    int side;                     /* IOQ_NORTH or IOQ_SOUTH: irq[side] is ours */
    int efd[2]; /* [IOQ_NORTH] wakes north: a Unix datagram socket (north
                   holds the receiving end, south the sending end);
                   [IOQ_SOUTH] wakes south: an eventfd.  Owned by whoever
                   embeds this (the ring), which closes them */
    int counted; /* local, never shared: our wake-up fd may hold a count no
                    drain has consumed yet (we slept on it and woke, or we
                    cannot tell); see shm_signal_stale */
};

/* Sender: wake the peer (set its dirty; write its eventfd if it is enabled
 * and nothing is pending yet).  Returns 1 if the eventfd was written. */
int shm_signal_inject(struct shm_signal *s);
/* Receiver: arm our side (clear pending, set enabled).  Returns 1 if dirty
 * was already set: work may be pending, re-check before sleeping. */
int shm_signal_enable(struct shm_signal *s);
/* Receiver: no wake-ups while draining (interrupt mitigation). */
void shm_signal_disable(struct shm_signal *s);
/* Receiver: has the peer injected since the last drain?  An honest peer sets
 * dirty before every write of the wake-up fd, so with dirty clear there is
 * nothing to drain. */
int shm_signal_dirty(const struct shm_signal *s);
/* Receiver: reset our eventfd and dirty flag left by earlier wake-ups;
 * never blocks.  Returns 1 if the eventfd had a count. */
int shm_signal_drain(struct shm_signal *s);
/* Receiver: may our wake-up fd hold a count?  Only if the peer kicked since
 * our last enable (it sets pending first) or we were woken through it since
 * the last drain (`counted`).  Otherwise a drain would find nothing: a wait
 * skips that syscall.  A peer that writes the fd without setting pending
 * costs one early wake-up, which sets `counted`, and the next arm drains. */
int shm_signal_stale(const struct shm_signal *s);
/* Is this socket connected to an unnamed peer (the other end of a socketpair)?
 * What south sends on to wake north must be: a socket connected to a bound
 * name (a path or an abstract one) would make the daemon send to a socket of
 * someone else's choosing.  Checked at attach and before every send. */
int shm_signal_peer_is_unnamed(int fd);

#endif
