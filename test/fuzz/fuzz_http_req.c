/*
 * fuzz_http_req: libFuzzer target for the metrics endpoint's request parser.
 *
 * Input: byte 0 picks how the rest is split; the rest is the stream.
 * Checked: fed whole, cut in two, and in small chunks, the outcome (result,
 * status, method, path, bytes consumed) is the same; a head never exceeds
 * the cap; a path is NUL-terminated, starts with '/' and holds no '?' or
 * control bytes; feeding exactly the consumed prefix gives DONE again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http_req.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    int rc, status, method;
    size_t used;
    char path[STP_HTTP_PATH_MAX];
} outcome_t;

static void feed(const uint8_t *d, size_t n, size_t cut, size_t chunk, outcome_t *o)
{
    static stp_http_req_t r;
    size_t pos = 0;
    int rc = STP_HTTP_AGAIN;

    stp_http_req_init(&r);
    while (pos < n && rc == STP_HTTP_AGAIN) {
        size_t avail = n - pos;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        } else if (chunk > 0 && chunk < avail) {
            avail = chunk;
        }
        size_t used = 0;
        rc = stp_http_req_feed(&r, (const char *)d + pos, avail, &used);
        if (used == 0 || used > avail || (rc == STP_HTTP_AGAIN && used != avail)) {
            abort();
        }
        pos += used;
    }
    memset(o, 0, sizeof(*o));
    o->rc = rc;
    o->used = pos;
    if (rc == STP_HTTP_ERROR) {
        o->status = r.status;
        if (r.status != 400 && r.status != 405 && r.status != 414 && r.status != 431 &&
            r.status != 505) {
            abort();
        }
    } else if (rc == STP_HTTP_DONE) {
        size_t plen = strnlen(r.path, sizeof(r.path));
        if (plen == sizeof(r.path) || r.path[0] != '/' || pos > STP_HTTP_REQ_MAX ||
            (r.method != STP_HTTP_GET && r.method != STP_HTTP_HEAD)) {
            abort();
        }
        for (size_t i = 0; i < plen; i++) {
            if (r.path[i] == '?' || (unsigned char)r.path[i] <= 0x20 ||
                (unsigned char)r.path[i] >= 0x7f) {
                abort();
            }
        }
        o->method = r.method;
        memcpy(o->path, r.path, plen);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static outcome_t whole, other;
    if (size < 1 || size > 2 * STP_HTTP_REQ_MAX) {
        return 0;
    }
    const uint8_t *d = data + 1;
    size_t n = size - 1;

    feed(d, n, 0, 0, &whole);
    feed(d, n, n ? data[0] % n : 0, 0, &other);
    if (memcmp(&whole, &other, sizeof(whole)) != 0) {
        abort();
    }
    feed(d, n, 0, (size_t)(data[0] % 7) + 1, &other);
    if (memcmp(&whole, &other, sizeof(whole)) != 0) {
        abort();
    }
    if (whole.rc == STP_HTTP_DONE) {
        feed(d, whole.used, 0, 0, &other);
        if (memcmp(&whole, &other, sizeof(whole)) != 0) {
            abort();
        }
    }
    return 0;
}
