/*
 * The vbus-enet driver's data path (enet.c): frames between a host network
 * interface's descriptor (a TAP in the driver's network namespace) and the
 * north side of a venet interface's two rings, a batch per step, in one
 * call that returns only when it is told to stop.
 *
 * cdef-safe like ioq.h (the cffi build script appends it to ioq.h's cdef):
 * integer #defines, structs and prototypes only; C files include it after
 * ioq_abi.h.
 */

/* Most frames one step moves each way. */
#define FDPUMP_BATCH 64
/* What fdpump_run returns besides a negative code. */
#define FDPUMP_STOPPED 0
#define FDPUMP_EVENT 1

/* Totals, added to by every fdpump_run call (the caller zeroes them once). */
struct fdpump_counts {
    uint64_t to_device;  /* frames read from the fd and sent on the tx ring */
    uint64_t to_host;    /* frames received on the rx ring and written to the fd */
    uint64_t host_dropped; /* write() to the fd failed or was short */
    uint64_t bad_size;   /* frames read from the fd that did not fit a tx slot
                            (or max_len): discarded */
    uint64_t flushed;    /* empty receive buffers (FLUSHRX) reposted */
    uint64_t polled;     /* idle spells ended by polling, without sleeping */
    uint64_t slept;      /* idle spells that slept */
};

/* North: rx is a to-north ring (frames device -> host), tx a to-south ring
 * (host -> device).  Moves frames between them and the non-blocking fd
 * (one read() or write() per frame, straight from or into the data
 * segments) until stop_fd turns readable (returns FDPUMP_STOPPED) or
 * event_fd does (FDPUMP_EVENT; -1: none); the caller drains either, then
 * calls again.  Idle, it polls for spin_us microseconds, then arms both
 * rings' shm-signals and sleeps in poll(2) on the fds, the rings' wake-up
 * fds, and hup_fd (POLLRDHUP: the device is gone, IOQ_E_CLOSED; -1: none).
 * Frames read from fd are at most max_len bytes (and a tx slot);
 * a longer one is read and discarded (bad_size).  Returns IOQ_E_FAULT when
 * a ring broke, IOQ_E_SIDE / IOQ_E_INVAL / IOQ_E_BUSY for wrong rings or
 * arguments (nothing moved), -errno when read() from fd fails otherwise
 * than EAGAIN. */
int fdpump_run(struct ioq *rx, struct ioq *tx, int fd, int stop_fd, int event_fd, int hup_fd,
               uint32_t max_len, int spin_us, struct fdpump_counts *counts);
