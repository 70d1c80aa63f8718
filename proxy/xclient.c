/*
 * xclient: the XCLIENT command and its xtext encoding (see xclient.h).
 */
#include "proxy/xclient.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

size_t stp_xtext_encode(char *out, size_t cap, const char *in, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        int plain = c >= '!' && c <= '~' && c != '+' && c != '=';
        size_t need = plain ? 1 : 3;
        if (o + need + 1 > cap) {
            if (cap) {
                out[0] = '\0';
            }
            return (size_t)-1;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (o + 1 > cap) {
        return (size_t)-1;
    }
    out[o] = '\0';
    return o;
}

size_t stp_xclient_format(char *out, size_t cap, const struct sockaddr *client, const char *helo,
                          int esmtp)
{
    char ip[INET6_ADDRSTRLEN], addr[INET6_ADDRSTRLEN + 8], h[3 * 255 + 1];
    unsigned port = 0;

    if (client->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)client;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        snprintf(addr, sizeof(addr), "%s", ip);
        port = ntohs(s->sin_port);
    } else if (client->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)client;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        snprintf(addr, sizeof(addr), "IPV6:%s", ip);
        port = ntohs(s->sin6_port);
    } else {
        snprintf(addr, sizeof(addr), "[UNAVAILABLE]");
    }
    if (helo == NULL || helo[0] == '\0') {
        snprintf(h, sizeof(h), "[UNAVAILABLE]");
    } else if (stp_xtext_encode(h, sizeof(h), helo, strlen(helo)) == (size_t)-1) {
        snprintf(h, sizeof(h), "[UNAVAILABLE]"); /* longer than any valid name */
    }
    int n = snprintf(out, cap, "XCLIENT ADDR=%s PORT=%u HELO=%s PROTO=%s", addr, port, h,
                     esmtp ? "ESMTP" : "SMTP");
    if (n < 0 || (size_t)n >= cap) {
        if (cap) {
            out[0] = '\0';
        }
        return 0;
    }
    return (size_t)n;
}

/* Whether the space-separated list p[0..n) holds `word` (any case). */
static int has_word(const char *p, size_t n, const char *word)
{
    size_t wl = strlen(word), i = 0;
    while (i < n) {
        while (i < n && p[i] == ' ') {
            i++;
        }
        size_t start = i;
        while (i < n && p[i] != ' ') {
            i++;
        }
        if (i - start == wl && strncasecmp(p + start, word, wl) == 0) {
            return 1;
        }
    }
    return 0;
}

int stp_xclient_offered(const stp_reply_t *r)
{
    static const char *const needed[] = {"ADDR", "PORT", "HELO", "PROTO"};
    if (r->code / 100 != 2) {
        return 0;
    }
    /* line 0 is the greeting ("250-host"), the keywords follow */
    for (size_t i = 1; i < r->nlines; i++) {
        size_t len;
        const char *t = stp_reply_text(r, i, &len);
        if (len < 7 || strncasecmp(t, "XCLIENT", 7) != 0 || (len > 7 && t[7] != ' ')) {
            continue;
        }
        size_t k = 0;
        while (k < sizeof(needed) / sizeof(needed[0]) && has_word(t + 7, len - 7, needed[k])) {
            k++;
        }
        return k == sizeof(needed) / sizeof(needed[0]);
    }
    return 0;
}
