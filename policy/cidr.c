/*
 * cidr: address/prefix entries and the match against a peer address. Pure:
 * no allocation, no I/O. An IPv4 peer seen through a dual-stack socket
 * (::ffff:a.b.c.d) matches IPv4 entries, and an IPv4 peer matches an entry
 * written in the mapped form, so the same list works whatever the family of
 * the listening socket.
 */
#include "policy/cidr.h"

#include <arpa/inet.h>
#include <string.h>

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Clears the bits after `prefix` so that matching compares whole bytes. */
static void mask_host_bits(unsigned char *addr, int len, int prefix)
{
    for (int i = 0; i < len; i++) {
        int keep = prefix - i * 8;
        if (keep >= 8) {
            continue;
        }
        addr[i] &= keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
    }
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, int prefix)
{
    int whole = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, (size_t)whole) != 0) {
        return 0;
    }
    if (rest == 0) {
        return 1;
    }
    unsigned char m = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & m) == (b[whole] & m);
}

int stp_cidr_parse(const char *s, stp_cidr_t *out)
{
    char addr[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    stp_cidr_t c;

    memset(&c, 0, sizeof(c));
    if (alen == 0 || alen >= sizeof(addr)) {
        return -1;
    }
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    if (inet_pton(AF_INET, addr, c.addr) == 1) {
        c.family = AF_INET;
        c.prefix = 32;
    } else if (inet_pton(AF_INET6, addr, c.addr) == 1) {
        c.family = AF_INET6;
        c.prefix = 128;
    } else {
        return -1;
    }
    if (slash) {
        /* Decimal digits only: no sign, no space, at most three of them. */
        const char *p = slash + 1;
        int n = 0, digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 4; p++, digits++) {
            n = n * 10 + (*p - '0');
        }
        if (digits == 0 || digits > 3 || *p != '\0' || n > c.prefix) {
            return -1;
        }
        c.prefix = n;
    }
    mask_host_bits(c.addr, c.family == AF_INET ? 4 : 16, c.prefix);
    *out = c;
    return 0;
}

int stp_cidr_match(const stp_cidr_t *c, const struct sockaddr *sa)
{
    unsigned char peer[16];

    if (c == NULL || sa == NULL) {
        return 0;
    }
    if (sa->sa_family == AF_INET) {
        const unsigned char *a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (c->family == AF_INET) {
            return prefix_equal(c->addr, a, c->prefix);
        }
        /* An IPv6 entry can only cover an IPv4 peer in the mapped range. */
        memcpy(peer, v4_mapped_prefix, 12);
        memcpy(peer + 12, a, 4);
        return c->family == AF_INET6 && prefix_equal(c->addr, peer, c->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(peer, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        if (c->family == AF_INET6) {
            return prefix_equal(c->addr, peer, c->prefix);
        }
        if (c->family == AF_INET && memcmp(peer, v4_mapped_prefix, 12) == 0) {
            return prefix_equal(c->addr, peer + 12, c->prefix);
        }
    }
    return 0;
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
