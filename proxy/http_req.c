/*
 * http_req: the metrics endpoint's request parser (see http_req.h).
 *
 * Bytes are collected until the blank line that ends the headers (or the
 * cap), then the whole head is checked in one pass. A monitoring system
 * sends a few hundred bytes; anything unusual is refused rather than
 * interpreted.
 */
#include "proxy/http_req.h"

#include <string.h>

void stp_http_req_init(stp_http_req_t *r)
{
    memset(r, 0, sizeof(*r));
}

static int fail(stp_http_req_t *r, int status)
{
    r->state = -1;
    r->status = status;
    return STP_HTTP_ERROR;
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return 1;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int ieq(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    if (an != bn) {
        return 0;
    }
    for (size_t i = 0; i < an; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') {
            x = (char)(x - 'A' + 'a');
        }
        if (x != y) {
            return 0;
        }
    }
    return 1;
}

/* "METHOD SP TARGET SP HTTP/1.x" */
static int parse_request_line(stp_http_req_t *r, const char *s, size_t n)
{
    const char *sp1 = memchr(s, ' ', n);
    if (sp1 == NULL || sp1 == s) {
        return fail(r, 400);
    }
    size_t mlen = (size_t)(sp1 - s);
    for (size_t i = 0; i < mlen; i++) {
        if (!is_tchar((unsigned char)s[i])) {
            return fail(r, 400);
        }
    }
    const char *t = sp1 + 1, *end = s + n;
    const char *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (sp2 == NULL || sp2 == t) {
        return fail(r, 400);
    }
    const char *v = sp2 + 1;
    size_t vlen = (size_t)(end - v);
    if (vlen != 8 || memcmp(v, "HTTP/1.", 7) != 0) {
        return fail(r, vlen >= 5 && memcmp(v, "HTTP/", 5) == 0 ? 505 : 400);
    }
    if (v[7] != '0' && v[7] != '1') {
        return fail(r, 505);
    }
    size_t tlen = (size_t)(sp2 - t);
    if (t[0] != '/') {
        return fail(r, 400);
    }
    for (size_t i = 0; i < tlen; i++) {
        if ((unsigned char)t[i] < 0x21 || (unsigned char)t[i] > 0x7e) {
            return fail(r, 400);
        }
    }
    const char *q = memchr(t, '?', tlen);
    size_t plen = q ? (size_t)(q - t) : tlen;
    if (plen >= sizeof(r->path)) {
        return fail(r, 414);
    }
    if (mlen == 3 && memcmp(s, "GET", 3) == 0) {
        r->method = STP_HTTP_GET;
    } else if (mlen == 4 && memcmp(s, "HEAD", 4) == 0) {
        r->method = STP_HTTP_HEAD;
    } else {
        return fail(r, 405);
    }
    memcpy(r->path, t, plen);
    r->path[plen] = '\0';
    return STP_HTTP_DONE;
}

/* "name: value": a token name, no space before the colon, visible text. */
static int parse_header(stp_http_req_t *r, const char *s, size_t n)
{
    const char *colon = memchr(s, ':', n);
    if (colon == NULL || colon == s) {
        return fail(r, 400); /* also a folded line (starts with a space) */
    }
    size_t nlen = (size_t)(colon - s);
    for (size_t i = 0; i < nlen; i++) {
        if (!is_tchar((unsigned char)s[i])) {
            return fail(r, 400);
        }
    }
    const char *v = colon + 1, *end = s + n;
    for (const char *c = v; c < end; c++) {
        unsigned char ch = (unsigned char)*c;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return fail(r, 400);
        }
    }
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }
    /* No bodies: a GET with one is refused instead of being misread. */
    if (ieq(s, nlen, "transfer-encoding")) {
        return fail(r, 400);
    }
    if (ieq(s, nlen, "content-length") && !((size_t)(end - v) == 1 && *v == '0')) {
        return fail(r, 400);
    }
    return STP_HTTP_AGAIN;
}

static int parse_head(stp_http_req_t *r)
{
    const char *s = r->buf, *end = r->buf + r->len - 2; /* the final CRLF */
    int first = 1;
    while (s < end) {
        const char *eol = s;
        while (!(eol[0] == '\r' && eol[1] == '\n')) {
            eol++;
        }
        size_t n = (size_t)(eol - s);
        int rc = first ? parse_request_line(r, s, n) : parse_header(r, s, n);
        if (rc == STP_HTTP_ERROR) {
            return rc;
        }
        first = 0;
        s = eol + 2;
    }
    r->state = 1;
    return STP_HTTP_DONE;
}

int stp_http_req_feed(stp_http_req_t *r, const char *p, size_t n, size_t *consumed)
{
    *consumed = 0;
    if (r->state == 1) {
        return STP_HTTP_DONE;
    }
    if (r->state == -1) {
        return STP_HTTP_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        *consumed = i + 1;
        if (r->len == sizeof(r->buf)) {
            return fail(r, 431);
        }
        if (c == '\n' && (r->len == 0 || r->buf[r->len - 1] != '\r')) {
            return fail(r, 400); /* bare LF */
        }
        if (r->len > 0 && r->buf[r->len - 1] == '\r' && c != '\n') {
            return fail(r, 400); /* bare CR */
        }
        if (c == '\0') {
            return fail(r, 400);
        }
        r->buf[r->len++] = c;
        if (c == '\n') {
            if (r->len == 2) {
                return fail(r, 400); /* a blank line before the request line */
            }
            if (r->len >= 4 && memcmp(r->buf + r->len - 4, "\r\n\r\n", 4) == 0) {
                int rc = parse_head(r);
                if (rc != STP_HTTP_DONE) {
                    *consumed = i + 1;
                }
                return rc;
            }
        }
    }
    return STP_HTTP_AGAIN;
}
