/*
 * dns_msg_test: the DNS response parser on real-shaped answers (MX with
 * compression, TLSA, TXT, A/AAAA, CNAME chains, RRSIG and OPT skipped), every
 * truncation of each, and hostile messages (pointer loops, forward pointers,
 * long labels and names, counts that lie); the query builder round trip.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/dns_msg.h"
#include "test/unit/check.h"

/* A tiny message writer for the tests. */
typedef struct {
    uint8_t b[4096];
    size_t n;
} msg_t;

static void u8(msg_t *m, unsigned v)
{
    m->b[m->n++] = (uint8_t)v;
}
static void u16(msg_t *m, unsigned v)
{
    u8(m, v >> 8);
    u8(m, v & 0xFF);
}
static void u32(msg_t *m, unsigned long v)
{
    u16(m, (unsigned)(v >> 16));
    u16(m, (unsigned)(v & 0xFFFF));
}
static void bytes(msg_t *m, const void *p, size_t n)
{
    memcpy(m->b + m->n, p, n);
    m->n += n;
}
/* Writes "a.b.c" uncompressed; returns its offset. */
static size_t name(msg_t *m, const char *s)
{
    size_t at = m->n;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        u8(m, (unsigned)l);
        bytes(m, s, l);
        s += l + (dot ? 1 : 0);
    }
    u8(m, 0);
    return at;
}
static void ptr(msg_t *m, size_t off)
{
    u16(m, 0xC000 | (unsigned)off);
}
static void header(msg_t *m, unsigned flags, unsigned qd, unsigned an, unsigned ns, unsigned ar)
{
    m->n = 0;
    u16(m, 0x1234);
    u16(m, flags);
    u16(m, qd);
    u16(m, an);
    u16(m, ns);
    u16(m, ar);
}
/* Starts an RR header at the current position (owner already written). */
static size_t rr_head(msg_t *m, unsigned type, unsigned long ttl)
{
    u16(m, type);
    u16(m, 1);
    u32(m, ttl);
    size_t len_at = m->n;
    u16(m, 0);
    return len_at;
}
static void rr_end(msg_t *m, size_t len_at)
{
    size_t l = m->n - len_at - 2;
    m->b[len_at] = (uint8_t)(l >> 8);
    m->b[len_at + 1] = (uint8_t)l;
}

static stp_dns_msg_t *M;

/* Every proper prefix of a valid message is refused. */
static void check_truncations(const msg_t *m)
{
    for (size_t cut = 0; cut < m->n; cut++) {
        uint8_t *copy = malloc(cut + 1);
        memcpy(copy, m->b, cut);
        int rc = stp_dns_msg_parse(M, copy, cut);
        if (rc != -1 || M->error == NULL) {
            fprintf(stderr, "  prefix of %zu/%zu bytes accepted\n", cut, m->n);
        }
        CHECK_EQ_INT(rc, -1);
        CHECK_EQ_INT(M->nrr, 0);
        free(copy);
    }
}

static void build_mx(msg_t *m)
{
    /* QR RD RA AD, rcode 0; question example.test MX; two MX, an RRSIG,
     * an OPT in the additional section. */
    header(m, 0x81A0, 1, 3, 0, 1);
    size_t q = name(m, "example.test");
    u16(m, STP_DNS_T_MX);
    u16(m, 1);
    ptr(m, q);
    size_t l = rr_head(m, STP_DNS_T_MX, 300);
    u16(m, 20);
    u8(m, 3);
    bytes(m, "mx2", 3);
    ptr(m, q);
    rr_end(m, l);
    ptr(m, q);
    l = rr_head(m, STP_DNS_T_MX, 300);
    u16(m, 10);
    u8(m, 3);
    bytes(m, "MX1", 3);
    ptr(m, q);
    rr_end(m, l);
    ptr(m, q);
    l = rr_head(m, 46 /* RRSIG */, 300);
    bytes(m, "\x00\x0f\x0d\x02\x00\x00\x01\x2c signature bytes", 24);
    rr_end(m, l);
    u8(m, 0); /* OPT */
    u16(m, STP_DNS_T_OPT);
    u16(m, 1232);
    u32(m, 0x8000);
    u16(m, 0);
}

static void test_mx(void)
{
    msg_t m;
    build_mx(&m);
    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), 0);
    CHECK_EQ_INT(M->id, 0x1234);
    CHECK_EQ_INT(M->qr, 1);
    CHECK_EQ_INT(M->ad, 1);
    CHECK_EQ_INT(M->rd, 1);
    CHECK_EQ_INT(M->ra, 1);
    CHECK_EQ_INT(M->aa, 0);
    CHECK_EQ_INT(M->tc, 0);
    CHECK_EQ_INT(M->rcode, 0);
    CHECK_STR(M->qname, "example.test");
    CHECK_EQ_INT(M->qtype, STP_DNS_T_MX);
    CHECK_EQ_INT(M->nrr, 2); /* the RRSIG is not kept */
    CHECK_STR(M->rr[0].name, "example.test");
    CHECK_EQ_INT(M->rr[0].u.mx.preference, 20);
    CHECK_STR(M->rr[0].target, "mx2.example.test");
    CHECK_EQ_INT(M->rr[0].ttl, 300);
    CHECK_EQ_INT(M->rr[1].u.mx.preference, 10);
    CHECK_STR(M->rr[1].target, "MX1.example.test");
    CHECK(stp_dns_name_eq(M->rr[1].target, "mx1.EXAMPLE.test."));
    check_truncations(&m);
    /* one byte more is refused as well */
    m.b[m.n++] = 0;
    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), -1);
    CHECK_STR(M->error, "bytes after the last record");
}

static void test_flags_and_rcodes(void)
{
    msg_t m;
    header(&m, 0x8583, 1, 0, 0, 0); /* QR AA RD, RA=1 AD=0, NXDOMAIN */
    name(&m, "nope.test");
    u16(&m, STP_DNS_T_A);
    u16(&m, 1);
    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), 0);
    CHECK_EQ_INT(M->rcode, STP_DNS_RCODE_NXDOMAIN);
    CHECK_EQ_INT(M->aa, 1);
    CHECK_EQ_INT(M->ad, 0);
    CHECK_EQ_INT(M->nrr, 0);
    m.b[3] = 0x92; /* RA, CD, SERVFAIL */
    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), 0);
    CHECK_EQ_INT(M->rcode, STP_DNS_RCODE_SERVFAIL);
    CHECK_EQ_INT(M->cd, 1);
    check_truncations(&m);
}

static void test_tlsa_txt_addr_cname(void)
{
    msg_t m;
    header(&m, 0x81A0, 1, 6, 0, 0);
    size_t q = name(&m, "_25._tcp.mx.example.test");
    u16(&m, STP_DNS_T_TLSA);
    u16(&m, 1);
    /* CNAME chain: q -> t.example.test -> u.example.test */
    ptr(&m, q);
    size_t l = rr_head(&m, STP_DNS_T_CNAME, 60);
    size_t t = m.n;
    u8(&m, 1);
    u8(&m, 't');
    ptr(&m, q + 12); /* "example.test" inside the question name */
    rr_end(&m, l);
    ptr(&m, t);
    l = rr_head(&m, STP_DNS_T_CNAME, 60);
    size_t uu = m.n;
    u8(&m, 1);
    u8(&m, 'u');
    ptr(&m, q + 12);
    rr_end(&m, l);
    ptr(&m, uu);
    l = rr_head(&m, STP_DNS_T_TLSA, 60);
    bytes(&m, "\x03\x01\x01", 3);
    uint8_t hash[32];
    for (int i = 0; i < 32; i++) {
        hash[i] = (uint8_t)(i * 7);
    }
    bytes(&m, hash, 32);
    rr_end(&m, l);
    ptr(&m, uu);
    l = rr_head(&m, STP_DNS_T_TXT, 60);
    bytes(&m, "\x06v=STS1\x0d; id=20240101", 21);
    rr_end(&m, l);
    ptr(&m, uu);
    l = rr_head(&m, STP_DNS_T_A, 60);
    bytes(&m, "\x7f\x00\x00\x01", 4);
    rr_end(&m, l);
    ptr(&m, uu);
    l = rr_head(&m, STP_DNS_T_AAAA, 60);
    bytes(&m, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    rr_end(&m, l);

    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), 0);
    CHECK_EQ_INT(M->nrr, 6);
    CHECK_STR(M->rr[0].target, "t.example.test");
    CHECK_STR(M->rr[1].name, "t.example.test");
    CHECK_STR(M->rr[1].target, "u.example.test");
    CHECK_STR(stp_dns_msg_final_name(M), "u.example.test");
    CHECK_STR(M->rr[2].name, "u.example.test");
    CHECK_EQ_INT(M->rr[2].u.tlsa.usage, 3);
    CHECK_EQ_INT(M->rr[2].u.tlsa.selector, 1);
    CHECK_EQ_INT(M->rr[2].u.tlsa.mtype, 1);
    CHECK_MEM(M->rr[2].data, M->rr[2].data_len, hash, 32);
    CHECK_MEM(M->rr[3].data, M->rr[3].data_len, "v=STS1; id=20240101", 19);
    CHECK_MEM(M->rr[4].u.a, 4, "\x7f\x00\x00\x01", 4);
    CHECK_EQ_INT(M->rr[5].u.aaaa[1], 0x01);
    CHECK_EQ_INT(M->rr[5].u.aaaa[15], 0x01);
    check_truncations(&m);

    /* a CNAME loop has no final name */
    msg_t loop;
    header(&loop, 0x8180, 1, 2, 0, 0);
    q = name(&loop, "a.test");
    u16(&loop, STP_DNS_T_A);
    u16(&loop, 1);
    ptr(&loop, q);
    l = rr_head(&loop, STP_DNS_T_CNAME, 1);
    t = name(&loop, "b.test");
    rr_end(&loop, l);
    ptr(&loop, t);
    l = rr_head(&loop, STP_DNS_T_CNAME, 1);
    ptr(&loop, q);
    rr_end(&loop, l);
    CHECK_EQ_INT(stp_dns_msg_parse(M, loop.b, loop.n), 0);
    CHECK(stp_dns_msg_final_name(M) == NULL);
}

static void test_escaped_names(void)
{
    msg_t m;
    header(&m, 0x8180, 1, 0, 0, 0);
    bytes(&m,
          "\x05"
          "a.b\x01\\"
          "\x04test\x00",
          12);
    u16(&m, STP_DNS_T_A);
    u16(&m, 1);
    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), 0);
    CHECK_STR(M->qname, "a\\.b\\001\\\\.test");
    header(&m, 0x8180, 1, 0, 0, 0);
    u8(&m, 0); /* the root */
    u16(&m, STP_DNS_T_DNSKEY);
    u16(&m, 1);
    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), 0);
    CHECK_STR(M->qname, ".");
}

static void expect_error(const msg_t *m, const char *label, const char *error)
{
    int rc = stp_dns_msg_parse(M, m->b, m->n);
    if (rc != -1 || M->error == NULL || strcmp(M->error, error) != 0) {
        fprintf(stderr, "  case: %s (got %s)\n", label, M->error ? M->error : "success");
    }
    CHECK_EQ_INT(rc, -1);
    CHECK(M->error != NULL && strcmp(M->error, error) == 0);
}

static void question(msg_t *m, unsigned flags, unsigned an)
{
    header(m, flags, 1, an, 0, 0);
    name(m, "x.test");
    u16(m, STP_DNS_T_MX);
    u16(m, 1);
}

static void test_malformed(void)
{
    msg_t m;
    size_t l;

    question(&m, 0x0100, 0);
    expect_error(&m, "a query", "not a response");
    header(&m, 0x8180, 0, 0, 0, 0);
    expect_error(&m, "no question", "not exactly one question");
    header(&m, 0x8180, 2, 0, 0, 0);
    name(&m, "x.test");
    u16(&m, 1);
    u16(&m, 1);
    name(&m, "y.test");
    u16(&m, 1);
    u16(&m, 1);
    expect_error(&m, "two questions", "not exactly one question");

    /* a pointer to itself, and two pointers pointing at each other */
    question(&m, 0x8180, 1);
    ptr(&m, m.n);
    expect_error(&m, "pointer to itself", "compression pointer does not point backwards");
    question(&m, 0x8180, 1);
    ptr(&m, 12);
    l = rr_head(&m, STP_DNS_T_MX, 1);
    u16(&m, 1);
    ptr(&m, m.n + 2);
    rr_end(&m, l);
    u16(&m, 0);
    expect_error(&m, "forward pointer", "compression pointer does not point backwards");
    /* a chain of backward pointers longer than the hop limit, kept in the
     * RDATA of an unknown type and used by an MX exchange */
    question(&m, 0x8180, 2);
    ptr(&m, 12);
    l = rr_head(&m, 99, 1);
    size_t prev = 12;
    for (int i = 0; i < STP_DNS_MAX_HOPS + 1; i++) {
        size_t at = m.n;
        ptr(&m, prev);
        prev = at;
    }
    rr_end(&m, l);
    ptr(&m, 12);
    l = rr_head(&m, STP_DNS_T_MX, 1);
    u16(&m, 1);
    ptr(&m, prev);
    rr_end(&m, l);
    expect_error(&m, "pointer chain", "too many compression pointers");
    header(&m, 0x8180, 1, 0, 0, 0);
    ptr(&m, 12);
    expect_error(&m, "question pointing at itself", "compression pointer does not point backwards");

    /* label longer than 63: 0x40 is a reserved label type */
    header(&m, 0x8180, 1, 0, 0, 0);
    u8(&m, 64);
    for (int i = 0; i < 64; i++) {
        u8(&m, 'a');
    }
    u8(&m, 0);
    u16(&m, 1);
    u16(&m, 1);
    expect_error(&m, "label of 64", "reserved label type");
    header(&m, 0x8180, 1, 0, 0, 0);
    u8(&m, 0x80);
    u8(&m, 0);
    u16(&m, 1);
    u16(&m, 1);
    expect_error(&m, "label type 10", "reserved label type");

    /* a name of 256 wire bytes: 4 labels of 63 and a 0 would be 257 */
    header(&m, 0x8180, 1, 0, 0, 0);
    for (int k = 0; k < 4; k++) {
        u8(&m, 63);
        for (int i = 0; i < 63; i++) {
            u8(&m, 'a');
        }
    }
    u8(&m, 0);
    u16(&m, 1);
    u16(&m, 1);
    expect_error(&m, "name of 257 bytes", "name longer than 255 bytes");
    /* exactly 255: 3 x 63 + 61 + the root */
    header(&m, 0x8180, 1, 0, 0, 0);
    for (int k = 0; k < 4; k++) {
        unsigned len = k < 3 ? 63 : 61;
        u8(&m, len);
        for (unsigned i = 0; i < len; i++) {
            u8(&m, 'a');
        }
    }
    u8(&m, 0);
    u16(&m, 1);
    u16(&m, 1);
    CHECK_EQ_INT(stp_dns_msg_parse(M, m.b, m.n), 0);
    CHECK_EQ_INT(strlen(M->qname), 253);
    /* a long name built from a short one through pointers is limited too */
    header(&m, 0x8180, 1, 1, 0, 0);
    size_t q = m.n;
    for (int k = 0; k < 3; k++) {
        u8(&m, 63);
        for (int i = 0; i < 63; i++) {
            u8(&m, 'b');
        }
    }
    u8(&m, 0);
    u16(&m, STP_DNS_T_CNAME);
    u16(&m, 1);
    u8(&m, 63);
    for (int i = 0; i < 63; i++) {
        u8(&m, 'c');
    }
    ptr(&m, q);
    l = rr_head(&m, STP_DNS_T_A, 1);
    bytes(&m, "\1\2\3\4", 4);
    rr_end(&m, l);
    expect_error(&m, "name over 255 through a pointer", "name longer than 255 bytes");

    /* counts that lie */
    question(&m, 0x8180, 1);
    expect_error(&m, "ancount 1, no answer", "name runs past its end");
    question(&m, 0x8180, 0);
    ptr(&m, 12);
    l = rr_head(&m, STP_DNS_T_A, 1);
    bytes(&m, "\1\2\3\4", 4);
    rr_end(&m, l);
    expect_error(&m, "ancount 0, one answer", "bytes after the last record");
    header(&m, 0x8180, 1, 0, 0, 5);
    name(&m, "x.test");
    u16(&m, 1);
    u16(&m, 1);
    expect_error(&m, "arcount 5, nothing", "name runs past its end");
    question(&m, 0x8180, 1);
    ptr(&m, 12);
    l = rr_head(&m, STP_DNS_T_A, 1);
    bytes(&m, "\1\2\3\4", 4);
    m.b[l + 1] = 9; /* rdlength 9, 4 present */
    expect_error(&m, "rdlength past the end", "record data runs past the message");

    /* RDATA that does not fit its type */
    static const struct {
        const char *label, *rdata, *error;
        size_t len;
        unsigned type;
    } bad[] = {
        {"A of 3", "\1\2\3", "A record of the wrong length", 3, STP_DNS_T_A},
        {"A of 5", "\1\2\3\4\5", "A record of the wrong length", 5, STP_DNS_T_A},
        {"AAAA of 4", "\1\2\3\4", "AAAA record of the wrong length", 4, STP_DNS_T_AAAA},
        {"MX of 2", "\0\1", "MX record too short", 2, STP_DNS_T_MX},
        {"MX with junk", "\0\1\0X", "MX record longer than its exchange", 4, STP_DNS_T_MX},
        {"MX name past rdata", "\0\1\5ab", "label runs past its end", 5, STP_DNS_T_MX},
        {"MX name not ended", "\0\1\2ab", "name runs past its end", 5, STP_DNS_T_MX},
        {"CNAME with junk", "\0X", "CNAME record longer than its name", 2, STP_DNS_T_CNAME},
        {"TLSA of 3", "\3\1\1", "TLSA record too short", 3, STP_DNS_T_TLSA},
        {"TXT empty", "", "TXT record without a string", 0, STP_DNS_T_TXT},
        {"TXT string past", "\5abc", "TXT string runs past its record", 4, STP_DNS_T_TXT},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        question(&m, 0x8180, 1);
        ptr(&m, 12);
        l = rr_head(&m, bad[i].type, 1);
        bytes(&m, bad[i].rdata, bad[i].len);
        rr_end(&m, l);
        /* an OPT after the record: "past the rdata" is not "past the message" */
        question(&m, 0x8180, 1);
        m.b[11] = 1; /* arcount 1: the OPT after the answer */
        ptr(&m, 12);
        l = rr_head(&m, bad[i].type, 1);
        bytes(&m, bad[i].rdata, bad[i].len);
        rr_end(&m, l);
        u8(&m, 0);
        u16(&m, STP_DNS_T_OPT);
        u16(&m, 512);
        u32(&m, 0);
        u16(&m, 0);
        expect_error(&m, bad[i].label, bad[i].error);
    }

    /* more answer records than kept */
    question(&m, 0x8180, STP_DNS_MAX_RR + 1);
    for (int i = 0; i < STP_DNS_MAX_RR + 1; i++) {
        ptr(&m, 12);
        l = rr_head(&m, STP_DNS_T_A, 1);
        bytes(&m, "\1\2\3\4", 4);
        rr_end(&m, l);
    }
    expect_error(&m, "too many", "too many answer records");
}

static void test_query_build(void)
{
    uint8_t q[512];
    size_t n =
        stp_dns_query_build(q, sizeof(q), 0xBEEF, "_25._tcp.MX.example.test.", STP_DNS_T_TLSA);
    CHECK(n > 0);
    CHECK_EQ_INT(q[0], 0xBE);
    CHECK_EQ_INT(q[2], 0x01);                     /* RD */
    CHECK_EQ_INT(q[3], 0x20);                     /* AD */
    CHECK_EQ_INT(stp_dns_msg_parse(M, q, n), -1); /* a query is not a response */
    q[2] |= 0x80;
    CHECK_EQ_INT(stp_dns_msg_parse(M, q, n), 0);
    CHECK_STR(M->qname, "_25._tcp.MX.example.test");
    CHECK_EQ_INT(M->qtype, STP_DNS_T_TLSA);
    CHECK_EQ_INT(M->qclass, 1);
    CHECK_EQ_INT(M->arcount, 1);
    /* the OPT record: DO bit and UDP size 1232 */
    CHECK_MEM(q + n - 11, 11, "\0\0\x29\x04\xd0\0\0\x80\0\0\0", 11);
    CHECK_EQ_INT(stp_dns_query_build(q, sizeof(q), 1, ".", STP_DNS_T_DNSKEY), 12 + 5 + 11);
    CHECK_EQ_INT(stp_dns_query_build(q, sizeof(q), 1, "", STP_DNS_T_DNSKEY), 12 + 5 + 11);

    static const char *invalid[] = {
        "a..b",  ".a",    "a b",
        "a\\.b", "a.b..", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test"};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        if (stp_dns_query_build(q, sizeof(q), 1, invalid[i], 1) != 0) {
            fprintf(stderr, "  accepted: %s\n", invalid[i]);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(stp_dns_query_build(q, 20, 1, "example.test", 1), 0);
    char longname[300];
    memset(longname, 'a', sizeof(longname));
    for (int i = 63; i < 299; i += 64) {
        longname[i] = '.';
    }
    longname[299] = '\0';
    CHECK_EQ_INT(stp_dns_query_build(q, sizeof(q), 1, longname, 1), 0);
}

int main(void)
{
    M = malloc(sizeof(*M));
    STP_RUN(test_mx);
    STP_RUN(test_flags_and_rcodes);
    STP_RUN(test_tlsa_txt_addr_cname);
    STP_RUN(test_escaped_names);
    STP_RUN(test_malformed);
    STP_RUN(test_query_build);
    free(M);
    return STP_CHECK_DONE();
}
