/*
 * The venet-switch data path: a MAC learning table and the forwarding of a
 * batch of frames from one port's to-south ring into the other ports'
 * posted to-north buffers, one copy per frame and destination, straight
 * between the two data segments.
 *
 * It must never trust shared memory: the source ring's descriptors and the
 * destination rings' posted buffers are all taken through ioq_acquire, which
 * reads each descriptor once and checks it against its segment; only those
 * private copies are used here.  A bad source ring fails the call before
 * anything is copied; a bad destination ring is that destination's fault
 * alone: it is marked faulted, skipped, and reported, never blamed on the
 * sender.  Frame bytes themselves may change under us (north owns them);
 * the two addresses and a frame's virtio-net header are copied out once
 * before they are used.
 *
 * Each port has a message format (vswitch_set_port): bare frames, or a
 * virtio-net header first (venet SG).  A frame crossing between formats is
 * converted in the copy: a zero header added, or the header taken off with
 * the checksum it asks for (NEEDS_CSUM) completed in the destination buffer.
 * A large TCP segment (gso_type TCPV4 or TCPV6) going to a bare port is cut
 * into frames of gso_size payload bytes (gso.c), one destination buffer
 * each; the frames that find a buffer are delivered and the rest dropped,
 * as a full queue would drop them, so TCP resends only what it lost.  Any
 * other large segment (UDP, headers the cut does not handle) is dropped for
 * a bare port and counted (gso_dropped).
 */
#include "gso.h"
#include "ioq_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((VSWITCH_TABLE & (VSWITCH_TABLE - 1)) == 0, "table is a power of two");
_Static_assert(VSWITCH_LEARN_MAX < VSWITCH_TABLE, "a free slot always ends a probe");

/* key: the 48-bit address with bit 63 set; 0 is an empty slot */
struct vswitch_entry {
    uint64_t key;
    uint32_t port;
};

/* One destination within one forward call. */
enum { DST_UNTRIED, DST_READY, DST_NONE, DST_FAULTED };
struct vswitch_dst {
    int state;
    int dry;        /* READY, and a later acquire found no more buffers */
    uint32_t avail; /* buffers acquired (and not yet handed over) */
    uint32_t used;  /* of those, filled */
    uint32_t lens[VSWITCH_BATCH]; /* when full, the filled ones are handed over */
};

/* the virtio-net header's fields (little-endian on the wire) */
struct vnet_hdr {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
};
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0

struct vswitch {
    uint32_t learned;
    uint32_t hdr[VSWITCH_MAX_PORTS];     /* 0 or VSWITCH_VNET_HDR */
    uint32_t max_len[VSWITCH_MAX_PORTS]; /* longest message, header included */
    struct vswitch_entry table[VSWITCH_TABLE];
    struct vswitch_entry scratch[VSWITCH_TABLE]; /* forget_port's rebuild */
    struct vswitch_dst dst[VSWITCH_MAX_PORTS];
};

int vswitch_new(struct vswitch **out)
{
    struct vswitch *sw = calloc(1, sizeof(*sw));
    if (!sw)
        return -ENOMEM;
    for (uint32_t p = 0; p < VSWITCH_MAX_PORTS; p++)
        sw->max_len[p] = VSWITCH_MAX_FRAME;
    *out = sw;
    return IOQ_OK;
}

void vswitch_free(struct vswitch *sw) { free(sw); }

static uint64_t mac_key(const uint8_t *mac)
{
    uint64_t k = 0;
    for (int i = 0; i < 6; i++)
        k = (k << 8) | mac[i];
    return k | (1ull << 63);
}

static uint32_t slot_of(uint64_t key)
{
    /* Fibonacci hashing: the top bits of the product mix all address bytes */
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 52) & (VSWITCH_TABLE - 1);
}

static struct vswitch_entry *find(struct vswitch_entry *table, uint64_t key)
{
    uint32_t i = slot_of(key);
    /* the table is never full (LEARN_MAX < TABLE), so this ends */
    while (table[i].key && table[i].key != key)
        i = (i + 1) & (VSWITCH_TABLE - 1);
    return &table[i];
}

/* 1 if learned or moved, 0 if already there, -1 if the table is full. */
static int learn(struct vswitch *sw, const uint8_t *mac, uint32_t port)
{
    if (mac[0] & 1)
        return 0; /* a group address is never a source */
    struct vswitch_entry *e = find(sw->table, mac_key(mac));
    if (e->key) {
        if (e->port == port)
            return 0;
        e->port = port;
        return 1;
    }
    if (sw->learned >= VSWITCH_LEARN_MAX)
        return -1;
    e->key = mac_key(mac);
    e->port = port;
    sw->learned++;
    return 1;
}

int vswitch_lookup(const struct vswitch *sw, const uint8_t *mac)
{
    uint64_t key = mac_key(mac);
    uint32_t i = slot_of(key);
    while (sw->table[i].key) {
        if (sw->table[i].key == key)
            return (int)sw->table[i].port;
        i = (i + 1) & (VSWITCH_TABLE - 1);
    }
    return -1;
}

int vswitch_learned(const struct vswitch *sw) { return (int)sw->learned; }

int vswitch_set_port(struct vswitch *sw, uint32_t port, uint32_t hdr_len, uint32_t max_len)
{
    if (!sw || port >= VSWITCH_MAX_PORTS || (hdr_len != 0 && hdr_len != VSWITCH_VNET_HDR) ||
        max_len < VSWITCH_MIN_FRAME + hdr_len || max_len > VSWITCH_MAX_SG)
        return IOQ_E_INVAL;
    sw->hdr[port] = hdr_len;
    sw->max_len[port] = max_len;
    return IOQ_OK;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void read_hdr(struct vnet_hdr *h, const uint8_t *p)
{
    h->flags = p[0];
    h->gso_type = p[1];
    h->hdr_len = le16(p + 2);
    h->gso_size = le16(p + 4);
    h->csum_start = le16(p + 6);
    h->csum_offset = le16(p + 8);
}

static void write_hdr(uint8_t *p, const struct vnet_hdr *h)
{
    const uint16_t f[4] = {h->hdr_len, h->gso_size, h->csum_start, h->csum_offset};
    p[0] = h->flags;
    p[1] = h->gso_type;
    for (int i = 0; i < 4; i++) {
        p[2 + 2 * i] = (uint8_t)f[i];
        p[3 + 2 * i] = (uint8_t)(f[i] >> 8);
    }
}

/* Complete a partial checksum in frame (len bytes, already in the private
 * destination buffer): the Internet checksum of [start, len), whose checksum
 * field holds the pseudo-header sum, stored at start + offset.  0 if the
 * positions do not fit the frame (the copy is then dropped). */
static int complete_csum(uint8_t *frame, uint32_t len, uint32_t start, uint32_t offset)
{
    if (start >= len || offset > len - start || len - start - offset < 2)
        return 0;
    uint16_t csum = inet_csum(frame + start, len - start, 0);
    frame[start + offset] = (uint8_t)(csum >> 8);
    frame[start + offset + 1] = (uint8_t)csum;
    return 1;
}

int vswitch_forget_port(struct vswitch *sw, uint32_t port)
{
    /* linear probing cannot simply clear a slot (it would cut the probe
     * chains through it): rebuild from the entries that stay */
    memcpy(sw->scratch, sw->table, sizeof(sw->table));
    memset(sw->table, 0, sizeof(sw->table));
    uint32_t before = sw->learned;
    sw->learned = 0;
    for (uint32_t i = 0; i < VSWITCH_TABLE; i++) {
        const struct vswitch_entry *e = &sw->scratch[i];
        if (e->key && e->port != port) {
            *find(sw->table, e->key) = *e;
            sw->learned++;
        }
    }
    return (int)(before - sw->learned);
}

static void drop_copy(struct vswitch_counts *counts, struct vswitch_port_counts *per_port,
                      uint32_t p)
{
    counts->dropped++;
    if (per_port)
        per_port[p].dropped++;
}

/* Destination p's ring broke the protocol: the buffers filled for it are
 * lost, and the port is reported faulted. */
static void fault_dst(struct vswitch *sw, struct ioq **ports_rx, uint32_t p,
                      struct vswitch_counts *counts, struct vswitch_port_counts *per_port)
{
    struct vswitch_dst *d = &sw->dst[p];
    counts->faulted++;
    counts->delivered -= d->used;
    counts->dropped += d->used;
    if (per_port) {
        per_port[p].faulted = 1;
        per_port[p].delivered -= d->used;
        per_port[p].dropped += d->used;
    }
    ioq_unacquire(ports_rx[p], UINT32_MAX);
    d->used = d->avail = 0;
    d->state = DST_FAULTED;
}

/* The next empty buffer of destination p, as its index in the ring's
 * acquired set, or -1 when there is none.  The first call asks the ring for
 * `want` buffers; later ones ask again (once per call) when those are used
 * up.  When lens is full the filled buffers are handed over first. */
static int next_buf(struct vswitch *sw, struct ioq **ports_rx, uint32_t p, uint32_t want,
                    struct vswitch_counts *counts, struct vswitch_port_counts *per_port)
{
    struct vswitch_dst *d = &sw->dst[p];
    struct ioq *q = ports_rx[p];
    if (d->state == DST_READY && d->used == VSWITCH_BATCH) {
        if (ioq_commit(q, IOQ_WAIT_SEND, d->used, d->lens, 1) < 0) {
            fault_dst(sw, ports_rx, p, counts, per_port);
            return -1;
        }
        d->avail -= d->used;
        d->used = 0;
    }
    if (d->state == DST_UNTRIED || (d->state == DST_READY && d->used == d->avail && !d->dry)) {
        int r = ioq_acquire(q, IOQ_WAIT_SEND, want, NULL, NULL);
        if (r > 0) {
            d->state = DST_READY;
            d->avail += (uint32_t)r;
        } else if (r == IOQ_E_FULL) {
            /* a READY destination goes dry: it keeps the buffers it has */
            if (d->state == DST_UNTRIED)
                d->state = DST_NONE;
            else
                d->dry = 1;
        } else {
            fault_dst(sw, ports_rx, p, counts, per_port);
        }
    }
    if (d->state != DST_READY || d->used == d->avail)
        return -1;
    return (int)d->used;
}

static void deliver(struct vswitch *sw, uint32_t p, uint32_t len,
                    struct vswitch_counts *counts, struct vswitch_port_counts *per_port)
{
    struct vswitch_dst *d = &sw->dst[p];
    d->lens[d->used++] = len;
    counts->delivered++;
    if (per_port)
        per_port[p].delivered++;
}

/* A large TCP segment (body, blen bytes; h its header) to bare port p: cut
 * into frames, each in a buffer of its own, delivered in order while
 * buffers last; the frames left without one are dropped, counted one copy
 * each.  A segment the cut does not handle is one dropped copy
 * (gso_dropped). */
static void segment_to(struct vswitch *sw, struct ioq **ports_rx, uint32_t p,
                       const uint8_t *body, uint32_t blen, const struct vnet_hdr *h,
                       uint32_t remaining, struct vswitch_counts *counts,
                       struct vswitch_port_counts *per_port)
{
    struct ioq *q = ports_rx[p];
    struct gso_plan plan;
    if (gso_plan(&plan, body, blen, h->gso_type, h->gso_size, sw->max_len[p]) < 0) {
        counts->gso_dropped++;
        drop_copy(counts, per_port, p);
        return;
    }
    counts->gso_segmented++;
    uint32_t longest = plan.hdr_len + (plan.payload < plan.mss ? plan.payload : plan.mss);
    for (uint32_t i = 0; i < plan.nseg; i++) {
        /* one buffer for each frame of this cut and of each frame to come */
        int b = next_buf(sw, ports_rx, p, plan.nseg - i + remaining - 1, counts, per_port);
        /* a buffer too small for the longest frame ends the train too: it
         * would stop every frame after it alike */
        if (b < 0 || longest > ACQ_LEN(q, (uint32_t)b)) {
            counts->dropped += plan.nseg - i;
            if (per_port)
                per_port[p].dropped += plan.nseg - i;
            return;
        }
        uint8_t *out = q->data + ACQ_OFF(q, (uint32_t)b);
        deliver(sw, p, gso_segment(&plan, body, i, out), counts, per_port);
    }
}

/* Copy one frame (body: the Ethernet frame, blen bytes; h: its header when
 * the source port has one, else NULL) into the next posted buffer of
 * destination p, in p's format. */
static void copy_to(struct vswitch *sw, struct ioq **ports_rx, uint32_t p,
                    const uint8_t *body, uint32_t blen, const struct vnet_hdr *h,
                    uint32_t remaining, struct vswitch_counts *counts,
                    struct vswitch_port_counts *per_port)
{
    struct ioq *q = ports_rx[p];
    uint32_t dh = sw->hdr[p];
    if (h && !dh && h->gso_type != VNET_GSO_NONE) {
        segment_to(sw, ports_rx, p, body, blen, h, remaining, counts, per_port);
        return;
    }
    uint32_t len = dh + blen;
    if (len > sw->max_len[p]) {
        drop_copy(counts, per_port, p);
        return;
    }
    /* at most one buffer per frame still to come, this one included;
     * acquire checked each buffer's offset and capacity against q's segment */
    int b = next_buf(sw, ports_rx, p, remaining, counts, per_port);
    if (b < 0 || len > ACQ_LEN(q, (uint32_t)b)) {
        drop_copy(counts, per_port, p);
        return;
    }
    uint8_t *out = q->data + ACQ_OFF(q, (uint32_t)b);
    if (dh) {
        struct vnet_hdr zero = {0};
        write_hdr(out, h ? h : &zero);
    }
    memcpy(out + dh, body, blen);
    if (h && !dh && (h->flags & VNET_F_NEEDS_CSUM) &&
        !complete_csum(out, blen, h->csum_start, h->csum_offset)) {
        drop_copy(counts, per_port, p); /* the buffer stays unpublished */
        return;
    }
    deliver(sw, p, len, counts, per_port);
}

int vswitch_forward(struct vswitch *sw, uint32_t src_port, struct ioq *src_tx,
                    struct ioq **ports_rx, uint32_t nports, uint32_t max, uint32_t every,
                    struct vswitch_counts *counts, struct vswitch_port_counts *per_port)
{
    if (!counts)
        return IOQ_E_INVAL;
    memset(counts, 0, sizeof(*counts));
    if (!sw || !src_tx || !ports_rx || nports > VSWITCH_MAX_PORTS || src_port >= nports ||
        max == 0)
        return IOQ_E_INVAL;
    if (per_port)
        memset(per_port, 0, sizeof(*per_port) * nports);
    if (src_tx->side != IOQ_SOUTH || src_tx->direction != IOQ_TO_SOUTH)
        return IOQ_E_SIDE;
    for (uint32_t p = 0; p < nports; p++) {
        struct ioq *q = ports_rx[p];
        if (!q)
            continue;
        if (q->side != IOQ_SOUTH || q->direction != IOQ_TO_NORTH)
            return IOQ_E_SIDE;
        /* one ring twice would have its acquired buffers handed out twice */
        for (uint32_t o = 0; o < p; o++)
            if (ports_rx[o] == q)
                return IOQ_E_INVAL;
        /* a zero-copy caller's buffers are not ours to hand out */
        if (q->acquired)
            return IOQ_E_BUSY;
    }
    if (src_tx->acquired)
        return IOQ_E_BUSY;
    if (max > VSWITCH_BATCH)
        max = VSWITCH_BATCH;
    /* reads every source descriptor once and checks it: from here on only
     * the private offsets and lengths are used */
    int k = ioq_acquire(src_tx, IOQ_WAIT_RECV, max, NULL, NULL);
    if (k < 0)
        return k;
    for (uint32_t p = 0; p < nports; p++) {
        sw->dst[p].state = DST_UNTRIED;
        sw->dst[p].dry = 0;
        sw->dst[p].avail = sw->dst[p].used = 0;
    }
    uint32_t released = 0; /* source buffers handed back to north so far */
    int src_err = 0;
    for (uint32_t i = 0; i < (uint32_t)k; i++) {
        if (every && i - released == every) {
            /* the frames so far are copied: their slots go back to north now */
            int r = ioq_commit(src_tx, IOQ_WAIT_RECV, every, NULL, 1);
            if (r < 0) {
                src_err = r;
                break;
            }
            released += every;
            counts->signals++;
        }
        uint32_t j = i - released; /* index 0 is the oldest source buffer still held */
        uint32_t len = ACQ_LEN(src_tx, j);
        uint32_t sh = sw->hdr[src_port];
        if (len < VSWITCH_MIN_FRAME + sh || len > sw->max_len[src_port]) {
            counts->bad_size++;
            continue;
        }
        const uint8_t *msg = src_tx->data + ACQ_OFF(src_tx, j);
        struct vnet_hdr hdr;
        if (sh)
            read_hdr(&hdr, msg); /* once: north may change it meanwhile */
        const struct vnet_hdr *h = sh ? &hdr : NULL;
        const uint8_t *frame = msg + sh;
        uint32_t blen = len - sh;
        uint8_t dst_mac[6], src_mac[6];
        memcpy(dst_mac, frame, 6);
        memcpy(src_mac, frame + 6, 6);
        if (learn(sw, src_mac, src_port) < 0)
            counts->unlearned++;
        int target = (dst_mac[0] & 1) ? -1 : vswitch_lookup(sw, dst_mac);
        uint32_t remaining = (uint32_t)k - i;
        if (target >= 0 && (uint32_t)target == src_port) {
            counts->filtered++; /* the destination is on the sender's side */
        } else if (target >= 0 && (uint32_t)target < nports && ports_rx[target]) {
            copy_to(sw, ports_rx, (uint32_t)target, frame, blen, h, remaining, counts,
                    per_port);
        } else {
            /* group, unknown, or learned on a port that has no client now */
            counts->flooded++;
            for (uint32_t p = 0; p < nports; p++)
                if (p != src_port && ports_rx[p])
                    copy_to(sw, ports_rx, p, frame, blen, h, remaining, counts, per_port);
        }
    }
    for (uint32_t p = 0; p < nports; p++) {
        struct vswitch_dst *d = &sw->dst[p];
        if (d->state != DST_READY)
            continue;
        /* publishes the filled buffers not handed over yet (none: just ends
         * the acquire) and signals north */
        int r = ioq_commit(ports_rx[p], IOQ_WAIT_SEND, d->used, d->lens, 1);
        if (r < 0)
            fault_dst(sw, ports_rx, p, counts, per_port); /* lets go of them all */
        else
            ioq_unacquire(ports_rx[p], UINT32_MAX); /* the buffers it did not fill */
    }
    counts->frames = (uint32_t)k;
    if (src_err) {
        ioq_unacquire(src_tx, UINT32_MAX);
        return src_err;
    }
    int r = ioq_commit(src_tx, IOQ_WAIT_RECV, (uint32_t)k - released, NULL, 1);
    if (r >= 0)
        counts->signals++;
    return r < 0 ? r : k;
}
