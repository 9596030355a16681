/*
 * Private to native/: what the ring (ioq.c) and the switch (vswitch.c)
 * share but Python must never see: the handle's fields and the ring's layout
 * assertions.  The shm-signal is a separate object with its own header; the
 * ring embeds one and drives it, and shm_signal.c never sees a ring.  Not
 * cdef-safe, and never passed to cffi's cdef.
 */
#ifndef VBUSFS_IOQ_PRIVATE_H
#define VBUSFS_IOQ_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include "ioq_abi.h"
#include "shm_atomic.h"
#include "shm_signal.h"

/* The layout, pinned: identical on 32- and 64-bit builds (the signal
 * descriptor's own fields are pinned in shm_signal.h). */
_Static_assert(sizeof(struct ioq_ring_idx) == 12, "ring idx size");
_Static_assert(offsetof(struct ioq_ring_idx, head) == 0, "idx head");
_Static_assert(offsetof(struct ioq_ring_idx, tail) == 4, "idx tail");
_Static_assert(offsetof(struct ioq_ring_idx, full) == 8, "idx full");
_Static_assert(sizeof(struct ioq_ring_head) == IOQ_HEAD_SIZE, "head size");
_Static_assert(offsetof(struct ioq_ring_head, magic) == 0, "head magic");
_Static_assert(offsetof(struct ioq_ring_head, ver) == 4, "head ver");
_Static_assert(offsetof(struct ioq_ring_head, signal) == 8, "head signal");
_Static_assert(offsetof(struct ioq_ring_head, idx) == 24, "head idx");
_Static_assert(offsetof(struct ioq_ring_head, count) == 48, "head count");
_Static_assert(sizeof(struct ioq_ring_desc) == IOQ_DESC_SIZE, "desc size");
_Static_assert(offsetof(struct ioq_ring_desc, cookie) == 0, "desc cookie");
_Static_assert(offsetof(struct ioq_ring_desc, ptr) == 8, "desc ptr");
_Static_assert(offsetof(struct ioq_ring_desc, len) == 16, "desc len");
_Static_assert(offsetof(struct ioq_ring_desc, valid) == 24, "desc valid");
_Static_assert(offsetof(struct ioq_ring_desc, sown) == 25, "desc sown");

#define IOQ_VALID 0
#define IOQ_INUSE 1

/* An adaptive spin budget (IOQ_SPIN_ADAPTIVE; the rule is in ioq.h). */
struct ioq_spin {
    int64_t budget_ns;
    int64_t missed_at; /* a spin ran out at this time and nothing was judged
                          yet (0: none) */
};
/* Judge a spin that ran out, now that its wait found work (ready) or gave up. */
void ioq_spin_judge(struct ioq_spin *s, int ready);

struct ioq {
    int side;      /* IOQ_NORTH or IOQ_SOUTH */
    int direction; /* IOQ_TO_SOUTH or IOQ_TO_NORTH */
    uint32_t count;
    uint32_t slot; /* data bytes per descriptor (north's layout) */
    struct ioq_ring_head *head;
    struct ioq_ring_desc *desc;
    uint64_t ring_len;
    uint8_t *data;
    uint64_t data_len;
    /* the mappings include a PROT_NONE guard page on each side, so a bug
     * that strays past a segment faults at once instead of corrupting */
    void *ring_map;
    size_t ring_map_len;
    void *data_map;
    size_t data_map_len;
    int ring_fd, data_fd;
    /* the shm-signal on head->signal; its two eventfds are owned here */
    struct shm_signal sig;
    /* north only: the sending end of the socket that wakes north, handed
     * to south (ioq_fds) and otherwise unused here; -1 on south */
    int north_pass_fd;
    int hup_fd, hup_events; /* the watched peer (ioq_watch), not owned */
    /* private shadows of the shared fields this side writes: the only
     * writer never needs to read its own fields back from shared memory */
    uint32_t head_idx[2];
    uint32_t tail_idx[2];
    uint8_t full_idx[2];
    uint32_t cursor[2];
    /* north: valid descriptors not yet pushed on inuse (the newest ones) */
    uint32_t valid_not_inuse;
    /* zero-copy acquire: validated offsets and capacities, in ring order
     * starting at the current head (recv) or tail (send) */
    uint32_t acquired;
    int acquired_op;
    /* a circular list (the oldest at acq_first) of count entries: commit
     * takes from its front, acquire adds at its end */
    uint32_t acq_first;
    uint64_t *acq_off;
    uint32_t *acq_len;
    int faulted;
    /* the pollers this ring is a member of (bit in each); own is the one
     * ioq_wait and ioq_wait_fd sleep on, made at the first sleep */
    struct ioq_poller *polled_by[IOQ_RING_POLLERS];
    int polled_bit[IOQ_RING_POLLERS];
    struct ioq_poller *own;
    struct ioq_spin spin; /* the adaptive budget of this handle's waits */
};

/* The i-th oldest acquired buffer's offset and capacity (or length). */
#define ACQ_AT(q, i) ((q)->acq_first + (i) < (q)->count ? (q)->acq_first + (i) \
                                                        : (q)->acq_first + (i) - (q)->count)
#define ACQ_OFF(q, i) ((q)->acq_off[ACQ_AT(q, i)])
#define ACQ_LEN(q, i) ((q)->acq_len[ACQ_AT(q, i)])

int ioq_fault(struct ioq *q);
/* ioq_ready, but a send on a full ring waits for a quarter of it (spinning) */
int ioq_spin_ready(struct ioq *q, int op);
/* Has the watched peer hung up?  Never blocks. */
int ioq_peer_gone(const struct ioq *q);

/* ioq_recv_batch and ioq_recv_to_fd, handing the completions back every
 * `every` messages (each time with one signal) and the rest at the end;
 * *signals counts the signals.  For venet.c's mitigated transmit paths. */
int ioq_recv_batch_every(struct ioq *q, char *buf, uint64_t buflen, uint32_t *lens, uint32_t n,
                         uint32_t every, int signal, uint32_t *signals);
int ioq_recv_to_fd_every(struct ioq *q, int fd, uint32_t max, uint32_t min_len, uint32_t max_len,
                         uint32_t every, struct ioq_fd_counts *counts, uint32_t *signals);

/* fd -> buffers, the read half of ioq_send_from_fd and of enet.c's driver
 * loop: one frame per read() from the non-blocking fd into each of the n
 * buffers data + offs[i] (caps[i] bytes, and at most max_len taken) in
 * order, lens[i] its length, at most max_reads reads.  A frame longer than
 * its buffer is read (so gone from fd) through a spare byte that shows it
 * was cut, counted in *bad_size, and the buffer takes the next one.  Stops
 * at EAGAIN, at end of file, after max_reads reads or when every buffer is
 * filled.  Returns the frames read; *err: 0, IOQ_E_CLOSED (read() returned
 * 0) or -errno of a read that failed otherwise. */
uint32_t ioq_read_frames(int fd, uint8_t *data, const uint64_t *offs, const uint32_t *caps,
                         uint32_t n, uint32_t max_reads, uint32_t max_len, uint32_t *lens,
                         uint32_t *bad_size, int *err);

/* poller.c, for ioq.c */
/* The ring's own poller (one member, level-triggered), made on first use. */
int ioq_poller_own(struct ioq *q, int op, struct ioq_poller **out);
/* ioq_close: free the own poller; in every other, the ring's bit goes dead. */
void ioq_poller_forget_ring(struct ioq *q);
/* ioq_watch: move every membership's registration to the new peer fd. */
void ioq_poller_rewatch_ring(struct ioq *q);
/* Bytes of a ring segment with count descriptors (56 + 32 * count). */
uint64_t ioq_ring_bytes(uint32_t count);

#endif
