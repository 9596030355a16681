/*
 * The block server (blk.c): the device side of a request/response block
 * protocol served in C.  A request asks to READ or WRITE `length` bytes at
 * `offset` of a backing (a mapping of a memfd, or a file read and written
 * with pread/pwrite); the server copies between the backing and the rings'
 * data segments and writes the response header, a batch per step, one
 * signal per sub-batch.  Anything it does not take (another op, flags, an
 * unaligned or out-of-range request, a response slot too small, a write to
 * a read-only backing, an I/O error) stays first on the request ring for the
 * caller's own code, which answers it and calls again.
 *
 * cdef-safe like ioq.h (the cffi build script appends it to ioq.h's cdef).
 */

/* The wire layout: where each little-endian field sits in the headers.
 * Request: tag (u64), offset (u64), length (u32), op (u16), flags (u16,
 * must be 0); a WRITE's data follows the request header.  Response: tag
 * (u64, the request's), status (u32, 0), length (u32: bytes of data after
 * the header, a READ's).  sector: offsets and lengths are multiples of it
 * (a power of two). */
struct blk_layout {
    uint32_t request_size;
    uint32_t response_size;
    uint32_t sector;
    uint16_t op_read;
    uint16_t op_write;
    uint32_t tag_at;
    uint32_t offset_at;
    uint32_t length_at;
    uint32_t op_at;
    uint32_t flags_at;
    uint32_t resp_tag_at;
    uint32_t resp_status_at;
    uint32_t resp_length_at;
};

/* Totals, added to by every call (the caller zeroes them once). */
struct blk_counts {
    uint64_t reads;
    uint64_t writes;
    uint64_t read_bytes;
    uint64_t written_bytes;
    uint64_t batches;   /* steps that served at least one request */
    uint64_t signals;   /* sub-batches handed back (each one signal per ring) */
    uint64_t slept;     /* waits that found nothing ready at first */
};

struct blk;

/* A server over `size` bytes of fd: mapped (MAP_SHARED) when map != 0, else
 * read and written with pread/pwrite.  The fd is dup'ed (the caller keeps
 * its own).  IOQ_E_INVAL for a bad layout or size; -errno from the kernel. */
int blk_new(int fd, uint64_t size, int readonly, int map, const struct blk_layout *layout,
            struct blk **out);
void blk_free(struct blk *b);

/* South: serve req (a to-south ring) into resp (a to-north ring) until a
 * request the server does not take is first on req (returns 0: it is left
 * there, nothing is acquired) or a wait ends otherwise: IOQ_E_CLOSED (the
 * watched peer hung up), IOQ_E_TIMEDOUT (nothing for timeout_ms; < 0
 * forever), IOQ_E_FAULT (a ring broke).  Each step takes up to `batch`
 * requests and as many posted response buffers, and hands both back every
 * `every` requests.  Idle, it waits as ioq_wait does (spin_us, adaptive
 * included).  IOQ_E_BUSY if either ring has buffers acquired. */
int blk_serve(struct blk *b, struct ioq *req, struct ioq *resp, uint32_t batch, uint32_t every,
              int timeout_ms, int spin_us, struct blk_counts *counts);
