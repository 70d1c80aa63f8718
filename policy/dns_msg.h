/*
 * dns_msg: a strict parser for DNS responses (RFC 1035) and a builder for the
 * queries the resolver sends. Pure: no I/O, no allocation; a message is
 * parsed whole (a datagram or a TCP payload without its length prefix) into
 * a caller-provided stp_dns_msg_t.
 *
 * Strict means: the header, the question and every record of every section
 * must lie inside the buffer, with nothing after the last record; names obey
 * the 63-byte label and 255-byte name limits; a compression pointer must
 * point strictly backwards (so no loop can exist) and names are followed for
 * at most STP_DNS_MAX_HOPS pointers; the records the proxy uses (A, AAAA,
 * MX, CNAME, TXT, TLSA) must have well-formed RDATA whose names and strings
 * consume exactly RDLENGTH. Other record types (RRSIG, NSEC, OPT...) are
 * checked for bounds only and not stored.
 *
 * Names are stored in presentation form without the trailing dot ("." for
 * the root), bytes other than letters, digits, '-' and '_' escaped as \DDD
 * (and '.' inside a label as "\."), so a hostile label can neither forge a
 * dot nor carry control bytes into logs.
 */
#ifndef STP_POLICY_DNS_MSG_H
#define STP_POLICY_DNS_MSG_H

#include <stddef.h>
#include <stdint.h>

enum {
    STP_DNS_T_A = 1,
    STP_DNS_T_CNAME = 5,
    STP_DNS_T_MX = 15,
    STP_DNS_T_TXT = 16,
    STP_DNS_T_AAAA = 28,
    STP_DNS_T_OPT = 41,
    STP_DNS_T_TLSA = 52,
    STP_DNS_T_DNSKEY = 48,
    STP_DNS_C_IN = 1,
};

enum {
    STP_DNS_RCODE_NOERROR = 0,
    STP_DNS_RCODE_FORMERR = 1,
    STP_DNS_RCODE_SERVFAIL = 2,
    STP_DNS_RCODE_NXDOMAIN = 3,
    STP_DNS_RCODE_NOTIMP = 4,
    STP_DNS_RCODE_REFUSED = 5,
};

enum {
    STP_DNS_NAME_WIRE_MAX = 255,  /* RFC 1035 §2.3.4, length octets included */
    STP_DNS_NAME_TEXT_MAX = 1024, /* presentation form: 255 wire bytes, each at most "\DDD" */
    STP_DNS_MAX_RR = 64,          /* answer records of a known type kept per message */
    STP_DNS_MAX_HOPS = 32,        /* compression pointers followed per name */
    STP_DNS_MSG_MAX = 65535,
};

typedef struct {
    char name[STP_DNS_NAME_TEXT_MAX]; /* owner */
    uint16_t type, rclass;
    uint32_t ttl;
    union {
        uint8_t a[4];
        uint8_t aaaa[16];
        struct {
            uint16_t preference;
        } mx; /* host in `target` */
        struct {
            uint8_t usage, selector, mtype;
        } tlsa; /* association data in data/data_len */
    } u;
    char target[STP_DNS_NAME_TEXT_MAX]; /* MX exchange, CNAME target; "" otherwise */
    /* TLSA: the certificate association data; TXT: the record's
     * character-strings concatenated (RFC 7208 §3.3 style). Points into the
     * message's pool (valid as long as the stp_dns_msg_t). */
    const uint8_t *data;
    size_t data_len;
} stp_dns_rr_t;

typedef struct {
    uint16_t id;
    unsigned qr : 1, aa : 1, tc : 1, rd : 1, ra : 1, ad : 1, cd : 1;
    unsigned opcode, rcode; /* rcode: the header's 4 bits (no extended RCODE) */
    uint16_t qdcount, ancount, nscount, arcount;
    char qname[STP_DNS_NAME_TEXT_MAX];
    uint16_t qtype, qclass;
    size_t nrr; /* answer records of a known type, in message order */
    stp_dns_rr_t rr[STP_DNS_MAX_RR];
    const char *error; /* static text when parsing failed */
    size_t pool_len;
    uint8_t pool[STP_DNS_MSG_MAX]; /* TLSA data and concatenated TXT strings */
} stp_dns_msg_t;

/*
 * Parses the response buf[0..len) into *m (about 200 KB: allocate it, do not
 * put it on a small stack). Returns 0, or -1 with m->error set. Only
 * responses (QR=1) with exactly one question are accepted.
 */
int stp_dns_msg_parse(stp_dns_msg_t *m, const uint8_t *buf, size_t len);

/*
 * Follows the CNAME chain from the question name through the answer section
 * (at most 8 links) and returns the final owner name (m->qname when there is
 * no CNAME). NULL when the chain loops or is longer than that.
 */
const char *stp_dns_msg_final_name(const stp_dns_msg_t *m);

/* 1 if two presentation names are equal ignoring ASCII case and a trailing dot. */
int stp_dns_name_eq(const char *a, const char *b);

/*
 * Builds a query for `name` (presentation form; a trailing dot is allowed;
 * "\DDD" and "\X" escapes are not) into out[0..cap): RD and AD set (RFC 6840
 * §5.7: ask for the validation result), one question of class IN, and an
 * EDNS0 OPT record with the DO bit and a UDP size of 1232. Returns the
 * length, or 0 when the name is invalid or cap is too small.
 */
size_t stp_dns_query_build(uint8_t *out, size_t cap, uint16_t id, const char *name, uint16_t type);

#endif
