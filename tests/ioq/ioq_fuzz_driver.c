/*
 * Test driver for the native ring code, built by test_ioq_native.py under
 * AddressSanitizer and UBSan.  Phase 1: an honest north and south move
 * numbered messages and check them.  Phase 2: a forked hostile child writes
 * random bytes over the ring head, indices and descriptors while the south
 * side keeps operating; south must fault cleanly, never crash, never read
 * or write outside its segments (guard pages and ASan would catch it).
 * Phase 3: hostile signalling objects and sizes (issue 11): attach refuses
 * a semaphore eventfd, anything but a Unix datagram socket to wake north
 * and data segments over IOQ_SOUTH_MAX_DATA; with O_NONBLOCK cleared on
 * every shared description, a full wake-up socket, a saturated eventfd and
 * north's irq forced to "enabled, nothing pending", no south operation
 * blocks (an alarm would kill the driver).  A wake-up socket connected to a
 * named socket (a path or an abstract name), or to nothing, is refused, and
 * one north reconnects after attach gets no more bytes from south.
 * The switch runs in both phases' rings, its port 0 now and then in header
 * mode: then the honest source sends large TCP segments, some with a header
 * byte spoiled, which the switch cuts for the bare destinations, the hostile
 * one and an honest one, often into more frames than one batch holds (the
 * hostile north posts its whole ring now and then so that it takes them).
 * Exit status 0 means every check held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ioq_testing.h"

#define CHECK(c)                                                        \
    do {                                                                \
        if (!(c)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,      \
                    __LINE__, #c);                                      \
            exit(2);                                                    \
        }                                                               \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A virtio-net header and a large TCP segment (IPv4 or IPv6, options and
 * payload of random sizes, gso_size 1..200, or 1..16 half of the time: cut
 * into more frames than VSWITCH_BATCH most often), one header byte spoiled
 * half of the time; its length. */
static uint32_t large_segment(uint8_t *m)
{
    static const uint8_t types[] = {1, 4, 0x81, 0x84, 3};
    uint8_t type = types[next_rand() % sizeof(types)];
    int v6 = (type & 0x7f) == 4;
    uint32_t ip = v6 ? 40 : 20, tcp = 4 * (5 + (uint32_t)(next_rand() % 11));
    uint32_t payload = (uint32_t)(next_rand() % 1200);
    uint32_t gso = 1 + (uint32_t)(next_rand() % (next_rand() % 2 ? 200 : 16));
    uint32_t hl = 14 + ip + tcp, len = 10 + hl + payload;
    memset(m, 0, len);
    m[0] = 1; /* NEEDS_CSUM */
    m[1] = type;
    m[2] = (uint8_t)hl;
    m[4] = (uint8_t)gso;
    uint8_t *f = m + 10;
    memset(f, 0xff, 6); /* broadcast: every frame floods */
    f[11] = 9;
    f[12] = v6 ? 0x86 : 0x08;
    f[13] = v6 ? 0xdd : 0x00;
    if (v6) {
        f[14] = 0x60;
        f[20] = 6;
    } else {
        f[14] = 0x45;
        f[23] = 6;
    }
    f[14 + ip + 12] = (uint8_t)((tcp / 4) << 4);
    f[14 + ip + 13] = 0x99; /* CWR, ACK, FIN */
    for (uint32_t i = hl; i < hl + payload; i++)
        f[i] = (uint8_t)next_rand();
    if (next_rand() % 2)
        f[next_rand() % hl] = (uint8_t)next_rand();
    return len;
}

static void honest(void)
{
    struct ioq *n, *s;
    CHECK(ioq_north_create(8, 8 * 64, IOQ_TO_SOUTH, &n) == 0);
    int fds[4];
    ioq_fds(n, fds);
    CHECK(ioq_south_attach(fds[0], fds[1], fds[2], fds[3], IOQ_TO_SOUTH, &s) == 0);
    char out[64 * 8], in[64 * 8];
    uint32_t lens[8], got[8];
    uint32_t sent = 0, recv = 0;
    while (recv < 100000) {
        uint32_t k = 1 + (uint32_t)(next_rand() % 8);
        for (uint32_t i = 0; i < k; i++) {
            lens[i] = 4 + (uint32_t)(next_rand() % 60);
            memset(out + 64 * i, (int)((sent + i) & 0xff), 64);
        }
        /* pack them back to back */
        char packed[64 * 8];
        uint32_t off = 0;
        for (uint32_t i = 0; i < k; i++) {
            memcpy(packed + off, out + 64 * i, lens[i]);
            off += lens[i];
        }
        int r = ioq_send_batch(n, packed, lens, k, 1);
        CHECK(r > 0 || r == IOQ_E_FULL);
        if (r > 0)
            sent += (uint32_t)r;
        r = ioq_recv_batch(s, in, sizeof(in), got, 1 + (uint32_t)(next_rand() % 8), 1);
        CHECK(r > 0 || r == IOQ_E_EMPTY);
        off = 0;
        for (int i = 0; i < r; i++) {
            for (uint32_t b = 0; b < got[i]; b++)
                CHECK((unsigned char)in[off + b] == ((recv + (uint32_t)i) & 0xff));
            off += got[i];
        }
        if (r > 0)
            recv += (uint32_t)r;
        CHECK(ioq_count(s, IOQ_IDX_INUSE) == (int)(sent - recv));
    }
    ioq_close(s);
    ioq_close(n);
}

/* The hostile ring's slots, and the honest bare destination's: more than
 * VSWITCH_BATCH, so a segment cut into more frames than that fills a whole
 * batch of either and the switch hands it over mid-forward, into the hostile
 * ring's descriptors too.  (That hand-over's fault branch stays out of reach:
 * a south commit reads nothing the peer writes, so it cannot fail on a ring
 * the acquire before it found sound.) */
#define HOSTILE_SLOTS 128
#define CUT_SLOTS 128

static void hostile(int direction, long iterations)
{
    struct ioq *n, *s;
    CHECK(ioq_north_create(HOSTILE_SLOTS, HOSTILE_SLOTS * 128, direction, &n) == 0);
    int fds[4];
    ioq_fds(n, fds);
    CHECK(ioq_south_attach(fds[0], fds[1], fds[2], fds[3], direction, &s) == 0);
    uint8_t *ring = ioq_ring(n);
    uint64_t ring_len = ioq_ring_bytes(HOSTILE_SLOTS);
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* the hostile north: random bytes, random places, until the parent
         * goes away (even if it is killed) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(0);
        rng ^= 0x1234567;
        for (unsigned burst = 0;; burst++) {
            /* bursts and pauses: south meets fresh and settled garbage,
             * and can re-attach between bursts */
            if (burst % 256 == 255) {
                if (burst == 255) {
                    /* the parent starts once garbage is really flowing */
                    ssize_t w = write(ready[1], "g", 1);
                    (void)w;
                }
                if (direction == IOQ_TO_NORTH && burst % 512 == 511) {
                    /* now and then every buffer posted, as an honest north
                     * would: south acquires more than a batch of them */
                    struct ioq_ring_desc *d =
                        (struct ioq_ring_desc *)(ring + IOQ_HEAD_SIZE);
                    for (uint32_t i = 0; i < HOSTILE_SLOTS; i++) {
                        d[i].ptr = (uint64_t)i * 128;
                        d[i].len = 128;
                        d[i].valid = 1;
                        d[i].sown = 1;
                    }
                }
                usleep(200);
            }
            uint64_t r = next_rand();
            uint64_t off = 8 + r % (ring_len - 8);
            if ((r >> 40) % 4 == 0) {
                uint64_t v = next_rand();
                if (off + 8 <= ring_len)
                    memcpy(ring + off, &v, 8);
            } else {
                ring[off] = (uint8_t)(r >> 32);
            }
            if ((r >> 50) % 64 == 0) {
                uint64_t one = 1;
                ssize_t w = write(fds[2], &one, 8);
                (void)w;
            }
        }
    }
    char go;
    CHECK(read(ready[0], &go, 1) == 1);
    close(ready[0]);
    close(ready[1]);
    char buf[16 * 128] = {0};
    uint32_t lens[16];
    uint64_t offs[16];
    long faults = 0, moved = 0;
    /* the fd transfers write to /dev/null and read frames a socket pair holds */
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC), sp[2];
    CHECK(devnull >= 0);
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) == 0);
    /* the switch: the hostile ring is its source (to-south) or a destination
     * (to-north); the other port is an honest pair in this process */
    struct vswitch *sw;
    CHECK(vswitch_new(&sw) == 0);
    int honest_dir = direction == IOQ_TO_SOUTH ? IOQ_TO_NORTH : IOQ_TO_SOUTH;
    struct ioq *hn, *hs;
    CHECK(ioq_north_create(16, 16 * 2048, honest_dir, &hn) == 0);
    int hfds[4];
    ioq_fds(hn, hfds);
    CHECK(ioq_south_attach(hfds[0], hfds[1], hfds[2], hfds[3], honest_dir, &hs) == 0);
    /* and an honest bare destination beside the hostile one, which the cut
     * frames of large segments reach (256-byte buffers) */
    struct ioq *dn, *ds;
    CHECK(ioq_north_create(CUT_SLOTS, CUT_SLOTS * 256, IOQ_TO_NORTH, &dn) == 0);
    static char cut_buf[CUT_SLOTS * 256];
    uint32_t cut_lens[CUT_SLOTS];
    int dfds[4];
    ioq_fds(dn, dfds);
    CHECK(ioq_south_attach(dfds[0], dfds[1], dfds[2], dfds[3], IOQ_TO_NORTH, &ds) == 0);
    /* trains: forwards that filled more than a batch of a destination's
     * buffers with cut frames, so handed a batch over mid-forward */
    long cut = 0, trains = 0, hostile_trains = 0;
    static char frame[64];
    memset(frame, 0xff, 6); /* broadcast: every frame floods */
    struct ioq_poller *poller;
    CHECK(ioq_poller_new(&poller) == 0);
    int pbit = -1;
    uint64_t pmask = 0;
    for (long i = 0; i < iterations; i++) {
        int op = (int)(next_rand() % 8), r;
        switch (op) {
        case 7: {
            struct vswitch_counts c;
            struct vswitch_port_counts pc[3];
            frame[11] = (char)(next_rand() % 4); /* a few sources to learn */
            int hdr = next_rand() % 2 == 0;
            CHECK(vswitch_set_port(sw, 0, hdr ? VSWITCH_VNET_HDR : 0,
                                   hdr ? VSWITCH_MAX_SG : VSWITCH_MAX_FRAME) == 0);
            if (direction == IOQ_TO_SOUTH) {
                struct ioq *ports[2] = {NULL, hs};
                /* the hostile source's slots handed back every 0..3 frames */
                r = vswitch_forward(sw, 0, s, ports, 2, 16, (uint32_t)(next_rand() % 4), &c,
                                    pc);
                CHECK(c.faulted == 0); /* the honest destination is never blamed */
                ioq_recv_batch(hn, buf, sizeof(buf), lens, 16, 0);
            } else {
                struct ioq *ports[3] = {NULL, s, ds};
                static uint8_t seg[10 + 134 + 1200];
                if (hdr)
                    ioq_send_one(hn, (const char *)seg, large_segment(seg), 0);
                else
                    ioq_send_one(hn, frame, (uint32_t)(14 + next_rand() % 50), 0);
                int f = vswitch_forward(sw, 0, hs, ports, 3, 16, 2, &c, pc);
                CHECK(f != IOQ_E_FAULT); /* the honest source is never blamed */
                CHECK(!pc[2].faulted); /* nor the honest destination */
                if (hdr)
                    cut += pc[2].delivered;
                trains += pc[2].delivered > VSWITCH_BATCH;
                hostile_trains += pc[1].delivered > VSWITCH_BATCH;
                ioq_recv_batch(dn, cut_buf, sizeof(cut_buf), cut_lens, CUT_SLOTS, 0);
                r = pc[1].faulted ? IOQ_E_FAULT : f;
            }
            break;
        }
        case 6: {
            struct ioq_fd_counts c;
            if (direction == IOQ_TO_SOUTH) {
                /* and venet's paths: completions handed back every 1..4 */
                uint32_t sig, every = 1 + (uint32_t)(next_rand() % 4);
                switch (next_rand() % 3) {
                case 0:
                    r = ioq_recv_to_fd(s, devnull, 16, 0, UINT32_MAX, &c);
                    break;
                case 1:
                    r = venet_recv_to_fd(s, devnull, 16, 0, UINT32_MAX, every, &c, &sig);
                    break;
                default:
                    r = venet_recv_batch(s, buf, sizeof(buf), lens, 16, every, &sig);
                }
            } else {
                ssize_t w = send(sp[1], buf, 1 + next_rand() % 300, 0);
                (void)w;
                r = ioq_send_from_fd(s, sp[0], 16, 128, &c);
            }
            break;
        }
        case 0:
            r = direction == IOQ_TO_SOUTH
                    ? ioq_recv_batch(s, buf, sizeof(buf), lens, 16, 1)
                    : ioq_send_batch(s, buf, (uint32_t[]){64}, 1, 1);
            break;
        case 1: {
            /* zero-copy in sub-batches: acquire, acquire more, commit the
             * oldest part, then commit or give back the rest */
            int zop = direction == IOQ_TO_SOUTH ? IOQ_WAIT_RECV : IOQ_WAIT_SEND;
            static const uint32_t zeros[32];
            uint32_t held = 0;
            for (int round = 0; round < 2; round++) {
                r = ioq_acquire(s, zop, 1 + (uint32_t)(next_rand() % 16), offs, lens);
                if (r <= 0)
                    break;
                for (int k = 0; k < r; k++) {
                    CHECK(offs[k] + lens[k] <= ioq_data_len(s));
                    /* touch every byte the south side was given */
                    volatile uint8_t *p = ioq_data(s) + offs[k];
                    for (uint32_t b = 0; b < lens[k]; b++)
                        (void)p[b];
                }
                held += (uint32_t)r;
            }
            if (r == IOQ_E_FAULT || held == 0)
                break;
            uint32_t first = (uint32_t)(next_rand() % (held + 1));
            r = ioq_commit(s, zop, first, zeros, 1);
            if (r < 0)
                break;
            CHECK((uint32_t)r == first);
            if (next_rand() % 2) {
                r = ioq_commit(s, zop, held - first, zeros, 1);
            } else {
                CHECK(ioq_unacquire(s, UINT32_MAX) == 0);
                r = (int)first;
            }
            break;
        }
        case 2:
            r = ioq_count(s, 1 + (int)(next_rand() % 2));
            break;
        case 3: {
            int wop = direction == IOQ_TO_SOUTH ? IOQ_WAIT_RECV : IOQ_WAIT_SEND;
            if (next_rand() % 2) {
                r = ioq_wait(s, wop, 0, 5);
                break;
            }
            /* the poller: the ring, closed at every fault and attached anew,
             * joins it again; its closed predecessor's bit reads ready */
            if (pbit < 0 || !(pmask & (1ull << pbit))) {
                r = ioq_poller_add(poller, s, wop);
                if (r < 0)
                    break;
                pbit = r;
                pmask |= 1ull << pbit;
            }
            uint64_t ready = 0;
            r = ioq_poller_wait(poller, pmask, 0, 5, &ready);
            CHECK(r == 0 || r == IOQ_E_TIMEDOUT || r == IOQ_E_CLOSED);
            CHECK((ready & ~pmask) == 0);
            for (int b = 0; b < 64; b++) {
                if (b != pbit && (ready & (1ull << b))) {
                    CHECK(ioq_poller_remove(poller, b) == 0); /* a closed ring's bit */
                    pmask &= ~(1ull << b);
                }
            }
            r = 0;
            break;
        }
        case 4: {
            struct ioq_desc d;
            r = direction == IOQ_TO_SOUTH ? ioq_pop(s, IOQ_IDX_INUSE, &d) : 0;
            if (r == 0 && direction == IOQ_TO_SOUTH)
                CHECK(d.ptr + d.len <= ioq_data_len(s) && d.ptr <= ioq_data_len(s));
            break;
        }
        default:
            r = ioq_seek(s, 1 + (int)(next_rand() % 2), (int)(next_rand() % 5),
                         (int32_t)(next_rand() % 40) - 20);
            break;
        }
        if (r == IOQ_E_FAULT) {
            faults++;
            ioq_close(s); /* its poller bit goes dead, reported ready */
            pbit = -1;
            r = ioq_south_attach(fds[0], fds[1], fds[2], fds[3], direction, &s);
            for (long tries = 0; r != 0; tries++) {
                CHECK(tries < 1000000);
                /* the hostile child broke the head itself: attach must say
                 * so; repair the constant fields (as a fresh honest north
                 * would have them) so the fuzz can go on */
                CHECK(r == IOQ_E_BADRING);
                struct ioq_ring_head *h = (struct ioq_ring_head *)ring;
                h->ver = IOQ_RING_VER;
                h->signal.magic = SHM_SIGNAL_MAGIC;
                h->signal.ver = SHM_SIGNAL_VER;
                h->count = HOSTILE_SLOTS;
                h->idx[IOQ_INUSE].head = 0;
                r = ioq_south_attach(fds[0], fds[1], fds[2], fds[3], direction, &s);
            }
        } else if (r > 0) {
            moved++;
        }
    }
    ioq_close(hs);
    ioq_close(hn);
    ioq_close(ds);
    ioq_close(dn);
    vswitch_free(sw);
    ioq_poller_free(poller);
    close(devnull);
    close(sp[0]);
    close(sp[1]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    printf("direction %d: %ld iterations, %ld faults, %ld moved, %ld cut frames, %ld+%ld trains\n",
           direction, iterations, faults, moved, cut, trains, hostile_trains);
    CHECK(faults > 0);
    CHECK(direction == IOQ_TO_SOUTH || (cut > 0 && trains > 0));
    ioq_close(s);
    ioq_close(n);
}

static int sealed_memfd(uint64_t len)
{
    int fd = memfd_create("fuzz-seg", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)len) == 0);
    CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    return fd;
}

static void blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    CHECK(fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0);
}

static void refused(int ring, int data, int to_south, int to_north)
{
    struct ioq *s = NULL;
    int r = ioq_south_attach(ring, data, to_south, to_north, IOQ_TO_SOUTH, &s);
    CHECK(r == IOQ_E_BADRING && s == NULL);
}

static void signals(void)
{
    struct ioq *n, *s;
    CHECK(ioq_north_create(16, 16 * 128, IOQ_TO_NORTH, &n) == 0);
    int fds[4];
    ioq_fds(n, fds);

    /* what attach refuses */
    int sem = eventfd(0, EFD_SEMAPHORE | EFD_CLOEXEC);
    int efd = eventfd(0, EFD_CLOEXEC);
    int p[2], st[2];
    CHECK(sem >= 0 && efd >= 0 && pipe(p) == 0);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, st) == 0);
    refused(fds[0], fds[1], sem, fds[3]);          /* semaphore eventfd */
    refused(fds[0], fds[1], fds[3], fds[3]);       /* a socket to wake south */
    refused(fds[0], fds[1], fds[2], efd);          /* an eventfd to wake north */
    refused(fds[0], fds[1], fds[2], p[1]);         /* a pipe */
    refused(fds[0], fds[1], fds[2], st[0]);        /* a stream socket */
    uint64_t sizes[] = {(uint64_t)IOQ_SOUTH_MAX_DATA + 4096, (uint64_t)1 << 42};
    for (int i = 0; i < 2; i++) {
        int big = sealed_memfd(sizes[i]);
        refused(fds[0], big, fds[2], fds[3]);
        close(big);
    }
    int edge = sealed_memfd(IOQ_SOUTH_MAX_DATA); /* the limit itself attaches */
    CHECK(ioq_south_attach(fds[0], edge, fds[2], fds[3], IOQ_TO_NORTH, &s) == 0);
    ioq_close(s);
    close(edge);
    close(sem), close(efd), close(p[0]), close(p[1]), close(st[0]), close(st[1]);

    /* the wedge: every shared description blocking, the wake-up socket full,
     * south's eventfd saturated, north's irq enabled with nothing pending */
    CHECK(ioq_south_attach(fds[0], fds[1], fds[2], fds[3], IOQ_TO_NORTH, &s) == 0);
    char x = 0;
    long queued = 0;
    while (send(fds[3], &x, 1, MSG_DONTWAIT) == 1)
        queued++;
    CHECK(queued > 0);
    blocking(fds[2]);
    blocking(fds[3]);
    uint64_t most = UINT64_MAX - 1;
    CHECK(write(fds[2], &most, sizeof(most)) == sizeof(most));
    struct ioq_ring_head *head = (struct ioq_ring_head *)ioq_ring(n);
    alarm(10);
    char msg[64] = {0};
    long sent = 0;
    for (int i = 0; i < 100000; i++) {
        head->signal.irq[IOQ_NORTH].enabled = 1;
        head->signal.irq[IOQ_NORTH].pending = 0;
        if (ioq_send_one(s, msg, sizeof(msg), 1) == 1)
            sent++;
        ioq_signal(s);
        /* south's own wait steps on the saturated, blocking eventfd: one
         * read empties it; the next finds nothing and returns */
        CHECK(ioq_wait_arm(s, IOQ_WAIT_SEND, 1) >= 0);
        CHECK(ioq_wait_arm(s, IOQ_WAIT_SEND, 0) >= 0);
        if (i % 64 == 0) {
            char buf[128];
            while (ioq_recv_one(n, buf, sizeof(buf), 0) > 0)
                ;
        }
    }
    alarm(0);
    CHECK(sent > 0);
    printf("signals: %ld sent to north with its wake-up socket full and blocking\n", sent);
    ioq_close(s);
    ioq_close(n);
}

/* A datagram socket bound to `name` (abstract when it starts with '@'); its
 * address in *a and the address length in *len. */
static int bound_dgram(const char *name, struct sockaddr_un *a, socklen_t *len)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    size_t n = strlen(name);
    CHECK(n < sizeof(a->sun_path));
    memcpy(a->sun_path, name, n);
    if (name[0] == '@')
        a->sun_path[0] = '\0';
    else
        unlink(name);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)a, *len) == 0);
    return fd;
}

static int got_nothing(int fd)
{
    char buf[8];
    return recv(fd, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

/* The wake-up socket is one south sends on, as root perhaps: north must not
 * be able to aim it at someone else's socket. */
static void wake_up_peers(void)
{
    struct ioq *n, *s;
    CHECK(ioq_north_create(16, 16 * 128, IOQ_TO_NORTH, &n) == 0);
    int fds[4];
    ioq_fds(n, fds);
    char path[64];
    snprintf(path, sizeof(path), "/tmp/ioq-fuzz-%d.sock", (int)getpid());
    char abstract[64];
    snprintf(abstract, sizeof(abstract), "@ioq-fuzz-%d", (int)getpid());
    const char *names[] = {path, abstract};
    int victims[2];
    for (int i = 0; i < 2; i++) {
        struct sockaddr_un a;
        socklen_t len;
        victims[i] = bound_dgram(names[i], &a, &len);
        int aimed = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        CHECK(aimed >= 0 && connect(aimed, (struct sockaddr *)&a, len) == 0);
        refused(fds[0], fds[1], fds[2], aimed);
        close(aimed);
    }
    int loose = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(loose >= 0);
    refused(fds[0], fds[1], fds[2], loose); /* connected to nothing */
    close(loose);

    /* the socketpair attaches and wakes north... */
    CHECK(ioq_south_attach(fds[0], fds[1], fds[2], fds[3], IOQ_TO_NORTH, &s) == 0);
    struct ioq_ring_head *head = (struct ioq_ring_head *)ioq_ring(n);
    char msg[16] = {0}, buf[8];
    head->signal.irq[IOQ_NORTH].enabled = 1;
    head->signal.irq[IOQ_NORTH].pending = 0;
    CHECK(ioq_send_one(s, msg, sizeof(msg), 1) == 1);
    CHECK(recv(ioq_wake_fd(n), buf, sizeof(buf), MSG_DONTWAIT) == 1);
    /* ...until north reconnects the end it handed (it kept a copy) */
    for (int i = 0; i < 2; i++) {
        struct sockaddr_un a;
        socklen_t len;
        close(victims[i]);
        victims[i] = bound_dgram(names[i], &a, &len);
        CHECK(connect(fds[3], (struct sockaddr *)&a, len) == 0);
        for (int k = 0; k < 100; k++) {
            head->signal.irq[IOQ_NORTH].enabled = 1;
            head->signal.irq[IOQ_NORTH].pending = 0;
            ioq_signal(s);
        }
        CHECK(got_nothing(victims[i]));
    }
    ioq_close(s);
    ioq_close(n);
    close(victims[0]);
    close(victims[1]);
    unlink(path);
    puts("wake-up peers: named, abstract and unconnected sockets refused");
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 200000;
    honest();
    hostile(IOQ_TO_SOUTH, iterations);
    hostile(IOQ_TO_NORTH, iterations);
    signals();
    wake_up_peers();
    puts("ok");
    return 0;
}
