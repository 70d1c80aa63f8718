/*
 * fuzz_cidr: libFuzzer target for the access-list entry parser
 * (policy/cidr.c: "10.0.0.0/8", "::1/128", "192.0.2.1").
 *
 * Input: the text of one entry. Checked: a parsed entry has a family and a
 * prefix in range and no host bits set beyond its prefix that change what it
 * matches: the entry's own network address matches it, and so does every
 * address that agrees with it on the prefix's bits (the last address of the
 * network is tried); an address differing in a bit inside the prefix does
 * not; an IPv4 entry matches the IPv4-mapped form of its address too.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/cidr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sockaddr_storage addr(int family, const unsigned char *b)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, b, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, b, 16);
    }
    return ss;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[128];
    if (size >= sizeof(text) || memchr(data, '\0', size)) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    stp_cidr_t c;
    memset(&c, 0xa5, sizeof(c));
    if (stp_cidr_parse(text, &c) != 0) {
        return 0;
    }
    int bits = c.family == AF_INET ? 32 : c.family == AF_INET6 ? 128 : -1;
    if (bits < 0 || c.prefix < 0 || c.prefix > bits) {
        abort();
    }
    size_t len = (size_t)bits / 8;
    unsigned char net[16], last[16], outside[16];
    memcpy(net, c.addr, len);
    for (int i = c.prefix; i < bits; i++) { /* the network's first address */
        net[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
    }
    memcpy(last, net, len);
    for (int i = c.prefix; i < bits; i++) {
        last[i / 8] |= (unsigned char)(0x80 >> (i % 8));
    }
    struct sockaddr_storage a = addr(c.family, net), z = addr(c.family, last);
    if (!stp_cidr_match(&c, (struct sockaddr *)&a) || !stp_cidr_match(&c, (struct sockaddr *)&z)) {
        abort();
    }
    if (c.prefix > 0) {
        memcpy(outside, net, len);
        int i = c.prefix - 1;
        outside[i / 8] ^= (unsigned char)(0x80 >> (i % 8));
        struct sockaddr_storage o = addr(c.family, outside);
        if (stp_cidr_match(&c, (struct sockaddr *)&o)) {
            abort();
        }
    }
    if (c.family == AF_INET) {
        unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(mapped + 12, net, 4);
        struct sockaddr_storage m = addr(AF_INET6, mapped);
        if (!stp_cidr_match(&c, (struct sockaddr *)&m)) {
            abort();
        }
    }
    return 0;
}
