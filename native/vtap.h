/*
 * venet-tap's and venet-loopback's data path on a thread of its own
 * (vtap_run.c): frames between a host TAP's descriptor and the south side of
 * a venet interface's two rings (or, looped, from its transmit ring back into
 * its receive ring), so they never wait for the daemon's event loop.
 *
 * cdef-safe like ioq.h (the cffi build script appends it to ioq.h's cdef):
 * integer #defines, structs and prototypes only; C files include it after
 * ioq_abi.h.
 */

/* Most frames one step moves each way. */
#define VTAP_BATCH 64
/* After a read from the TAP failed (other than EAGAIN), the thread leaves
 * the TAP alone this long (ms): a TAP being torn down never spins it. */
#define VTAP_HOST_PAUSE_MS 50

struct vtap_runner;

/* Totals since the runner was made. */
struct vtap_counts {
    uint64_t tx_frames;  /* taken from the transmit ring */
    uint64_t tx_signals; /* completion signals to the client (txmitigation) */
    uint64_t rx_frames;  /* read from the TAP and published on the receive ring */
    uint64_t oversize;   /* frames either way outside the link's sizes: dropped */
    uint64_t dropped;    /* transmitted frames that did not reach the TAP (none,
                            or the write failed) */
    uint64_t polled;     /* idle spells met by polling (burstthresh) */
    uint64_t slept;      /* idle spells that slept */
    uint32_t faulted;    /* 1: the transmit ring broke, 2: the receive ring;
                            the thread no longer touches a broken ring */
};

/* What the thread does, set under the lock (vtap_runner_set).  tap_fd: the
 * TAP's non-blocking descriptor, -1 while there is none (transmitted frames
 * are then dropped in place); link_up 0: the transmit ring is left alone and
 * what the TAP sends is read and dropped; min_len..max_len: a transmitted
 * frame's sizes (a longer TAP frame than max_len is dropped too); every:
 * transmitted frames per completion signal (>= 1); spin_us: how long an idle
 * thread polls before it sleeps; loop 1: every transmitted frame goes back on
 * the receive ring instead (tap_fd is then ignored; the frames wait in the
 * transmit ring while the client has no receive buffer posted). */
struct vtap_config {
    int32_t tap_fd;
    uint32_t loop;
    uint32_t link_up;
    uint32_t min_len;
    uint32_t max_len;
    uint32_t every;
    uint32_t spin_us;
};

/* South: tx a to-south ring (client -> TAP), rx a to-north ring (TAP ->
 * client).  Starts the thread (idle until a config with link_up or a TAP). */
int vtap_runner_new(struct ioq *tx, struct ioq *rx, struct vtap_runner **out);
/* Stop and join the thread, free the runner; the rings and the TAP stay the
 * caller's, untouched from then on. */
void vtap_runner_free(struct vtap_runner *r);
/* The caller touches the rings or the TAP's descriptor only between lock and
 * unlock (it waits at most one batch); set and counts need the lock held. */
void vtap_runner_lock(struct vtap_runner *r);
void vtap_runner_unlock(struct vtap_runner *r);
int vtap_runner_set(struct vtap_runner *r, const struct vtap_config *config);
int vtap_runner_counts(struct vtap_runner *r, struct vtap_counts *out);
/* An eventfd (owned by the runner) that turns readable when a ring broke. */
int vtap_runner_fault_fd(const struct vtap_runner *r);
