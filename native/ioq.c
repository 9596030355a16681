/*
 * The IOQ ring: creation (north), attach and validation (south), the ring
 * operations, the batched and zero-copy data path, and the blocking wait.
 *
 * It must never trust shared memory on the south side: every value read
 * from the ring is read once into a local, checked (indices < count,
 * ptr + len inside the data segment, flags 0 or 1), and a bad value marks
 * the handle faulted (IOQ_E_FAULT) instead of being used.  It never reads
 * back a shared field its own side is the only writer of: private shadows
 * (struct ioq) hold the truth for those.
 */
#define _GNU_SOURCE
#include "ioq_private.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

int ioq_abi_version(void) { return IOQ_ABI_VERSION; }

uint64_t ioq_ring_bytes(uint32_t count)
{
    return (uint64_t)IOQ_HEAD_SIZE + (uint64_t)IOQ_DESC_SIZE * count;
}

int ioq_fault(struct ioq *q)
{
    q->faulted = 1;
    q->acquired = q->acq_first = 0;
    return IOQ_E_FAULT;
}

static inline uint32_t next_pos(const struct ioq *q, uint32_t pos)
{
    return pos + 1 == q->count ? 0 : pos + 1;
}

/* ---- mapping ---------------------------------------------------------- */

/* Map fd's first len bytes shared, between two PROT_NONE guard pages. */
static void *map_guarded(int fd, uint64_t len, void **map, size_t *map_len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (len == 0 || len > (uint64_t)(SIZE_MAX / 2)) {
        errno = EINVAL;
        return NULL;
    }
    size_t body = ((size_t)len + page - 1) / page * page;
    size_t total = body + 2 * page;
    uint8_t *base = mmap(NULL, total, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    void *seg = mmap(base + page, (size_t)len, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_FIXED, fd, 0);
    if (seg == MAP_FAILED) {
        int e = errno;
        munmap(base, total);
        errno = e;
        return NULL;
    }
    *map = base;
    *map_len = total;
    return seg;
}

static struct ioq *ioq_alloc(uint32_t count)
{
    struct ioq *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->ring_fd = q->data_fd = q->sig.efd[0] = q->sig.efd[1] = q->hup_fd = -1;
    q->north_pass_fd = -1;
    q->acq_off = calloc(count, sizeof(*q->acq_off));
    q->acq_len = calloc(count, sizeof(*q->acq_len));
    if (!q->acq_off || !q->acq_len) {
        free(q->acq_off);
        free(q->acq_len);
        free(q);
        return NULL;
    }
    q->count = count;
    return q;
}

void ioq_close(struct ioq *q)
{
    if (!q)
        return;
    /* off every poller while its fds are still open */
    ioq_poller_forget_ring(q);
    if (q->ring_map)
        munmap(q->ring_map, q->ring_map_len);
    if (q->data_map)
        munmap(q->data_map, q->data_map_len);
    int fds[5] = {q->ring_fd, q->data_fd, q->sig.efd[0], q->sig.efd[1],
                  q->north_pass_fd};
    for (int i = 0; i < 5; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(q->acq_off);
    free(q->acq_len);
    free(q);
}

static int make_memfd(const char *name, uint64_t len)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    /* Sealed against shrinking so a mapping peer can never take SIGBUS,
     * against growing since nothing needs it, then the seals themselves. */
    if (ftruncate(fd, (off_t)len) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int push_batch(struct ioq *q, int which, uint32_t n,
                      const uint64_t *cookie, const uint64_t *ptr,
                      const uint64_t *len);

int ioq_north_create(uint32_t count, uint64_t data_len, int direction,
                     struct ioq **out)
{
    *out = NULL;
    if (count == 0 || count > IOQ_MAX_COUNT || data_len == 0 ||
        data_len % count != 0 || data_len > IOQ_MAX_DATA ||
        (direction != IOQ_TO_SOUTH && direction != IOQ_TO_NORTH))
        return IOQ_E_INVAL;
    struct ioq *q = ioq_alloc(count);
    if (!q)
        return -ENOMEM;
    q->side = q->sig.side = IOQ_NORTH;
    q->direction = direction;
    q->slot = (uint32_t)(data_len / count);
    q->ring_len = ioq_ring_bytes(count);
    q->data_len = data_len;
    int err = 0;
    if ((q->ring_fd = make_memfd("vbusfs-ioq-ring", q->ring_len)) < 0 ||
        (q->data_fd = make_memfd("vbusfs-ioq-data", data_len)) < 0 ||
        (q->sig.efd[IOQ_SOUTH] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        err = -errno;
    /* south wakes north through a datagram socket pair: north sleeps on one
     * end and hands the other to south, which sends with MSG_DONTWAIT */
    int sv[2];
    if (!err && socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        err = -errno;
    if (!err) {
        q->sig.efd[IOQ_NORTH] = sv[0];
        q->north_pass_fd = sv[1];
    }
    if (!err) {
        q->head = map_guarded(q->ring_fd, q->ring_len, &q->ring_map, &q->ring_map_len);
        if (!q->head)
            err = -errno;
    }
    if (!err) {
        q->data = map_guarded(q->data_fd, data_len, &q->data_map, &q->data_map_len);
        if (!q->data)
            err = -errno;
    }
    if (err) {
        ioq_close(q);
        return err;
    }
    q->desc = (struct ioq_ring_desc *)((uint8_t *)q->head + IOQ_HEAD_SIZE);
    q->sig.desc = &q->head->signal;
    q->sig.counted = 1; /* whatever the fd holds, the first arm drains it */
    /* memfds start zeroed: every descriptor FREE, every index empty. */
    q->head->count = count;
    q->head->signal.magic = SHM_SIGNAL_MAGIC;
    q->head->signal.ver = SHM_SIGNAL_VER;
    q->head->ver = IOQ_RING_VER;
    STORE_REL(&q->head->magic, (uint32_t)IOQ_RING_MAGIC);
    if (direction == IOQ_TO_NORTH) {
        /* north posts every slot as an empty buffer for south to fill */
        for (uint32_t i = 0; i < count; i++) {
            uint64_t c = i, p = (uint64_t)i * q->slot, l = q->slot;
            push_batch(q, IOQ_IDX_BOTH, 1, &c, &p, &l);
        }
    }
    *out = q;
    return IOQ_OK;
}

static int fd_is_eventfd(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n < 0)
        return 0;
    target[n] = '\0';
    return strcmp(target, "anon_inode:[eventfd]") == 0;
}

/* An eventfd in semaphore mode returns 1 per read however large its count:
 * one read per wake-up would leave it readable, and south would spin.  The
 * mode is fixed at creation, and shown in fdinfo (kernels without the line
 * cannot be checked: accepted, see behaviour §7.3). */
static int eventfd_is_semaphore(int fd)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return 1;
    ssize_t n = read(f, buf, sizeof(buf) - 1);
    close(f);
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    return strstr(buf, "eventfd-semaphore: 1") != NULL;
}

/* South wakes north through this: it must be a Unix datagram socket, which
 * send(MSG_DONTWAIT) can never block on, connected to an unnamed peer (the
 * other end of north's socketpair), so that the daemon never sends to a
 * socket north merely names (a confused deputy). */
static int fd_is_dgram_socket(int fd)
{
    struct stat st;
    int domain = 0, type = 0;
    socklen_t len = sizeof(int);
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
        return 0;
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_DGRAM)
        return 0;
    return shm_signal_peer_is_unnamed(fd);
}

static int memfd_checked(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || st.st_size <= 0)
        return IOQ_E_BADRING;
    int seals = fcntl(fd, F_GET_SEALS);
    /* without the shrink seal north could truncate under our mapping and
     * turn any access into SIGBUS */
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return IOQ_E_BADRING;
    *size = (uint64_t)st.st_size;
    return IOQ_OK;
}

int ioq_south_attach(int ring_fd, int data_fd, int efd_to_south,
                     int efd_to_north, int direction, struct ioq **out)
{
    *out = NULL;
    if (direction != IOQ_TO_SOUTH && direction != IOQ_TO_NORTH)
        return IOQ_E_INVAL;
    uint64_t ring_len, data_len;
    int r = memfd_checked(ring_fd, &ring_len);
    if (r)
        return r;
    r = memfd_checked(data_fd, &data_len);
    if (r)
        return r;
    if (!fd_is_eventfd(efd_to_south) || eventfd_is_semaphore(efd_to_south) ||
        !fd_is_dgram_socket(efd_to_north))
        return IOQ_E_BADRING;
    /* the daemon maps what it is given: bounded here, not by north */
    if (data_len > IOQ_SOUTH_MAX_DATA)
        return IOQ_E_BADRING;
    if (ring_len < IOQ_HEAD_SIZE + IOQ_DESC_SIZE ||
        ring_len > ioq_ring_bytes(IOQ_MAX_COUNT) ||
        (ring_len - IOQ_HEAD_SIZE) % IOQ_DESC_SIZE != 0)
        return IOQ_E_BADRING;
    uint32_t count = (uint32_t)((ring_len - IOQ_HEAD_SIZE) / IOQ_DESC_SIZE);
    struct ioq *q = ioq_alloc(count);
    if (!q)
        return -ENOMEM;
    q->side = q->sig.side = IOQ_SOUTH;
    q->direction = direction;
    q->ring_len = ring_len;
    q->data_len = data_len;
    int err = 0;
    if ((q->ring_fd = fcntl(ring_fd, F_DUPFD_CLOEXEC, 0)) < 0 ||
        (q->data_fd = fcntl(data_fd, F_DUPFD_CLOEXEC, 0)) < 0 ||
        (q->sig.efd[IOQ_SOUTH] = fcntl(efd_to_south, F_DUPFD_CLOEXEC, 0)) < 0 ||
        (q->sig.efd[IOQ_NORTH] = fcntl(efd_to_north, F_DUPFD_CLOEXEC, 0)) < 0)
        err = -errno;
    if (!err) {
        q->head = map_guarded(q->ring_fd, ring_len, &q->ring_map, &q->ring_map_len);
        if (!q->head)
            err = -errno;
    }
    if (!err) {
        q->data = map_guarded(q->data_fd, data_len, &q->data_map, &q->data_map_len);
        if (!q->data)
            err = -errno;
    }
    if (!err) {
        /* Validate once; after this only indices and descriptors are read,
         * each checked on every use. */
        if (LOAD_ACQ(&q->head->magic) != IOQ_RING_MAGIC ||
            LOAD_RLX(&q->head->ver) != IOQ_RING_VER ||
            LOAD_RLX(&q->head->count) != count ||
            LOAD_RLX(&q->head->signal.magic) != SHM_SIGNAL_MAGIC ||
            LOAD_RLX(&q->head->signal.ver) != SHM_SIGNAL_VER)
            err = IOQ_E_BADRING;
    }
    if (!err) {
        /* south starts where the inuse index says; later it never
         * reads its own head back */
        uint32_t h = LOAD_ACQ(&q->head->idx[IOQ_INUSE].head);
        if (h >= count)
            err = IOQ_E_BADRING;
        q->head_idx[IOQ_INUSE] = h;
    }
    if (err) {
        ioq_close(q);
        return err;
    }
    q->desc = (struct ioq_ring_desc *)((uint8_t *)q->head + IOQ_HEAD_SIZE);
    q->sig.desc = &q->head->signal;
    q->sig.counted = 1; /* whatever the fd holds, the first arm drains it */
    *out = q;
    return IOQ_OK;
}

void ioq_fds(const struct ioq *q, int *fds)
{
    fds[0] = q->ring_fd;
    fds[1] = q->data_fd;
    fds[2] = q->sig.efd[IOQ_SOUTH];
    /* north hands out the sending end and keeps the receiving one */
    fds[3] = q->side == IOQ_NORTH ? q->north_pass_fd : q->sig.efd[IOQ_NORTH];
}

int ioq_side(const struct ioq *q) { return q->side; }
uint32_t ioq_count_slots(const struct ioq *q) { return q->count; }
uint64_t ioq_data_len(const struct ioq *q) { return q->data_len; }
int ioq_faulted(const struct ioq *q) { return q->faulted; }

/* ---- indices ---------------------------------------------------------- */

/* Read a peer-written index field once and check it. */
static int peer_index(struct ioq *q, uint32_t *field, uint32_t *out)
{
    uint32_t v = LOAD_ACQ(field);
    if (v >= q->count)
        return ioq_fault(q);
    *out = v;
    return IOQ_OK;
}

/* A consistent-enough view of one index: private shadows for the fields
 * this side writes, checked reads for the others. */
static int idx_view(struct ioq *q, int i, uint32_t *head, uint32_t *tail, int *full)
{
    struct ioq_ring_idx *idx = &q->head->idx[i];
    int r;
    if (q->side == IOQ_NORTH) {
        *tail = q->tail_idx[i];
        if (i == IOQ_VALID) {
            *head = q->head_idx[i];
            *full = q->full_idx[i];
            return IOQ_OK;
        }
        if ((r = peer_index(q, &idx->head, head)))
            return r;
    } else {
        if (i == IOQ_INUSE)
            *head = q->head_idx[i];
        else if ((r = peer_index(q, &idx->head, head)))
            return r;
        if ((r = peer_index(q, &idx->tail, tail)))
            return r;
    }
    *full = LOAD_ACQ(&idx->full) != 0;
    return IOQ_OK;
}

static int which_to_index(int which)
{
    if (which == IOQ_IDX_VALID)
        return IOQ_VALID;
    if (which == IOQ_IDX_INUSE)
        return IOQ_INUSE;
    return -1;
}

int ioq_count(struct ioq *q, int which)
{
    int i = which_to_index(which);
    if (i < 0)
        return IOQ_E_INVAL;
    if (q->faulted)
        return IOQ_E_FAULT;
    uint32_t h = 0, t = 0;
    int full, r;
    if ((r = idx_view(q, i, &h, &t, &full)))
        return r;
    if (h == t)
        return full ? (int)q->count : 0;
    return (int)((t + q->count - h) % q->count);
}

int ioq_remain(struct ioq *q, int which)
{
    int c = ioq_count(q, which);
    return c < 0 ? c : (int)q->count - c;
}

int ioq_full(struct ioq *q, int which)
{
    int c = ioq_count(q, which);
    return c < 0 ? c : c == (int)q->count;
}

int ioq_empty(struct ioq *q, int which)
{
    int c = ioq_count(q, which);
    return c < 0 ? c : c == 0;
}

int ioq_seek(struct ioq *q, int which, int whence, int32_t offset)
{
    int i = which_to_index(which);
    if (i < 0)
        return IOQ_E_INVAL;
    if (q->faulted)
        return IOQ_E_FAULT;
    int64_t n = q->count, base;
    uint32_t h = 0, t = 0;
    int full, r;
    switch (whence) {
    case IOQ_SEEK_HEAD:
    case IOQ_SEEK_TAIL:
        if ((r = idx_view(q, i, &h, &t, &full)))
            return r;
        base = whence == IOQ_SEEK_HEAD ? h : t;
        break;
    case IOQ_SEEK_NEXT:
        base = (int64_t)q->cursor[i] + 1;
        break;
    case IOQ_SEEK_PREV:
        base = (int64_t)q->cursor[i] - 1;
        break;
    case IOQ_SEEK_SET:
        if (offset < 0 || offset >= n)
            return IOQ_E_INVAL;
        base = 0;
        break;
    default:
        return IOQ_E_INVAL;
    }
    if (whence == IOQ_SEEK_NEXT || whence == IOQ_SEEK_PREV)
        offset = 0;
    q->cursor[i] = (uint32_t)((((base + offset) % n) + n) % n);
    return (int)q->cursor[i];
}

int ioq_desc_at(struct ioq *q, uint32_t pos, struct ioq_desc *out)
{
    if (pos >= q->count)
        return IOQ_E_INVAL;
    struct ioq_ring_desc *d = &q->desc[pos];
    out->valid = LOAD_ACQ(&d->valid);
    out->sown = LOAD_ACQ(&d->sown);
    out->cookie = LOAD64(&d->cookie);
    out->ptr = LOAD64(&d->ptr);
    out->len = LOAD64(&d->len);
    return IOQ_OK;
}

/* ---- push and pop ----------------------------------------------------- */

/* North: push n descriptors at the tail of the valid index, the inuse
 * index, or both.  Each slot must be free for what the push claims: a
 * valid push needs valid == 0, an inuse push needs sown == 0 (south gave it
 * back) and, without a valid push, valid == 1.  Publishes sown per
 * descriptor (south consumes by ownership bit alone) and the tails once. */
static int push_batch(struct ioq *q, int which, uint32_t n,
                      const uint64_t *cookie, const uint64_t *ptr,
                      const uint64_t *len)
{
    int pv = (which & IOQ_IDX_VALID) != 0, pi = (which & IOQ_IDX_INUSE) != 0;
    /* both at once only while every valid descriptor is also in inuse */
    if (pv && pi && q->valid_not_inuse != 0)
        return IOQ_E_INVAL;
    uint32_t done = 0;
    for (; done < n; done++) {
        if (pv && q->full_idx[IOQ_VALID])
            break;
        uint32_t pos = pi ? q->tail_idx[IOQ_INUSE] : q->tail_idx[IOQ_VALID];
        struct ioq_ring_desc *d = &q->desc[pos];
        uint8_t valid = LOAD_RLX(&d->valid), sown = LOAD_ACQ(&d->sown);
        if (sown != 0 || valid != (pv ? 0 : 1))
            break;
        /* an inuse-only push hands over what the valid index already
         * holds; it may not run ahead of it */
        if (pi && !pv && q->valid_not_inuse == 0)
            break;
        STORE64(&d->cookie, cookie[done]);
        STORE64(&d->ptr, ptr[done]);
        STORE64(&d->len, len[done]);
        if (pv)
            STORE_REL(&d->valid, (uint8_t)1);
        if (pi)
            STORE_REL(&d->sown, (uint8_t)1);
        if (pv) {
            q->tail_idx[IOQ_VALID] = next_pos(q, q->tail_idx[IOQ_VALID]);
            if (q->tail_idx[IOQ_VALID] == q->head_idx[IOQ_VALID])
                q->full_idx[IOQ_VALID] = 1;
        }
        if (pi)
            q->tail_idx[IOQ_INUSE] = next_pos(q, q->tail_idx[IOQ_INUSE]);
        if (pv != pi)
            q->valid_not_inuse += pv ? 1 : -1;
    }
    if (done == 0)
        return IOQ_E_FULL;
    if (pv) {
        struct ioq_ring_idx *v = &q->head->idx[IOQ_VALID];
        STORE_REL(&v->tail, q->tail_idx[IOQ_VALID]);
        STORE_REL(&v->full, q->full_idx[IOQ_VALID]);
    }
    if (pi) {
        struct ioq_ring_idx *u = &q->head->idx[IOQ_INUSE];
        STORE_REL(&u->tail, q->tail_idx[IOQ_INUSE]);
        /* inuse holds a subset of valid, so it can only have become full
         * when valid is: only then is south's head worth a (cross-CPU)
         * read.  The flag is a published status; see ioq.h for why it
         * cannot decide anything. */
        if (q->full_idx[IOQ_VALID]) {
            atomic_thread_fence(memory_order_seq_cst);
            uint32_t h = 0;
            int r = peer_index(q, &u->head, &h);
            if (r)
                return r;
            if (h == q->tail_idx[IOQ_INUSE])
                STORE_REL(&u->full, (uint8_t)1);
        }
    }
    return (int)done;
}

int ioq_push(struct ioq *q, int which, uint64_t cookie, uint64_t ptr, uint64_t len)
{
    if (q->faulted)
        return IOQ_E_FAULT;
    if (which < IOQ_IDX_VALID || which > IOQ_IDX_BOTH)
        return IOQ_E_INVAL;
    if (q->side != IOQ_NORTH)
        return IOQ_E_SIDE;
    if (ptr > q->data_len || len > q->data_len - ptr)
        return IOQ_E_INVAL;
    ioq_unacquire(q, UINT32_MAX); /* raw operations end any zero-copy set */
    int r = push_batch(q, which, 1, &cookie, &ptr, &len);
    return r < 0 ? r : IOQ_OK;
}

/* South: check the descriptor at pos; fill out on success. */
static int south_take(struct ioq *q, uint32_t pos, uint64_t *ptr, uint64_t *len,
                      struct ioq_desc *out)
{
    struct ioq_ring_desc *d = &q->desc[pos];
    uint8_t sown = LOAD_ACQ(&d->sown);
    if (sown == 0)
        return IOQ_E_EMPTY;
    uint8_t valid = LOAD_RLX(&d->valid);
    uint64_t p = LOAD64(&d->ptr), l = LOAD64(&d->len);
    if (sown != 1 || valid != 1 || p > q->data_len || l > q->data_len - p)
        return ioq_fault(q);
    *ptr = p;
    *len = l;
    if (out) {
        out->cookie = LOAD64(&d->cookie);
        out->ptr = p;
        out->len = l;
        out->valid = valid;
        out->sown = sown;
    }
    return IOQ_OK;
}

/* South: hand k descriptors starting at the inuse head back to north,
 * optionally with new lengths (to-north buffers it filled). */
static void south_release(struct ioq *q, uint32_t k, const uint32_t *lens)
{
    struct ioq_ring_idx *u = &q->head->idx[IOQ_INUSE];
    uint32_t pos = q->head_idx[IOQ_INUSE];
    for (uint32_t i = 0; i < k; i++) {
        struct ioq_ring_desc *d = &q->desc[pos];
        if (lens)
            STORE64(&d->len, (uint64_t)lens[i]);
        STORE_REL(&d->sown, (uint8_t)0);
        pos = next_pos(q, pos);
    }
    /* clear before moving head: a clear landing after north refilled the
     * ring would wrongly report it empty */
    if (LOAD_RLX(&u->full))
        STORE_RLX(&u->full, (uint8_t)0);
    q->head_idx[IOQ_INUSE] = pos;
    STORE_REL(&u->head, pos);
}

/* North: is the descriptor at the valid head back from south? */
static int north_done(struct ioq *q, uint32_t pos, uint64_t *len)
{
    struct ioq_ring_desc *d = &q->desc[pos];
    uint8_t sown = LOAD_ACQ(&d->sown);
    if (sown == 1)
        return IOQ_E_EMPTY;
    if (sown != 0 || LOAD_RLX(&d->valid) != 1)
        return ioq_fault(q);
    *len = LOAD64(&d->len);
    return IOQ_OK;
}

static int valid_count(const struct ioq *q)
{
    if (q->full_idx[IOQ_VALID])
        return (int)q->count;
    return (int)((q->tail_idx[IOQ_VALID] + q->count - q->head_idx[IOQ_VALID]) % q->count);
}

/* Valid descriptors that have been through inuse: only these can come back
 * from south, and they are always the oldest ones. */
static int settled_count(const struct ioq *q)
{
    return valid_count(q) - (int)q->valid_not_inuse;
}

/* North: pop k done descriptors from the valid head (FREE again). */
static void north_reclaim(struct ioq *q, uint32_t k)
{
    uint32_t pos = q->head_idx[IOQ_VALID];
    for (uint32_t i = 0; i < k; i++) {
        STORE_RLX(&q->desc[pos].valid, (uint8_t)0);
        pos = next_pos(q, pos);
    }
    q->head_idx[IOQ_VALID] = pos;
    if (k)
        q->full_idx[IOQ_VALID] = 0;
    struct ioq_ring_idx *v = &q->head->idx[IOQ_VALID];
    STORE_REL(&v->full, q->full_idx[IOQ_VALID]);
    STORE_REL(&v->head, pos);
}

int ioq_pop(struct ioq *q, int which, struct ioq_desc *out)
{
    if (q->faulted)
        return IOQ_E_FAULT;
    /* Popping both at once would make one side write the other's head. */
    if (which != IOQ_IDX_VALID && which != IOQ_IDX_INUSE)
        return IOQ_E_INVAL;
    ioq_unacquire(q, UINT32_MAX);
    if (which == IOQ_IDX_INUSE) {
        if (q->side != IOQ_SOUTH)
            return IOQ_E_SIDE;
        uint64_t p = 0, l = 0;
        int r = south_take(q, q->head_idx[IOQ_INUSE], &p, &l, out);
        if (r)
            return r;
        out->sown = 0;
        south_release(q, 1, NULL);
        return IOQ_OK;
    }
    if (q->side != IOQ_NORTH)
        return IOQ_E_SIDE;
    if (settled_count(q) == 0)
        return IOQ_E_EMPTY;
    uint32_t pos = q->head_idx[IOQ_VALID];
    uint64_t l = 0;
    int r = north_done(q, pos, &l);
    if (r)
        return r;
    ioq_desc_at(q, pos, out);
    out->len = l;
    out->valid = 0;
    north_reclaim(q, 1);
    return IOQ_OK;
}

/* ---- the batched data path -------------------------------------------- */

static int is_sender(const struct ioq *q)
{
    return (q->side == IOQ_NORTH) == (q->direction == IOQ_TO_SOUTH);
}

static int check_op(const struct ioq *q, int op)
{
    if (op != IOQ_WAIT_SEND && op != IOQ_WAIT_RECV)
        return IOQ_E_INVAL;
    if (q->faulted)
        return IOQ_E_FAULT;
    if ((op == IOQ_WAIT_SEND) != is_sender(q))
        return IOQ_E_SIDE;
    return IOQ_OK;
}

/* North, to-south: reclaim every descriptor south has finished with. */
static int north_reclaim_done(struct ioq *q)
{
    uint32_t vc = (uint32_t)settled_count(q), k = 0, pos = q->head_idx[IOQ_VALID];
    uint64_t l = 0;
    while (k < vc) {
        int r = north_done(q, pos, &l);
        if (r == IOQ_E_EMPTY)
            break;
        if (r)
            return r;
        k++;
        pos = next_pos(q, pos);
    }
    if (k)
        north_reclaim(q, k);
    return IOQ_OK;
}

int ioq_acquire(struct ioq *q, int op, uint32_t n, uint64_t *offs, uint32_t *lens)
{
    int r = check_op(q, op);
    if (r)
        return r;
    /* the set grows at its new end: buffers already acquired stay first */
    uint32_t have = q->acquired;
    if (have == 0)
        q->acq_first = 0;
    if (n > q->count - have)
        n = q->count - have;
    uint32_t k = 0;
    uint64_t p = 0, l = 0;
    if (q->side == IOQ_SOUTH) {
        /* to-south receive or to-north send: both take posted buffers */
        uint32_t pos = (q->head_idx[IOQ_INUSE] + have) % q->count;
        for (; k < n; k++) {
            r = south_take(q, pos, &p, &l, NULL);
            if (r == IOQ_E_EMPTY)
                break;
            if (r)
                return r;
            /* lengths travel as int through the API; no honest north
             * posts a buffer anywhere near 2 GiB */
            if (l > INT32_MAX)
                return ioq_fault(q);
            ACQ_OFF(q, have + k) = p;
            ACQ_LEN(q, have + k) = (uint32_t)l;
            pos = next_pos(q, pos);
        }
    } else if (op == IOQ_WAIT_SEND) {
        /* reclaiming moves the valid head only: the acquired slots, at the
         * tail, stay where they are */
        if ((r = north_reclaim_done(q)))
            return r;
        uint32_t free_slots = q->count - (uint32_t)valid_count(q) - have;
        uint32_t pos = (q->tail_idx[IOQ_VALID] + have) % q->count;
        for (; k < n && k < free_slots; k++) {
            ACQ_OFF(q, have + k) = (uint64_t)pos * q->slot;
            ACQ_LEN(q, have + k) = q->slot;
            pos = next_pos(q, pos);
        }
    } else {
        uint32_t vc = (uint32_t)settled_count(q) - have;
        uint32_t pos = (q->head_idx[IOQ_VALID] + have) % q->count;
        for (; k < n && k < vc; k++) {
            r = north_done(q, pos, &l);
            if (r == IOQ_E_EMPTY)
                break;
            if (r)
                return r;
            /* south wrote len: it must fit the buffer north posted */
            if (l > q->slot)
                return ioq_fault(q);
            ACQ_OFF(q, have + k) = (uint64_t)pos * q->slot;
            ACQ_LEN(q, have + k) = (uint32_t)l;
            pos = next_pos(q, pos);
        }
    }
    if (k == 0)
        return op == IOQ_WAIT_SEND ? IOQ_E_FULL : IOQ_E_EMPTY;
    for (uint32_t i = 0; i < k; i++) {
        if (offs)
            offs[i] = ACQ_OFF(q, have + i);
        if (lens)
            lens[i] = ACQ_LEN(q, have + i);
    }
    q->acquired = have + k;
    q->acquired_op = op;
    return (int)k;
}

int ioq_commit(struct ioq *q, int op, uint32_t k, const uint32_t *lens, int signal)
{
    int r = check_op(q, op);
    if (r)
        return r;
    if (k > q->acquired || (k && op != q->acquired_op))
        return IOQ_E_INVAL;
    if (op == IOQ_WAIT_SEND && k) {
        if (!lens)
            return IOQ_E_INVAL;
        for (uint32_t i = 0; i < k; i++)
            if (lens[i] > ACQ_LEN(q, i))
                return IOQ_E_MSGSIZE;
    }
    if (k == 0)
        return 0;
    if (q->side == IOQ_SOUTH) {
        /* the oldest acquired are the ones at the inuse head */
        south_release(q, k, op == IOQ_WAIT_SEND ? lens : NULL);
    } else {
        /* north posts k slots on both indices: a send the acquired slots
         * with the lengths written into them; a receive first reclaims what
         * was read, then posts the same slots again, empty.  In chunks of
         * 64, to keep the stack small. */
        int send = op == IOQ_WAIT_SEND;
        if (!send)
            north_reclaim(q, k);
        uint64_t c[64], p[64], l[64];
        for (uint32_t done = 0; done < k;) {
            uint32_t m = k - done > 64 ? 64 : k - done;
            for (uint32_t i = 0; i < m; i++) {
                uint32_t pos = send ? (uint32_t)(ACQ_OFF(q, done + i) / q->slot)
                                    : (q->tail_idx[IOQ_VALID] + i) % q->count;
                c[i] = pos;
                p[i] = (uint64_t)pos * q->slot;
                l[i] = send ? lens[done + i] : q->slot;
            }
            r = push_batch(q, IOQ_IDX_BOTH, m, c, p, l);
            /* acquire found these slots free; only south can have taken
             * them back since */
            if (r == IOQ_E_FULL || (r >= 0 && (uint32_t)r < m))
                return ioq_fault(q);
            if (r < 0)
                return r;
            done += (uint32_t)r;
        }
    }
    /* the rest stay acquired, in order, and valid */
    q->acquired -= k;
    q->acq_first = q->acquired ? (q->acq_first + k) % q->count : 0;
    if (signal)
        shm_signal_inject(&q->sig);
    return (int)k;
}

int ioq_unacquire(struct ioq *q, uint32_t k)
{
    if (k > q->acquired)
        k = q->acquired;
    q->acquired -= k;
    if (!q->acquired)
        q->acq_first = 0;
    return (int)q->acquired;
}

int ioq_commit_acquire(struct ioq *q, int op, uint32_t k, const uint32_t *lens, int signal,
                       uint32_t n, uint64_t *offs, uint32_t *acq_lens)
{
    int r = ioq_commit(q, op, k, lens, signal);
    if (r < 0 || n == 0)
        return r < 0 ? r : 0;
    r = ioq_acquire(q, op, n, offs, acq_lens);
    return r == IOQ_E_FULL || r == IOQ_E_EMPTY ? 0 : r;
}

/* The copying paths take a fresh set of buffers, and leave none acquired:
 * they refuse to run while a zero-copy caller holds some.  offs and lens
 * (either may be NULL) get the buffers, oldest first, as ioq_acquire
 * gives them. */
static int acquire_fresh(struct ioq *q, int op, uint32_t n, uint64_t *offs, uint32_t *lens)
{
    if (q->acquired)
        return IOQ_E_BUSY;
    return ioq_acquire(q, op, n, offs, lens);
}

static int commit_fresh(struct ioq *q, int op, uint32_t k, const uint32_t *lens, int signal)
{
    int r = ioq_commit(q, op, k, lens, signal);
    ioq_unacquire(q, UINT32_MAX);
    return r;
}

int ioq_send_batch(struct ioq *q, const char *buf, const uint32_t *lens, uint32_t n,
                   int signal)
{
    if (n == 0)
        return IOQ_E_INVAL;
    int k = acquire_fresh(q, IOQ_WAIT_SEND, n, NULL, NULL);
    if (k < 0)
        return k;
    uint32_t i = 0;
    uint64_t off = 0;
    for (; i < (uint32_t)k; i++) {
        if (lens[i] > ACQ_LEN(q, i))
            break;
        memcpy(q->data + ACQ_OFF(q, i), buf + off, lens[i]);
        off += lens[i];
    }
    if (i == 0) {
        ioq_unacquire(q, UINT32_MAX);
        return IOQ_E_MSGSIZE;
    }
    return commit_fresh(q, IOQ_WAIT_SEND, i, lens, signal);
}

/* Hand the oldest n acquired buffers back (signalling north when `signal`),
 * counting the signal in *signals. */
static int hand_back(struct ioq *q, uint32_t n, int signal, uint32_t *signals)
{
    int r = ioq_commit(q, IOQ_WAIT_RECV, n, NULL, signal);
    if (r >= 0 && signal)
        (*signals)++;
    return r;
}

/* One more acquired buffer is done with: every `every` of them go back at
 * once.  On failure nothing stays acquired. */
static int done_one(struct ioq *q, uint32_t *pending, uint32_t every, uint32_t *signals)
{
    if (++*pending < every)
        return IOQ_OK;
    int r = hand_back(q, *pending, 1, signals);
    if (r < 0)
        ioq_unacquire(q, UINT32_MAX);
    *pending = 0;
    return r;
}

/* What is still pending goes back (with `signal`); nothing stays acquired. */
static int finish(struct ioq *q, uint32_t pending, int signal, uint32_t *signals, int result)
{
    int r = pending ? hand_back(q, pending, signal, signals) : IOQ_OK;
    ioq_unacquire(q, UINT32_MAX); /* the ones that did not fit: north keeps them */
    return r < 0 ? r : result;
}

int ioq_recv_batch_every(struct ioq *q, char *buf, uint64_t buflen, uint32_t *lens, uint32_t n,
                         uint32_t every, int signal, uint32_t *signals)
{
    *signals = 0;
    if (n == 0 || every == 0)
        return IOQ_E_INVAL;
    int k = acquire_fresh(q, IOQ_WAIT_RECV, n, NULL, NULL);
    if (k < 0)
        return k;
    uint32_t i = 0, pending = 0;
    uint64_t off = 0;
    for (; i < (uint32_t)k; i++) {
        /* index 0 is the oldest still acquired: each hand-back moves it on */
        uint32_t l = ACQ_LEN(q, pending);
        if (l > buflen - off)
            break;
        memcpy(buf + off, q->data + ACQ_OFF(q, pending), l);
        lens[i] = l;
        off += l;
        int r = done_one(q, &pending, every, signals);
        if (r < 0)
            return r;
    }
    if (i == 0) {
        ioq_unacquire(q, UINT32_MAX);
        return IOQ_E_MSGSIZE;
    }
    return finish(q, pending, signal, signals, (int)i);
}

int ioq_recv_batch(struct ioq *q, char *buf, uint64_t buflen, uint32_t *lens, uint32_t n,
                   int signal)
{
    uint32_t signals;
    return ioq_recv_batch_every(q, buf, buflen, lens, n, UINT32_MAX, signal, &signals);
}

int ioq_send_one(struct ioq *q, const char *buf, uint32_t len, int signal)
{
    return ioq_send_batch(q, buf, &len, 1, signal);
}

int ioq_recv_one(struct ioq *q, char *buf, uint32_t cap, int signal)
{
    uint32_t len = 0;
    int r = ioq_recv_batch(q, buf, cap, &len, 1, signal);
    return r < 0 ? r : (int)len;
}

/* ---- between a ring and a file descriptor ----------------------------- */

int ioq_recv_to_fd_every(struct ioq *q, int fd, uint32_t max, uint32_t min_len, uint32_t max_len,
                         uint32_t every, struct ioq_fd_counts *counts, uint32_t *signals)
{
    counts->dropped = counts->bad_size = 0;
    *signals = 0;
    if (max == 0 || every == 0 || fd < 0 || min_len > max_len)
        return IOQ_E_INVAL;
    if (q->side != IOQ_SOUTH)
        return IOQ_E_SIDE;
    /* acquire reads every descriptor once and checks ptr + len against the
     * segment; from here on only its private copies are used */
    int k = acquire_fresh(q, IOQ_WAIT_RECV, max, NULL, NULL);
    if (k < 0)
        return k;
    uint32_t pending = 0;
    for (uint32_t i = 0; i < (uint32_t)k; i++) {
        uint32_t len = ACQ_LEN(q, pending);
        if (len < min_len || len > max_len) {
            counts->bad_size++;
        } else {
            ssize_t w;
            do
                w = write(fd, q->data + ACQ_OFF(q, pending), len);
            while (w < 0 && errno == EINTR);
            /* a TAP takes one frame per write and drops nothing silently: a
             * failed or short write is a dropped frame, never a retry that
             * would stall the ring behind a full host queue */
            if (w != (ssize_t)len)
                counts->dropped++;
        }
        int r = done_one(q, &pending, every, signals);
        if (r < 0)
            return r;
    }
    return finish(q, pending, 1, signals, k);
}

int ioq_recv_to_fd(struct ioq *q, int fd, uint32_t max, uint32_t min_len, uint32_t max_len,
                   struct ioq_fd_counts *counts)
{
    uint32_t signals;
    return ioq_recv_to_fd_every(q, fd, max, min_len, max_len, UINT32_MAX, counts, &signals);
}

uint32_t ioq_read_frames(int fd, uint8_t *data, const uint64_t *offs, const uint32_t *caps,
                         uint32_t n, uint32_t max_reads, uint32_t max_len, uint32_t *lens,
                         uint32_t *bad_size, int *err)
{
    uint32_t got = 0;
    *err = 0;
    for (uint32_t reads = 0; got < n && reads < max_reads; reads++) {
        uint32_t cap = caps[got] < max_len ? caps[got] : max_len;
        uint8_t spare;
        struct iovec iov[2] = {
            {.iov_base = data + offs[got], .iov_len = cap},
            {.iov_base = &spare, .iov_len = 1},
        };
        ssize_t r;
        do
            r = readv(fd, iov, 2);
        while (r < 0 && errno == EINTR);
        if (r < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                *err = -errno;
            break;
        }
        if (r == 0) {
            *err = IOQ_E_CLOSED;
            break;
        }
        if ((uint64_t)r > cap) {
            /* the frame did not fit: this buffer takes the next one */
            (*bad_size)++;
            continue;
        }
        lens[got++] = (uint32_t)r;
    }
    return got;
}

int ioq_send_from_fd(struct ioq *q, int fd, uint32_t max, uint32_t max_len,
                     struct ioq_fd_counts *counts)
{
    counts->dropped = counts->bad_size = 0;
    if (max == 0 || fd < 0)
        return IOQ_E_INVAL;
    if (q->side != IOQ_SOUTH)
        return IOQ_E_SIDE;
    /* the lengths for commit live on the stack, so one call's batch is
     * bounded, as the ring's own chunked send paths are */
    uint32_t lens[IOQ_FD_BATCH] = {0};
    if (max > IOQ_FD_BATCH)
        max = IOQ_FD_BATCH;
    /* the acquired buffers, oldest first, out of their circular list */
    uint64_t offs[IOQ_FD_BATCH];
    uint32_t caps[IOQ_FD_BATCH];
    int k = acquire_fresh(q, IOQ_WAIT_SEND, max, offs, caps);
    if (k < 0)
        return k;
    int err;
    uint32_t sent = ioq_read_frames(fd, q->data, offs, caps, (uint32_t)k, max, max_len, lens,
                                    &counts->bad_size, &err);
    int r = commit_fresh(q, IOQ_WAIT_SEND, sent, lens, 1);
    if (r < 0)
        return r;
    return sent == 0 && err ? err : (int)sent;
}

/* ---- readiness and waiting -------------------------------------------- */

int ioq_ready(struct ioq *q, int op)
{
    int r = check_op(q, op);
    if (r)
        return r;
    /* ready means one buffer more than those acquired already: a side that
     * holds buffers (sub-batch commit) and waits for more must not be woken
     * by the ones it holds */
    uint32_t have = q->acquired;
    if (have >= q->count)
        return 0;
    if (q->side == IOQ_SOUTH) {
        /* any nonzero ownership byte counts: a bad one faults on use */
        uint32_t pos = (q->head_idx[IOQ_INUSE] + have) % q->count;
        return LOAD_ACQ(&q->desc[pos].sown) != 0;
    }
    if (op == IOQ_WAIT_SEND) {
        /* the acquired slots sit at the tail; done ones at the head free more */
        if ((uint32_t)valid_count(q) + have < q->count)
            return 1;
        if (settled_count(q) == 0)
            return 0;
        return LOAD_ACQ(&q->desc[q->head_idx[IOQ_VALID]].sown) != 1;
    }
    /* the acquired messages are the oldest settled ones, at the head */
    if ((uint32_t)settled_count(q) <= have)
        return 0;
    return LOAD_ACQ(&q->desc[(q->head_idx[IOQ_VALID] + have) % q->count].sown) != 1;
}

/* The spin phase of a wait for room on a full ring waits for a quarter of
 * the ring to come back, not the first slot: polling the descriptor the
 * peer is writing right now would pull its cache line away on every poll
 * and slow the peer down.  Slots come back in ring order, so the later one
 * being back means all before it are. */
int ioq_spin_ready(struct ioq *q, int op)
{
    int r = ioq_ready(q, op);
    if (r != 0 || op != IOQ_WAIT_SEND || q->count < 8)
        return r;
    uint32_t ahead = q->count / 4;
    if (q->side == IOQ_NORTH)
        return LOAD_ACQ(&q->desc[(q->head_idx[IOQ_VALID] + ahead) % q->count].sown) == 0;
    uint32_t pos = (q->head_idx[IOQ_INUSE] + q->acquired + ahead) % q->count;
    return LOAD_ACQ(&q->desc[pos].sown) != 0;
}

void ioq_watch(struct ioq *q, int hup_fd, int hup_events)
{
    q->hup_fd = hup_fd;
    q->hup_events = hup_events;
    ioq_poller_rewatch_ring(q);
}

int ioq_wake_fd(const struct ioq *q) { return q->sig.efd[q->side]; }

int ioq_signal(struct ioq *q) { return shm_signal_inject(&q->sig); }

int ioq_peer_gone(const struct ioq *q)
{
    if (q->hup_fd < 0)
        return 0;
    struct pollfd pfd = {.fd = q->hup_fd, .events = (short)q->hup_events};
    return poll(&pfd, 1, 0) > 0;
}

int ioq_wait_arm(struct ioq *q, int op, int arm)
{
    int r;
    if (arm) {
        /* Reset the eventfd and dirty left by earlier wake-ups here, before
         * arming, rather than right after waking: that keeps the read off
         * the latency path.  Then arm and re-check: a peer that published
         * before seeing enabled is caught by the re-check, one that
         * publishes after writes the eventfd. */
        shm_signal_drain(&q->sig);
        shm_signal_enable(&q->sig);
        if ((r = ioq_ready(q, op)) != 0)
            shm_signal_disable(&q->sig);
        return r;
    }
    /* mitigation: no wake-ups while our caller drains the ring */
    shm_signal_disable(&q->sig);
    if ((r = ioq_ready(q, op)) != 0) {
        if (r > 0)
            ioq_spin_judge(&q->spin, 1); /* an adaptive spin that ran out before */
        return r;
    }
    return ioq_peer_gone(q) ? IOQ_E_CLOSED : 0;
}

int ioq_spin_budget(const struct ioq *q) { return (int)q->spin.budget_ns; }

int ioq_wait_fd(struct ioq *q, int op)
{
    int r = ioq_ready(q, op);
    if (r < 0)
        return r;
    if (q->hup_fd < 0)
        return ioq_wake_fd(q);
    struct ioq_poller *p;
    if ((r = ioq_poller_own(q, op, &p)))
        return r;
    return ioq_poller_fd(p);
}

int ioq_wait(struct ioq *q, int op, int timeout_ms, int spin_us)
{
    int r = ioq_ready(q, op);
    if (r != 0)
        return r < 0 ? r : IOQ_OK;
    /* the handle's own poller: its epoll fd and registrations are made at the
     * first wait that may sleep and kept until close */
    struct ioq_poller *p;
    if ((r = ioq_poller_own(q, op, &p)))
        return r;
    uint64_t ready;
    if ((r = ioq_poller_wait(p, 1, timeout_ms, spin_us, &ready)))
        return r;
    r = ioq_ready(q, op); /* ready, or faulted */
    return r < 0 ? r : IOQ_OK;
}

int ioq_send_one_wait(struct ioq *q, const char *buf, uint32_t len, int timeout_ms, int spin_us)
{
    int r = ioq_send_one(q, buf, len, 1);
    if (r != IOQ_E_FULL)
        return r;
    r = ioq_wait(q, IOQ_WAIT_SEND, timeout_ms, spin_us);
    return r < 0 ? r : ioq_send_one(q, buf, len, 1);
}

int ioq_recv_one_wait(struct ioq *q, char *buf, uint32_t cap, int timeout_ms, int spin_us)
{
    int r = ioq_recv_one(q, buf, cap, 1);
    if (r != IOQ_E_EMPTY)
        return r;
    r = ioq_wait(q, IOQ_WAIT_RECV, timeout_ms, spin_us);
    return r < 0 ? r : ioq_recv_one(q, buf, cap, 1);
}
