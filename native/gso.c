/*
 * Software segmentation (see gso.h): what a NIC's TCP segmentation offload
 * would do, done by the switch for a port that negotiated no offloads.
 * Each frame gets the original Ethernet, IP and TCP headers with the fields
 * that differ per frame redone: IPv4 total length, identification (+1 per
 * frame) and header checksum, or IPv6 payload length; the TCP sequence
 * number, FIN and PSH kept for the last frame only, CWR for the first only,
 * and the TCP checksum over the pseudo-header, header and payload.
 *
 * The plan's headers are a private copy checked once; the payload bytes are
 * copied into the destination and the checksum summed from that copy, so a
 * sender changing its frame meanwhile spoils only its own data.
 */
#include "gso.h"

#include <string.h>

#define GSO_TCPV4 1
#define GSO_TCPV6 4
#define GSO_ECN 0x80
#define ETH_LEN 14
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

int gso_plan(struct gso_plan *plan, const uint8_t *frame, uint32_t blen, uint8_t gso_type,
             uint16_t gso_size, uint32_t max_frame)
{
    uint8_t type = gso_type & (uint8_t)~GSO_ECN;
    if ((type != GSO_TCPV4 && type != GSO_TCPV6) || gso_size == 0)
        return -1;
    /* copy the most headers there can be, then check them in the copy */
    uint32_t take = blen < GSO_MAX_HDR ? blen : GSO_MAX_HDR;
    memcpy(plan->hdr, frame, take);
    const uint8_t *h = plan->hdr;
    plan->v6 = type == GSO_TCPV6;
    if (!plan->v6) {
        if (take < ETH_LEN + 20 || be16(h + 12) != 0x0800 || (h[14] >> 4) != 4)
            return -1;
        plan->ip_len = (uint32_t)(h[14] & 15) * 4;
        /* a fragment (MF set or an offset) is no TCP segment to cut */
        if (plan->ip_len < 20 || h[23] != 6 || (be16(h + 20) & 0x3fff))
            return -1;
    } else {
        /* TCP straight after the fixed header: extension headers are refused */
        if (take < ETH_LEN + 40 || be16(h + 12) != 0x86dd || (h[14] >> 4) != 6 || h[20] != 6)
            return -1;
        plan->ip_len = 40;
    }
    uint32_t tcp = ETH_LEN + plan->ip_len;
    if (take < tcp + 20)
        return -1;
    uint32_t tcp_len = (uint32_t)(h[tcp + 12] >> 4) * 4;
    if (tcp_len < 20 || take < tcp + tcp_len)
        return -1;
    plan->hdr_len = tcp + tcp_len;
    plan->payload = blen - plan->hdr_len;
    plan->mss = gso_size;
    if (plan->payload == 0)
        return -1;
    uint32_t first = plan->payload < plan->mss ? plan->payload : plan->mss;
    if (plan->hdr_len + first > max_frame)
        return -1;
    /* the first frame is the longest: its IPv4 total length (IP header and
     * on) must fit 16 bits, which a port taking up to VSWITCH_MAX_SG allows
     * past; IPv6's payload length leaves out its 40 bytes and always fits */
    if (!plan->v6 && plan->hdr_len + first - ETH_LEN > 0xffff)
        return -1;
    plan->nseg = (plan->payload + plan->mss - 1) / plan->mss;
    return plan->nseg > GSO_MAX_SEGS ? -1 : 0;
}

uint32_t gso_segment(const struct gso_plan *plan, const uint8_t *frame, uint32_t i, uint8_t *out)
{
    uint32_t hl = plan->hdr_len, ip = ETH_LEN, tcp = ETH_LEN + plan->ip_len;
    uint32_t at = i * plan->mss;
    uint32_t n = plan->payload - at < plan->mss ? plan->payload - at : plan->mss;
    memcpy(out, plan->hdr, hl);
    memcpy(out + hl, frame + hl + at, n);
    uint32_t tcp_bytes = hl - tcp + n;
    uint64_t pseudo;
    if (!plan->v6) {
        put16(out + ip + 2, plan->ip_len + tcp_bytes);
        put16(out + ip + 4, (uint32_t)(be16(plan->hdr + ip + 4) + i));
        put16(out + ip + 10, 0);
        put16(out + ip + 10, inet_csum(out + ip, plan->ip_len, 0));
        pseudo = inet_sum(out + ip + 12, 8, 0); /* source and destination */
    } else {
        put16(out + ip + 4, tcp_bytes);
        pseudo = inet_sum(out + ip + 8, 32, 0);
    }
    pseudo += 6 + tcp_bytes; /* protocol and TCP length */
    const uint8_t *th = plan->hdr + tcp;
    uint32_t seq = (uint32_t)th[4] << 24 | (uint32_t)th[5] << 16 | (uint32_t)th[6] << 8 | th[7];
    seq += at;
    out[tcp + 4] = (uint8_t)(seq >> 24);
    out[tcp + 5] = (uint8_t)(seq >> 16);
    out[tcp + 6] = (uint8_t)(seq >> 8);
    out[tcp + 7] = (uint8_t)seq;
    uint8_t flags = th[13];
    if (i + 1 < plan->nseg)
        flags &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (i > 0)
        flags &= (uint8_t)~TCP_CWR;
    out[tcp + 13] = flags;
    put16(out + tcp + 16, 0);
    put16(out + tcp + 16, inet_csum(out + tcp, tcp_bytes, pseudo));
    return hl + n;
}
