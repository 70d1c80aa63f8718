/*
 * cidr: address/prefix access lists ("127.0.0.1/32, ::1/128"). Pure: parse a
 * text, match an address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match
 * IPv4 entries, since a dual-stack listener reports IPv4 peers that way.
 */
#ifndef STP_CIDR_H
#define STP_CIDR_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct {
    int family;           /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;           /* 0..32 or 0..128 */
} stp_cidr_t;

/* "10.0.0.0/8", "::1/128", "192.0.2.1" (= /32). Returns 0 or -1. */
int stp_cidr_parse(const char *s, stp_cidr_t *out);

/* 1 if `sa` (AF_INET or AF_INET6) is inside `c`. */
int stp_cidr_match(const stp_cidr_t *c, const struct sockaddr *sa);

/* 1 if `sa` matches any of list[0..n). */
int stp_cidr_list_match(const stp_cidr_t *list, size_t n, const struct sockaddr *sa);

#endif
