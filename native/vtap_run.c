/*
 * venet-tap's data path on a thread of its own (a runner): TAP -> receive
 * ring and transmit ring -> TAP (venet-loopback's: transmit ring -> receive
 * ring), a batch per step with the ring's own fd
 * paths (one read() or write() per frame straight between the TAP and the
 * data segment), polling for burstthresh and then sleeping in poll(2) on the
 * rings' wake-up fds, the TAP and a control eventfd.  The thread never
 * touches Python.
 *
 * Everything it shares with its owner (the config, the counts, the rings'
 * south handles, the TAP's descriptor) is guarded by one mutex, as the
 * switch's runner is: the thread holds it while it moves frames or polls and
 * lets go only to sleep, or at once when the owner asks for it (`want`).  So
 * the owner may close or replace the TAP, flush the receive ring, or stop
 * the thread, waiting at most one batch.
 */
#define _GNU_SOURCE
#include "ioq_private.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "spin.h"
#include "vtap.h"

/* the longest frame a TAP hands over (a large segment and its header), plus room to
 * see that it was longer */
#define HOST_FRAME_MAX (65536 + 64)

struct vtap_runner {
    struct ioq *tx, *rx;
    pthread_t thread;
    pthread_mutex_t lock;
    int want;     /* owners waiting for the lock (atomic) */
    int sleeping; /* the thread is in poll(2) on the fds, the lock let go (atomic) */
    int stop;
    int ctl;   /* wakes the thread (config changed, stop) */
    int fault; /* readable once a ring broke */
    struct vtap_config cfg;
    struct vtap_counts c;
    int64_t host_pause_until; /* ns: leave the TAP alone until then */
    uint8_t scratch[HOST_FRAME_MAX];
};

static void broke(struct vtap_runner *r, uint32_t which)
{
    if (!(r->c.faulted & which)) {
        r->c.faulted |= which;
        poke(r->fault);
    }
}

static int tx_usable(struct vtap_runner *r) { return r->cfg.link_up && !(r->c.faulted & 1); }

static int host_usable(struct vtap_runner *r)
{
    if (r->cfg.tap_fd < 0 || r->cfg.loop)
        return 0;
    if (r->host_pause_until && now_ns() >= r->host_pause_until)
        r->host_pause_until = 0; /* over: the spin reads the clock no more */
    return r->host_pause_until == 0;
}

/* Hand the oldest k acquired transmit buffers back, one signal per `every`. */
static int complete_tx(struct vtap_runner *r, uint32_t k)
{
    for (uint32_t done = 0; done < k;) {
        uint32_t chunk = k - done < r->cfg.every ? k - done : r->cfg.every;
        int c = ioq_commit(r->tx, IOQ_WAIT_RECV, chunk, NULL, 1);
        if (c < 0)
            return c;
        done += chunk;
        r->c.tx_signals++;
    }
    return 0;
}

/* transmit ring -> receive ring, as many frames as the client posted buffers
 * for (*blocked: none posted while frames wait).  Frames taken. */
static int loop_back(struct vtap_runner *r, int *blocked)
{
    uint64_t roff[VTAP_BATCH], toff[VTAP_BATCH];
    uint32_t rcap[VTAP_BATCH], tlen[VTAP_BATCH], out[VTAP_BATCH];
    if (r->c.faulted & 2)
        return 0;
    int n = ioq_acquire(r->rx, IOQ_WAIT_SEND, VTAP_BATCH, roff, rcap);
    if (n == IOQ_E_FULL) {
        *blocked = ioq_ready(r->tx, IOQ_WAIT_RECV) > 0;
        return 0;
    }
    if (n < 0) {
        broke(r, 2);
        return 0;
    }
    int k = ioq_acquire(r->tx, IOQ_WAIT_RECV, (uint32_t)n, toff, tlen);
    if (k < 0) {
        ioq_unacquire(r->rx, UINT32_MAX);
        if (k != IOQ_E_EMPTY)
            broke(r, 1);
        return 0;
    }
    uint32_t j = 0;
    for (int i = 0; i < k; i++) {
        uint32_t len = tlen[i];
        if (len < r->cfg.min_len || len > r->cfg.max_len || len > rcap[j]) {
            r->c.oversize++; /* never cut: dropped and counted */
            continue;
        }
        memcpy(r->rx->data + roff[j], r->tx->data + toff[i], len);
        out[j++] = len;
    }
    int c = j ? ioq_commit(r->rx, IOQ_WAIT_SEND, j, out, 1) : 0;
    ioq_unacquire(r->rx, UINT32_MAX);
    if (c < 0)
        broke(r, 2);
    else
        r->c.rx_frames += j;
    r->c.tx_frames += (uint64_t)k;
    if (complete_tx(r, (uint32_t)k) < 0) {
        ioq_unacquire(r->tx, UINT32_MAX);
        broke(r, 1);
    }
    return k;
}

/* transmit ring -> TAP (or dropped in place without one; or looped back).
 * Frames moved; *blocked: looped frames wait for receive buffers. */
static int to_host(struct vtap_runner *r, int *blocked)
{
    *blocked = 0;
    if (!tx_usable(r))
        return 0;
    if (r->cfg.loop)
        return loop_back(r, blocked);
    int got;
    if (r->cfg.tap_fd < 0) {
        /* no host interface: dropped uncopied, one signal per txmitigation frames */
        uint32_t n = r->cfg.every < VTAP_BATCH ? r->cfg.every : VTAP_BATCH;
        got = ioq_acquire(r->tx, IOQ_WAIT_RECV, n, NULL, NULL);
        if (got > 0) {
            int c = ioq_commit(r->tx, IOQ_WAIT_RECV, (uint32_t)got, NULL, 1);
            if (c < 0)
                got = c;
        }
        if (got > 0) {
            r->c.tx_frames += (uint64_t)got;
            r->c.dropped += (uint64_t)got;
            r->c.tx_signals++;
        }
    } else {
        struct ioq_fd_counts fc;
        uint32_t signals = 0;
        got = venet_recv_to_fd(r->tx, r->cfg.tap_fd, VTAP_BATCH, r->cfg.min_len, r->cfg.max_len,
                               r->cfg.every, &fc, &signals);
        if (got > 0) {
            r->c.tx_frames += (uint64_t)got;
            r->c.oversize += fc.bad_size;
            r->c.dropped += fc.dropped;
            r->c.tx_signals += signals;
        }
    }
    if (got == IOQ_E_EMPTY)
        return 0;
    if (got < 0) {
        ioq_unacquire(r->tx, UINT32_MAX);
        broke(r, 1);
        return 0;
    }
    return got;
}

/* TAP -> receive ring (or read and dropped while the link is down).  Frames
 * moved; *full: the client has no buffer posted. */
static int from_host(struct vtap_runner *r, int *full)
{
    *full = 0;
    if (!host_usable(r))
        return 0;
    int fd = r->cfg.tap_fd;
    if (!r->cfg.link_up || (r->c.faulted & 2)) {
        /* the client is not listening: the host's frames go nowhere */
        int n = 0;
        while (n < VTAP_BATCH && read(fd, r->scratch, sizeof r->scratch) >= 0)
            n++;
        return n;
    }
    struct ioq_fd_counts fc;
    int got = ioq_send_from_fd(r->rx, fd, VTAP_BATCH, r->cfg.max_len, &fc);
    if (got >= 0) {
        r->c.rx_frames += (uint64_t)got;
        r->c.oversize += fc.bad_size;
        return got + (int)fc.bad_size;
    }
    if (got == IOQ_E_FULL) {
        *full = 1; /* the frames wait in the TAP's queue meanwhile */
        return 0;
    }
    if (got == IOQ_E_FAULT || got == IOQ_E_SIDE || got == IOQ_E_INVAL || got == IOQ_E_BUSY) {
        broke(r, 2);
        return 0;
    }
    /* the TAP refused a read (being torn down, say): leave it alone a while */
    r->host_pause_until = now_ns() + (int64_t)VTAP_HOST_PAUSE_MS * 1000000;
    return 0;
}

static int host_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

/* Could a step move something now? */
static int ready(struct vtap_runner *r, int rx_full, int blocked)
{
    if (blocked)
        return ioq_ready(r->rx, IOQ_WAIT_SEND) != 0;
    if (tx_usable(r) && ioq_ready(r->tx, IOQ_WAIT_RECV) != 0)
        return 1;
    if (!host_usable(r))
        return 0;
    if (rx_full && r->cfg.link_up && !(r->c.faulted & 2))
        return ioq_ready(r->rx, IOQ_WAIT_SEND) != 0;
    return host_readable(r->cfg.tap_fd);
}

/* Sleep `ns` with the lock let go (a stop or a config ends it early). */
static void pause_for(struct vtap_runner *r, int64_t ns)
{
    struct pollfd p = {.fd = r->ctl, .events = POLLIN};
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    pthread_mutex_unlock(&r->lock);
    ppoll(&p, 1, &ts, NULL);
    pthread_mutex_lock(&r->lock);
}

static void *run(void *arg)
{
    struct vtap_runner *r = arg;
    unsigned empty = 0; /* ring wake-ups in a row that found nothing to do */
    int woken = 0;      /* the last sleep ended by a ring's wake-up fd */
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        if (lock_wanted(&r->want))
            lock_yield(&r->want, &r->lock);
        int full = 0, blocked = 0;
        int moved = to_host(r, &blocked) + from_host(r, &full);
        if (moved) {
            empty = 0;
            woken = 0;
            continue;
        }
        if (woken && ++empty >= FREE_EMPTY_WAKEUPS) {
            /* a client waking the thread for nothing: backed off as the
             * rings' own waits are, with the lock let go */
            pause_for(r, backoff_ns(empty));
            woken = 0;
            continue;
        }
        woken = 0;
        if (r->cfg.spin_us && (tx_usable(r) || host_usable(r))) {
            int64_t end = now_ns() + (int64_t)r->cfg.spin_us * 1000;
            int found = 0;
            for (unsigned i = 0; !found && !r->stop; i++) {
                if (lock_wanted(&r->want))
                    lock_yield(&r->want, &r->lock);
                found = ready(r, full, blocked);
                if (!found && spin_pause(i, end))
                    break;
            }
            if (found) {
                empty = 0;
                r->c.polled++;
                continue;
            }
        }
        /* arm, re-check, sleep: a client that published before seeing the
         * signal enabled is caught by the re-check, one after writes the fd */
        int arm_tx = tx_usable(r) && !blocked;
        int arm_rx = (full || blocked) && r->cfg.link_up && !(r->c.faulted & 2);
        if (arm_tx) {
            int a = ioq_wait_arm(r->tx, IOQ_WAIT_RECV, 1);
            if (a != 0) {
                if (a < 0)
                    broke(r, 1);
                continue;
            }
        }
        if (arm_rx) {
            int a = ioq_wait_arm(r->rx, IOQ_WAIT_SEND, 1);
            if (a != 0) {
                if (arm_tx)
                    ioq_wait_arm(r->tx, IOQ_WAIT_RECV, 0);
                if (a < 0)
                    broke(r, 2);
                continue;
            }
        }
        int timeout = -1;
        int host = r->cfg.tap_fd >= 0 && !r->cfg.loop && !full;
        if (host && r->host_pause_until) {
            int64_t left = r->host_pause_until - now_ns();
            if (left > 0) {
                host = 0;
                timeout = (int)(left / 1000000) + 1;
            } else {
                r->host_pause_until = 0;
            }
        }
        struct pollfd p[4] = {
            {.fd = r->ctl, .events = POLLIN},
            {.fd = arm_tx ? ioq_wake_fd(r->tx) : -1, .events = POLLIN},
            {.fd = arm_rx ? ioq_wake_fd(r->rx) : -1, .events = POLLIN},
            {.fd = host ? r->cfg.tap_fd : -1, .events = POLLIN},
        };
        r->c.slept++;
        __atomic_store_n(&r->sleeping, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&r->lock);
        poll(p, 4, timeout);
        /* out of poll: it holds no reference to the TAP's file any more */
        __atomic_store_n(&r->sleeping, 0, __ATOMIC_RELEASE);
        pthread_mutex_lock(&r->lock);
        woken = p[1].revents || p[2].revents;
        if (p[0].revents) {
            uint64_t v;
            if (read(r->ctl, &v, sizeof v) < 0) { /* nothing to read: fine */
            }
        }
        /* disarm what was armed (the config may have changed meanwhile: the
         * rings are the same ones, so disarming is always safe) */
        if (arm_tx && ioq_wait_arm(r->tx, IOQ_WAIT_RECV, 0) < 0 &&
            ioq_faulted(r->tx))
            broke(r, 1);
        if (arm_rx && ioq_wait_arm(r->rx, IOQ_WAIT_SEND, 0) < 0 && ioq_faulted(r->rx))
            broke(r, 2);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int vtap_runner_new(struct ioq *tx, struct ioq *rx, struct vtap_runner **out)
{
    if (!tx || !rx)
        return IOQ_E_INVAL;
    if (tx->side != IOQ_SOUTH || tx->direction != IOQ_TO_SOUTH || rx->side != IOQ_SOUTH ||
        rx->direction != IOQ_TO_NORTH)
        return IOQ_E_SIDE;
    struct vtap_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->tx = tx;
    r->rx = rx;
    r->cfg.tap_fd = -1;
    r->cfg.every = 1;
    r->cfg.max_len = UINT32_MAX;
    r->ctl = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->fault = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int err = 0;
    if (r->ctl < 0 || r->fault < 0)
        err = -errno;
    if (!err && (err = pthread_mutex_init(&r->lock, NULL)) != 0)
        err = -err;
    if (!err && (err = pthread_create(&r->thread, NULL, run, r)) != 0) {
        pthread_mutex_destroy(&r->lock);
        err = -err;
    }
    if (err) {
        if (r->ctl >= 0)
            close(r->ctl);
        if (r->fault >= 0)
            close(r->fault);
        free(r);
        return err;
    }
    *out = r;
    return IOQ_OK;
}

void vtap_runner_free(struct vtap_runner *r)
{
    if (!r)
        return;
    vtap_runner_lock(r);
    r->stop = 1;
    poke(r->ctl);
    vtap_runner_unlock(r);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    close(r->ctl);
    close(r->fault);
    free(r);
}

void vtap_runner_lock(struct vtap_runner *r)
{
    lock_ask(&r->want, &r->lock);
    /* A thread asleep in poll(2) keeps the TAP's file alive (a TAP closed now
     * would stay attached, and re-attaching it would fail with EBUSY): wake it
     * and wait until it is out; it then waits for this lock. */
    if (__atomic_load_n(&r->sleeping, __ATOMIC_ACQUIRE)) {
        poke(r->ctl);
        while (__atomic_load_n(&r->sleeping, __ATOMIC_ACQUIRE))
            sched_yield();
    }
}

void vtap_runner_unlock(struct vtap_runner *r) { pthread_mutex_unlock(&r->lock); }

int vtap_runner_set(struct vtap_runner *r, const struct vtap_config *config)
{
    if (config->every == 0 || config->min_len > config->max_len || config->max_len == 0)
        return IOQ_E_INVAL;
    if (config->tap_fd != r->cfg.tap_fd)
        r->host_pause_until = 0; /* a new TAP gets its chance at once */
    r->cfg = *config;
    if (r->cfg.tap_fd < -1)
        r->cfg.tap_fd = -1;
    poke(r->ctl);
    return IOQ_OK;
}

int vtap_runner_counts(struct vtap_runner *r, struct vtap_counts *out)
{
    *out = r->c;
    return IOQ_OK;
}

int vtap_runner_fault_fd(const struct vtap_runner *r) { return r->fault; }
