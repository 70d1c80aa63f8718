/*
 * cidr: parse and match address/prefix lists (see header).
 */
#include "policy/cidr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

int stp_cidr_parse(const char *s, stp_cidr_t *out)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);

    if (alen == 0 || alen >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    memset(out, 0, sizeof(*out));
    int max;
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->prefix = max;
    if (slash) {
        const char *p = slash + 1;
        char *end;
        if (*p < '0' || *p > '9') {
            return -1;
        }
        long v = strtol(p, &end, 10);
        if (*end != '\0' || v < 0 || v > max) {
            return -1;
        }
        out->prefix = (int)v;
    }
    return 0;
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    int bytes = bits / 8, rem = bits % 8;
    if (memcmp(a, b, (size_t)bytes) != 0) {
        return 0;
    }
    if (rem == 0) {
        return 1;
    }
    unsigned char mask = (unsigned char)(0xff << (8 - rem));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

int stp_cidr_match(const stp_cidr_t *c, const struct sockaddr *sa)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *a;
    int family;

    if (sa->sa_family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        family = AF_INET6;
        if (c->family == AF_INET && memcmp(a, mapped, 12) == 0) {
            a += 12;
            family = AF_INET;
        }
    } else {
        return 0;
    }
    return family == c->family && prefix_equal(a, c->addr, c->prefix);
}

int stp_cidr_list_match(const stp_cidr_t *list, size_t n, const struct sockaddr *sa)
{
    for (size_t i = 0; i < n; i++) {
        if (stp_cidr_match(&list[i], sa)) {
            return 1;
        }
    }
    return 0;
}
