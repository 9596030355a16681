/*
 * The vbus-enet driver's data path: a TAP (or any fd carrying one frame per
 * read and write) on one side, the north side of a venet interface's rings
 * on the other.  One call runs the whole loop, so a frame never passes
 * through Python: read() from the fd straight into a transmit slot, write()
 * to the fd straight from a received buffer.  The north side owns its
 * rings' memory, but the device (south) writes the received lengths: those
 * are checked by ioq_acquire before use.
 */
#define _GNU_SOURCE
#include "ioq_private.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "enet.h"
#include "spin.h"

static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

/* rx ring -> fd: every message the device filled, written; the buffers are
 * posted again at once.  Returns frames handed back (>= 0) or a code. */
static int ring_to_fd(struct ioq *rx, int fd, struct fdpump_counts *c)
{
    uint64_t offs[FDPUMP_BATCH];
    uint32_t lens[FDPUMP_BATCH];
    int k = ioq_acquire(rx, IOQ_WAIT_RECV, FDPUMP_BATCH, offs, lens);
    if (k == IOQ_E_EMPTY)
        return 0;
    if (k < 0)
        return k;
    for (int i = 0; i < k; i++) {
        if (lens[i] == 0) {
            c->flushed++; /* FLUSHRX handed it back with nothing in it */
            continue;
        }
        ssize_t w;
        do
            w = write(fd, rx->data + offs[i], lens[i]);
        while (w < 0 && errno == EINTR);
        if (w == (ssize_t)lens[i])
            c->to_host++;
        else
            c->host_dropped++;
    }
    int r = ioq_commit(rx, IOQ_WAIT_RECV, (uint32_t)k, NULL, 1);
    ioq_unacquire(rx, UINT32_MAX);
    return r < 0 ? r : k;
}

/* fd -> tx ring: read frames into free slots until the fd has none or the
 * ring is full.  *full: no slot was free.  Returns frames sent or a code. */
static int fd_to_ring(struct ioq *tx, int fd, uint32_t max_len, struct fdpump_counts *c,
                      int *full)
{
    uint64_t offs[FDPUMP_BATCH];
    uint32_t caps[FDPUMP_BATCH], lens[FDPUMP_BATCH];
    *full = 0;
    int k = ioq_acquire(tx, IOQ_WAIT_SEND, FDPUMP_BATCH, offs, caps);
    if (k == IOQ_E_FULL) {
        *full = 1;
        return 0;
    }
    if (k < 0)
        return k;
    int err;
    uint32_t bad = 0;
    uint32_t sent = ioq_read_frames(fd, tx->data, offs, caps, (uint32_t)k, FDPUMP_BATCH, max_len,
                                    lens, &bad, &err);
    c->bad_size += bad; /* longer than a slot (or max_len): read, so gone, and dropped */
    if (err == IOQ_E_CLOSED)
        err = 0; /* end of file on the fd: nothing to read now, as for EAGAIN */
    int r = sent ? ioq_commit(tx, IOQ_WAIT_SEND, sent, lens, 1) : 0;
    ioq_unacquire(tx, UINT32_MAX);
    if (r < 0)
        return r;
    c->to_device += sent;
    return sent == 0 && err ? err : (int)sent;
}

/* Idle: poll until something can move or spin_us have passed. */
static int spin(struct ioq *rx, struct ioq *tx, int fd, int tx_full, int spin_us)
{
    int64_t end = now_ns() + (int64_t)spin_us * 1000;
    for (unsigned i = 0;; i++) {
        if (ioq_ready(rx, IOQ_WAIT_RECV) > 0)
            return 1;
        if (tx_full ? ioq_ready(tx, IOQ_WAIT_SEND) > 0 : readable(fd))
            return 1;
        if (spin_pause(i, end))
            return 0;
    }
}

static int check_rings(struct ioq *rx, struct ioq *tx)
{
    if (ioq_side(rx) != IOQ_NORTH || ioq_side(tx) != IOQ_NORTH ||
        rx->direction != IOQ_TO_NORTH || tx->direction != IOQ_TO_SOUTH)
        return IOQ_E_SIDE;
    if (rx->faulted || tx->faulted)
        return IOQ_E_FAULT;
    return rx->acquired || tx->acquired ? IOQ_E_BUSY : IOQ_OK;
}

int fdpump_run(struct ioq *rx, struct ioq *tx, int fd, int stop_fd, int event_fd, int hup_fd,
               uint32_t max_len, int spin_us, struct fdpump_counts *c)
{
    if (fd < 0 || stop_fd < 0 || max_len == 0 || spin_us < 0)
        return IOQ_E_INVAL;
    int r = check_rings(rx, tx);
    if (r)
        return r;
    for (unsigned busy = 0;;) {
        int full = 0;
        int moved = ring_to_fd(rx, fd, c);
        if (moved < 0)
            return moved;
        r = fd_to_ring(tx, fd, max_len, c, &full);
        if (r < 0)
            return r;
        moved += r;
        if (moved) {
            /* under steady traffic the loop never sleeps: look at the
             * control fds now and then all the same */
            if ((++busy & 15) == 0) {
                if (readable(stop_fd))
                    return FDPUMP_STOPPED;
                if (event_fd >= 0 && readable(event_fd))
                    return FDPUMP_EVENT;
            }
            continue;
        }
        if (spin_us && spin(rx, tx, fd, full, spin_us)) {
            c->polled++;
            continue;
        }
        /* arm, re-check, sleep: a peer that published before seeing the
         * signal enabled is caught by the re-check, one after writes it */
        r = ioq_wait_arm(rx, IOQ_WAIT_RECV, 1);
        if (r != 0) {
            if (r < 0)
                return r;
            continue;
        }
        if (full) {
            r = ioq_wait_arm(tx, IOQ_WAIT_SEND, 1);
            if (r != 0) {
                ioq_wait_arm(rx, IOQ_WAIT_RECV, 0);
                if (r < 0)
                    return r;
                continue;
            }
        }
        struct pollfd p[5] = {
            {.fd = stop_fd, .events = POLLIN},
            {.fd = event_fd, .events = POLLIN},
            {.fd = hup_fd, .events = POLLRDHUP},
            {.fd = ioq_wake_fd(rx), .events = POLLIN},
            {.fd = full ? ioq_wake_fd(tx) : fd, .events = POLLIN},
        };
        c->slept++;
        int n = poll(p, 5, -1);
        int err = n < 0 && errno != EINTR ? -errno : 0;
        int down = ioq_wait_arm(rx, IOQ_WAIT_RECV, 0);
        if (full) {
            int d = ioq_wait_arm(tx, IOQ_WAIT_SEND, 0);
            if (d < 0 && d != IOQ_E_CLOSED)
                return d;
        }
        if (down < 0 && down != IOQ_E_CLOSED)
            return down;
        if (err)
            return err;
        if (n <= 0)
            continue;
        if (p[0].revents)
            return FDPUMP_STOPPED;
        /* before the event fd: a daemon that went away leaves that readable
         * (end of file) for good */
        if (p[2].revents && down != 1)
            return IOQ_E_CLOSED;
        if (p[1].revents)
            return FDPUMP_EVENT;
    }
}
