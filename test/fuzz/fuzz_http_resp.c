/*
 * fuzz_http_resp: libFuzzer target for the policy fetch's HTTP response
 * parser.
 *
 * Input: byte 0 picks how the rest is split and the body cap (small caps
 * make the limit paths common); the rest is what the server sends, then the
 * connection ends. Checked: fed whole, cut in two, and in small chunks, the
 * parser gives the same transcript (headers, the joined body, done or the
 * error text); body pieces lie inside the input given; the body never
 * exceeds the cap; HEADERS comes once, before any body, and only for a 200
 * text/plain response; AGAIN consumes everything; DONE and ERROR stick.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/http_resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 140000 };

typedef struct {
    char text[MAX_INPUT + 512];
    size_t len;
} events_t;

static void put(events_t *e, const char *s, size_t n)
{
    if (e->len + n > sizeof(e->text)) {
        abort();
    }
    memcpy(e->text + e->len, s, n);
    e->len += n;
}

static void render(const uint8_t *d, size_t n, size_t cap, size_t cut, size_t chunk, events_t *e)
{
    static stp_http_resp_t p;
    size_t pos = 0, body_total = 0;
    int headers = 0, rc = STP_HTTP_AGAIN;
    char buf[300];

    stp_http_resp_init(&p, cap);
    e->len = 0;
    for (;;) {
        size_t avail = n - pos;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        } else if (chunk > 0 && chunk < avail) {
            avail = chunk;
        }
        size_t used = 0, blen = 0;
        const char *body = NULL;
        const char *in = (const char *)d + pos;
        rc = stp_http_resp_feed(&p, in, avail, &used, &body, &blen);
        if (used > avail) {
            abort();
        }
        pos += used;
        if (rc == STP_HTTP_AGAIN) {
            if (used != avail) {
                abort();
            }
            if (pos == n) {
                break;
            }
            continue;
        }
        if (rc == STP_HTTP_HEADERS) {
            if (headers || body_total || p.status != 200 || !p.type_ok) {
                abort();
            }
            headers = 1;
            put(e, "H", 1);
            continue;
        }
        if (rc == STP_HTTP_BODY) {
            if (!headers || blen == 0 || body < in || body + blen > in + used) {
                abort();
            }
            body_total += blen;
            if (body_total > cap) {
                abort();
            }
            put(e, body, blen);
            continue;
        }
        break;
    }
    if (rc == STP_HTTP_AGAIN) {
        size_t used, blen;
        const char *body;
        rc = stp_http_resp_feed(&p, (const char *)d + n, 0, &used, &body, &blen);
        if (rc != STP_HTTP_DONE && rc != STP_HTTP_AGAIN) {
            abort();
        }
        rc = stp_http_resp_eof(&p);
    }
    if (rc == STP_HTTP_DONE) {
        if (!headers) {
            abort();
        }
        put(e, "|D", 2);
        size_t used, blen;
        const char *body;
        if (stp_http_resp_feed(&p, "x", 1, &used, &body, &blen) != STP_HTTP_DONE || used != 0) {
            abort();
        }
        return;
    }
    if (rc != STP_HTTP_ERROR) {
        abort();
    }
    stp_http_resp_error(&p, buf, sizeof(buf));
    if (buf[0] == '\0') {
        abort();
    }
    put(e, "|E", 2);
    put(e, buf, strlen(buf));
    if (stp_http_resp_eof(&p) != STP_HTTP_ERROR) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static events_t whole, split;
    if (size < 1 || size > MAX_INPUT + 1) {
        return 0;
    }
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    size_t cap = data[0] & 0x80 ? STP_HTTP_MTA_STS_BODY_MAX : (size_t)(data[0] & 0x1f);
    size_t cut = n ? (size_t)data[0] * 257 % (n + 1) : 0;
    size_t chunk = (size_t)(data[0] % 5) + 1;

    render(d, n, cap, 0, 0, &whole);
    render(d, n, cap, cut, 0, &split);
    if (whole.len != split.len || memcmp(whole.text, split.text, whole.len) != 0) {
        abort();
    }
    render(d, n, cap, cut, chunk, &split);
    if (whole.len != split.len || memcmp(whole.text, split.text, whole.len) != 0) {
        abort();
    }
    return 0;
}
