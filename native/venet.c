/*
 * venet's transmit paths with completion mitigation (venet's txmitigation):
 * a batch of frames is taken from a to-south ring in one call, and their
 * completions are handed back to north every `every` frames, each hand-back
 * signalling north once, and the rest at the end.  So north hears about
 * freed slots while the batch is still being worked through (a TAP written
 * one frame at a time), without a signal per frame.
 *
 * Like vswitch.c it must never trust shared memory: every descriptor is
 * taken through ioq_acquire, which reads it once and checks it against the
 * segment; only those private copies are used.
 */
#include "ioq_private.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* Hand the oldest n acquired buffers back, signalling north once. */
static int hand_back(struct ioq *q, uint32_t n, uint32_t *signals)
{
    int r = ioq_commit(q, IOQ_WAIT_RECV, n, NULL, 1);
    if (r >= 0)
        (*signals)++;
    return r;
}

int venet_recv_batch(struct ioq *q, char *buf, uint64_t buflen, uint32_t *lens, uint32_t max,
                     uint32_t every, uint32_t *signals)
{
    *signals = 0;
    if (max == 0 || every == 0)
        return IOQ_E_INVAL;
    if (q->side != IOQ_SOUTH || q->direction != IOQ_TO_SOUTH)
        return IOQ_E_SIDE;
    if (q->acquired)
        return IOQ_E_BUSY;
    int k = ioq_acquire(q, IOQ_WAIT_RECV, max, NULL, NULL);
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
        if (++pending == every) {
            int r = hand_back(q, pending, signals);
            if (r < 0) {
                ioq_unacquire(q, UINT32_MAX);
                return r;
            }
            pending = 0;
        }
    }
    if (i == 0) {
        ioq_unacquire(q, UINT32_MAX);
        return IOQ_E_MSGSIZE;
    }
    int r = pending ? hand_back(q, pending, signals) : IOQ_OK;
    ioq_unacquire(q, UINT32_MAX); /* the ones that did not fit: north keeps them */
    return r < 0 ? r : (int)i;
}

int venet_recv_to_fd(struct ioq *q, int fd, uint32_t max, uint32_t min_len, uint32_t max_len,
                     uint32_t every, struct ioq_fd_counts *counts, uint32_t *signals)
{
    counts->dropped = counts->bad_size = 0;
    *signals = 0;
    if (max == 0 || every == 0 || fd < 0 || min_len > max_len)
        return IOQ_E_INVAL;
    if (q->side != IOQ_SOUTH || q->direction != IOQ_TO_SOUTH)
        return IOQ_E_SIDE;
    if (q->acquired)
        return IOQ_E_BUSY;
    int k = ioq_acquire(q, IOQ_WAIT_RECV, max, NULL, NULL);
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
            /* one frame per write; a failed or short one is dropped, never
             * retried (that would stall the ring behind a full host queue) */
            if (w != (ssize_t)len)
                counts->dropped++;
        }
        if (++pending == every) {
            int r = hand_back(q, pending, signals);
            if (r < 0) {
                ioq_unacquire(q, UINT32_MAX);
                return r;
            }
            pending = 0;
        }
    }
    int r = pending ? hand_back(q, pending, signals) : IOQ_OK;
    ioq_unacquire(q, UINT32_MAX);
    return r < 0 ? r : k;
}
