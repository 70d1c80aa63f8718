/*
 * dns_msg: strict DNS response parser and query builder (see dns_msg.h).
 *
 * A cursor walks the message; every read checks the bounds first. Names are
 * decoded by read_name(), the only place that follows compression pointers:
 * each pointer must point before the position it was read at, which alone
 * rules out loops (offsets strictly decrease), and the hop count is capped
 * as a second guard.
 */
#include "policy/dns_msg.h"

#include <string.h>

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
} cursor_t;

static int need(const cursor_t *c, size_t n)
{
    return c->pos <= c->len && c->len - c->pos >= n;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int plain_byte(uint8_t b)
{
    return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '-' ||
           b == '_';
}

/*
 * Reads a possibly compressed name at c->pos into out (presentation form)
 * and advances c->pos past the name's bytes in place (the first pointer ends
 * them). `limit` bounds the in-place part (the end of an RDATA). Returns a
 * static error or NULL.
 */
static const char *read_name(const uint8_t *msg, size_t msglen, size_t *pos, size_t limit,
                             char *out)
{
    size_t p = *pos, o = 0, wire = 0, end = 0;
    int jumped = 0, hops = 0;

    for (;;) {
        size_t bound = jumped ? msglen : limit;
        if (p >= bound) {
            return "name runs past its end";
        }
        uint8_t l = msg[p];
        if ((l & 0xC0) == 0xC0) {
            if (p + 1 >= bound) {
                return "truncated compression pointer";
            }
            size_t target = ((size_t)(l & 0x3F) << 8) | msg[p + 1];
            if (target >= p) {
                return "compression pointer does not point backwards";
            }
            if (++hops > STP_DNS_MAX_HOPS) {
                return "too many compression pointers";
            }
            if (!jumped) {
                end = p + 2;
                jumped = 1;
            }
            p = target;
            continue;
        }
        if ((l & 0xC0) != 0) {
            return "reserved label type";
        }
        wire += (size_t)l + 1;
        if (wire > STP_DNS_NAME_WIRE_MAX) {
            return "name longer than 255 bytes";
        }
        if (l == 0) {
            if (!jumped) {
                end = p + 1;
            }
            break;
        }
        if (p + 1 + l > bound) {
            return "label runs past its end";
        }
        if (o > 0) {
            out[o++] = '.';
        }
        for (size_t i = 0; i < l; i++) {
            uint8_t b = msg[p + 1 + i];
            if (plain_byte(b)) {
                out[o++] = (char)b;
            } else if (b == '.' || b == '\\') {
                out[o++] = '\\';
                out[o++] = (char)b;
            } else {
                out[o++] = '\\';
                out[o++] = (char)('0' + b / 100);
                out[o++] = (char)('0' + b / 10 % 10);
                out[o++] = (char)('0' + b % 10);
            }
        }
        p += 1 + (size_t)l;
    }
    if (o == 0) {
        out[o++] = '.';
    }
    out[o] = '\0';
    *pos = end;
    return NULL;
}

static const char *parse_rdata(stp_dns_msg_t *m, stp_dns_rr_t *rr, const cursor_t *c, size_t rdlen)
{
    const uint8_t *rd = c->buf + c->pos;
    size_t end = c->pos + rdlen, p;
    const char *err;

    rr->target[0] = '\0';
    rr->data = NULL;
    rr->data_len = 0;
    switch (rr->type) {
    case STP_DNS_T_A:
        if (rdlen != 4) {
            return "A record of the wrong length";
        }
        memcpy(rr->u.a, rd, 4);
        return NULL;
    case STP_DNS_T_AAAA:
        if (rdlen != 16) {
            return "AAAA record of the wrong length";
        }
        memcpy(rr->u.aaaa, rd, 16);
        return NULL;
    case STP_DNS_T_MX:
        if (rdlen < 3) {
            return "MX record too short";
        }
        rr->u.mx.preference = get16(rd);
        p = c->pos + 2;
        if ((err = read_name(c->buf, c->len, &p, end, rr->target)) != NULL) {
            return err;
        }
        return p == end ? NULL : "MX record longer than its exchange";
    case STP_DNS_T_CNAME:
        p = c->pos;
        if ((err = read_name(c->buf, c->len, &p, end, rr->target)) != NULL) {
            return err;
        }
        return p == end ? NULL : "CNAME record longer than its name";
    case STP_DNS_T_TLSA:
        if (rdlen < 4) {
            return "TLSA record too short";
        }
        rr->u.tlsa.usage = rd[0];
        rr->u.tlsa.selector = rd[1];
        rr->u.tlsa.mtype = rd[2];
        rr->data = m->pool + m->pool_len;
        rr->data_len = rdlen - 3;
        memcpy(m->pool + m->pool_len, rd + 3, rdlen - 3);
        m->pool_len += rdlen - 3;
        return NULL;
    case STP_DNS_T_TXT:
        if (rdlen < 1) {
            return "TXT record without a string";
        }
        rr->data = m->pool + m->pool_len;
        for (p = 0; p < rdlen;) {
            size_t sl = rd[p];
            if (p + 1 + sl > rdlen) {
                return "TXT string runs past its record";
            }
            memcpy(m->pool + m->pool_len, rd + p + 1, sl);
            m->pool_len += sl;
            rr->data_len += sl;
            p += 1 + sl;
        }
        return NULL;
    default:
        return NULL;
    }
}

static int known_type(uint16_t t)
{
    return t == STP_DNS_T_A || t == STP_DNS_T_AAAA || t == STP_DNS_T_MX || t == STP_DNS_T_CNAME ||
           t == STP_DNS_T_TLSA || t == STP_DNS_T_TXT;
}

/* One resource record; stored when `store` and its type is known. */
static const char *parse_rr(stp_dns_msg_t *m, cursor_t *c, int store)
{
    char name[STP_DNS_NAME_TEXT_MAX];
    const char *err;

    if ((err = read_name(c->buf, c->len, &c->pos, c->len, name)) != NULL) {
        return err;
    }
    if (!need(c, 10)) {
        return "truncated record header";
    }
    uint16_t type = get16(c->buf + c->pos);
    uint16_t rclass = get16(c->buf + c->pos + 2);
    uint32_t ttl = get32(c->buf + c->pos + 4);
    size_t rdlen = get16(c->buf + c->pos + 8);
    c->pos += 10;
    if (!need(c, rdlen)) {
        return "record data runs past the message";
    }
    if (store && known_type(type)) {
        if (m->nrr == STP_DNS_MAX_RR) {
            return "too many answer records";
        }
        stp_dns_rr_t *rr = &m->rr[m->nrr];
        memcpy(rr->name, name, strlen(name) + 1);
        rr->type = type;
        rr->rclass = rclass;
        rr->ttl = ttl;
        if ((err = parse_rdata(m, rr, c, rdlen)) != NULL) {
            return err;
        }
        m->nrr++;
    }
    c->pos += rdlen;
    return NULL;
}

int stp_dns_msg_parse(stp_dns_msg_t *m, const uint8_t *buf, size_t len)
{
    cursor_t c = {buf, len, 0};
    const char *err = NULL;

    m->nrr = 0;
    m->pool_len = 0;
    m->qname[0] = '\0';
    m->error = NULL;
    if (len > STP_DNS_MSG_MAX) {
        m->error = "message longer than 65535 bytes";
        return -1;
    }
    if (len < 12) {
        m->error = "truncated header";
        return -1;
    }
    m->id = get16(buf);
    m->qr = buf[2] >> 7;
    m->opcode = (buf[2] >> 3) & 0xF;
    m->aa = (buf[2] >> 2) & 1;
    m->tc = (buf[2] >> 1) & 1;
    m->rd = buf[2] & 1;
    m->ra = buf[3] >> 7;
    m->ad = (buf[3] >> 5) & 1;
    m->cd = (buf[3] >> 4) & 1;
    m->rcode = buf[3] & 0xF;
    m->qdcount = get16(buf + 4);
    m->ancount = get16(buf + 6);
    m->nscount = get16(buf + 8);
    m->arcount = get16(buf + 10);
    c.pos = 12;
    if (!m->qr) {
        err = "not a response";
    } else if (m->qdcount != 1) {
        err = "not exactly one question";
    } else if ((err = read_name(buf, len, &c.pos, len, m->qname)) != NULL) {
        /* err set */
    } else if (!need(&c, 4)) {
        err = "truncated question";
    } else {
        m->qtype = get16(buf + c.pos);
        m->qclass = get16(buf + c.pos + 2);
        c.pos += 4;
        size_t total = (size_t)m->ancount + m->nscount + m->arcount;
        for (size_t i = 0; i < total && err == NULL; i++) {
            err = parse_rr(m, &c, i < m->ancount);
        }
        if (err == NULL && c.pos != len) {
            err = "bytes after the last record";
        }
    }
    if (err != NULL) {
        m->error = err;
        m->nrr = 0;
        return -1;
    }
    return 0;
}

int stp_dns_name_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 1 && a[la - 1] == '.' && a[la - 2] != '\\') {
        la--;
    }
    if (lb > 1 && b[lb - 1] == '.' && b[lb - 2] != '\\') {
        lb--;
    }
    if (la != lb) {
        return 0;
    }
    for (size_t i = 0; i < la; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') {
            x = (unsigned char)(x - 'A' + 'a');
        }
        if (y >= 'A' && y <= 'Z') {
            y = (unsigned char)(y - 'A' + 'a');
        }
        if (x != y) {
            return 0;
        }
    }
    return 1;
}

const char *stp_dns_msg_final_name(const stp_dns_msg_t *m)
{
    const char *name = m->qname;
    for (int links = 0; links <= 8; links++) {
        const stp_dns_rr_t *next = NULL;
        for (size_t i = 0; i < m->nrr; i++) {
            if (m->rr[i].type == STP_DNS_T_CNAME && stp_dns_name_eq(m->rr[i].name, name)) {
                next = &m->rr[i];
                break;
            }
        }
        if (next == NULL) {
            return name;
        }
        name = next->target;
    }
    return NULL;
}

size_t stp_dns_query_build(uint8_t *out, size_t cap, uint16_t id, const char *name, uint16_t type)
{
    uint8_t q[STP_DNS_NAME_WIRE_MAX + 64];
    size_t n = 0, nl = strlen(name);

    if (nl > 0 && name[nl - 1] == '.') {
        nl--;
    }
    q[n++] = (uint8_t)(id >> 8);
    q[n++] = (uint8_t)id;
    q[n++] = 0x01; /* RD */
    q[n++] = 0x20; /* AD */
    static const uint8_t counts[8] = {0, 1, 0, 0, 0, 0, 0, 1};
    memcpy(q + n, counts, 8);
    n += 8;
    size_t wire = 1;
    for (size_t i = 0; i < nl;) {
        size_t j = i;
        while (j < nl && name[j] != '.') {
            if (name[j] == '\\' || (unsigned char)name[j] <= ' ' ||
                (unsigned char)name[j] >= 0x7F) {
                return 0;
            }
            j++;
        }
        size_t l = j - i;
        if (l == 0 || l > 63) {
            return 0;
        }
        wire += l + 1;
        if (wire > STP_DNS_NAME_WIRE_MAX) {
            return 0;
        }
        q[n++] = (uint8_t)l;
        memcpy(q + n, name + i, l);
        n += l;
        i = j + 1;
        if (j + 1 == nl) { /* "a..": a trailing empty label */
            return 0;
        }
    }
    q[n++] = 0;
    q[n++] = (uint8_t)(type >> 8);
    q[n++] = (uint8_t)type;
    q[n++] = 0;
    q[n++] = STP_DNS_C_IN;
    /* OPT: root owner, type 41, class = UDP size 1232, TTL: ext-rcode 0,
     * version 0, flags DO (0x8000), no options. */
    static const uint8_t opt[11] = {0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0};
    memcpy(q + n, opt, sizeof(opt));
    n += sizeof(opt);
    if (n > cap) {
        return 0;
    }
    memcpy(out, q, n);
    return n;
}
