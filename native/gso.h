/*
 * Private to native/: software segmentation of a large TCP segment (a
 * frame whose virtio-net header has gso_type TCPV4 or TCPV6) into frames a
 * port without offloads takes, for the switch (vswitch.c), and the Internet
 * checksum both use.  Not cdef-safe, never passed to cffi's cdef.
 */
#ifndef VBUSFS_GSO_H
#define VBUSFS_GSO_H

#include <stdint.h>

/* The Internet checksum's one's-complement sum of len bytes (big-endian
 * words, an odd last byte the high half of one) added to sum, not folded:
 * sums of pieces add up. */
static inline uint64_t inet_sum(const uint8_t *p, uint32_t len, uint64_t sum)
{
    uint32_t i = 0;
    for (; i + 1 < len; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (i < len)
        sum += (uint32_t)p[i] << 8;
    return sum;
}

/* The Internet checksum of len bytes at p, sum (a pseudo-header's, or 0)
 * added first: the complement of the folded sum, as stored in a header. */
static inline uint16_t inet_csum(const uint8_t *p, uint32_t len, uint64_t sum)
{
    sum = inet_sum(p, len, sum);
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* The longest Ethernet + IPv4 (60) + TCP (60) headers a plan keeps. */
#define GSO_MAX_HDR 134
/* Most frames one segment is cut into: a 64 KiB segment at the smallest
 * MSS a TCP stack sends (48 bytes) makes 1365; a sender asking for more
 * (gso_size 1 would make 65,000) gets its segment dropped, not cut. */
#define GSO_MAX_SEGS 2048

/* How one large segment is cut: its headers, copied once out of the
 * sender's memory (which may change under us) and checked, and the sizes. */
struct gso_plan {
    uint8_t hdr[GSO_MAX_HDR];
    uint32_t ip_len;   /* the IP header's bytes (from 14) */
    uint32_t hdr_len;  /* Ethernet + IP + TCP header bytes */
    uint32_t payload;  /* TCP payload bytes of the whole segment */
    uint32_t mss;      /* payload bytes per frame (gso_size) */
    uint32_t nseg;     /* frames it makes */
    int v6;
};

/* Plan the cut of frame (blen bytes, Ethernet first) for gso_type and
 * gso_size, every frame at most max_frame bytes.  0 and *plan filled, or
 * -1: not a TCP segment this code cuts (another gso_type, other headers,
 * IPv6 extension headers, an IPv4 fragment, no payload, gso_size 0, more
 * than GSO_MAX_SEGS frames, a frame that would not fit max_frame, or an
 * IPv4 frame longer than its 16-bit total length can say). */
int gso_plan(struct gso_plan *plan, const uint8_t *frame, uint32_t blen, uint8_t gso_type,
             uint16_t gso_size, uint32_t max_frame);

/* Write frame i (0 .. nseg - 1) of the plan into out (room for hdr_len +
 * mss bytes): its headers fixed up, its slice of the payload copied from
 * frame, its TCP checksum computed in full.  Returns its length. */
uint32_t gso_segment(const struct gso_plan *plan, const uint8_t *frame, uint32_t i, uint8_t *out);

#endif
