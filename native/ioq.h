/*
 * vbusfs IOQ: the shared-memory ring of the vbus data path (version 4
 * layout) and its shm-signal notification protocol.
 *
 * This header is cdef-safe: the cffi build script feeds it, unchanged, to
 * ffi.cdef(), so it holds nothing but integer #defines, enums, structs and
 * prototypes (no include guards, no #include, no macros with bodies).  The
 * C files include it through ioq_abi.h, which adds <stdint.h> and a guard.
 * It must never grow a declaration whose meaning depends on the machine:
 * every shared field is a fixed-width integer at an offset pinned by
 * _Static_assert in ioq_private.h and shm_signal.h and by
 * tests/ioq/test_ioq_abi.py.  Every prototype here is one Python may call,
 * and is declared again, typed, in vbusfs/_ioq_cffi.pyi; what only C (or
 * the C tests) may use lives in ioq_private.h or shm_signal.h.
 *
 * Sides.  "north" is the client (a member process): it allocates the ring
 * and the data segment and is the only side that fills descriptors.
 * "south" is the device side (the vbusfs daemon): it maps what north
 * allocated, validates it once, and afterwards never trusts it: every value
 * it reads from shared memory is read once into private memory and checked.
 *
 * Descriptor life (an honest north):
 *   FREE    valid=0 sown=0   north may fill it
 *   POSTED  valid=1 sown=1   pushed on both indices; south owns it
 *   DONE    valid=1 sown=0   popped from inuse by south; north reclaims it
 *   north pops valid at DONE -> FREE
 *
 * All multi-byte shared fields are little-endian.  The build refuses a
 * big-endian target rather than byte-swapping on every access.
 */

/* Bumped whenever this header's layout or any prototype changes; compiled
 * into the module and compared by vbusfs/ioq/_binding.py at import.
 * 6: the shm-signal steps left the cdef (ioq_wait_arm, ioq_wake_fd and
 *    ioq_signal replace them), and so did ioq_data, ioq_ring, ioq_ring_bytes.
 * 7: the fd that wakes north is a Unix datagram socket, not an eventfd
 *    (south sends on it with MSG_DONTWAIT: never blocks); attach refuses a
 *    semaphore eventfd and a data segment over IOQ_SOUTH_MAX_DATA.
 * 8: the poller (ioq_poller_*: several rings, one epoll fd, registrations kept
 *    across waits), ioq_wait_fd; ioq_wait sleeps on a per-handle epoll.
 * 9: sub-batch commit: ioq_commit hands over the oldest k acquired buffers and
 *    keeps the rest, ioq_acquire adds to the set, ioq_unacquire gives buffers
 *    back; the copying paths refuse (IOQ_E_BUSY) while buffers are acquired.
 * 10: adaptive polling: spin_us = IOQ_SPIN_ADAPTIVE, ioq_spin_budget and
 *    ioq_poller_spin_budget.
 * 11: ioq_commit_acquire (a commit and the next acquire in one call).
 * 12: vswitch_set_port (a port's message format: bare or virtio-net header)
 *    and vswitch_counts.gso_dropped; vswitch_forward's `every` and
 *    vswitch_counts.signals; venet_recv_batch and venet_recv_to_fd.
 * 13: fdpump_run and struct fdpump_counts (enet.h, the vbus-enet driver's
 *    data path).
 * 14: the switch's runner (vswitch_runner_*: its data path on a thread of its
 *    own) and struct vswitch_run_counts.
 * 15: venet-tap's runner (vtap.h: vtap_runner_*, struct vtap_config and
 *    struct vtap_counts; its data path on a thread of its own).
 * 16: the block server (blk.h: blk_new, blk_serve, blk_free).
 * 17: vswitch_runner_port takes the port's fault fd (written by the runner's
 *    thread when the port faults: its owner waits on it, never polls).
 * 18: vswitch_counts.gso_segmented and vswitch_run_counts.gso_segmented
 *    (large TCP segments cut into frames for bare ports). */
#define IOQ_ABI_VERSION 18

#define IOQ_RING_MAGIC 0x47fa2fe4
#define IOQ_RING_VER 4
#define SHM_SIGNAL_MAGIC 0x58fa39df
#define SHM_SIGNAL_VER 1

#define IOQ_HEAD_SIZE 56
#define IOQ_DESC_SIZE 32
/* Largest ring we create or accept: keeps 56 + 32*count far below any
 * size_t overflow on 32-bit builds. */
#define IOQ_MAX_COUNT 65536
/* Largest data segment north creates (lengths must fit an int). */
#define IOQ_MAX_DATA 1073741824
/* Largest data segment south attaches (64 MiB): what a client can make the
 * daemon map per queue. */
#define IOQ_SOUTH_MAX_DATA 67108864

/* Sides, also the index into shm_signal_desc.irq[]. */
#define IOQ_NORTH 0
#define IOQ_SOUTH 1

/* Index selectors (a bit mask; BOTH is push-only, see ioq_pop). */
#define IOQ_IDX_VALID 1
#define IOQ_IDX_INUSE 2
#define IOQ_IDX_BOTH 3

/* Data direction of a queue, which decides who sends and who receives. */
#define IOQ_TO_SOUTH 0
#define IOQ_TO_NORTH 1

/* ioq_seek whence */
#define IOQ_SEEK_HEAD 0
#define IOQ_SEEK_TAIL 1
#define IOQ_SEEK_NEXT 2
#define IOQ_SEEK_PREV 3
#define IOQ_SEEK_SET 4

/* ioq_wait: what the caller waits for */
#define IOQ_WAIT_RECV 0
#define IOQ_WAIT_SEND 1

/* Most messages one ioq_send_from_fd call moves (a larger max is clamped). */
#define IOQ_FD_BATCH 64

/* Return codes: >= 0 is success (often a count).  Negative values below
 * -1000 are IOQ conditions; any other negative value is -errno from the
 * kernel.  vbusfs/ioq/_binding.py turns each into one exception class. */
enum ioq_status {
    IOQ_OK = 0,
    IOQ_E_FULL = -1001,     /* nothing can be pushed or sent now */
    IOQ_E_EMPTY = -1002,    /* nothing can be popped or received now */
    IOQ_E_FAULT = -1003,    /* the peer broke the protocol; handle is dead */
    IOQ_E_CLOSED = -1004,   /* the watched peer hung up */
    IOQ_E_TIMEDOUT = -1005, /* ioq_wait ran out of time */
    IOQ_E_INVAL = -1006,    /* bad argument from our own caller */
    IOQ_E_BADRING = -1007,  /* attach: magic/version/count/length wrong */
    IOQ_E_MSGSIZE = -1008,  /* a message does not fit the buffer offered */
    IOQ_E_SIDE = -1009,     /* operation not allowed on this side/direction */
    IOQ_E_BUSY = -1010      /* zero-copy buffers are acquired: commit or
                               unacquire them before a copying operation */
};

/*
 * Shared memory layout (version 4).  "writer" names the only side that
 * stores to the field once the ring is live; the other side only reads it.
 */

struct shm_signal_irq {
    uint8_t enabled; /* writer: the owner of this irq (it wants wake-ups) */
    uint8_t pending; /* set by the peer when it writes the eventfd,
                        cleared by the owner when it re-arms */
    uint8_t dirty;   /* set by the peer on every inject, cleared by the
                        owner when it drains */
};

struct shm_signal_desc {
    uint32_t magic;                /* writer: north, at creation only */
    uint32_t ver;                  /* writer: north, at creation only */
    struct shm_signal_irq irq[2];  /* [IOQ_NORTH], [IOQ_SOUTH] */
    uint8_t _pad[2];
};

struct ioq_ring_idx {
    uint32_t head; /* writer: the index's consumer (valid: north,
                      inuse: south) */
    uint32_t tail; /* writer: north (the producer of both indices) */
    uint8_t full;  /* valid: north only.  inuse: set by north when a push
                      makes tail == head, cleared by south before it moves
                      head; the descriptor ownership bits, not this flag,
                      decide every push and pop */
    uint8_t _pad[3];
};

struct ioq_ring_head {
    uint32_t magic;                /* writer: north, at creation only */
    uint32_t ver;                  /* writer: north, at creation only */
    struct shm_signal_desc signal;
    struct ioq_ring_idx idx[2];    /* [0] valid, [1] inuse */
    uint32_t count;                /* writer: north, at creation only */
    uint8_t _pad[4];
    /* count descriptors follow at offset 56 */
};

struct ioq_ring_desc {
    uint64_t cookie; /* writer: north; private to north, south ignores it */
    uint64_t ptr;    /* writer: north; offset into the data segment */
    uint64_t len;    /* writer: north when posting (length or capacity);
                        south when it fills a to-north buffer, before it
                        hands the descriptor back */
    uint8_t valid;   /* writer: north */
    uint8_t sown;    /* 1 = south owns.  north sets 1 (push on inuse),
                        south sets 0 (pop on inuse) */
    uint8_t _pad[6];
};

/* A private copy of one descriptor, as returned by pops and peeks. */
struct ioq_desc {
    uint64_t cookie;
    uint64_t ptr;
    uint64_t len;
    uint8_t valid;
    uint8_t sown;
};

/* One side's private handle.  Opaque: its fields are never shared. */
struct ioq;

int ioq_abi_version(void);

/* North: create ring + data memfds, the eventfd that wakes south and the
 * datagram socket pair that wakes north.  data_len must be a
 * multiple of count (slot i of the data segment belongs to descriptor i in
 * the batched send/receive calls). */
int ioq_north_create(uint32_t count, uint64_t data_len, int direction,
                     struct ioq **out);
/* South: map and validate fds received from north.  The fds are dup'ed;
 * the caller keeps ownership of the ones it passed. */
int ioq_south_attach(int ring_fd, int data_fd, int efd_to_south,
                     int sock_to_north, int direction, struct ioq **out);
void ioq_close(struct ioq *q);

/* fds[0..3] = ring, data, eventfd waking south, socket waking north (on
 * north: the end south sends on; on south: its copy of it); still owned by
 * the handle. */
void ioq_fds(const struct ioq *q, int *fds);
int ioq_side(const struct ioq *q);
uint32_t ioq_count_slots(const struct ioq *q);
uint64_t ioq_data_len(const struct ioq *q);
int ioq_faulted(const struct ioq *q);

/* Ring operations (one descriptor).  which: IOQ_IDX_*. */
int ioq_push(struct ioq *q, int which, uint64_t cookie, uint64_t ptr,
             uint64_t len);
int ioq_pop(struct ioq *q, int which, struct ioq_desc *out);
int ioq_count(struct ioq *q, int which);
int ioq_remain(struct ioq *q, int which);
int ioq_full(struct ioq *q, int which);
int ioq_empty(struct ioq *q, int which);
int ioq_seek(struct ioq *q, int which, int whence, int32_t offset);
int ioq_desc_at(struct ioq *q, uint32_t pos, struct ioq_desc *out);

/* Batched data path: one call moves up to n messages.
 * send: buf holds the messages back to back, lens[i] their lengths.
 * recv: messages are copied back to back into buf (at most buflen bytes),
 *       lens[i] receives each length.
 * Both return the number of messages moved (> 0) or a negative code, and
 * inject the peer's shm-signal when they moved something and signal != 0. */
int ioq_send_batch(struct ioq *q, const char *buf, const uint32_t *lens,
                   uint32_t n, int signal);
int ioq_recv_batch(struct ioq *q, char *buf, uint64_t buflen,
                   uint32_t *lens, uint32_t n, int signal);
/* One message: send returns 1; recv returns its length, or IOQ_E_MSGSIZE
 * (leaving it queued) when it is longer than cap. */
int ioq_send_one(struct ioq *q, const char *buf, uint32_t len, int signal);
int ioq_recv_one(struct ioq *q, char *buf, uint32_t cap, int signal);

/* Zero-copy.  The handle keeps an ordered set of acquired buffers (at most
 * count).  acquire adds up to n more validated buffers at the set's end and
 * writes only the new ones' offsets into the data segment (offs) and, for a
 * send, capacities or, for a receive, lengths (lens); it returns how many.
 * commit hands the oldest k of the set to the peer (a send: with the lengths
 * written into them, lens[0..k-1]; nothing changes on IOQ_E_MSGSIZE) and
 * keeps the rest acquired, in order, and valid.  unacquire gives back the
 * newest k (all if k is larger) without handing them over: the next acquire
 * finds them again; it returns how many stay acquired.  A fault or a raw
 * push/pop empties the set. */
int ioq_acquire(struct ioq *q, int op, uint32_t n, uint64_t *offs,
                uint32_t *lens);
int ioq_commit(struct ioq *q, int op, uint32_t k, const uint32_t *lens,
               int signal);
int ioq_unacquire(struct ioq *q, uint32_t k);
/* ioq_commit, then (when it succeeded and n > 0) ioq_acquire of up to n more:
 * one call per message for a side that streams.  Returns how many it
 * acquired (0 when none was there: the commit stands), or a negative code:
 * the commit's (nothing changed), or IOQ_E_FAULT (the handle is dead). */
int ioq_commit_acquire(struct ioq *q, int op, uint32_t k, const uint32_t *lens,
                       int signal, uint32_t n, uint64_t *offs, uint32_t *acq_lens);

/* South only: messages between the ring and a file descriptor (a TAP, a
 * SOCK_SEQPACKET socket), one write() or read() per message straight from
 * or into the validated data segment, nothing copied through the caller.
 * What did not go through is counted in *counts (zeroed first). */
struct ioq_fd_counts {
    uint32_t dropped;  /* recv_to_fd: write() failed (EAGAIN, ENOBUFS, any
                          error) or wrote less than the whole message */
    uint32_t bad_size; /* recv_to_fd: message outside min_len..max_len,
                          consumed and not written.  send_from_fd: frame
                          longer than max_len or than the posted buffer,
                          read (so removed from fd) and discarded */
};
/* To-south ring: pop up to max messages and write each to fd.  Every popped
 * message is consumed, written or not.  Returns the number consumed (> 0),
 * IOQ_E_EMPTY if there was none, IOQ_E_FAULT on a bad ring; signals north
 * once that its buffers are free. */
int ioq_recv_to_fd(struct ioq *q, int fd, uint32_t max, uint32_t min_len,
                   uint32_t max_len, struct ioq_fd_counts *counts);
/* To-north ring: for up to max frames, read() one from the non-blocking fd
 * into the next buffer north posted, then publish them all and signal north
 * once.  Each read offers min(buffer capacity, max_len) bytes in the buffer
 * plus one spare byte in private memory (readv): a read that reaches the
 * spare byte was a longer frame, truncated by the kernel, and is discarded
 * (bad_size) without touching memory past the buffer.  Stops at EAGAIN,
 * after max reads, or when no posted buffer is left: frames still in fd
 * stay there for the next call.  Returns the number sent (0 when fd had
 * none or only discarded ones); IOQ_E_FULL, reading nothing, when no buffer
 * is posted; IOQ_E_CLOSED when read() returns 0 (end of file) and nothing
 * was sent; -errno when read() fails otherwise and nothing was sent (a
 * failure after some frames returns their count; the next call sees it);
 * IOQ_E_FAULT on a bad ring. */
int ioq_send_from_fd(struct ioq *q, int fd, uint32_t max, uint32_t max_len,
                     struct ioq_fd_counts *counts);

/* Readiness without blocking: 1 ready, 0 not yet, or a negative code.
 * Ready means there is a buffer beyond those acquired already: an acquire
 * would find one more (and, with none acquired, a send or receive can go). */
int ioq_ready(struct ioq *q, int op);

/* Watch a peer: waits also poll hup_fd for hup_events (a pidfd: POLLIN; a
 * socket: POLLRDHUP) and end with IOQ_E_CLOSED once it fires and nothing is
 * ready.  hup_fd < 0 stops watching.  The caller keeps the fd open. */
void ioq_watch(struct ioq *q, int hup_fd, int hup_events);

/* Block (GIL released by cffi) until op is ready: spin for spin_us
 * microseconds, then arm the shm-signal and sleep on the eventfd.
 * timeout_ms < 0 waits forever; 0 spins (if asked) and never sleeps.
 * Returns 0 when ready.
 *
 * spin_us = IOQ_SPIN_ADAPTIVE spins for a budget the handle learns (a poller
 * keeps its own), between 0 and IOQ_SPIN_MAX_US, starting at 0:
 * - a spin that finds work in the second half of its budget doubles it (at
 *   least to IOQ_SPIN_GROW_US): the peer answers close to the limit;
 * - a spin that runs out (a budget of 0 always does) is judged by the sleep
 *   that follows: work within IOQ_SPIN_MAX_US of the wait's start doubles the
 *   budget (a longer spin would have caught it); a later wake-up, or a wait
 *   that times out, halves it (to 0 below IOQ_SPIN_SHRINK_US);
 * - work found at once, or in the first half of a spin, changes nothing.
 * A caller sleeping in its own loop (timeout_ms 0, then ioq_wait_arm or
 * ioq_poller_disarm) is judged when its disarm finds work. */
#define IOQ_SPIN_ADAPTIVE -1
#define IOQ_SPIN_MAX_US 200
#define IOQ_SPIN_GROW_US 10
#define IOQ_SPIN_SHRINK_US 2
int ioq_wait(struct ioq *q, int op, int timeout_ms, int spin_us);
/* The adaptive spin budget the handle has learned, in nanoseconds. */
int ioq_spin_budget(const struct ioq *q);

/* One message, waiting for it (or for room) as ioq_wait would: one crossing
 * for a blocking send or receive.  Same returns as ioq_send_one/ioq_recv_one,
 * plus ioq_wait's. */
int ioq_send_one_wait(struct ioq *q, const char *buf, uint32_t len,
                      int timeout_ms, int spin_us);
int ioq_recv_one_wait(struct ioq *q, char *buf, uint32_t cap, int timeout_ms,
                      int spin_us);

/* The sleeping half of a wait, for callers that sleep in their own event
 * loop (the trio face); ioq_wait is built on it too, so the shm-signal
 * protocol (drain, arm, re-check; disarm) exists once.
 * arm != 0: reset our eventfd and dirty flag, enable wake-ups, re-check op:
 *   1 when op is ready already (wake-ups off again: do not sleep); 0 when
 *   armed: sleep until ioq_wake_fd is readable (or the watched peer's fd
 *   fires), then disarm.
 * arm == 0: disable wake-ups (the caller drains the ring without them) and
 *   check op: 1 ready; IOQ_E_CLOSED when not ready and the watched peer has
 *   hung up; 0 otherwise (arm again before sleeping again).
 * Negative: a code (IOQ_E_FAULT, IOQ_E_SIDE, IOQ_E_INVAL). */
int ioq_wait_arm(struct ioq *q, int op, int arm);
/* The eventfd that wakes this side (owned by the handle). */
int ioq_wake_fd(const struct ioq *q);
/* Inject the peer's shm-signal by hand; 1 if its eventfd was written. */
int ioq_signal(struct ioq *q);

/* The fd a caller sleeping in its own event loop (the trio face) waits on
 * between ioq_wait_arm's arm and disarm: the wake-up fd itself when no peer
 * is watched, else the handle's own epoll fd holding the wake-up fd and the
 * watched peer's (made at the first call, kept until close, registrations
 * kept across waits).  -errno if it cannot be made. */
int ioq_wait_fd(struct ioq *q, int op);

/*
 * The poller (poller.c): one blocking call waits on several rings.  Each
 * member is one (ring, op) pair with a bit of its own; its wake-up fd and its
 * watched peer's fd (ioq_watch, shared by every member that watches the same
 * fd) are registered on the poller's one epoll fd when it is added, and stay
 * registered across waits (a later ioq_watch moves the registration).  A wait
 * arms every ring in the mask (drain, enable, re-check), sleeps once for all
 * of them (GIL released by cffi), then disarms them and reports which are
 * ready.  A ring that faulted, or was closed while a member, is reported
 * ready: its next operation raises.  A ring closed while a member leaves its
 * bit taken (and reported ready) until ioq_poller_remove frees it.
 */
#define IOQ_POLLER_MAX 64
/* Pollers one ring may belong to at once (its own ioq_wait poller included). */
#define IOQ_RING_POLLERS 8

struct ioq_poller;

int ioq_poller_new(struct ioq_poller **out);
/* Frees the poller and its epoll fd; the member rings stay open. */
void ioq_poller_free(struct ioq_poller *p);
/* The epoll fd: readable when a wait could end (for callers sleeping in their
 * own event loop between ioq_poller_arm and ioq_poller_disarm). */
int ioq_poller_fd(const struct ioq_poller *p);
/* Add (q, op): returns its bit number (0..IOQ_POLLER_MAX-1); the same pair
 * again returns the same bit.  IOQ_E_SIDE/IOQ_E_FAULT/IOQ_E_INVAL as
 * ioq_ready would; -ENOSPC when the poller or the ring has no room left. */
int ioq_poller_add(struct ioq_poller *p, struct ioq *q, int op);
/* Free bit; the ring, if still open, is no longer watched. */
int ioq_poller_remove(struct ioq_poller *p, int bit);
/* Block until a member in mask is ready: *ready gets every ready bit of mask
 * and 0 is returned.  IOQ_E_CLOSED once a watched peer of a member in mask
 * hung up and none of them is ready; IOQ_E_TIMEDOUT; -EINTR (the caller
 * retries); IOQ_E_INVAL for a mask with no member.  timeout_ms < 0 waits
 * forever, 0 never sleeps; spin_us as ioq_wait's. */
int ioq_poller_wait(struct ioq_poller *p, uint64_t mask, int timeout_ms,
                    int spin_us, uint64_t *ready);
/* The halves of a wait for callers that sleep in their own event loop on
 * ioq_poller_fd.  arm: 1 (and *ready) when a member is ready already (left
 * disarmed: do not sleep); IOQ_E_CLOSED as above; 0 when armed.  disarm:
 * after the sleep (or a cancel): 1 and *ready, IOQ_E_CLOSED, or 0 (nothing
 * yet: arm again). */
int ioq_poller_arm(struct ioq_poller *p, uint64_t mask, uint64_t *ready);
int ioq_poller_disarm(struct ioq_poller *p, uint64_t mask, uint64_t *ready);
/* The poller's adaptive spin budget (spin_us = IOQ_SPIN_ADAPTIVE), in ns. */
int ioq_poller_spin_budget(const struct ioq_poller *p);

/*
 * The venet-switch data path (vswitch.c): frames from one port's to-south
 * ring are copied, in C and a batch per call, straight from that ring's data
 * segment into buffers the other ports' clients posted on their to-north
 * rings, by a learned MAC table.  Ports are small indices chosen by the
 * caller (0 .. VSWITCH_MAX_PORTS - 1).
 */
#define VSWITCH_MAX_PORTS 256
/* Learning table: open addressing over VSWITCH_TABLE slots.  Once it holds
 * VSWITCH_LEARN_MAX addresses it learns no new ones (counted in unlearned);
 * frames to addresses it does not know are flooded, so a full table costs
 * bandwidth, never connectivity.  Known addresses still move between ports. */
#define VSWITCH_TABLE 4096
#define VSWITCH_LEARN_MAX 3072
/* Frames outside VSWITCH_MIN_FRAME..VSWITCH_MAX_FRAME bytes are dropped
 * (the default of every port; vswitch_set_port changes a port's). */
#define VSWITCH_MIN_FRAME 14
#define VSWITCH_MAX_FRAME 1514
/* A port in header mode (venet SG granted): each message starts with a
 * 10-byte virtio-net header; the whole message is at most VSWITCH_MAX_SG. */
#define VSWITCH_VNET_HDR 10
#define VSWITCH_MAX_SG 65560
/* Most frames one vswitch_forward call takes (a larger max is clamped). */
#define VSWITCH_BATCH 64

struct vswitch;

/* What one vswitch_forward call did (zeroed first). */
struct vswitch_counts {
    uint32_t frames;    /* consumed from the source ring (the return value) */
    uint32_t bad_size;  /* consumed, dropped: outside MIN_FRAME..MAX_FRAME */
    uint32_t flooded;   /* broadcast, multicast or unknown destination */
    uint32_t filtered;  /* destination learned on the sender's own port */
    uint32_t unlearned; /* a new source address the full table refused */
    uint32_t delivered; /* copies published, over all destinations */
    uint32_t dropped;   /* copies not made, over all destinations */
    uint32_t faulted;   /* destination rings that faulted (see per_port) */
    uint32_t gso_dropped; /* copies not made: a large segment (gso_type set)
                             to a port without a header that could not be cut
                             (UDP, other headers; also in dropped) */
    uint32_t signals;     /* times the source's north was told of freed slots */
    uint32_t gso_segmented; /* copies of large TCP segments cut into frames
                               for a port without a header (each frame is one
                               copy in delivered or dropped) */
};

/* Per destination port, when the caller asks for it (zeroed first). */
struct vswitch_port_counts {
    uint32_t delivered; /* copies published on this port's ring */
    uint32_t dropped;   /* no posted buffer left, a buffer too small for the
                           frame, or the ring faulted */
    uint32_t faulted;   /* 1: this port's ring broke the protocol (its own
                           client's fault, never the sender's): drop it */
};

int vswitch_new(struct vswitch **out);
void vswitch_free(struct vswitch *sw);
/* Forget every address learned on port; returns how many were forgotten. */
int vswitch_forget_port(struct vswitch *sw, uint32_t port);
/* The port mac (6 bytes) was learned on, or -1. */
int vswitch_lookup(const struct vswitch *sw, const uint8_t *mac);
/* How many addresses the table holds. */
int vswitch_learned(const struct vswitch *sw);
/* Port's message format: hdr_len 0 (bare Ethernet frames) or
 * VSWITCH_VNET_HDR (a virtio-net header first), and the longest message it
 * sends or takes, header included (14 + hdr_len .. VSWITCH_MAX_SG).  Between
 * ports of different formats a frame is converted: a bare frame gets a zero
 * header; a headed frame loses its header, its checksum completed first when
 * the header says NEEDS_CSUM.  A large TCP segment (gso_type TCPV4 or TCPV6,
 * ECN or not; Ethernet, IPv4 or IPv6 without extension headers, TCP) is cut
 * into frames of gso_size payload bytes, each with its own headers and
 * checksums (gso_segmented), delivered while the port has buffers and the
 * rest dropped; any other large segment, or one whose frames would exceed
 * the port's max_len (or, for IPv4, 65535 bytes of IP packet) or number
 * over 2048, is dropped (gso_dropped).  IOQ_E_INVAL for a bad port
 * or format. */
int vswitch_set_port(struct vswitch *sw, uint32_t port, uint32_t hdr_len,
                     uint32_t max_len);
/* South: take up to max frames from src_tx (port src_port's to-south ring)
 * and copy each to the to-north rings in ports_rx[0..nports-1] (NULL: a
 * port with no client): learned unicast to its port only, the rest to every
 * port but the sender's; never back to the sender.  A destination with no
 * posted buffer left drops that copy.  Publishes and signals each
 * destination once (and once more for each further 64 frames when cut
 * segments fill more than 64 of its buffers); hands the source's slots back to north every `every`
 * frames (0: once, at the end), one signal each (counts->signals), and the
 * rest at the end.  Returns the frames consumed,
 * IOQ_E_EMPTY if there was none, IOQ_E_FAULT if the source ring is bad
 * (nothing consumed or copied), IOQ_E_INVAL / IOQ_E_SIDE for bad arguments
 * (nothing read).  A bad destination ring is never an error of the call: it
 * is marked faulted (ioq_faulted), skipped, and reported in counts->faulted
 * and per_port[i].faulted.  per_port may be NULL, else has nports entries. */
int vswitch_forward(struct vswitch *sw, uint32_t src_port, struct ioq *src_tx,
                    struct ioq **ports_rx, uint32_t nports, uint32_t max, uint32_t every,
                    struct vswitch_counts *counts,
                    struct vswitch_port_counts *per_port);

/*
 * The switch's runner (vswitch_run.c): a thread of its own that sleeps on
 * every port's transmit ring and forwards each batch (vswitch_forward), so
 * frames never wait for the caller's event loop.  The caller hands it the
 * south handles of each port's rings and may touch the switch (its table,
 * set_port, forget_port) or those rings only between vswitch_runner_lock and
 * vswitch_runner_unlock; it waits at most one batch for the lock.  Every
 * other vswitch_runner_* call needs the lock held.
 */
struct vswitch_runner;
/* Totals for one port since its rings were given (zeroed when taken away). */
struct vswitch_run_counts {
    uint64_t tx_frames;    /* taken from its transmit ring */
    uint64_t bad_size;     /* of those, dropped: outside its format's sizes */
    uint64_t gso_dropped;  /* copies of its large segments not made for bare ports */
    uint64_t gso_segmented; /* copies of its large TCP segments cut for bare ports */
    uint64_t signals;      /* completion signals to its client */
    uint64_t rx_delivered; /* frames published on its receive ring */
    uint64_t rx_dropped;   /* frames for it not delivered (no buffer, too long) */
    uint64_t polled;       /* idle spells met by polling (burstthresh) */
    uint64_t slept;        /* idle spells that slept */
    uint32_t faulted;      /* 1: its transmit ring broke, 2: its receive ring;
                              the runner no longer uses the ring */
};
/* Start the thread; spin_us: how long it polls before sleeping. */
int vswitch_runner_new(struct vswitch *sw, uint32_t spin_us, struct vswitch_runner **out);
/* Stop and join the thread, free the runner (the switch stays the caller's). */
void vswitch_runner_free(struct vswitch_runner *r);
void vswitch_runner_lock(struct vswitch_runner *r);
void vswitch_runner_unlock(struct vswitch_runner *r);
/* Port's rings (tx: forwarded from; rx: delivered to; NULL: none), its
 * completion interval and its fault fd (an eventfd of the caller's, -1:
 * none), written each time the port's faulted count gains a bit, and at
 * once when the port is faulted already; both rings NULL takes the port
 * away and zeroes its counts.  The runner forgets the rings and the fd it
 * had for the port: the caller may close them then. */
int vswitch_runner_port(struct vswitch_runner *r, uint32_t port, struct ioq *tx, struct ioq *rx,
                        uint32_t every, int fault_fd);
/* The polling budget and every port's completion interval. */
int vswitch_runner_tune(struct vswitch_runner *r, uint32_t spin_us, uint32_t every);
int vswitch_runner_counts(struct vswitch_runner *r, uint32_t port, struct vswitch_run_counts *out);

/*
 * venet's transmit paths with completion mitigation (venet.c): like
 * ioq_recv_batch and ioq_recv_to_fd (south, to-south ring, up to max
 * messages), but the completions go back to north every `every` messages,
 * each time with one signal, and the rest at the end: *signals says how many.
 */
int venet_recv_batch(struct ioq *q, char *buf, uint64_t buflen, uint32_t *lens, uint32_t max,
                     uint32_t every, uint32_t *signals);
int venet_recv_to_fd(struct ioq *q, int fd, uint32_t max, uint32_t min_len, uint32_t max_len,
                     uint32_t every, struct ioq_fd_counts *counts, uint32_t *signals);
