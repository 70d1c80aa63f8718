/*
 * proxy_proto: a resumable parser for the PROXY protocol header (versions 1
 * and 2, as haproxy and cloud load balancers send it) that a trusted load
 * balancer puts in front of the client's bytes. It does no I/O: feed it the
 * first bytes of a connection until it says DONE or ERROR. It never consumes
 * a byte past the header, so what follows (the client's SMTP) is left for
 * the session.
 *
 * Version 1 is one text line "PROXY TCP4|TCP6|UNKNOWN ...\r\n" of at most
 * 107 bytes. Version 2 is a 12-byte binary signature, a version/command
 * byte, a family/transport byte, a 16-bit length, the addresses and then
 * TLVs (skipped, but each one's length must fit the header exactly). A
 * version 2 header is capped at STP_PROXY_V2_MAX bytes in all.
 *
 * Results: the source (the real client) and destination addresses (an
 * IPv4-mapped IPv6 address, ::ffff:a.b.c.d, given as the IPv4 address it
 * is, each on its own: the two families may then differ), or
 * `local` = 1 when the header carries none (v1 UNKNOWN, v2 LOCAL, v2
 * UNSPEC/UNIX): the session then keeps the socket's own peer address.
 */
#ifndef STP_PROXY_PROTO_H
#define STP_PROXY_PROTO_H

#include <stddef.h>
#include <sys/socket.h>

#define STP_PROXY_V1_MAX 107
#define STP_PROXY_V2_MAX 2048

enum {
    STP_PROXY_AGAIN = 0,  /* all input consumed, the header is not complete */
    STP_PROXY_DONE = 1,   /* the header is complete; results are set */
    STP_PROXY_ERROR = -1, /* not a valid header: close the connection */
};

typedef struct {
    /* results, after DONE */
    int version; /* 1 or 2 */
    int local;   /* 1: no addresses in the header (use the socket's) */
    struct sockaddr_storage src, dst;
    /* after ERROR: a static string saying why */
    const char *error;
    /* private */
    size_t len;  /* bytes in buf */
    size_t need; /* v2: total header length once known, else 0 */
    int state;   /* 0 parsing, 1 done, -1 error */
    unsigned char buf[STP_PROXY_V2_MAX];
} stp_proxy_t;

void stp_proxy_init(stp_proxy_t *p);

/*
 * Feeds up to n bytes. *consumed is set to the bytes used: all of them on
 * AGAIN; on DONE only the header's, and the rest belongs to the session.
 * After DONE or ERROR the parser stays in that state (feeding more returns
 * the same result and consumes nothing).
 */
int stp_proxy_feed(stp_proxy_t *p, const char *data, size_t n, size_t *consumed);

#endif
