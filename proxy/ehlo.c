/*
 * ehlo: EHLO reply rewriting as data (see header). Each keyword line is
 * classified once; the output is rebuilt from the kept lines.
 */
#include "proxy/ehlo.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *kw;
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

/* Classifies one keyword line; "AUTH=LOGIN" (obsolete form) counts as AUTH. */
static unsigned classify(const char *s, size_t len)
{
    size_t kl = 0;
    while (kl < len && s[kl] != ' ' && s[kl] != '=') {
        kl++;
    }
    for (size_t i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++) {
        if (strlen(keywords[i].kw) == kl && strncasecmp(s, keywords[i].kw, kl) == 0) {
            return keywords[i].bit;
        }
    }
    return STP_EHLO_OTHER;
}

unsigned stp_ehlo_caps(const stp_reply_t *r)
{
    unsigned caps = 0;
    for (size_t i = 1; i < r->nlines; i++) {
        size_t len;
        const char *t = stp_reply_text(r, i, &len);
        caps |= classify(t, len);
    }
    return caps;
}

unsigned long long stp_ehlo_size(const stp_reply_t *r)
{
    for (size_t i = 1; i < r->nlines; i++) {
        size_t len;
        const char *t = stp_reply_text(r, i, &len);
        if (classify(t, len) == STP_EHLO_SIZE && len > 5 && t[4] == ' ') {
            unsigned long long v = 0;
            for (size_t k = 5; k < len && t[k] >= '0' && t[k] <= '9'; k++) {
                if (v > (~0ull - 9) / 10) {
                    return 0;
                }
                v = v * 10 + (unsigned)(t[k] - '0');
            }
            return v;
        }
    }
    return 0;
}

static int put_line(char *out, size_t cap, size_t *o, int last, const char *t, size_t len)
{
    if (*o + 4 + len + 2 > cap) {
        return -1;
    }
    memcpy(out + *o, last ? "250 " : "250-", 4);
    memcpy(out + *o + 4, t, len);
    memcpy(out + *o + 4 + len, "\r\n", 2);
    *o += 4 + len + 2;
    return 0;
}

int stp_ehlo_rewrite(const stp_reply_t *r, const stp_ehlo_opts_t *opts, char *out, size_t cap,
                     size_t *out_len, unsigned *seen)
{
    size_t keep[STP_REPLY_MAX_LINES];
    size_t nkeep = 0, o = 0;
    unsigned caps = 0;
    int have_starttls = 0;

    if (r->code / 100 != 2 || r->nlines == 0) {
        return -1;
    }
    for (size_t i = 1; i < r->nlines; i++) {
        size_t len;
        const char *t = stp_reply_text(r, i, &len);
        unsigned bit = classify(t, len);
        caps |= bit;
        if ((bit & opts->drop) || (bit == STP_EHLO_OTHER && opts->drop_unknown)) {
            continue;
        }
        if (bit == STP_EHLO_STARTTLS) {
            if (have_starttls) {
                continue; /* never twice */
            }
            have_starttls = 1;
        }
        keep[nkeep++] = i;
    }
    int add = opts->add_starttls && !have_starttls;
    /* The rebuilt reply must stay within what a reply may hold, so that it
     * parses again (here and at the client): an absurdly long EHLO loses
     * its last keywords rather than our STARTTLS. */
    if (1 + nkeep + (size_t)add > STP_REPLY_MAX_LINES) {
        nkeep = STP_REPLY_MAX_LINES - 1 - (size_t)add;
    }

    size_t glen;
    const char *g = stp_reply_text(r, 0, &glen);
    if (opts->greeting) {
        g = opts->greeting;
        glen = strlen(g);
    }
    /* Same for bytes: keep the keyword lines that fit. */
    size_t budget = cap < STP_REPLY_MAX_BYTES ? cap : STP_REPLY_MAX_BYTES;
    size_t need = 4 + glen + 2 + (add ? 14 : 0);
    for (size_t k = 0; k < nkeep; k++) {
        size_t len;
        (void)stp_reply_text(r, keep[k], &len);
        if (need + 6 + len > budget) {
            nkeep = k;
            break;
        }
        need += 6 + len;
    }
    size_t total = nkeep + (size_t)add;
    if (put_line(out, cap, &o, total == 0, g, glen) < 0) {
        return -1;
    }
    for (size_t k = 0; k < nkeep; k++) {
        size_t len;
        const char *t = stp_reply_text(r, keep[k], &len);
        if (put_line(out, cap, &o, k + 1 == total, t, len) < 0) {
            return -1;
        }
    }
    if (add && put_line(out, cap, &o, 1, "STARTTLS", 8) < 0) {
        return -1;
    }
    *out_len = o;
    if (seen) {
        *seen = caps;
    }
    return 0;
}
