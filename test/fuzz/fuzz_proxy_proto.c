/*
 * fuzz_proxy_proto: libFuzzer target for the PROXY protocol header parser.
 *
 * Input: byte 0 picks how the rest is split; the rest is the stream.
 * Checked: the stream fed whole, cut in two, and in small chunks gives the
 * same outcome (result, bytes consumed, addresses); a header is never longer
 * than its version's cap; DONE never consumes past the header, so feeding
 * exactly the consumed prefix gives DONE again; the parser stays in its
 * final state.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    int rc;
    size_t used;
    int version, local;
    struct sockaddr_storage src, dst;
} outcome_t;

static void feed(const uint8_t *d, size_t n, size_t cut, size_t chunk, outcome_t *o)
{
    static stp_proxy_t p;
    size_t pos = 0;
    int rc = STP_PROXY_AGAIN;

    stp_proxy_init(&p);
    while (pos < n && rc == STP_PROXY_AGAIN) {
        size_t avail = n - pos;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        } else if (chunk > 0 && chunk < avail) {
            avail = chunk;
        }
        size_t used = 0;
        rc = stp_proxy_feed(&p, (const char *)d + pos, avail, &used);
        if (used > avail || (rc == STP_PROXY_AGAIN && used != avail) || used == 0) {
            abort();
        }
        pos += used;
    }
    memset(o, 0, sizeof(*o));
    o->rc = rc;
    o->used = pos;
    if (rc == STP_PROXY_ERROR && p.error == NULL) {
        abort();
    }
    if (rc == STP_PROXY_DONE) {
        size_t more = 1;
        if (stp_proxy_feed(&p, "P", 1, &more) != STP_PROXY_DONE || more != 0) {
            abort();
        }
        if ((p.version == 1 && pos > STP_PROXY_V1_MAX) ||
            (p.version == 2 && pos > STP_PROXY_V2_MAX) || (p.version != 1 && p.version != 2)) {
            abort();
        }
        o->version = p.version;
        o->local = p.local;
        if (!p.local) {
            /* each AF_INET or AF_INET6; they may differ, an IPv4-mapped
             * address being given as IPv4 on its own */
            if ((p.src.ss_family != AF_INET && p.src.ss_family != AF_INET6) ||
                (p.dst.ss_family != AF_INET && p.dst.ss_family != AF_INET6)) {
                abort();
            }
            o->src = p.src;
            o->dst = p.dst;
        }
    }
}

static void same(const outcome_t *a, const outcome_t *b)
{
    if (memcmp(a, b, sizeof(*a)) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static outcome_t whole, other;
    if (size < 1 || size > 8192) {
        return 0;
    }
    const uint8_t *d = data + 1;
    size_t n = size - 1;

    feed(d, n, 0, 0, &whole);
    feed(d, n, n ? data[0] % n : 0, 0, &other);
    same(&whole, &other);
    feed(d, n, 0, (size_t)(data[0] % 7) + 1, &other);
    same(&whole, &other);
    if (whole.rc == STP_PROXY_DONE) {
        /* the header alone is enough: nothing after it was needed */
        feed(d, whole.used, 0, 0, &other);
        same(&whole, &other);
    }
    return 0;
}
