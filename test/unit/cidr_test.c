/* cidr_test: parsing of address/prefix entries and matching, IPv4-mapped peers included. */
#include <arpa/inet.h>
#include <string.h>

#include "policy/cidr.h"
#include "test/unit/check.h"

/* A peer address as a listener would report it (AF_INET or AF_INET6). */
static struct sockaddr_storage peer(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
    }
    return ss;
}

#define SA(x) ((const struct sockaddr *)&(x))

static void test_parse_good(void)
{
    static const struct {
        const char *label, *text;
        int family, prefix;
        const char *addr; /* after the host bits are cleared */
    } cases[] = {
        {"ipv4 network", "10.0.0.0/8", AF_INET, 8, "10.0.0.0"},
        {"ipv4 host, no prefix", "192.0.2.1", AF_INET, 32, "192.0.2.1"},
        {"ipv4 /32", "127.0.0.1/32", AF_INET, 32, "127.0.0.1"},
        {"ipv4 /0", "0.0.0.0/0", AF_INET, 0, "0.0.0.0"},
        {"ipv4 odd prefix", "172.16.0.0/12", AF_INET, 12, "172.16.0.0"},
        {"ipv4 host bits cleared", "10.1.2.3/8", AF_INET, 8, "10.0.0.0"},
        {"ipv4 host bits inside a byte", "192.0.2.255/25", AF_INET, 25, "192.0.2.128"},
        {"ipv6 loopback", "::1/128", AF_INET6, 128, "::1"},
        {"ipv6 no prefix", "2001:db8::1", AF_INET6, 128, "2001:db8::1"},
        {"ipv6 /0", "::/0", AF_INET6, 0, "::"},
        {"ipv6 network", "2001:db8::/32", AF_INET6, 32, "2001:db8::"},
        {"ipv6 host bits cleared", "2001:db8:ffff::1/33", AF_INET6, 33, "2001:db8:8000::"},
        {"ipv4-mapped stays ipv6", "::ffff:10.0.0.0/104", AF_INET6, 104, "::ffff:10.0.0.0"},
        {"leading zero prefix", "10.0.0.0/08", AF_INET, 8, "10.0.0.0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stp_cidr_t c;
        unsigned char want[16] = {0};
        int rc = stp_cidr_parse(cases[i].text, &c);
        if (rc != 0) {
            fprintf(stderr, "  case: %s\n", cases[i].label);
        }
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(c.family, cases[i].family);
        CHECK_EQ_INT(c.prefix, cases[i].prefix);
        inet_pton(cases[i].family, cases[i].addr, want);
        if (memcmp(c.addr, want, 16) != 0) {
            fprintf(stderr, "  case: %s (address)\n", cases[i].label);
        }
        CHECK(memcmp(c.addr, want, 16) == 0);
    }
}

static void test_parse_bad(void)
{
    static const char *const bad[] = {
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "::1/129",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/8 ",
        " 10.0.0.0/8",
        "10.0.0.0/8/8",
        "10.0.0.0/0008",
        "10.0.0/8",
        "256.0.0.0/8",
        "example.com/24",
        "[::1]/128",
        "fe80::1%eth0/64",
        "10.0.0.0/a",
        "1111:2222:3333:4444:5555:6666:7777:8888:9999/128",
        "0123456789012345678901234567890123456789012345678901234567890123456789/8",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        stp_cidr_t c;
        int rc = stp_cidr_parse(bad[i], &c);
        if (rc != -1) {
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        }
        CHECK_EQ_INT(rc, -1);
    }
}

static void test_match(void)
{
    static const struct {
        const char *label, *entry, *peer;
        int match;
    } cases[] = {
        {"v4 inside", "10.0.0.0/8", "10.200.3.4", 1},
        {"v4 outside", "10.0.0.0/8", "11.0.0.1", 0},
        {"v4 /32 same", "127.0.0.1/32", "127.0.0.1", 1},
        {"v4 /32 other", "127.0.0.1/32", "127.0.0.2", 0},
        {"v4 /0 everything", "0.0.0.0/0", "203.0.113.9", 1},
        {"v4 /25 boundary in", "192.0.2.128/25", "192.0.2.255", 1},
        {"v4 /25 boundary out", "192.0.2.128/25", "192.0.2.127", 0},
        {"v4 /12 last", "172.16.0.0/12", "172.31.255.255", 1},
        {"v4 /12 next", "172.16.0.0/12", "172.32.0.0", 0},
        {"v6 inside", "2001:db8::/32", "2001:db8:1::5", 1},
        {"v6 outside", "2001:db8::/32", "2001:db9::1", 0},
        {"v6 loopback", "::1/128", "::1", 1},
        {"v6 /0 everything", "::/0", "2001:db8::1", 1},
        {"v4-mapped peer, v4 entry", "127.0.0.1/32", "::ffff:127.0.0.1", 1},
        {"v4-mapped peer, v4 network", "10.0.0.0/8", "::ffff:10.9.8.7", 1},
        {"v4-mapped peer outside", "10.0.0.0/8", "::ffff:192.0.2.1", 0},
        {"v4-mapped peer, v4 /0", "0.0.0.0/0", "::ffff:192.0.2.1", 1},
        {"v4 peer, mapped entry", "::ffff:10.0.0.0/104", "10.1.1.1", 1},
        {"v4 peer, mapped entry outside", "::ffff:10.0.0.0/104", "11.1.1.1", 0},
        {"v4 peer, v6 entry", "2001:db8::/32", "10.1.1.1", 0},
        {"v6 peer, v4 entry", "10.0.0.0/8", "2001:db8::1", 0},
        {"v6 peer, v4 /0", "0.0.0.0/0", "2001:db8::1", 0},
        {"v4-compatible is not mapped", "10.0.0.0/8", "::10.1.1.1", 0},
        {"v4 peer, ::/0 covers mapped", "::/0", "10.1.1.1", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stp_cidr_t c;
        struct sockaddr_storage p = peer(cases[i].peer);
        CHECK_EQ_INT(stp_cidr_parse(cases[i].entry, &c), 0);
        int got = stp_cidr_match(&c, SA(p));
        if (got != cases[i].match) {
            fprintf(stderr, "  case: %s\n", cases[i].label);
        }
        CHECK_EQ_INT(got, cases[i].match);
    }
}

static void test_match_other_family(void)
{
    stp_cidr_t c;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    CHECK_EQ_INT(stp_cidr_parse("0.0.0.0/0", &c), 0);
    CHECK_EQ_INT(stp_cidr_match(&c, SA(ss)), 0);
    CHECK_EQ_INT(stp_cidr_match(&c, NULL), 0);
}

static void test_list(void)
{
    stp_cidr_t list[2];
    struct sockaddr_storage lo4 = peer("127.0.0.1"), lo6 = peer("::1"),
                            mapped = peer("::ffff:127.0.0.1"), other = peer("192.0.2.1");
    CHECK_EQ_INT(stp_cidr_parse("127.0.0.1/32", &list[0]), 0);
    CHECK_EQ_INT(stp_cidr_parse("::1/128", &list[1]), 0);
    CHECK_EQ_INT(stp_cidr_list_match(list, 2, SA(lo4)), 1);
    CHECK_EQ_INT(stp_cidr_list_match(list, 2, SA(lo6)), 1);
    CHECK_EQ_INT(stp_cidr_list_match(list, 2, SA(mapped)), 1);
    CHECK_EQ_INT(stp_cidr_list_match(list, 2, SA(other)), 0);
    CHECK_EQ_INT(stp_cidr_list_match(list, 0, SA(lo4)), 0);
}

/* A failed parse leaves the output alone. */
static void test_parse_failure_keeps_output(void)
{
    stp_cidr_t c;
    CHECK_EQ_INT(stp_cidr_parse("10.0.0.0/8", &c), 0);
    CHECK_EQ_INT(stp_cidr_parse("10.0.0.0/99", &c), -1);
    CHECK_EQ_INT(c.family, AF_INET);
    CHECK_EQ_INT(c.prefix, 8);
}

int main(void)
{
    STP_RUN(test_parse_good);
    STP_RUN(test_parse_bad);
    STP_RUN(test_match);
    STP_RUN(test_match_other_family);
    STP_RUN(test_list);
    STP_RUN(test_parse_failure_keeps_output);
    return STP_CHECK_DONE();
}
