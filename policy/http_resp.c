/*
 * http_resp: the HTTP/1.x response grammar of RFC 9112, reduced to what an
 * MTA-STS policy fetch may receive, with every limit fixed in advance.
 *
 * Lines (status line, header fields, chunk sizes, trailers) are collected in
 * one fixed buffer and judged when their CRLF arrives; body bytes are never
 * copied, the caller gets pointers into its own input. The state survives
 * any cut of the input, so the socket may deliver the response in pieces of
 * any size (tested by feeding every response cut at every byte).
 */
#include "policy/http_resp.h"

#include <stdio.h>
#include <string.h>

enum {
    S_STATUS = 0,
    S_FIELDS,
    S_BODY_LENGTH,
    S_BODY_CLOSE,
    S_CHUNK_SIZE,
    S_CHUNK_DATA,
    S_CHUNK_CR,
    S_CHUNK_LF,
    S_TRAILERS,
    S_DONE,
    S_ERROR,
};

/* A chunk-size line holds hex digits and optional extensions: short. */
#define MAX_CHUNK_LINE 256

/* Errors whose message stp_http_resp_error() completes with details. */
static const char ERR_STATUS[] = "HTTP status";
static const char ERR_TYPE[] = "Content-Type is not text/plain";
static const char ERR_BODY[] = "body too large";

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 9110 tchar. */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) {
        return 1;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* field-vchar / SP / HTAB (obs-text included). */
static int is_value_char(unsigned char c)
{
    return is_ows(c) || (c >= 0x21 && c != 0x7f);
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static int same_ci(const char *a, size_t n, const char *b)
{
    if (strlen(b) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) {
            return 0;
        }
    }
    return 1;
}

/* A printable, cut copy of peer text for messages. */
static void keep(char *dst, size_t cap, const char *s, size_t n)
{
    size_t k = 0;
    for (; k < n && k + 1 < cap; k++) {
        unsigned char c = (unsigned char)s[k];
        dst[k] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    dst[k] = '\0';
}

static int fail(stp_http_resp_t *p, const char *why)
{
    if (p->state != S_ERROR) {
        p->state = S_ERROR;
        p->err = why;
    }
    return STP_HTTP_ERROR;
}

void stp_http_resp_init(stp_http_resp_t *p, size_t body_max)
{
    memset(p, 0, sizeof(*p));
    p->state = S_STATUS;
    p->body_max = body_max;
}

/* HTTP/1.0 or HTTP/1.1, SP, 3DIGIT, [SP reason-phrase]. */
static int status_line(stp_http_resp_t *p, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' ||
        !is_digit((unsigned char)s[9]) || !is_digit((unsigned char)s[10]) ||
        !is_digit((unsigned char)s[11]) || (n > 12 && s[12] != ' ')) {
        return fail(p, "malformed status line");
    }
    for (size_t i = 13; i < n; i++) {
        if (!is_value_char((unsigned char)s[i])) {
            return fail(p, "malformed status line");
        }
    }
    p->minor = s[7] - '0';
    p->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (p->status < 100 || p->status > 599) {
        p->status = 0;
        return fail(p, "malformed status line");
    }
    return 0;
}

/* quoted-string at s[*i] (the opening quote); advances past the closing one. */
static int quoted_string(const char *s, size_t n, size_t *i)
{
    size_t k = *i + 1;
    while (k < n) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"') {
            *i = k + 1;
            return 0;
        }
        if (c == '\\') {
            if (k + 1 >= n || !is_value_char((unsigned char)s[k + 1])) {
                return -1;
            }
            k += 2;
            continue;
        }
        if (!is_value_char(c)) {
            return -1;
        }
        k++;
    }
    return -1;
}

/*
 * media-type = type "/" subtype parameters, parameters = *( OWS ";" OWS
 * [ name "=" ( token / quoted-string ) ] ). Returns -1 if malformed, else
 * 1 for text/plain and 0 for anything else.
 */
static int media_type(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i])) {
        i++;
    }
    size_t type_end = i;
    if (i == 0 || i >= n || s[i] != '/') {
        return -1;
    }
    i++;
    size_t sub = i;
    while (i < n && is_tchar((unsigned char)s[i])) {
        i++;
    }
    if (i == sub) {
        return -1;
    }
    int plain = same_ci(s, type_end, "text") && same_ci(s + sub, i - sub, "plain");
    for (;;) {
        while (i < n && is_ows((unsigned char)s[i])) {
            i++;
        }
        if (i == n) {
            return plain;
        }
        if (s[i] != ';') {
            return -1;
        }
        i++;
        while (i < n && is_ows((unsigned char)s[i])) {
            i++;
        }
        if (i == n || s[i] == ';') {
            continue; /* an empty parameter is allowed */
        }
        size_t name = i;
        while (i < n && is_tchar((unsigned char)s[i])) {
            i++;
        }
        if (i == name || i >= n || s[i] != '=') {
            return -1;
        }
        i++;
        if (i < n && s[i] == '"') {
            if (quoted_string(s, n, &i) < 0) {
                return -1;
            }
        } else {
            size_t v = i;
            while (i < n && is_tchar((unsigned char)s[i])) {
                i++;
            }
            if (i == v) {
                return -1;
            }
        }
    }
}

/* One header field (or trailer when `trailer`): syntax always, meaning only for headers. */
static int field_line(stp_http_resp_t *p, const char *s, size_t n, int trailer)
{
    if (++p->nfields > STP_HTTP_MAX_FIELDS) {
        return fail(p, "too many header fields");
    }
    if (is_ows((unsigned char)s[0])) {
        return fail(p, "folded header line (obs-fold)");
    }
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i])) {
        i++;
    }
    if (i == 0 || i >= n || s[i] != ':') {
        return fail(p, "malformed header field");
    }
    const char *name = s;
    size_t nlen = i;
    const char *v = s + i + 1, *e = s + n;
    for (const char *q = v; q < e; q++) {
        if (!is_value_char((unsigned char)*q)) {
            return fail(p, "control character in a header field");
        }
    }
    while (v < e && is_ows((unsigned char)*v)) {
        v++;
    }
    while (e > v && is_ows((unsigned char)e[-1])) {
        e--;
    }
    size_t vlen = (size_t)(e - v);
    if (trailer) {
        return 0;
    }
    if (same_ci(name, nlen, "content-length")) {
        if (p->have_length) {
            return fail(p, "more than one Content-Length");
        }
        p->have_length = 1;
        if (vlen == 0 || vlen > 18) {
            return fail(p, "malformed Content-Length");
        }
        uint64_t cl = 0;
        for (size_t k = 0; k < vlen; k++) {
            if (!is_digit((unsigned char)v[k])) {
                return fail(p, "malformed Content-Length");
            }
            cl = cl * 10 + (uint64_t)(v[k] - '0');
        }
        p->content_length = cl;
    } else if (same_ci(name, nlen, "transfer-encoding")) {
        if (p->have_te) {
            return fail(p, "more than one Transfer-Encoding");
        }
        p->have_te = 1;
        if (!same_ci(v, vlen, "chunked")) {
            return fail(p, "Transfer-Encoding other than chunked");
        }
    } else if (same_ci(name, nlen, "content-type")) {
        if (p->have_type) {
            return fail(p, "more than one Content-Type");
        }
        p->have_type = 1;
        keep(p->content_type, sizeof(p->content_type), v, vlen);
        int mt = media_type(v, vlen);
        if (mt < 0) {
            return fail(p, "malformed Content-Type");
        }
        p->type_ok = mt == 1;
    } else if (same_ci(name, nlen, "location")) {
        keep(p->location, sizeof(p->location), v, vlen);
    }
    return 0;
}

/* The blank line after the headers: decide whether the response is acceptable. */
static int headers_done(stp_http_resp_t *p)
{
    if (p->status != 200) {
        return fail(p, ERR_STATUS);
    }
    if (!p->have_type) {
        return fail(p, "no Content-Type (text/plain is required)");
    }
    if (!p->type_ok) {
        return fail(p, ERR_TYPE);
    }
    if (p->have_te && p->minor == 0) {
        return fail(p, "Transfer-Encoding in an HTTP/1.0 response");
    }
    if (p->have_te && p->have_length) {
        return fail(p, "both Content-Length and Transfer-Encoding");
    }
    if (p->have_te) {
        p->framing = STP_HTTP_FRAMING_CHUNKED;
        p->state = S_CHUNK_SIZE;
    } else if (p->have_length) {
        if (p->content_length > p->body_max) {
            return fail(p, ERR_BODY);
        }
        p->framing = STP_HTTP_FRAMING_LENGTH;
        p->remaining = p->content_length;
        p->state = p->remaining ? S_BODY_LENGTH : S_DONE;
    } else {
        p->framing = STP_HTTP_FRAMING_CLOSE;
        p->state = S_BODY_CLOSE;
    }
    p->nfields = 0; /* trailers get their own count */
    return STP_HTTP_HEADERS;
}

/* chunk-size [ OWS ";" extensions ]: the extensions are skipped unread. */
static int chunk_size_line(stp_http_resp_t *p, const char *s, size_t n)
{
    size_t i = 0;
    uint64_t size = 0;
    while (i < n && is_hex((unsigned char)s[i])) {
        if (i >= 8) {
            return fail(p, ERR_BODY); /* 9+ hex digits: at least 4 GiB */
        }
        unsigned char c = lower((unsigned char)s[i]);
        size = size * 16 + (uint64_t)(is_digit(c) ? c - '0' : c - 'a' + 10);
        i++;
    }
    if (i == 0) {
        return fail(p, "malformed chunk size");
    }
    size_t k = i;
    while (k < n && is_ows((unsigned char)s[k])) {
        k++;
    }
    if (k < n && s[k] != ';') {
        return fail(p, "malformed chunk size");
    }
    for (; k < n; k++) {
        if (!is_value_char((unsigned char)s[k])) {
            return fail(p, "malformed chunk extension");
        }
    }
    if (size == 0) {
        p->state = S_TRAILERS;
        return 0;
    }
    if (size > p->body_max - p->body_bytes) {
        return fail(p, ERR_BODY);
    }
    p->remaining = size;
    p->state = S_CHUNK_DATA;
    return 0;
}

/*
 * Adds bytes of in[*i..len) to the line buffer until a CRLF. Returns 1 when
 * a line is complete (in p->line, p->len bytes, CRLF removed), 0 when the
 * input ran out first, -1 on an error.
 */
static int take_line(stp_http_resp_t *p, const char *in, size_t len, size_t *i)
{
    int head = p->state == S_STATUS || p->state == S_FIELDS || p->state == S_TRAILERS;
    size_t cap = p->state == S_CHUNK_SIZE ? MAX_CHUNK_LINE : sizeof(p->line);

    while (*i < len) {
        unsigned char c = (unsigned char)in[(*i)++];
        if (head && ++p->header_bytes > STP_HTTP_MAX_HEADER_BYTES) {
            return fail(p, "response headers too large");
        }
        if (p->cr) {
            p->cr = 0;
            if (c != '\n') {
                return fail(p, "CR not followed by LF");
            }
            return 1;
        }
        if (c == '\r') {
            p->cr = 1;
            continue;
        }
        if (c == '\n') {
            return fail(p, "bare LF");
        }
        if (p->len >= cap) {
            return fail(p, "line too long");
        }
        p->line[p->len++] = (char)c;
    }
    return 0;
}

int stp_http_resp_feed(stp_http_resp_t *p, const char *in, size_t len, size_t *used,
                       const char **body, size_t *body_len)
{
    size_t i = 0;
    int rc = STP_HTTP_AGAIN;

    *used = 0;
    *body = NULL;
    *body_len = 0;
    if (p->state == S_ERROR) {
        return STP_HTTP_ERROR;
    }
    if (p->state == S_DONE) {
        return STP_HTTP_DONE; /* anything after it is left unconsumed */
    }
    while (i < len && rc == STP_HTTP_AGAIN) {
        switch (p->state) {
        case S_STATUS:
        case S_FIELDS:
        case S_TRAILERS:
        case S_CHUNK_SIZE: {
            int got = take_line(p, in, len, &i);
            if (got <= 0) {
                rc = got < 0 ? STP_HTTP_ERROR : STP_HTTP_AGAIN;
                break;
            }
            size_t n = p->len;
            p->len = 0;
            if (p->state == S_STATUS) {
                if (status_line(p, p->line, n) == 0) {
                    p->state = S_FIELDS;
                } else {
                    rc = STP_HTTP_ERROR;
                }
            } else if (p->state == S_CHUNK_SIZE) {
                rc = chunk_size_line(p, p->line, n) < 0 ? STP_HTTP_ERROR : STP_HTTP_AGAIN;
            } else if (n == 0 && p->state == S_FIELDS) {
                rc = headers_done(p);
            } else if (n == 0) {
                p->state = S_DONE; /* the empty line after the trailers */
                rc = STP_HTTP_DONE;
            } else if (field_line(p, p->line, n, p->state == S_TRAILERS) < 0) {
                rc = STP_HTTP_ERROR;
            }
            break;
        }
        case S_BODY_LENGTH:
        case S_CHUNK_DATA:
        case S_BODY_CLOSE: {
            size_t n = len - i;
            if (p->state != S_BODY_CLOSE && n > p->remaining) {
                n = (size_t)p->remaining;
            }
            /* Up to the cap first, then the error: the same events for any cut. */
            if (n > p->body_max - p->body_bytes) {
                n = p->body_max - p->body_bytes;
                if (n == 0) {
                    rc = fail(p, ERR_BODY);
                    break;
                }
            }
            *body = in + i;
            *body_len = n;
            i += n;
            p->body_bytes += n;
            if (p->state != S_BODY_CLOSE) {
                p->remaining -= n;
                if (p->remaining == 0) {
                    p->state = p->state == S_BODY_LENGTH ? S_DONE : S_CHUNK_CR;
                }
            }
            rc = STP_HTTP_BODY;
            break;
        }
        case S_CHUNK_CR:
            if (in[i++] != '\r') {
                rc = fail(p, "chunk data not followed by CRLF");
            } else {
                p->state = S_CHUNK_LF;
            }
            break;
        case S_CHUNK_LF:
            if (in[i++] != '\n') {
                rc = fail(p, "chunk data not followed by CRLF");
            } else {
                p->state = S_CHUNK_SIZE;
            }
            break;
        case S_DONE:
            rc = STP_HTTP_DONE;
            break;
        default:
            rc = fail(p, "internal error: bad parser state");
            break;
        }
    }
    *used = i;
    return rc;
}

int stp_http_resp_eof(stp_http_resp_t *p)
{
    switch (p->state) {
    case S_DONE:
        return STP_HTTP_DONE;
    case S_BODY_CLOSE:
        p->state = S_DONE;
        return STP_HTTP_DONE;
    case S_ERROR:
        return STP_HTTP_ERROR;
    case S_STATUS:
    case S_FIELDS:
        return fail(p, "connection closed before the end of the headers");
    default:
        return fail(p, "connection closed before the end of the body");
    }
}

const char *stp_http_resp_error(const stp_http_resp_t *p, char *buf, size_t len)
{
    if (len == 0) {
        return buf;
    }
    if (p->state != S_ERROR || p->err == NULL) {
        buf[0] = '\0';
    } else if (p->err == ERR_STATUS && p->status >= 300 && p->status < 400) {
        snprintf(buf, len, "HTTP status %d (redirects are not followed%s%s)", p->status,
                 p->location[0] ? "; Location: " : "", p->location);
    } else if (p->err == ERR_STATUS) {
        snprintf(buf, len, "HTTP status %d (only 200 is accepted)", p->status);
    } else if (p->err == ERR_TYPE) {
        snprintf(buf, len, "Content-Type '%s' is not text/plain", p->content_type);
    } else if (p->err == ERR_BODY) {
        snprintf(buf, len, "body over %zu bytes", p->body_max);
    } else {
        snprintf(buf, len, "%s", p->err);
    }
    return buf;
}
