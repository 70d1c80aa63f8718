/*
 * fuzz_xclient: libFuzzer target for proxy/xclient.c: the check of a
 * backend's EHLO reply for XCLIENT (stp_xclient_offered), and the XCLIENT
 * line built from a client's HELO name and address (stp_xclient_format,
 * stp_xtext_encode).
 *
 * Input: byte 0 picks the address family and ESMTP, bytes 1-16 the client's
 * address, then HELO-NAME '\n' EHLO-REPLY. Checked: an offer is only ever
 * found in a 2xx reply with an XCLIENT keyword line, whatever the case of
 * the reply; the formatted line starts "XCLIENT ADDR=", holds nothing
 * outside '!'..'~' but single spaces (so no CR or LF a backend could take
 * for a second command), names HELO exactly once, and its HELO value
 * decodes (xtext) back to the name, or is [UNAVAILABLE] for an empty one;
 * xtext output never holds '+' or '=' but as an escape.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_reply.h"
#include "proxy/xclient.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes xtext in[0..n) into out; -1 when it is not well-formed. */
static long xtext_decode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '+') {
            if (i + 2 >= n) {
                return -1;
            }
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (in[i] == '=' || in[i] < '!' || in[i] > '~') {
            return -1;
        } else {
            out[o++] = in[i];
        }
    }
    return (long)o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 17) {
        return 0;
    }
    int v6 = data[0] & 1, esmtp = (data[0] >> 1) & 1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, data + 1, 16);
        a->sin6_port = htons((uint16_t)(data[0] << 4));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, data + 1, 4);
        a->sin_port = htons((uint16_t)(data[5] << 8 | data[6]));
    }
    const uint8_t *rest = data + 17;
    size_t n = size - 17;
    const uint8_t *nl = memchr(rest, '\n', n);
    size_t hlen = nl ? (size_t)(nl - rest) : n;
    char helo[256];
    if (hlen >= sizeof(helo) || memchr(rest, '\0', hlen)) {
        return 0;
    }
    memcpy(helo, rest, hlen);
    helo[hlen] = '\0';

    /* the line */
    char line[1200];
    size_t len = stp_xclient_format(line, sizeof(line), (struct sockaddr *)&ss, helo, esmtp);
    if (len == 0) {
        if (line[0] != '\0') {
            abort();
        }
    } else {
        if (len != strlen(line) || strncmp(line, "XCLIENT ADDR=", 13) != 0) {
            abort();
        }
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)line[i];
            if (!(c == ' ' && i > 0 && line[i - 1] != ' ') && (c < '!' || c > '~')) {
                abort();
            }
        }
        const char *h = strstr(line, " HELO=");
        if (h == NULL || strstr(h + 1, " HELO=") != NULL) {
            abort();
        }
        h += 6;
        const char *end = strchr(h, ' ');
        size_t vlen = end ? (size_t)(end - h) : strlen(h);
        char dec[800];
        long d = xtext_decode(h, vlen, dec);
        if (hlen == 0) {
            if (vlen != 13 || memcmp(h, "[UNAVAILABLE]", 13) != 0) {
                abort();
            }
        } else if (!(vlen == 13 && memcmp(h, "[UNAVAILABLE]", 13) == 0) &&
                   (d != (long)hlen || memcmp(dec, helo, hlen) != 0)) {
            abort();
        }
    }

    /* the backend's EHLO reply */
    if (nl != NULL) {
        static stp_reply_parser_t p;
        stp_reply_parser_init(&p);
        size_t used = 0;
        size_t rn = n - hlen - 1;
        if (stp_reply_feed(&p, (const char *)nl + 1, rn, &used) == STP_REPLY_DONE) {
            const stp_reply_t *r = &p.reply;
            int offered = stp_xclient_offered(r);
            if (offered && r->code / 100 != 2) {
                abort();
            }
            int keyword = 0;
            for (size_t i = 1; i < r->nlines; i++) {
                size_t tl;
                const char *t = stp_reply_text(r, i, &tl);
                keyword |= tl >= 7 && strncasecmp(t, "XCLIENT", 7) == 0;
            }
            if (offered && !keyword) {
                abort();
            }
        }
    }
    return 0;
}
