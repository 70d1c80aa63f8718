/*
 * fuzz_ehlo: libFuzzer target for EHLO rewriting.
 *
 * Input: byte 0 holds options (bit 0 drop_unknown, bit 1 add_starttls,
 * bit 2 a replacement greeting, bit 3 drop OTHER too, bit 4 a size limit,
 * bit 5 add_size), bytes 1-2 the drop
 * mask over the known keyword bits, byte 3 how the reply is split; the rest
 * is the server's reply.
 * Checked, for any reply the parser accepts: a 2xx rewrites (never fails
 * with a large enough buffer), anything else is refused; the result is the
 * same however the reply was split; it parses again as exactly one 250
 * reply within the limits, with CRLF only; STARTTLS appears at most once,
 * always when added, never when dropped and not added; no dropped keyword
 * survives; every keyword line comes from the server (nothing invented but
 * STARTTLS, and SIZE with add_size); at most one SIZE line, added to a
 * short reply without one when asked; `seen` equals stp_ehlo_caps().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/ehlo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char greeting[] = "proxy.example ESMTP";

/* Parses d[0..n) fed in two pieces cut at `cut` (0: whole). Returns 1 if
 * the first reply was complete. */
static int parse(stp_reply_parser_t *p, const uint8_t *d, size_t n, size_t cut)
{
    size_t pos = 0;
    stp_reply_parser_init(p);
    while (pos < n) {
        size_t avail = n - pos, used = 0;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        }
        int rc = stp_reply_feed(p, (const char *)d + pos, avail, &used);
        pos += used;
        if (rc == STP_REPLY_DONE) {
            return 1;
        }
        if (rc == STP_REPLY_ERROR) {
            return 0;
        }
    }
    return 0;
}

/* 1 if text t[0..len) is the text of some keyword line of r. */
static int from_server(const stp_reply_t *r, const char *t, size_t len)
{
    for (size_t i = 1; i < r->nlines; i++) {
        size_t l;
        const char *s = stp_reply_text(r, i, &l);
        if (l == len && memcmp(s, t, len) == 0) {
            return 1;
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static stp_reply_parser_t p, p2, q;
    static char out[STP_REPLY_MAX_BYTES + 64], out2[STP_REPLY_MAX_BYTES + 64];
    size_t len = 0, len2 = 0, used;
    unsigned seen = 0, seen2 = 0;

    if (size < 4) {
        return 0;
    }
    const uint8_t *d = data + 4;
    size_t n = size - 4;
    if (!parse(&p, d, n, 0)) {
        return 0;
    }
    stp_ehlo_opts_t o = {
        .drop = ((unsigned)data[1] | (unsigned)data[2] << 8) & 0x7fffu,
        .drop_unknown = data[0] & 1,
        .add_starttls = (data[0] >> 1) & 1,
        .greeting = data[0] & 4 ? greeting : NULL,
        .size_limit = data[0] & 16 ? 1000ull * data[3] + 1 : 0,
        .add_size = (data[0] >> 5) & 1,
    };
    if (data[0] & 8) {
        o.drop |= STP_EHLO_OTHER;
    }
    int rc = stp_ehlo_rewrite(&p.reply, &o, out, sizeof(out), &len, &seen);
    if (p.reply.code / 100 != 2) {
        if (rc != -1) {
            abort();
        }
        return 0;
    }
    if (rc != 0 || len > STP_REPLY_MAX_BYTES || seen != stp_ehlo_caps(&p.reply)) {
        abort();
    }

    /* the same reply, split: the same rewrite */
    if (!parse(&p2, d, n, n ? data[3] % n : 0) ||
        stp_ehlo_rewrite(&p2.reply, &o, out2, sizeof(out2), &len2, &seen2) != 0 || len2 != len ||
        memcmp(out, out2, len) != 0 || seen2 != seen) {
        abort();
    }

    /* one well-formed 250 reply */
    stp_reply_parser_init(&q);
    if (stp_reply_feed(&q, out, len, &used) != STP_REPLY_DONE || used != len ||
        q.reply.code != 250 || q.reply.bare_lf) {
        abort();
    }
    if (o.greeting != NULL) {
        size_t gl;
        const char *g = stp_reply_text(&q.reply, 0, &gl);
        if (gl != strlen(greeting) || memcmp(g, greeting, gl) != 0) {
            abort();
        }
    }
    unsigned caps = stp_ehlo_caps(&q.reply);
    size_t starttls = 0, sizes = 0;
    int server_size = (stp_ehlo_caps(&p.reply) & STP_EHLO_SIZE) != 0;
    for (size_t i = 1; i < q.reply.nlines; i++) {
        size_t tl;
        const char *t = stp_reply_text(&q.reply, i, &tl);
        unsigned bit;
        static stp_reply_t one; /* the line alone, to classify it */
        one.code = 250;
        one.nlines = 2;
        one.text_off[0] = 0;
        one.text_len[0] = 0;
        one.text_off[1] = 0;
        one.text_len[1] = tl;
        memcpy(one.raw, t, tl);
        one.raw_len = tl;
        bit = stp_ehlo_caps(&one);
        starttls += bit == STP_EHLO_STARTTLS;
        sizes += bit == STP_EHLO_SIZE;
        if (bit == STP_EHLO_SIZE && o.size_limit != 0) {
            if (!server_size && !o.add_size) {
                abort(); /* invented without being asked */
            }
            /* rebuilt: "SIZE n", n the smaller of the limit and the server's */
            unsigned long long srv = stp_ehlo_size(&p.reply);
            unsigned long long want = srv != 0 && srv < o.size_limit ? srv : o.size_limit;
            char line[32];
            int ll = snprintf(line, sizeof(line), "SIZE %llu", want);
            if ((size_t)ll != tl || memcmp(t, line, tl) != 0) {
                abort();
            }
        } else if (!from_server(&p.reply, t, tl) && !(tl == 8 && memcmp(t, "STARTTLS", 8) == 0)) {
            abort(); /* a line the server did not send */
        }
    }
    int want_added = o.add_size && o.size_limit != 0 && !server_size &&
                     !(o.drop & STP_EHLO_SIZE) && p.reply.nlines <= 2;
    if (sizes > (server_size ? p.reply.nlines : 1) || (want_added && sizes != 1) ||
        (o.add_size && !server_size && sizes > 1)) {
        abort();
    }
    if (starttls > 1 || (o.add_starttls && starttls != 1) ||
        ((o.drop & STP_EHLO_STARTTLS) && !o.add_starttls && starttls != 0)) {
        abort();
    }
    if ((caps & o.drop & ~(unsigned)STP_EHLO_STARTTLS) != 0 ||
        (o.drop_unknown && (caps & STP_EHLO_OTHER))) {
        abort();
    }
    (void)stp_ehlo_size(&p.reply);
    return 0;
}
