/*
 * proxy_proto_test: the PROXY protocol header parser as a specification.
 * Every case is fed whole, cut in two at every byte, and one byte at a time;
 * all must give the same outcome, written as text:
 *   "v1 SRC -> DST used=N"   a header with addresses (N bytes consumed)
 *   "v2 local used=N"        a header without usable addresses
 *   "error"                  not a valid header
 *   "again"                  incomplete: more bytes needed
 * Bytes after the header (the client's SMTP) must never be consumed.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxy/proxy_proto.h"
#include "test/unit/check.h"

#define S(x) x, sizeof(x) - 1

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, ntohs(s->sin_port));
    } else {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%u", ip, ntohs(s->sin6_port));
    }
}

/* Feeds in[0..n): cut in two at `cut` (cut == n: whole) or byte-wise. */
static void run(const char *in, size_t n, size_t cut, int bytewise, char *out, size_t cap)
{
    static stp_proxy_t p;
    size_t pos = 0;
    int rc = STP_PROXY_AGAIN;

    stp_proxy_init(&p);
    while (pos < n && rc == STP_PROXY_AGAIN) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        size_t used = 0;
        rc = stp_proxy_feed(&p, in + pos, end - pos, &used);
        CHECK(used <= end - pos);
        if (rc == STP_PROXY_AGAIN) {
            CHECK_EQ_INT(used, end - pos);
        }
        pos += used;
    }
    if (rc == STP_PROXY_ERROR) {
        CHECK(p.error != NULL);
        snprintf(out, cap, "error");
        return;
    }
    if (rc == STP_PROXY_AGAIN) {
        snprintf(out, cap, "again");
        return;
    }
    /* stays done and consumes nothing more */
    size_t more = 99;
    CHECK_EQ_INT(stp_proxy_feed(&p, "x", 1, &more), STP_PROXY_DONE);
    CHECK_EQ_INT(more, 0);
    if (p.local) {
        snprintf(out, cap, "v%d local used=%zu", p.version, pos);
        return;
    }
    char src[64], dst[64];
    fmt_addr(&p.src, src, sizeof(src));
    fmt_addr(&p.dst, dst, sizeof(dst));
    snprintf(out, cap, "v%d %s -> %s used=%zu", p.version, src, dst, pos);
}

static void check_case(const char *label, const char *in, size_t n, const char *want)
{
    char got[256];
    for (size_t cut = 0; cut <= n; cut++) {
        run(in, n, cut, 0, got, sizeof(got));
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "case '%s' cut at %zu\n", label, cut);
        }
        CHECK_STR(got, want);
    }
    run(in, n, 0, 1, got, sizeof(got));
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "case '%s' byte by byte\n", label);
    }
    CHECK_STR(got, want);
}

static void test_v1(void)
{
    static const struct {
        const char *label;
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        {"tcp4", S("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"),
         "v1 192.0.2.1:56324 -> 198.51.100.2:25 used=44"},
        {"tcp4 then smtp", S("PROXY TCP4 192.0.2.1 198.51.100.2 1 25\r\nEHLO x\r\n"),
         "v1 192.0.2.1:1 -> 198.51.100.2:25 used=40"},
        {"tcp6", S("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"),
         "v1 [2001:db8::1]:65535 -> [2001:db8::2]:0 used=44"},
        {"tcp6 ipv4-mapped is ipv4", S("PROXY TCP6 ::ffff:203.0.113.5 ::ffff:192.0.2.9 1234 25\r\n"),
         "v1 203.0.113.5:1234 -> 192.0.2.9:25 used=56"},
        {"tcp6 mapped source only", S("PROXY TCP6 ::ffff:203.0.113.5 2001:db8::2 1234 25\r\n"),
         "v1 203.0.113.5:1234 -> [2001:db8::2]:25 used=51"},
        {"unknown", S("PROXY UNKNOWN\r\n"), "v1 local used=15"},
        {"unknown with junk", S("PROXY UNKNOWN ffff::1 x y z\r\nQUIT\r\n"), "v1 local used=29"},
        {"longest tcp6 fits 107",
         S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
         "v1 [ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535 -> "
         "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535 used=104"},
        {"incomplete", S("PROXY TCP4 192.0.2.1 "), "again"},
        {"smtp instead", S("EHLO x\r\n"), "error"},
        {"lowercase", S("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), "error"},
        {"bad prefix late", S("PROXYTCP4 1.2.3.4 1.2.3.4 1 2\r\n"), "error"},
        {"bare lf", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n"), "error"},
        {"cr inside", S("PROXY TCP4 1.2.3.4\r1.2.3.4 1 2\r\n"), "error"},
        {"double space", S("PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n"), "error"},
        {"trailing space", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n"), "error"},
        {"missing port", S("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n"), "error"},
        {"extra field", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n"), "error"},
        {"udp", S("PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n"), "error"},
        {"port too big", S("PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n"), "error"},
        {"port leading zero", S("PROXY TCP4 1.2.3.4 1.2.3.4 025 2\r\n"), "error"},
        {"port sign", S("PROXY TCP4 1.2.3.4 1.2.3.4 +25 2\r\n"), "error"},
        {"port huge", S("PROXY TCP4 1.2.3.4 1.2.3.4 4294967321 2\r\n"), "error"},
        {"octet too big", S("PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n"), "error"},
        {"ipv6 in tcp4", S("PROXY TCP4 ::1 ::1 1 2\r\n"), "error"},
        {"ipv4 in tcp6", S("PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n"), "error"},
        {"short ipv4", S("PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n"), "error"},
        {"empty after prefix", S("PROXY \r\n"), "error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(cases[i].label, cases[i].in, cases[i].len, cases[i].want);
    }
}

static void test_v1_no_crlf_in_107(void)
{
    char line[200];
    memset(line, '1', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    /* 107 bytes with the LF as the last one is still a header */
    line[105] = '\r';
    line[106] = '\n';
    check_case("107 bytes", line, 107, "v1 local used=107");
    /* one more byte before the CRLF is not */
    line[105] = '1';
    line[106] = '\r';
    line[107] = '\n';
    check_case("108 bytes", line, 108, "error");
    check_case("no crlf", line, 107, "error");
    check_case("106 without crlf", line, 106, "again");
}

/* Builds a v2 header: ver_cmd, fam, body of blen bytes. */
static size_t v2(unsigned char *out, unsigned ver_cmd, unsigned fam, const void *body, size_t blen,
                 int lie)
{
    static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                          0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    size_t claimed = blen + (size_t)lie;
    memcpy(out, sig, 12);
    out[12] = (unsigned char)ver_cmd;
    out[13] = (unsigned char)fam;
    out[14] = (unsigned char)(claimed >> 8);
    out[15] = (unsigned char)claimed;
    memcpy(out + 16, body, blen);
    return 16 + blen;
}

static void test_v2(void)
{
    static unsigned char b[4096];
    static const unsigned char in4[] = {192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0, 25};
    static const unsigned char in4_tlv[] = {192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 25,
                                            /* ALPN "h2", NOOP empty, AUTHORITY "mx" */
                                            0x01, 0, 2, 'h', '2', 0x04, 0, 0, 0x02, 0, 2, 'm', 'x'};
    unsigned char in6[36] = {0};
    in6[0] = 0x20, in6[1] = 0x01, in6[2] = 0x0d, in6[3] = 0xb8, in6[15] = 1;
    in6[16] = 0x20, in6[17] = 0x01, in6[18] = 0x0d, in6[19] = 0xb8, in6[31] = 2;
    in6[32] = 0xff, in6[33] = 0xff, in6[35] = 25;
    size_t n;

    n = v2(b, 0x21, 0x11, in4, sizeof(in4), 0);
    check_case("v2 tcp4", (char *)b, n, "v2 192.0.2.1:56324 -> 198.51.100.2:25 used=28");
    memcpy(b + n, "EHLO x\r\n", 8);
    check_case("v2 tcp4 then smtp", (char *)b, n + 8,
               "v2 192.0.2.1:56324 -> 198.51.100.2:25 used=28");
    check_case("v2 truncated", (char *)b, n - 1, "again");
    check_case("v2 signature only", (char *)b, 12, "again");

    n = v2(b, 0x21, 0x21, in6, sizeof(in6), 0);
    check_case("v2 tcp6", (char *)b, n, "v2 [2001:db8::1]:65535 -> [2001:db8::2]:25 used=52");

    unsigned char mapped[36] = {0};
    mapped[10] = mapped[11] = 0xff, mapped[12] = 203, mapped[13] = 0, mapped[14] = 113,
    mapped[15] = 5;
    memcpy(mapped + 16, in6 + 16, 16);
    mapped[32] = 0x04, mapped[33] = 0xd2, mapped[35] = 25;
    n = v2(b, 0x21, 0x21, mapped, sizeof(mapped), 0);
    check_case("v2 tcp6 ipv4-mapped source", (char *)b, n,
               "v2 203.0.113.5:1234 -> [2001:db8::2]:25 used=52");

    n = v2(b, 0x21, 0x11, in4_tlv, sizeof(in4_tlv), 0);
    check_case("v2 tlvs skipped", (char *)b, n, "v2 192.0.2.1:1 -> 198.51.100.2:25 used=41");

    n = v2(b, 0x20, 0x00, "", 0, 0);
    check_case("v2 local", (char *)b, n, "v2 local used=16");
    n = v2(b, 0x20, 0x11, in4, sizeof(in4), 0);
    check_case("v2 local with addresses", (char *)b, n, "v2 local used=28");
    n = v2(b, 0x21, 0x00, "", 0, 0);
    check_case("v2 unspec", (char *)b, n, "v2 local used=16");
    static unsigned char un[216 + 3] = {[216] = 0x04};
    n = v2(b, 0x21, 0x31, un, sizeof(un), 0);
    check_case("v2 unix", (char *)b, n, "v2 local used=235");

    /* malformed */
    n = v2(b, 0x21, 0x11, in4, sizeof(in4), 0);
    b[11] = 0x0b;
    check_case("v2 bad signature", (char *)b, n, "error");
    n = v2(b, 0x11, 0x11, in4, sizeof(in4), 0);
    check_case("v2 version 1 byte", (char *)b, n, "error");
    n = v2(b, 0x31, 0x11, in4, sizeof(in4), 0);
    check_case("v2 version 3", (char *)b, n, "error");
    n = v2(b, 0x22, 0x11, in4, sizeof(in4), 0);
    check_case("v2 command 2", (char *)b, n, "error");
    n = v2(b, 0x21, 0x12, in4, sizeof(in4), 0);
    check_case("v2 dgram", (char *)b, n, "error");
    n = v2(b, 0x21, 0x41, in4, sizeof(in4), 0);
    check_case("v2 family 4", (char *)b, n, "error");
    n = v2(b, 0x21, 0x07, "", 0, 0);
    check_case("v2 unspec, transport 7", (char *)b, n, "error");
    n = v2(b, 0x21, 0x39, un, sizeof(un), 0);
    check_case("v2 unix, transport 9", (char *)b, n, "error");
    n = v2(b, 0x21, 0x13, in4, sizeof(in4), 0);
    check_case("v2 tcp4, transport 3", (char *)b, n, "error");
    n = v2(b, 0x21, 0x32, un, sizeof(un), 0);
    check_case("v2 unix dgram", (char *)b, n, "v2 local used=235");
    n = v2(b, 0x21, 0x11, in4, 8, 0);
    check_case("v2 length short of ipv4", (char *)b, n, "error");
    n = v2(b, 0x21, 0x21, in6, 20, 0);
    check_case("v2 length short of ipv6", (char *)b, n, "error");
    n = v2(b, 0x21, 0x31, un, 100, 0);
    check_case("v2 length short of unix", (char *)b, n, "error");
    n = v2(b, 0x21, 0x11, in4, sizeof(in4), 5);
    check_case("v2 length longer than sent", (char *)b, n, "again");
    n = v2(b, 0x21, 0x11, in4_tlv, sizeof(in4_tlv) - 1, 0);
    check_case("v2 tlv value truncated", (char *)b, n, "error");
    n = v2(b, 0x21, 0x11, in4_tlv, 14, 0);
    check_case("v2 tlv header truncated", (char *)b, n, "error");
    unsigned char lying[] = {192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 25, 0x04, 0xff, 0xff, 0};
    n = v2(b, 0x21, 0x11, lying, sizeof(lying), 0);
    check_case("v2 tlv lying length", (char *)b, n, "error");
    memset(b, 0, sizeof(b));
    n = v2(b, 0x21, 0x11, in4, sizeof(in4), 0);
    b[14] = (unsigned char)((STP_PROXY_V2_MAX - 16 + 1) >> 8);
    b[15] = (unsigned char)(STP_PROXY_V2_MAX - 16 + 1);
    check_case("v2 over the cap", (char *)b, n, "error");
    b[14] = 0xff, b[15] = 0xff;
    check_case("v2 length 65535", (char *)b, 16, "error");
    /* exactly at the cap, TLV padding to the end */
    memset(b, 0, sizeof(b));
    unsigned char big[STP_PROXY_V2_MAX - 16];
    memset(big, 0, sizeof(big));
    memcpy(big, in4, sizeof(in4));
    size_t pad = sizeof(big) - sizeof(in4) - 3;
    big[12] = 0x04, big[13] = (unsigned char)(pad >> 8), big[14] = (unsigned char)pad;
    n = v2(b, 0x21, 0x11, big, sizeof(big), 0);
    char want[128];
    snprintf(want, sizeof(want), "v2 192.0.2.1:56324 -> 198.51.100.2:25 used=%d", STP_PROXY_V2_MAX);
    check_case("v2 at the cap", (char *)b, n, want);
}

static void test_error_is_sticky(void)
{
    stp_proxy_t p;
    size_t used = 0;
    stp_proxy_init(&p);
    CHECK_EQ_INT(stp_proxy_feed(&p, "HELO", 4, &used), STP_PROXY_ERROR);
    CHECK_EQ_INT(used, 1);
    CHECK_STR(p.error, "not a PROXY protocol header");
    CHECK_EQ_INT(stp_proxy_feed(&p, "PROXY", 5, &used), STP_PROXY_ERROR);
    CHECK_EQ_INT(used, 0);
}

int main(void)
{
    STP_RUN(test_v1);
    STP_RUN(test_v1_no_crlf_in_107);
    STP_RUN(test_v2);
    STP_RUN(test_error_is_sticky);
    return STP_CHECK_DONE();
}
