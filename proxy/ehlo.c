/*
 * ehlo: rewrites a server's EHLO reply as data (see ehlo.h). The parsed
 * reply is read line by line, each keyword line is classified once, a keep
 * list is computed from the options, and a new reply is written from
 * scratch. The server's bytes are never patched in place, so no option can
 * leave half a line or a stale separator behind.
 *
 * Decisions where the header leaves room (the safest reading was taken):
 *  - A keyword is recognised generously: leading blanks are skipped and it
 *    ends at the first byte that cannot be part of an EHLO keyword (RFC 5321:
 *    ALPHA / DIGIT / "-"). So "AUTH=LOGIN" is AUTH, and "STARTTLS\t" or
 *    " XCLIENT" are dropped like their plain forms: a lenient client must
 *    not find a capability the proxy meant to hide.
 *  - The rebuilt reply always parses again as one reply within the limits
 *    of smtp_reply.h, here and at the client:
 *      - a keyword line whose rebuilt form would pass STP_REPLY_MAX_LINE
 *        (possible only for a line that ended in a bare LF) is dropped;
 *      - the greeting is cut at a CR or LF (only a caller's `greeting` can
 *        hold one) and to the longest text a line may carry;
 *      - if the lines do not fit STP_REPLY_MAX_LINES / _MAX_BYTES, the
 *        keyword lines that do not fit are left out, in order, but never
 *        STARTTLS: the one kept or added is reserved room first.
 *  - The reply is rebuilt with code 250 whatever 2xx the server used.
 *  - `seen` is filled for any 2xx reply, even when `out` is too small.
 *  - The AUTH line is kept or dropped as a whole (no per-mechanism filter).
 */
#include "proxy/ehlo.h"

#include <stdio.h>
#include <string.h>

#define LINE_OVERHEAD 6 /* "250-" and CRLF */
#define MAX_TEXT (STP_REPLY_MAX_LINE - LINE_OVERHEAD)

/* The greeting and a STARTTLS line, both at most a full line, always fit. */
_Static_assert(STP_REPLY_MAX_LINES >= 2 && 2 * STP_REPLY_MAX_LINE <= STP_REPLY_MAX_BYTES,
               "reply limits too small for a rebuilt EHLO reply");

static const struct {
    const char *kw; /* upper case */
    unsigned bit;
} keywords[] = {
    {"STARTTLS", STP_EHLO_STARTTLS},
    {"AUTH", STP_EHLO_AUTH},
    {"CHUNKING", STP_EHLO_CHUNKING},
    {"BINARYMIME", STP_EHLO_BINARYMIME},
    {"XCLIENT", STP_EHLO_XCLIENT},
    {"XFORWARD", STP_EHLO_XFORWARD},
    {"PIPELINING", STP_EHLO_PIPELINING},
    {"SIZE", STP_EHLO_SIZE},
    {"8BITMIME", STP_EHLO_8BITMIME},
    {"SMTPUTF8", STP_EHLO_SMTPUTF8},
    {"DSN", STP_EHLO_DSN},
    {"ENHANCEDSTATUSCODES", STP_EHLO_ENHANCEDSTATUSCODES},
    {"ETRN", STP_EHLO_ETRN},
    {"ATRN", STP_EHLO_ATRN},
    {"TURN", STP_EHLO_ATRN},
    {"REQUIRETLS", STP_EHLO_REQUIRETLS},
};

static int is_keyword_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* Finds the keyword of an EHLO line: sets *kw and *kwlen, returns the offset
 * just after it. */
static size_t keyword(const char *s, size_t len, const char **kw, size_t *kwlen)
{
    size_t i = 0, start;
    while (i < len && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    start = i;
    while (i < len && is_keyword_char(s[i])) {
        i++;
    }
    *kw = s + start;
    *kwlen = i - start;
    return i;
}

static int keyword_is(const char *kw, size_t kwlen, const char *upper)
{
    if (strlen(upper) != kwlen) {
        return 0;
    }
    for (size_t i = 0; i < kwlen; i++) {
        char c = kw[i];
        if (c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        if (c != upper[i]) {
            return 0;
        }
    }
    return 1;
}

/* The STP_EHLO_* bit of one keyword line (STP_EHLO_OTHER if unknown). */
static unsigned classify(const char *s, size_t len)
{
    const char *kw;
    size_t kwlen;
    (void)keyword(s, len, &kw, &kwlen);
    for (size_t i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++) {
        if (keyword_is(kw, kwlen, keywords[i].kw)) {
            return keywords[i].bit;
        }
    }
    return STP_EHLO_OTHER;
}

unsigned stp_ehlo_caps(const stp_reply_t *r)
{
    unsigned caps = 0;
    /* Line 0 is the greeting ("mx.example Hello"), never a keyword. */
    for (size_t i = 1; i < r->nlines; i++) {
        size_t len;
        const char *t = stp_reply_text(r, i, &len);
        caps |= classify(t, len);
    }
    return caps;
}

/*
 * "SIZE" [SP number] (RFC 1870). The first SIZE line counts. A missing or
 * zero number means no limit; so does a number that does not fit, or one
 * followed by anything but blanks, since the proxy must not invent a limit
 * the server did not clearly state.
 */
unsigned long long stp_ehlo_size(const stp_reply_t *r)
{
    for (size_t i = 1; i < r->nlines; i++) {
        size_t len, k;
        const char *t = stp_reply_text(r, i, &len);
        const char *kw;
        size_t kwlen;
        unsigned long long v = 0;

        k = keyword(t, len, &kw, &kwlen);
        if (!keyword_is(kw, kwlen, "SIZE")) {
            continue;
        }
        if (k >= len || t[k] != ' ') {
            return 0;
        }
        while (k < len && t[k] == ' ') {
            k++;
        }
        for (; k < len && t[k] >= '0' && t[k] <= '9'; k++) {
            unsigned d = (unsigned)(t[k] - '0');
            if (v > (~0ull - d) / 10) {
                return 0;
            }
            v = v * 10 + d;
        }
        while (k < len && (t[k] == ' ' || t[k] == '\t')) {
            k++;
        }
        return k == len ? v : 0;
    }
    return 0;
}

/* Appends "250-text\r\n" (or "250 " for the last line) if it fits in cap. */
static int put_line(char *out, size_t cap, size_t *o, int last, const char *t, size_t len)
{
    if (cap - *o < LINE_OVERHEAD || cap - *o - LINE_OVERHEAD < len) {
        return -1;
    }
    memcpy(out + *o, last ? "250 " : "250-", 4);
    memcpy(out + *o + 4, t, len);
    memcpy(out + *o + 4 + len, "\r\n", 2);
    *o += len + LINE_OVERHEAD;
    return 0;
}

int stp_ehlo_rewrite(const stp_reply_t *r, const stp_ehlo_opts_t *opts, char *out, size_t cap,
                     size_t *out_len, unsigned *seen)
{
    char size_buf[32];
    const char *size = NULL;
    size_t size_len = 0;
    /* the kept keyword lines as they are rebuilt (a SIZE line may be ours) */
    const char *kt[STP_REPLY_MAX_LINES];
    size_t kl[STP_REPLY_MAX_LINES];
    size_t nkeep = 0, starttls_k = (size_t)-1;
    unsigned caps = 0;
    const char *g;
    size_t glen, o = 0;

    if (seen != NULL) {
        *seen = 0;
    }
    if (r->nlines == 0 || r->nlines > STP_REPLY_MAX_LINES || r->code / 100 != 2) {
        return -1;
    }

    if (opts->size_limit != 0) {
        unsigned long long v = stp_ehlo_size(r);
        if (v == 0 || v > opts->size_limit) {
            v = opts->size_limit;
        }
        size_len = (size_t)snprintf(size_buf, sizeof(size_buf), "SIZE %llu", v);
        size = size_buf;
    }

    /* 1. Which keyword lines survive the options (the proxy's own SIZE
     * first, when it adds one). */
    if (size != NULL && opts->add_size && (stp_ehlo_caps(r) & STP_EHLO_SIZE) == 0 &&
        (opts->drop & STP_EHLO_SIZE) == 0) {
        kt[nkeep] = size;
        kl[nkeep++] = size_len;
    }
    for (size_t i = 1; i < r->nlines; i++) {
        size_t len;
        const char *t = stp_reply_text(r, i, &len);
        unsigned bit = classify(t, len);

        caps |= bit;
        if ((bit & opts->drop) != 0 || (bit == STP_EHLO_OTHER && opts->drop_unknown)) {
            continue;
        }
        if (bit == STP_EHLO_SIZE && size != NULL) {
            t = size;
            len = size_len;
        }
        if (len > MAX_TEXT) {
            continue; /* would not parse once rebuilt with CRLF */
        }
        if (bit == STP_EHLO_STARTTLS) {
            if (starttls_k != (size_t)-1) {
                continue; /* offered once, never twice */
            }
            starttls_k = nkeep;
        }
        kt[nkeep] = t;
        kl[nkeep++] = len;
    }
    if (seen != NULL) {
        *seen = caps;
    }
    int add = opts->add_starttls && starttls_k == (size_t)-1;

    /* 2. The greeting line. */
    if (opts->greeting != NULL) {
        g = opts->greeting;
        glen = strcspn(g, "\r\n");
    } else {
        g = stp_reply_text(r, 0, &glen);
    }
    if (glen > MAX_TEXT) {
        glen = MAX_TEXT;
    }

    /* 3. What fits in one reply. Room for the greeting and for STARTTLS
     * (kept or added) is taken first (it always fits, see the static
     * assertion); the other kept lines follow in the server's order while
     * they fit. */
    size_t lines_left = STP_REPLY_MAX_LINES - 1;
    size_t bytes_left = STP_REPLY_MAX_BYTES - (glen + LINE_OVERHEAD);
    if (add) {
        lines_left--;
        bytes_left -= 8 + LINE_OVERHEAD;
    } else if (starttls_k != (size_t)-1) {
        lines_left--;
        bytes_left -= kl[starttls_k] + LINE_OVERHEAD;
    }
    size_t nfit = 0;
    for (size_t k = 0; k < nkeep; k++) {
        if (k != starttls_k) {
            if (lines_left == 0 || kl[k] + LINE_OVERHEAD > bytes_left) {
                continue;
            }
            lines_left--;
            bytes_left -= kl[k] + LINE_OVERHEAD;
        }
        kt[nfit] = kt[k];
        kl[nfit++] = kl[k];
    }

    /* 4. Rebuild. */
    size_t total = nfit + (size_t)add; /* lines after the greeting */
    if (put_line(out, cap, &o, total == 0, g, glen) < 0) {
        return -1;
    }
    for (size_t k = 0; k < nfit; k++) {
        if (put_line(out, cap, &o, k + 1 == total, kt[k], kl[k]) < 0) {
            return -1;
        }
    }
    if (add && put_line(out, cap, &o, 1, "STARTTLS", 8) < 0) {
        return -1;
    }
    *out_len = o;
    return 0;
}
