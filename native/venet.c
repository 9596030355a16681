/*
 * venet's transmit paths with completion mitigation (venet's txmitigation):
 * a batch of frames is taken from a to-south ring in one call, and their
 * completions are handed back to north every `every` frames, each hand-back
 * signalling north once, and the rest at the end.  So north hears about
 * freed slots while the batch is still being worked through (a TAP written
 * one frame at a time), without a signal per frame.
 *
 * The copying itself is ioq.c's (ioq_recv_batch_every, ioq_recv_to_fd_every:
 * descriptors taken through ioq_acquire, never trusted); here are only the
 * checks that make them venet's transmit paths.
 */
#include "ioq_private.h"

/* venet's transmit ring: a south handle of a to-south ring, its copying
 * paths free (no zero-copy caller holding buffers). */
static int transmit_ring(const struct ioq *q)
{
    if (q->side != IOQ_SOUTH || q->direction != IOQ_TO_SOUTH)
        return IOQ_E_SIDE;
    return q->acquired ? IOQ_E_BUSY : IOQ_OK;
}

int venet_recv_batch(struct ioq *q, char *buf, uint64_t buflen, uint32_t *lens, uint32_t max,
                     uint32_t every, uint32_t *signals)
{
    *signals = 0;
    if (max == 0 || every == 0)
        return IOQ_E_INVAL;
    int r = transmit_ring(q);
    return r ? r : ioq_recv_batch_every(q, buf, buflen, lens, max, every, 1, signals);
}

int venet_recv_to_fd(struct ioq *q, int fd, uint32_t max, uint32_t min_len, uint32_t max_len,
                     uint32_t every, struct ioq_fd_counts *counts, uint32_t *signals)
{
    counts->dropped = counts->bad_size = 0;
    *signals = 0;
    if (max == 0 || every == 0 || fd < 0 || min_len > max_len)
        return IOQ_E_INVAL;
    int r = transmit_ring(q);
    return r ? r : ioq_recv_to_fd_every(q, fd, max, min_len, max_len, every, counts, signals);
}
