/*
 * xclient_test: the XCLIENT command line and xtext encoding.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxy/xclient.h"
#include "test/unit/check.h"

static void test_xtext(void)
{
    char out[64];
    CHECK_EQ_INT(stp_xtext_encode(out, sizeof(out), "mx.example", 10), 10);
    CHECK_STR(out, "mx.example");
    CHECK_EQ_INT(stp_xtext_encode(out, sizeof(out), "a b+c=d\x01\xff", 9), 19);
    CHECK_STR(out, "a+20b+2Bc+3Dd+01+FF");
    CHECK_EQ_INT(stp_xtext_encode(out, sizeof(out), "", 0), 0);
    CHECK_STR(out, "");
    /* exactly fitting, and one byte short */
    CHECK_EQ_INT(stp_xtext_encode(out, 4, "a b", 3) == (size_t)-1, 1);
    CHECK_EQ_INT(stp_xtext_encode(out, 6, "a b", 3), 5);
    CHECK_STR(out, "a+20b");
    CHECK_EQ_INT(stp_xtext_encode(out, 5, "a b", 3) == (size_t)-1, 1);
    CHECK_STR(out, "");
}

static void test_command(void)
{
    char out[1024];
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(51234)};
    inet_pton(AF_INET, "192.0.2.7", &v4.sin_addr);
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(25)};
    inet_pton(AF_INET6, "2001:db8::7", &v6.sin6_addr);

    size_t n = stp_xclient_format(out, sizeof(out), (struct sockaddr *)&v4, "client.example", 1);
    CHECK_STR(out, "XCLIENT ADDR=192.0.2.7 PORT=51234 HELO=client.example PROTO=ESMTP");
    CHECK_EQ_INT(n, strlen(out));
    stp_xclient_format(out, sizeof(out), (struct sockaddr *)&v6, "we ird=", 0);
    CHECK_STR(out, "XCLIENT ADDR=IPV6:2001:db8::7 PORT=25 HELO=we+20ird+3D PROTO=SMTP");
    stp_xclient_format(out, sizeof(out), (struct sockaddr *)&v4, NULL, 0);
    CHECK_STR(out, "XCLIENT ADDR=192.0.2.7 PORT=51234 HELO=[UNAVAILABLE] PROTO=SMTP");
    CHECK_EQ_INT(stp_xclient_format(out, 20, (struct sockaddr *)&v4, "x", 1), 0);
    CHECK_STR(out, "");
}

static int offered(const char *reply)
{
    static stp_reply_parser_t p;
    size_t used = 0;
    stp_reply_parser_init(&p);
    CHECK_EQ_INT(stp_reply_feed(&p, reply, strlen(reply), &used), STP_REPLY_DONE);
    return stp_xclient_offered(&p.reply);
}

static void test_offered(void)
{
    static const struct {
        const char *label, *reply;
        int want;
    } cases[] = {
        {"postfix", "250-mx.example\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR PROTO HELO "
                    "REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n250 8BITMIME\r\n", 1},
        {"lower case, last line", "250-mx\r\n250 xclient addr port helo proto\r\n", 1},
        {"missing PORT", "250-mx\r\n250 XCLIENT ADDR HELO PROTO NAME\r\n", 0},
        {"no attributes", "250-mx\r\n250 XCLIENT\r\n", 0},
        {"absent", "250-mx\r\n250-XFORWARD ADDR PORT HELO PROTO\r\n250 SIZE\r\n", 0},
        {"prefix only", "250-mx\r\n250 XCLIENTX ADDR PORT HELO PROTO\r\n", 0},
        {"attribute prefix", "250-mx\r\n250 XCLIENT ADDRESS PORT HELO PROTO\r\n", 0},
        {"greeting line is not a keyword", "250 XCLIENT ADDR PORT HELO PROTO\r\n", 0},
        {"not a 2xx", "550-mx\r\n550 XCLIENT ADDR PORT HELO PROTO\r\n", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = offered(cases[i].reply);
        if (got != cases[i].want) {
            fprintf(stderr, "case \"%s\":\n", cases[i].label);
        }
        CHECK_EQ_INT(got, cases[i].want);
    }
}

int main(void)
{
    STP_RUN(test_xtext);
    STP_RUN(test_command);
    STP_RUN(test_offered);
    return STP_CHECK_DONE();
}
