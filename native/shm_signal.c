/*
 * shm-signal: the notification half of an IOQ (behaviour §7.3).  One wake-up
 * fd per direction (an eventfd wakes south, a datagram socket north); irq[IOQ_NORTH] is north's receive state, irq[IOQ_SOUTH]
 * south's.  The owner of an irq writes `enabled` and clears `dirty` and
 * `pending`; the peer sets `dirty` and `pending`.
 *
 * Sender (inject): set the peer's dirty; if the peer is enabled and pending
 * was clear, set pending and write the peer's wake-up fd.
 * Receiver: clear pending and set enabled (enable), re-check the ring, sleep
 * on the wake-up fd; on wake-up disable, drain (read it, clear dirty)
 * and process the ring with notifications off (interrupt mitigation); when
 * the ring runs dry, enable again and re-check before sleeping.  A seq_cst
 * fence on each side between "publish" and "look at the other side's flag"
 * means that either the sender sees enabled (and writes the eventfd), or
 * the receiver's re-check sees the published descriptor: nothing is lost.
 *
 * It knows nothing of rings: the ring embeds a struct shm_signal and decides
 * when to arm and re-check (ioq_wait_arm in ioq.c).
 *
 * It must never block, whatever north does to the objects it created and
 * shares with south (file status flags belong to the shared open file
 * description, so north can clear O_NONBLOCK under us at any time): every
 * operation south performs asks for non-blocking behaviour per call, never
 * through the description.  North wakes south through an eventfd (not in
 * semaphore mode: checked at attach), which south reads once per wake-up
 * with RWF_NOWAIT.  South wakes north through a Unix datagram socket, with
 * send(MSG_DONTWAIT): a full receive queue is EAGAIN, and a queued datagram
 * already wakes north.  (An eventfd cannot be written without blocking
 * when its counter is saturated and O_NONBLOCK is cleared:
 * pwritev2(RWF_NOWAIT) is EOPNOTSUPP on eventfds.)  A hostile peer's flag
 * bytes only decide whether a harmless wake-up is sent.
 */
#define _GNU_SOURCE
#include "shm_signal.h"

#include "shm_atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

int shm_signal_peer_is_unnamed(int fd)
{
    struct sockaddr_un peer;
    socklen_t len = sizeof(peer);
    /* an unconnected socket is ENOTCONN; a socketpair's peer is unbound and
     * its address is the family alone */
    if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0)
        return 0;
    return len == sizeof(sa_family_t) && peer.sun_family == AF_UNIX;
}

static void kick(int peer, int fd)
{
    if (peer == IOQ_NORTH) {
        /* North keeps a copy of the end it handed us and may connect() it
         * elsewhere after attach.  A datagram socket cannot be reconnected to
         * an unbound peer, so once this fails it fails for good: at most one
         * byte races past it (reconnected between here and send) per queue. */
        if (!shm_signal_peer_is_unnamed(fd))
            return;
        /* MSG_DONTWAIT makes this call non-blocking whatever the flags on
         * the (shared) description; EAGAIN means a datagram is queued
         * already, so north is woken anyway */
        char one = 1;
        ssize_t r = send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)r;
        return;
    }
    /* north writing south's eventfd: north's own fds, created O_NONBLOCK;
     * a saturated counter is EAGAIN, and south is woken anyway */
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof(one));
    (void)r;
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
    kick(peer, s->efd[peer]);
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

int shm_signal_dirty(const struct shm_signal *s)
{
    return LOAD_RLX(&s->desc->irq[s->side].dirty) != 0;
}

int shm_signal_drain(struct shm_signal *s)
{
    int fd = s->efd[s->side];
    int got = 0;
    if (s->side == IOQ_NORTH) {
        /* our own socket: an honest south queues at most one datagram per
         * pending flag, and pending is cleared only after a drain, so one
         * recv empties it (a second call would only say EAGAIN).  Anything
         * left over wakes a level-triggered wait once, which marks the fd
         * counted, and the next arm drains again. */
        char buf[64];
        got = recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0;
    } else {
        /* one read per wake-up: the eventfd is never in semaphore mode
         * (attach refuses one), so one read resets any count */
        uint64_t v = 0;
        struct iovec iov = {.iov_base = &v, .iov_len = sizeof(v)};
        ssize_t r = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
        if (r < 0 && (errno == EOPNOTSUPP || errno == EINVAL)) {
            /* kernels before 5.12 lack RWF_NOWAIT on eventfds: poll first;
             * residual race (north could read the count away between the
             * poll and the read) documented in behaviour §7.3 */
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN))
                r = read(fd, &v, sizeof(v));
        }
        got = r == (ssize_t)sizeof(v);
    }
    STORE_RLX(&s->desc->irq[s->side].dirty, (uint8_t)0);
    s->counted = 0;
    return got;
}

int shm_signal_stale(const struct shm_signal *s)
{
    return s->counted || LOAD_RLX(&s->desc->irq[s->side].pending) != 0;
}
