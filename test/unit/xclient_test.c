/*
 * xclient_test: the XCLIENT command line and xtext encoding.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
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

int main(void)
{
    STP_RUN(test_xtext);
    STP_RUN(test_command);
    return STP_CHECK_DONE();
}
