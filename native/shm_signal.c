/*
 * shm-signal: the notification half of an IOQ (behaviour §7.3).  One eventfd per
 * direction; irq[IOQ_NORTH] is north's receive state, irq[IOQ_SOUTH]
 * south's.  The owner of an irq writes `enabled` and clears `dirty` and
 * `pending`; the peer sets `dirty` and `pending`.
 *
 * Sender (inject): set the peer's dirty; if the peer is enabled and pending
 * was clear, set pending and write the peer's eventfd.
 * Receiver: clear pending and set enabled (enable), re-check the ring, sleep
 * on the eventfd; on wake-up disable, drain (read the eventfd, clear dirty)
 * and process the ring with notifications off (interrupt mitigation); when
 * the ring runs dry, enable again and re-check before sleeping.  A seq_cst
 * fence on each side between "publish" and "look at the other side's flag"
 * means that either the sender sees enabled (and writes the eventfd), or
 * the receiver's re-check sees the published descriptor: nothing is lost.
 *
 * It knows nothing of rings: the ring embeds a struct shm_signal and decides
 * when to arm and re-check (ioq_wait_arm in ioq.c).
 *
 * It must never block: the eventfd is read with RWF_NOWAIT (the peer shares
 * the file description and could clear O_NONBLOCK), and a hostile peer's
 * flag bytes only decide whether a harmless eventfd write happens.
 */
#define _GNU_SOURCE
#include "shm_signal.h"

#include "shm_atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

static void eventfd_kick(int fd)
{
    uint64_t one = 1;
    /* The eventfds are created (and on attach re-set) O_NONBLOCK, so a
     * counter north pushed to its maximum fails this write with EAGAIN
     * instead of blocking.  Residual risk, accepted: north shares the file
     * description and could clear O_NONBLOCK again; re-setting it here
     * would cost a syscall per wake-up and still leave a window. */
    ssize_t r = write(fd, &one, sizeof(one));
    (void)r; /* EAGAIN means the counter is already nonzero: still woken */
}

int shm_signal_inject(struct shm_signal *s)
{
    int peer = s->side == IOQ_NORTH ? IOQ_SOUTH : IOQ_NORTH;
    struct shm_signal_irq *irq = &s->desc->irq[peer];
    /* skip the store when already dirty: it saves a cache-line transfer
     * on every batch while the peer is busy */
    if (!LOAD_RLX(&irq->dirty))
        STORE_RLX(&irq->dirty, (uint8_t)1);
    atomic_thread_fence(memory_order_seq_cst);
    if (!LOAD_RLX(&irq->enabled))
        return 0;
    if (XCHG_SC(&irq->pending, (uint8_t)1))
        return 0;
    eventfd_kick(s->efd[peer]);
    return 1;
}

int shm_signal_enable(struct shm_signal *s)
{
    struct shm_signal_irq *irq = &s->desc->irq[s->side];
    /* pending must be clear before enabled is seen, or the peer would
     * think an eventfd write is already on its way */
    STORE_SC(&irq->pending, (uint8_t)0);
    STORE_SC(&irq->enabled, (uint8_t)1);
    atomic_thread_fence(memory_order_seq_cst);
    return LOAD_RLX(&irq->dirty) != 0;
}

void shm_signal_disable(struct shm_signal *s)
{
    STORE_RLX(&s->desc->irq[s->side].enabled, (uint8_t)0);
}

int shm_signal_drain(struct shm_signal *s)
{
    uint64_t v = 0;
    struct iovec iov = {.iov_base = &v, .iov_len = sizeof(v)};
    ssize_t r = preadv2(s->efd[s->side], &iov, 1, -1, RWF_NOWAIT);
    if (r < 0 && (errno == EOPNOTSUPP || errno == EINVAL)) {
        /* kernels before 5.12 lack RWF_NOWAIT on eventfds */
        fcntl(s->efd[s->side], F_SETFL, O_NONBLOCK);
        r = read(s->efd[s->side], &v, sizeof(v));
    }
    STORE_RLX(&s->desc->irq[s->side].dirty, (uint8_t)0);
    return r == (ssize_t)sizeof(v) ? 1 : 0;
}
