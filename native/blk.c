/*
 * The block server: a request/response block protocol's common requests
 * (READ and WRITE of whole sectors inside the backing) served without
 * leaving C.  See blk.h for the contract.
 *
 * The request ring is north's: every header is copied once into private
 * memory before a field is looked at, and every length is checked against
 * both the message and the backing.  The response slot is north's memory
 * too: the server only writes into it (never reads it back).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ioq_private.h"
#include "blk.h"

/* Largest request header the layout may describe (copied to the stack). */
#define BLK_MAX_HEADER 256
/* Most requests one step takes (a larger batch is clamped). */
#define BLK_BATCH 256
/* Check the watched peer every this many busy steps (an idle one is seen by
 * the wait). */
#define BLK_PEER_EVERY 64

struct blk {
    int fd;
    uint64_t size;
    int readonly;
    uint8_t *map; /* NULL: pread/pwrite on fd */
    struct blk_layout l;
};

static int field_fits(uint32_t at, uint32_t width, uint32_t size)
{
    return at <= size && width <= size - at;
}

int blk_new(int fd, uint64_t size, int readonly, int map, const struct blk_layout *layout,
            struct blk **out)
{
    const struct blk_layout *l = layout;
    *out = NULL;
    if (!l || size == 0 || size > (uint64_t)1 << 62 || l->request_size > BLK_MAX_HEADER ||
        l->sector == 0 || (l->sector & (l->sector - 1)) || l->op_read == l->op_write ||
        !field_fits(l->tag_at, 8, l->request_size) ||
        !field_fits(l->offset_at, 8, l->request_size) ||
        !field_fits(l->length_at, 4, l->request_size) ||
        !field_fits(l->op_at, 2, l->request_size) ||
        !field_fits(l->flags_at, 2, l->request_size) ||
        !field_fits(l->resp_tag_at, 8, l->response_size) ||
        !field_fits(l->resp_status_at, 4, l->response_size) ||
        !field_fits(l->resp_length_at, 4, l->response_size))
        return IOQ_E_INVAL;
    struct blk *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (b->fd < 0) {
        int e = errno;
        free(b);
        return -e;
    }
    b->size = size;
    b->readonly = readonly != 0;
    b->l = *l;
    if (map) {
        /* touching a mapping past the file's end is SIGBUS: refuse a file that
         * is shorter than size now (the owner must never shorten it later) */
        struct stat st;
        int r = fstat(b->fd, &st) < 0 ? -errno : (uint64_t)st.st_size < size ? IOQ_E_INVAL : 0;
        if (r) {
            close(b->fd);
            free(b);
            return r;
        }
        int prot = PROT_READ | (b->readonly ? 0 : PROT_WRITE);
        void *m = mmap(NULL, (size_t)size, prot, MAP_SHARED, b->fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(b->fd);
            free(b);
            return -e;
        }
        b->map = m;
    }
    *out = b;
    return IOQ_OK;
}

void blk_free(struct blk *b)
{
    if (!b)
        return;
    if (b->map)
        munmap(b->map, (size_t)b->size);
    close(b->fd);
    free(b);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* len bytes at off of the backing into dst (past a file's end: zeros); 0 or -1. */
static int backing_read(struct blk *b, uint8_t *dst, uint64_t off, uint32_t len)
{
    if (b->map) {
        memcpy(dst, b->map + off, len);
        return 0;
    }
    uint32_t done = 0;
    while (done < len) {
        ssize_t n = pread(b->fd, dst + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            memset(dst + done, 0, len - done);
            return 0;
        }
        done += (uint32_t)n;
    }
    return 0;
}

static int backing_write(struct blk *b, const uint8_t *src, uint64_t off, uint32_t len)
{
    if (b->map) {
        memcpy(b->map + off, src, len);
        return 0;
    }
    uint32_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(b->fd, src + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (uint32_t)n;
    }
    return 0;
}

/* One request (at roff, rlen bytes, in req's segment) answered into the
 * response buffer (at poff, pcap bytes, in resp's segment): the response's
 * length, or -1 when the fast path does not take it (nothing written). */
static int serve_one(struct blk *b, const struct ioq *req, const struct ioq *resp, uint64_t roff,
                     uint32_t rlen, uint64_t poff, uint32_t pcap, struct blk_counts *c)
{
    const struct blk_layout *l = &b->l;
    uint8_t h[BLK_MAX_HEADER];
    if (rlen < l->request_size || pcap < l->response_size)
        return -1;
    memcpy(h, req->data + roff, l->request_size); /* read once: north may change it */
    uint64_t tag = get64(h + l->tag_at), off = get64(h + l->offset_at);
    uint32_t len = get32(h + l->length_at);
    uint16_t op = get16(h + l->op_at);
    uint64_t mask = l->sector - 1;
    if (get16(h + l->flags_at) || len == 0 || (off & mask) || (len & mask) || len > b->size ||
        off > b->size - len)
        return -1;
    uint8_t *out = resp->data + poff;
    uint32_t data = 0;
    if (op == l->op_read) {
        if (rlen != l->request_size || (uint64_t)pcap < (uint64_t)l->response_size + len)
            return -1;
        if (backing_read(b, out + l->response_size, off, len))
            return -1;
        data = len;
        c->reads++;
        c->read_bytes += len;
    } else if (op == l->op_write) {
        if (b->readonly || (uint64_t)rlen != (uint64_t)l->request_size + len)
            return -1;
        if (backing_write(b, req->data + roff + l->request_size, off, len))
            return -1;
        c->writes++;
        c->written_bytes += len;
    } else {
        return -1;
    }
    uint32_t status = 0;
    memcpy(out + l->resp_tag_at, &tag, 8);
    memcpy(out + l->resp_status_at, &status, 4);
    memcpy(out + l->resp_length_at, &data, 4);
    return (int)(l->response_size + data);
}

/* Hand the oldest k of both rings' acquired buffers back, one signal each. */
static int hand_back(struct ioq *req, struct ioq *resp, uint32_t k, const uint32_t *lens,
                     struct blk_counts *c)
{
    int r = ioq_commit(resp, IOQ_WAIT_SEND, k, lens, 1);
    if (r < 0)
        return r;
    r = ioq_commit(req, IOQ_WAIT_RECV, k, NULL, 1);
    if (r < 0)
        return r;
    c->signals++;
    return 0;
}

static void drop_acquired(struct ioq *req, struct ioq *resp)
{
    ioq_unacquire(req, UINT32_MAX);
    ioq_unacquire(resp, UINT32_MAX);
}

int blk_serve(struct blk *b, struct ioq *req, struct ioq *resp, uint32_t batch, uint32_t every,
              int timeout_ms, int spin_us, struct blk_counts *counts)
{
    if (!b || !req || !resp || req == resp || batch == 0 || !counts)
        return IOQ_E_INVAL;
    if (req->side != IOQ_SOUTH || req->direction != IOQ_TO_SOUTH || resp->side != IOQ_SOUTH ||
        resp->direction != IOQ_TO_NORTH)
        return IOQ_E_SIDE;
    if (req->faulted || resp->faulted)
        return IOQ_E_FAULT;
    if (req->acquired || resp->acquired)
        return IOQ_E_BUSY;
    if (batch > BLK_BATCH)
        batch = BLK_BATCH;
    if (every == 0 || every > batch)
        every = batch;
    uint64_t roffs[BLK_BATCH], poffs[BLK_BATCH];
    uint32_t rlens[BLK_BATCH], pcaps[BLK_BATCH], outlens[BLK_BATCH];
    uint32_t steps = 0;
    for (;;) {
        int n = ioq_acquire(req, IOQ_WAIT_RECV, batch, roffs, rlens);
        if (n == IOQ_E_EMPTY) {
            counts->slept++;
            int r = ioq_wait(req, IOQ_WAIT_RECV, timeout_ms, spin_us);
            if (r < 0)
                return r;
            continue;
        }
        if (n < 0)
            return n;
        int m = ioq_acquire(resp, IOQ_WAIT_SEND, (uint32_t)n, poffs, pcaps);
        if (m == IOQ_E_FULL) {
            drop_acquired(req, resp);
            counts->slept++;
            int r = ioq_wait(resp, IOQ_WAIT_SEND, timeout_ms, spin_us);
            if (r < 0)
                return r;
            continue;
        }
        if (m < 0) {
            drop_acquired(req, resp);
            return m;
        }
        uint32_t k = 0, done = 0;
        int slow = 0;
        for (; k < (uint32_t)m; k++) {
            int len = serve_one(b, req, resp, roffs[k], rlens[k], poffs[k], pcaps[k], counts);
            if (len < 0) {
                slow = 1;
                break;
            }
            outlens[k] = (uint32_t)len;
            if (k + 1 - done == every) {
                int r = hand_back(req, resp, every, outlens + done, counts);
                if (r < 0) {
                    drop_acquired(req, resp);
                    return r;
                }
                done = k + 1;
            }
        }
        if (k > done) {
            int r = hand_back(req, resp, k - done, outlens + done, counts);
            if (r < 0) {
                drop_acquired(req, resp);
                return r;
            }
        }
        drop_acquired(req, resp);
        if (k)
            counts->batches++;
        if (slow)
            return 0;
        if (++steps % BLK_PEER_EVERY == 0 && ioq_peer_gone(req))
            return IOQ_E_CLOSED;
    }
}
