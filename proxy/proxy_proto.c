/*
 * proxy_proto: the PROXY protocol header parser (see proxy_proto.h).
 *
 * Bytes are taken one at a time into a fixed buffer so that the parser
 * never reads past the header: the first byte tells the version ('P' for
 * the v1 text line, CR for the v2 signature), a wrong prefix is an error as
 * soon as it is seen, and the complete header is then decoded in one place.
 * A load balancer sends the header alone in front of the client's bytes, so
 * being strict costs nothing and leaves no room for ambiguity.
 */
#include "proxy/proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_prefix[] = "PROXY ";

void stp_proxy_init(stp_proxy_t *p)
{
    memset(p, 0, sizeof(*p));
}

static int fail(stp_proxy_t *p, const char *why)
{
    p->state = -1;
    p->error = why;
    return STP_PROXY_ERROR;
}

/* A decimal port: 0..65535, digits only, no leading zero. */
static int parse_port(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_addr(int family, const char *s, size_t n, struct sockaddr_storage *ss)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        return inet_pton(AF_INET, tmp, &sin->sin_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    return inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1 ? 0 : -1;
}

static void set_port(struct sockaddr_storage *ss, unsigned port)
{
    if (ss->ss_family == AF_INET) {
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    } else {
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    }
}

/* "PROXY TCP4 SRC DST SPORT DPORT\r\n", single spaces, or "PROXY UNKNOWN...". */
static int decode_v1(stp_proxy_t *p)
{
    const char *line = (const char *)p->buf + 6;
    size_t n = p->len - 6 - 2; /* without the prefix and CRLF */
    const char *field[5];
    size_t flen[5];
    size_t nf = 0, start = 0;

    p->version = 1;
    if (n >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (n == 7 || line[7] == ' ')) {
        /* The rest is to be ignored (spec): the sender could not say. */
        p->local = 1;
        return STP_PROXY_DONE;
    }
    for (size_t i = 0; i <= n; i++) {
        if (i == n || line[i] == ' ') {
            if (nf == 5) {
                return fail(p, "PROXY v1: too many fields");
            }
            field[nf] = line + start;
            flen[nf] = i - start;
            if (flen[nf] == 0) {
                return fail(p, "PROXY v1: empty field");
            }
            nf++;
            start = i + 1;
        } else if ((unsigned char)line[i] < 0x21 || (unsigned char)line[i] > 0x7e) {
            return fail(p, "PROXY v1: invalid character");
        }
    }
    if (nf != 5) {
        return fail(p, "PROXY v1: missing fields");
    }
    int family;
    if (flen[0] == 4 && memcmp(field[0], "TCP4", 4) == 0) {
        family = AF_INET;
    } else if (flen[0] == 4 && memcmp(field[0], "TCP6", 4) == 0) {
        family = AF_INET6;
    } else {
        return fail(p, "PROXY v1: unknown protocol");
    }
    unsigned sport, dport;
    if (parse_addr(family, field[1], flen[1], &p->src) != 0 ||
        parse_addr(family, field[2], flen[2], &p->dst) != 0) {
        return fail(p, "PROXY v1: invalid address");
    }
    if (parse_port(field[3], flen[3], &sport) != 0 || parse_port(field[4], flen[4], &dport) != 0) {
        return fail(p, "PROXY v1: invalid port");
    }
    set_port(&p->src, sport);
    set_port(&p->dst, dport);
    return STP_PROXY_DONE;
}

static int decode_v2(stp_proxy_t *p)
{
    const unsigned char *h = p->buf;
    size_t total = p->len, pos = 16;
    unsigned cmd = h[12] & 0x0f, fam = h[13] >> 4, proto = h[13] & 0x0f;

    p->version = 2;
    if (cmd == 0) {
        /* LOCAL: the balancer's own connection (health check); the body is
         * ignored, addresses included. */
        p->local = 1;
        return STP_PROXY_DONE;
    }
    if (proto > 2) {
        /* only UNSPEC, STREAM and DGRAM are assigned: receivers drop the rest */
        return fail(p, "PROXY v2: unknown transport protocol");
    }
    if (fam == 1 || fam == 2) {
        if (proto != 1) {
            return fail(p, "PROXY v2: not a stream connection");
        }
        size_t alen = fam == 1 ? 12 : 36;
        if (total - 16 < alen) {
            return fail(p, "PROXY v2: length too short for the addresses");
        }
        memset(&p->src, 0, sizeof(p->src));
        memset(&p->dst, 0, sizeof(p->dst));
        if (fam == 1) {
            struct sockaddr_in *s = (struct sockaddr_in *)&p->src;
            struct sockaddr_in *d = (struct sockaddr_in *)&p->dst;
            s->sin_family = d->sin_family = AF_INET;
            memcpy(&s->sin_addr, h + 16, 4);
            memcpy(&d->sin_addr, h + 20, 4);
            memcpy(&s->sin_port, h + 24, 2);
            memcpy(&d->sin_port, h + 26, 2);
        } else {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&p->src;
            struct sockaddr_in6 *d = (struct sockaddr_in6 *)&p->dst;
            s->sin6_family = d->sin6_family = AF_INET6;
            memcpy(&s->sin6_addr, h + 16, 16);
            memcpy(&d->sin6_addr, h + 32, 16);
            memcpy(&s->sin6_port, h + 48, 2);
            memcpy(&d->sin6_port, h + 50, 2);
        }
        pos += alen;
    } else if (fam == 0 || fam == 3) {
        /* UNSPEC or a UNIX socket: nothing usable as a client address; keep
         * the socket's (the spec asks receivers to accept these). */
        p->local = 1;
        if (fam == 3) {
            if (total - 16 < 216) {
                return fail(p, "PROXY v2: length too short for the addresses");
            }
            pos += 216;
        } else {
            return STP_PROXY_DONE; /* no address block to walk past */
        }
    } else {
        return fail(p, "PROXY v2: unknown address family");
    }
    /* TLVs: type, 16-bit length, value; they must tile the rest exactly. */
    while (pos < total) {
        if (total - pos < 3) {
            return fail(p, "PROXY v2: truncated TLV");
        }
        size_t vlen = ((size_t)h[pos + 1] << 8) | h[pos + 2];
        if (vlen > total - pos - 3) {
            return fail(p, "PROXY v2: TLV length past the header");
        }
        pos += 3 + vlen;
    }
    return STP_PROXY_DONE;
}

/*
 * A load balancer with a dual-stack socket sends an IPv4 client as
 * ::ffff:a.b.c.d (TCP6, or v2 INET6): that is an IPv4 client, and the
 * Received header, XCLIENT ADDR= and the logs must say so, as they do for a
 * connection of the proxy's own.
 */
static void unmap_v4(struct sockaddr_storage *ss)
{
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        return;
    }
    struct sockaddr_in s4;
    memset(&s4, 0, sizeof(s4));
    s4.sin_family = AF_INET;
    s4.sin_port = s6->sin6_port;
    memcpy(&s4.sin_addr, s6->sin6_addr.s6_addr + 12, 4);
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &s4, sizeof(s4));
}

static int done(stp_proxy_t *p, int rc)
{
    if (rc == STP_PROXY_DONE) {
        p->state = 1;
        if (!p->local) {
            unmap_v4(&p->src);
            unmap_v4(&p->dst);
        }
    }
    return rc;
}

int stp_proxy_feed(stp_proxy_t *p, const char *data, size_t n, size_t *consumed)
{
    size_t i = 0;

    *consumed = 0;
    if (p->state == 1) {
        return STP_PROXY_DONE;
    }
    if (p->state == -1) {
        return STP_PROXY_ERROR;
    }
    while (i < n) {
        unsigned char c = (unsigned char)data[i++];
        size_t at = p->len;
        *consumed = i;
        if (at == 0 && c != 'P' && c != v2_sig[0]) {
            return fail(p, "not a PROXY protocol header");
        }
        p->buf[p->len++] = c;
        if (p->buf[0] == 'P') {
            if (at < sizeof(v1_prefix) - 1) {
                if (c != (unsigned char)v1_prefix[at]) {
                    return fail(p, "not a PROXY protocol header");
                }
                continue;
            }
            if (c == '\n') {
                if (p->buf[at - 1] != '\r') {
                    return fail(p, "PROXY v1: line not ended by CRLF");
                }
                return done(p, decode_v1(p));
            }
            if (p->len >= STP_PROXY_V1_MAX) {
                return fail(p, "PROXY v1: no CRLF within 107 bytes");
            }
            continue;
        }
        if (at < sizeof(v2_sig)) {
            if (c != v2_sig[at]) {
                return fail(p, "not a PROXY protocol header");
            }
            continue;
        }
        if (at == 12 && (c >> 4) != 2) {
            return fail(p, "PROXY v2: unsupported version");
        }
        if (at == 12 && (c & 0x0f) > 1) {
            return fail(p, "PROXY v2: unknown command");
        }
        if (at == 15) {
            p->need = 16 + (((size_t)p->buf[14] << 8) | p->buf[15]);
            if (p->need > STP_PROXY_V2_MAX) {
                return fail(p, "PROXY v2: header too long");
            }
        }
        if (p->len >= 16 && p->len == p->need) {
            return done(p, decode_v2(p));
        }
    }
    return STP_PROXY_AGAIN;
}
