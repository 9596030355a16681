/*
 * The venet-switch's data path on a thread of its own (a runner): it waits on
 * every linked port's transmit ring (its eventfd) and forwards each batch
 * with vswitch_forward, so a frame crossing the switch never waits for the
 * daemon's event loop.  The thread never touches Python.
 *
 * Everything a runner shares with its owner (the port table, the switch's
 * learning table and port formats, the south handles of the rings) is
 * guarded by one mutex.  The owner takes it (vswitch_runner_lock) around any
 * change; the thread holds it while it forwards or polls and lets go of it
 * only to sleep, or at once when the owner asks for it (`want`), so the
 * owner waits at most one batch.  A ring handed to the runner is used only
 * under the lock and until the owner takes it away (a port set again), so
 * the owner may close it as soon as it has done that.  So may it close the
 * port's fault fd: an eventfd of the owner's that the thread writes when it
 * finds one of the port's rings broken, so the owner waits for a fault
 * instead of looking for one.
 */
#define _GNU_SOURCE
#include "ioq_private.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "spin.h"

#define CTL_KEY UINT32_MAX

struct run_port {
    struct ioq *tx; /* NULL: nothing to forward from this port */
    uint32_t every;
    int fault_fd; /* the owner's eventfd, written when c.faulted gains a bit; -1: none */
    struct vswitch_run_counts c;
};

struct vswitch_runner {
    struct vswitch *sw;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    int want; /* owners waiting for the lock (atomic) */
    int stop;
    int epfd, ctl;
    uint32_t spin_us;
    uint32_t nports; /* highest port with a ring, plus one */
    struct run_port port[VSWITCH_MAX_PORTS];
    struct ioq *rx[VSWITCH_MAX_PORTS]; /* NULL: frames are not delivered there */
    struct vswitch_port_counts per[VSWITCH_MAX_PORTS];
};

/* Port p's ring broke (why: 1 its transmit ring, 2 its receive ring): counted,
 * and its owner told through the port's fault fd, once per bit. */
static void broke(struct vswitch_runner *r, uint32_t p, uint32_t why)
{
    struct run_port *P = &r->port[p];
    if ((P->c.faulted & why) == why)
        return;
    P->c.faulted |= why;
    if (P->fault_fd >= 0)
        poke(P->fault_fd);
}

static void drop_tx(struct vswitch_runner *r, uint32_t p)
{
    struct run_port *P = &r->port[p];
    if (P->tx)
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, ioq_wake_fd(P->tx), NULL);
    P->tx = NULL;
    broke(r, p, 1);
}

static int forward_all(struct vswitch_runner *r)
{
    int moved = 0;
    for (uint32_t p = 0; p < r->nports; p++) {
        struct run_port *P = &r->port[p];
        if (!P->tx)
            continue;
        struct vswitch_counts c;
        int got = vswitch_forward(r->sw, p, P->tx, r->rx, r->nports, VSWITCH_BATCH, P->every, &c,
                                  r->per);
        if (got == IOQ_E_EMPTY)
            continue;
        if (got < 0) { /* the source ring broke: this port goes, the others stay */
            drop_tx(r, p);
            continue;
        }
        moved += got;
        P->c.tx_frames += c.frames;
        P->c.bad_size += c.bad_size;
        P->c.gso_dropped += c.gso_dropped;
        P->c.gso_segmented += c.gso_segmented;
        P->c.signals += c.signals;
        for (uint32_t q = 0; q < r->nports; q++) {
            r->port[q].c.rx_delivered += r->per[q].delivered;
            r->port[q].c.rx_dropped += r->per[q].dropped;
            if (r->per[q].faulted) {
                r->rx[q] = NULL;
                broke(r, q, 2);
            }
        }
    }
    return moved;
}

static int any_ready(struct vswitch_runner *r)
{
    for (uint32_t p = 0; p < r->nports; p++)
        if (r->port[p].tx && ioq_ready(r->port[p].tx, IOQ_WAIT_RECV) != 0)
            return 1;
    return 0;
}

/* Arm every transmit ring; 1 (all disarmed again) when one is ready already. */
static int arm_all(struct vswitch_runner *r)
{
    for (uint32_t p = 0; p < r->nports; p++) {
        if (r->port[p].tx && ioq_wait_arm(r->port[p].tx, IOQ_WAIT_RECV, 1) != 0) {
            for (uint32_t q = 0; q <= p; q++)
                if (r->port[q].tx)
                    ioq_wait_arm(r->port[q].tx, IOQ_WAIT_RECV, 0);
            return 1;
        }
    }
    return 0;
}

static void *run(void *arg)
{
    struct vswitch_runner *r = arg;
    struct epoll_event ev[16];
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        if (lock_wanted(&r->want))
            lock_yield(&r->want, &r->lock);
        if (forward_all(r))
            continue;
        if (r->spin_us) {
            int64_t end = now_ns() + (int64_t)r->spin_us * 1000;
            int found = 0;
            for (unsigned i = 0; !found && !r->stop; i++) {
                if (lock_wanted(&r->want))
                    lock_yield(&r->want, &r->lock);
                found = any_ready(r);
                if (!found && spin_pause(i, end))
                    break;
            }
            if (found) {
                for (uint32_t p = 0; p < r->nports; p++)
                    r->port[p].c.polled += r->port[p].tx != NULL;
                continue;
            }
        }
        if (arm_all(r))
            continue;
        for (uint32_t p = 0; p < r->nports; p++)
            r->port[p].c.slept += r->port[p].tx != NULL;
        pthread_mutex_unlock(&r->lock);
        int n = epoll_wait(r->epfd, ev, 16, -1);
        pthread_mutex_lock(&r->lock);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u32 == CTL_KEY) {
                uint64_t v;
                if (read(r->ctl, &v, sizeof v) < 0) { /* nothing to read: fine */
                }
            }
        }
        /* rings added while we slept were never armed: disarming them is harmless */
        for (uint32_t p = 0; p < r->nports; p++)
            if (r->port[p].tx)
                ioq_wait_arm(r->port[p].tx, IOQ_WAIT_RECV, 0);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}


int vswitch_runner_new(struct vswitch *sw, uint32_t spin_us, struct vswitch_runner **out)
{
    if (!sw)
        return IOQ_E_INVAL;
    struct vswitch_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->sw = sw;
    r->spin_us = spin_us;
    for (uint32_t p = 0; p < VSWITCH_MAX_PORTS; p++)
        r->port[p].fault_fd = -1;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->ctl = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = CTL_KEY};
    int err = 0;
    if (r->epfd < 0 || r->ctl < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->ctl, &ev) < 0)
        err = -errno;
    if (!err && (err = pthread_mutex_init(&r->lock, NULL)) != 0)
        err = -err;
    if (!err) {
        int e = pthread_create(&r->thread, NULL, run, r);
        if (e)
            err = -e;
        else
            r->started = 1;
    }
    if (err) {
        if (r->epfd >= 0)
            close(r->epfd);
        if (r->ctl >= 0)
            close(r->ctl);
        free(r);
        return err;
    }
    *out = r;
    return IOQ_OK;
}

void vswitch_runner_free(struct vswitch_runner *r)
{
    if (!r)
        return;
    vswitch_runner_lock(r);
    r->stop = 1;
    poke(r->ctl);
    vswitch_runner_unlock(r);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    close(r->epfd);
    close(r->ctl);
    free(r);
}

void vswitch_runner_lock(struct vswitch_runner *r)
{
    lock_ask(&r->want, &r->lock);
}

void vswitch_runner_unlock(struct vswitch_runner *r) { pthread_mutex_unlock(&r->lock); }

int vswitch_runner_port(struct vswitch_runner *r, uint32_t port, struct ioq *tx, struct ioq *rx,
                        uint32_t every, int fault_fd)
{
    if (port >= VSWITCH_MAX_PORTS || every == 0 || fault_fd < -1)
        return IOQ_E_INVAL;
    if ((tx && (tx->side != IOQ_SOUTH || tx->direction != IOQ_TO_SOUTH)) ||
        (rx && (rx->side != IOQ_SOUTH || rx->direction != IOQ_TO_NORTH)))
        return IOQ_E_SIDE;
    struct run_port *P = &r->port[port];
    if (P->tx != tx) {
        if (P->tx)
            epoll_ctl(r->epfd, EPOLL_CTL_DEL, ioq_wake_fd(P->tx), NULL);
        P->tx = NULL;
        if (tx) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = port};
            if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, ioq_wake_fd(tx), &ev) < 0)
                return -errno;
        }
    }
    if (!tx && !rx)
        memset(&P->c, 0, sizeof(P->c)); /* the port's client is gone */
    if (P->c.faulted && fault_fd >= 0 && fault_fd != P->fault_fd)
        poke(fault_fd); /* a fault the old fd (if any) heard of: the new one hears it too */
    P->fault_fd = fault_fd;
    P->tx = tx;
    P->every = every;
    r->rx[port] = rx;
    uint32_t n = 0;
    for (uint32_t p = 0; p < VSWITCH_MAX_PORTS; p++)
        if (r->port[p].tx || r->rx[p])
            n = p + 1;
    r->nports = n;
    poke(r->ctl);
    return IOQ_OK;
}

int vswitch_runner_tune(struct vswitch_runner *r, uint32_t spin_us, uint32_t every)
{
    if (every == 0)
        return IOQ_E_INVAL;
    r->spin_us = spin_us;
    for (uint32_t p = 0; p < VSWITCH_MAX_PORTS; p++)
        r->port[p].every = every;
    return IOQ_OK;
}

int vswitch_runner_counts(struct vswitch_runner *r, uint32_t port, struct vswitch_run_counts *out)
{
    if (port >= VSWITCH_MAX_PORTS)
        return IOQ_E_INVAL;
    *out = r->port[port].c;
    return IOQ_OK;
}
