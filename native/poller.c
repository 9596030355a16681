/*
 * The poller: one blocking call (or one fd in an event loop) waits on several
 * rings, with the same arm / re-check / disarm steps as ioq_wait, and ioq_wait
 * itself sleeps on a poller of its own (one member).
 *
 * Registration is kept: a member's wake-up fd and its watched peer's fd go on
 * the poller's epoll fd once, at add (or when ioq_watch moves the peer), never
 * per wait.  A wait then costs, per member in the mask, the flag stores of
 * arming and, when the wake-up fd may hold a count, the drain (one
 * non-blocking read); and one epoll_wait for all when it sleeps.
 *
 * A poller with several members must not be woken by members outside the
 * mask, so its registrations are edge-triggered (a wake-up is consumed by the
 * epoll_wait that sees it) and a peer's hang-up, which happens once, is kept
 * as a flag.  A ring's own poller has one member, always in the mask, and is
 * level-triggered, so the trio face can sleep on its fd without ever calling
 * epoll_wait on it.
 *
 * It must never trust a peer: readiness comes from ioq_ready (which checks
 * what it reads), a ring that faulted is reported ready so that its own next
 * operation raises, and wake-ups with nothing ready (a peer writing its
 * eventfd in a loop) are backed off, so a wait costs a bounded share of a CPU
 * whatever the peers do.
 */
#define _GNU_SOURCE
#include "ioq_private.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "spin.h"

/* epoll data: a member's wake-up fd is tagged with its bit, a peer's fd with
 * HUP_TAG + its slot */
#define HUP_TAG 64

struct poll_member {
    struct ioq *q; /* NULL: the slot is free, or its ring was closed (dead) */
    int op;
    int hup; /* slot in hups[], or -1 */
};

struct poll_hup {
    int fd, events;
    int refs; /* members watching it; 0: the slot is free */
    int gone; /* it fired: the peer hung up (for good) */
};

struct ioq_poller {
    int epfd;
    int single;    /* a ring's own poller: one member, level-triggered; its
                      adaptive budget is the ring's */
    int error;     /* a failed re-registration (ioq_watch), reported by waits */
    uint64_t used; /* bits taken, by live or dead members */
    uint64_t dead; /* bits whose ring was closed */
    struct poll_member m[IOQ_POLLER_MAX];
    struct poll_hup hups[IOQ_POLLER_MAX];
    struct ioq_spin spin;
};

/* ---- adaptive spinning (the rule is in ioq.h) ----------------------------- */

#define SPIN_MAX_NS ((int64_t)IOQ_SPIN_MAX_US * 1000)

static void spin_grow(struct ioq_spin *s)
{
    int64_t b = s->budget_ns < IOQ_SPIN_GROW_US * 1000 ? IOQ_SPIN_GROW_US * 1000 : 2 * s->budget_ns;
    s->budget_ns = b > SPIN_MAX_NS ? SPIN_MAX_NS : b;
}

static void spin_shrink(struct ioq_spin *s)
{
    s->budget_ns /= 2;
    if (s->budget_ns < IOQ_SPIN_SHRINK_US * 1000)
        s->budget_ns = 0;
}

void ioq_spin_judge(struct ioq_spin *s, int ready)
{
    if (!s->missed_at)
        return;
    if (ready && now_ns() - s->missed_at <= SPIN_MAX_NS)
        spin_grow(s);
    else
        spin_shrink(s);
    s->missed_at = 0;
}

static struct ioq_spin *spin_of(struct ioq_poller *p)
{
    return p->single ? &p->m[0].q->spin : &p->spin;
}

int ioq_poller_spin_budget(const struct ioq_poller *p) { return (int)p->spin.budget_ns; }

#define FOR_BITS(b, bits) \
    for (uint64_t _m = (bits); _m && ((b) = __builtin_ctzll(_m), 1); _m &= _m - 1)

/* ---- registration ------------------------------------------------------ */

static uint32_t trigger(const struct ioq_poller *p)
{
    return p->single ? 0 : (uint32_t)EPOLLET;
}

static int hup_ref(struct ioq_poller *p, int fd, int events)
{
    int free_slot = -1;
    for (int j = 0; j < IOQ_POLLER_MAX; j++) {
        struct poll_hup *h = &p->hups[j];
        if (!h->refs) {
            if (free_slot < 0)
                free_slot = j;
            continue;
        }
        if (h->fd != fd)
            continue;
        /* one registration per fd: two members asking different events on
         * the same fd share the union */
        if (events & ~h->events) {
            struct epoll_event ev = {.events = (uint32_t)(h->events | events) | trigger(p),
                                     .data.u64 = (uint64_t)(HUP_TAG + j)};
            if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
                return -errno;
            h->events |= events;
        }
        h->refs++;
        return j;
    }
    if (free_slot < 0)
        return -ENOSPC;
    struct epoll_event ev = {.events = (uint32_t)events | trigger(p),
                             .data.u64 = (uint64_t)(HUP_TAG + free_slot)};
    /* a peer that hung up already is reported by the next epoll_wait */
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    p->hups[free_slot] = (struct poll_hup){.fd = fd, .events = events, .refs = 1, .gone = 0};
    return free_slot;
}

static void hup_unref(struct ioq_poller *p, int j)
{
    if (j < 0)
        return;
    struct poll_hup *h = &p->hups[j];
    if (--h->refs > 0)
        return;
    /* the fd may be closed already (the caller owns it): nothing to undo then */
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    *h = (struct poll_hup){.fd = -1};
}

static int link_ring(struct ioq *q, struct ioq_poller *p, int bit)
{
    for (int i = 0; i < IOQ_RING_POLLERS; i++) {
        if (!q->polled_by[i]) {
            q->polled_by[i] = p;
            q->polled_bit[i] = bit;
            return IOQ_OK;
        }
    }
    return -ENOSPC;
}

static void unlink_ring(struct ioq *q, struct ioq_poller *p, int bit)
{
    for (int i = 0; i < IOQ_RING_POLLERS; i++) {
        if (q->polled_by[i] == p && q->polled_bit[i] == bit) {
            q->polled_by[i] = NULL;
            return;
        }
    }
}

/* Take the member's registrations off the epoll fd (its fds are still open). */
static void unregister(struct ioq_poller *p, int bit)
{
    struct poll_member *m = &p->m[bit];
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, ioq_wake_fd(m->q), NULL);
    hup_unref(p, m->hup);
    m->hup = -1;
}

int ioq_poller_new(struct ioq_poller **out)
{
    *out = NULL;
    struct ioq_poller *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        int e = errno;
        free(p);
        return -e;
    }
    for (int j = 0; j < IOQ_POLLER_MAX; j++) {
        p->hups[j].fd = -1;
        p->m[j].hup = -1;
    }
    *out = p;
    return IOQ_OK;
}

void ioq_poller_free(struct ioq_poller *p)
{
    if (!p)
        return;
    int bit;
    FOR_BITS(bit, p->used & ~p->dead)
    {
        /* the epoll fd goes with its registrations: only the ring forgets us */
        unlink_ring(p->m[bit].q, p, bit);
    }
    close(p->epfd);
    free(p);
}

int ioq_poller_fd(const struct ioq_poller *p) { return p->epfd; }

int ioq_poller_add(struct ioq_poller *p, struct ioq *q, int op)
{
    if (!p || !q)
        return IOQ_E_INVAL;
    int r = ioq_ready(q, op); /* the op must be this side's, the ring sound */
    if (r < 0)
        return r;
    int bit;
    FOR_BITS(bit, p->used & ~p->dead)
    {
        if (p->m[bit].q == q)
            return p->m[bit].op == op ? bit : IOQ_E_INVAL;
    }
    if (p->used == UINT64_MAX || (p->single && p->used))
        return -ENOSPC;
    bit = __builtin_ctzll(~p->used);
    if ((r = link_ring(q, p, bit)))
        return r;
    struct epoll_event ev = {.events = EPOLLIN | trigger(p), .data.u64 = (uint64_t)bit};
    int hup = -1;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, ioq_wake_fd(q), &ev) < 0) {
        r = -errno;
    } else if (q->hup_fd >= 0 && (hup = hup_ref(p, q->hup_fd, q->hup_events)) < 0) {
        r = hup;
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, ioq_wake_fd(q), NULL);
    }
    if (r) {
        unlink_ring(q, p, bit);
        return r;
    }
    p->m[bit] = (struct poll_member){.q = q, .op = op, .hup = hup};
    p->used |= 1ull << bit;
    return bit;
}

int ioq_poller_remove(struct ioq_poller *p, int bit)
{
    if (bit < 0 || bit >= IOQ_POLLER_MAX || !(p->used & (1ull << bit)))
        return IOQ_E_INVAL;
    struct poll_member *m = &p->m[bit];
    if (m->q) {
        unregister(p, bit);
        unlink_ring(m->q, p, bit);
    }
    *m = (struct poll_member){.hup = -1};
    p->used &= ~(1ull << bit);
    p->dead &= ~(1ull << bit);
    return IOQ_OK;
}

int ioq_poller_own(struct ioq *q, int op, struct ioq_poller **out)
{
    if (!q->own) {
        struct ioq_poller *p;
        int r = ioq_poller_new(&p);
        if (r)
            return r;
        p->single = 1;
        if ((r = ioq_poller_add(p, q, op)) < 0) {
            ioq_poller_free(p);
            return r;
        }
        q->own = p;
    } else if (q->own->m[0].op != op) {
        return IOQ_E_INVAL;
    }
    *out = q->own;
    return IOQ_OK;
}

void ioq_poller_forget_ring(struct ioq *q)
{
    if (q->own) {
        ioq_poller_free(q->own); /* unlinks itself */
        q->own = NULL;
    }
    for (int i = 0; i < IOQ_RING_POLLERS; i++) {
        struct ioq_poller *p = q->polled_by[i];
        if (!p)
            continue;
        int bit = q->polled_bit[i];
        unregister(p, bit);
        p->m[bit].q = NULL;
        p->dead |= 1ull << bit;
        q->polled_by[i] = NULL;
    }
}

void ioq_poller_rewatch_ring(struct ioq *q)
{
    for (int i = 0; i < IOQ_RING_POLLERS; i++) {
        struct ioq_poller *p = q->polled_by[i];
        if (!p)
            continue;
        struct poll_member *m = &p->m[q->polled_bit[i]];
        /* the new one first: the same fd again keeps its registration */
        int hup = -1;
        if (q->hup_fd >= 0 && (hup = hup_ref(p, q->hup_fd, q->hup_events)) < 0) {
            p->error = hup;
            hup = -1;
        }
        hup_unref(p, m->hup);
        m->hup = hup;
    }
}

/* ---- waiting ----------------------------------------------------------- */

/* The ready bits of mask: ready rings, faulted ones (their next operation
 * raises) and dead ones (closed under us). */
static uint64_t ready_bits(struct ioq_poller *p, uint64_t mask, int spinning)
{
    uint64_t ready = mask & p->dead;
    int bit;
    FOR_BITS(bit, mask & ~p->dead)
    {
        struct poll_member *m = &p->m[bit];
        if ((spinning ? ioq_spin_ready(m->q, m->op) : ioq_ready(m->q, m->op)) != 0)
            ready |= 1ull << bit;
    }
    return ready;
}

static void disarm_all(struct ioq_poller *p, uint64_t mask)
{
    int bit;
    FOR_BITS(bit, mask & ~p->dead)
    {
        shm_signal_disable(&p->m[bit].q->sig);
    }
}

/* Drain, enable and re-check every member in mask: the ready bits (then all
 * are disarmed again), or 0 with all armed. */
static uint64_t arm_all(struct ioq_poller *p, uint64_t mask)
{
    int bit;
    FOR_BITS(bit, mask & ~p->dead)
    {
        struct shm_signal *s = &p->m[bit].q->sig;
        /* edge-triggered, a poller needs no empty wake-up fd to sleep, only a
         * bounded one: a drain (a syscall) only when the peer injected since
         * the last one.  Level-triggered (a ring's own), it needs an empty
         * one: it drains when the peer kicked since the last arm (pending)
         * or a wake-up came through the fd since the last drain (counted),
         * so a count left by a peer that wrote without injecting wakes it
         * once, not again and again.  Most waits of a busy pair find neither
         * and skip the syscall. */
        if (p->single ? shm_signal_stale(s) : shm_signal_dirty(s))
            shm_signal_drain(s);
        shm_signal_enable(s);
    }
    uint64_t ready = ready_bits(p, mask, 0);
    if (ready)
        disarm_all(p, mask);
    return ready;
}

static int gone_any(const struct ioq_poller *p, uint64_t mask)
{
    int bit;
    FOR_BITS(bit, mask & ~p->dead)
    {
        int h = p->m[bit].hup;
        if (h >= 0 && p->hups[h].gone)
            return 1;
    }
    return 0;
}

/* What epoll_wait reported: only the peers' hang-ups need remembering (an
 * edge is reported once); a wake-up fd's event has done its job by waking. */
static void note_events(struct ioq_poller *p, const struct epoll_event *ev, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t tag = ev[i].data.u64;
        if (tag >= HUP_TAG && tag < HUP_TAG + IOQ_POLLER_MAX && p->hups[tag - HUP_TAG].refs)
            p->hups[tag - HUP_TAG].gone = 1;
    }
}

static int check_mask(struct ioq_poller *p, uint64_t *mask, uint64_t *ready)
{
    *ready = 0;
    if (!p)
        return IOQ_E_INVAL;
    *mask &= p->used;
    if (!*mask)
        return IOQ_E_INVAL;
    return p->error;
}

int ioq_poller_arm(struct ioq_poller *p, uint64_t mask, uint64_t *ready)
{
    int r = check_mask(p, &mask, ready);
    if (r)
        return r;
    /* ready already: no syscall at all */
    if ((*ready = ready_bits(p, mask, 0)) || (*ready = arm_all(p, mask)))
        return 1;
    if (gone_any(p, mask)) {
        disarm_all(p, mask);
        return IOQ_E_CLOSED;
    }
    return 0;
}

int ioq_poller_disarm(struct ioq_poller *p, uint64_t mask, uint64_t *ready)
{
    int r = check_mask(p, &mask, ready);
    if (r)
        return r;
    if (!p->single) {
        /* consume the edges, so that a wake-up for a member outside the next
         * wait's mask does not end that wait; note hang-ups */
        struct epoll_event ev[2 * IOQ_POLLER_MAX];
        int n = epoll_wait(p->epfd, ev, 2 * IOQ_POLLER_MAX, 0);
        if (n > 0)
            note_events(p, ev, n);
    }
    disarm_all(p, mask);
    if ((*ready = ready_bits(p, mask, 0))) {
        ioq_spin_judge(spin_of(p), 1); /* an adaptive spin that ran out before */
        return 1;
    }
    return gone_any(p, mask) ? IOQ_E_CLOSED : 0;
}

static int ms_until(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return -1;
    int64_t now = now_ns();
    if (now >= deadline)
        return 0;
    int64_t ms = (deadline - now + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

int ioq_poller_wait(struct ioq_poller *p, uint64_t mask, int timeout_ms, int spin_us,
                    uint64_t *ready)
{
    int r = check_mask(p, &mask, ready);
    if (r)
        return r;
    if (spin_us < 0 && spin_us != IOQ_SPIN_ADAPTIVE)
        return IOQ_E_INVAL;
    if ((*ready = ready_bits(p, mask, 0)))
        return IOQ_OK;
    int64_t start = now_ns();
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : start + (int64_t)timeout_ms * 1000000;
    struct ioq_spin *adapt = NULL;
    int64_t spin_ns = (int64_t)spin_us * 1000;
    if (spin_us == IOQ_SPIN_ADAPTIVE) {
        adapt = spin_of(p);
        adapt->missed_at = 0; /* a new wait: an old miss nobody judged is void */
        spin_ns = adapt->budget_ns;
    }
    if (spin_ns > 0) {
        /* polling the rings for a few microseconds beats a cross-CPU wake-up
         * (~20 us each way on the target machine); timeout 0 still spins */
        int64_t spin_end = start + spin_ns;
        if (timeout_ms > 0 && spin_end > deadline)
            spin_end = deadline;
        for (unsigned i = 0;; i++) {
            if ((*ready = ready_bits(p, mask, 1))) {
                /* found late in the budget: the peer answers near the limit
                 * (found after it: this thread was off the CPU, which says
                 * nothing of the peer) */
                int64_t took = now_ns() - start;
                if (adapt && 2 * took > spin_ns && took <= spin_ns)
                    spin_grow(adapt);
                return IOQ_OK;
            }
            if (spin_pause(i, spin_end))
                break;
        }
    }
    if (adapt)
        adapt->missed_at = start; /* judged by how the wait ends */
    struct epoll_event ev[2 * IOQ_POLLER_MAX];
    int empty = 0;
    for (;;) {
        if ((*ready = arm_all(p, mask)))
            break;
        if (gone_any(p, mask)) {
            disarm_all(p, mask);
            r = IOQ_E_CLOSED;
            break;
        }
        int n = epoll_wait(p->epfd, ev, 2 * IOQ_POLLER_MAX, ms_until(deadline));
        int e = errno;
        if (n > 0)
            note_events(p, ev, n);
        if (n != 0 && p->single && p->m[0].q)
            p->m[0].q->sig.counted = 1; /* woken through the fd, or cannot tell */
        disarm_all(p, mask);
        if ((*ready = ready_bits(p, mask, 0)))
            break;
        if (n < 0) {
            /* -EINTR too: the caller runs its signal handlers, retries */
            r = -e;
            break;
        }
        if (gone_any(p, mask)) {
            r = IOQ_E_CLOSED;
            break;
        }
        int64_t now = now_ns();
        if (now >= deadline) {
            r = IOQ_E_TIMEDOUT;
            break;
        }
        if (n > 0 && ++empty >= FREE_EMPTY_WAKEUPS) {
            /* a peer that keeps waking us with nothing to do: back off, so
             * what it costs is bounded whatever it does; an honest peer
             * wakes a wait at most once for nothing */
            int64_t pause = backoff_ns((unsigned)empty);
            if (pause > deadline - now)
                pause = deadline - now;
            struct timespec ts = {.tv_sec = pause / 1000000000, .tv_nsec = pause % 1000000000};
            if (nanosleep(&ts, NULL) < 0 && errno == EINTR) {
                r = -EINTR;
                break;
            }
        }
    }
    if (adapt) {
        if (*ready)
            ioq_spin_judge(adapt, 1);
        else if (r != IOQ_E_TIMEDOUT)
            adapt->missed_at = 0; /* closed, interrupted: says nothing of the peer */
        else if (timeout_ms != 0)
            ioq_spin_judge(adapt, 0);
        /* else: the caller goes on to sleep in its own loop; its disarm judges */
    }
    return *ready ? IOQ_OK : r;
}
