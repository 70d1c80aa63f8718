/* trace_test: the Received: header, protocol names, and HELO sanitising. */
#include <arpa/inet.h>
#include <string.h>

#include "proxy/trace.h"
#include "test/unit/check.h"

static void test_protocol_names(void)
{
    static const struct {
        int esmtp, tls, auth;
        const char *want;
    } cases[] = {
        {0, 0, 0, "SMTP"},    {1, 0, 0, "ESMTP"},   {1, 1, 0, "ESMTPS"},
        {1, 0, 1, "ESMTPA"},  {1, 1, 1, "ESMTPSA"}, {0, 1, 0, "SMTPS"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_STR(stp_trace_protocol(cases[i].esmtp, cases[i].tls, cases[i].auth), cases[i].want);
    }
}

static void test_tls_header(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    char out[1024];
    inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
    stp_trace_t t = {
        .helo = "client.example",
        .client = (struct sockaddr *)&sin,
        .hostname = "mx.example.test",
        .id = "ABCDE00001",
        .esmtp = 1,
        .tls_version = "TLSv1.3",
        .tls_cipher = "TLS_AES_256_GCM_SHA384",
        .tls_bits = 256,
        .now = 1795420800, /* 2026-11-23 08:00:00 UTC */
    };
    size_t n = stp_trace_header(&t, out, sizeof(out));
    const char *want = "Received: from client.example ([192.0.2.7])\r\n"
                       "\tby mx.example.test (smtp-tls-proxy) with ESMTPS id ABCDE00001\r\n"
                       "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits));\r\n"
                       "\tMon, 23 Nov 2026 08:00:00 +0000\r\n";
    CHECK_MEM(out, n, want, strlen(want));
}

static void test_plain_ipv6_and_hostile_helo(void)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    char out[1024];
    inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
    stp_trace_t t = {
        .helo = "evil\r\nX-Injected: yes",
        .client = (struct sockaddr *)&sin6,
        .hostname = "mx",
        .id = "1",
        .esmtp = 1,
        .now = 0,
    };
    size_t n = stp_trace_header(&t, out, sizeof(out));
    CHECK(n > 0);
    /* CR, LF and space become '?'; ':' stays (it is valid in address literals) */
    CHECK(strstr(out, "from evil??X-Injected:?yes ([IPv6:2001:db8::1])") != NULL);
    CHECK(strstr(out, "with ESMTP id 1;") != NULL);
    CHECK(strstr(out, "using") == NULL);
    /* exactly three CRLFs: nothing a client sends can add a header line */
    int crlf = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        crlf += out[i] == '\r' && out[i + 1] == '\n';
    }
    CHECK_EQ_INT(crlf, 3);
}

static void test_missing_helo_and_small_buffer(void)
{
    char out[32];
    stp_trace_t t = {.hostname = "mx", .id = "1"};
    CHECK_EQ_INT(stp_trace_header(&t, out, sizeof(out)), 0);
    char big[512];
    CHECK(stp_trace_header(&t, big, sizeof(big)) > 0);
    CHECK(strstr(big, "from unknown (unknown)") != NULL);
    CHECK(strstr(big, "with SMTP id") != NULL);
}

int main(void)
{
    STP_RUN(test_protocol_names);
    STP_RUN(test_tls_header);
    STP_RUN(test_plain_ipv6_and_hostile_helo);
    STP_RUN(test_missing_helo_and_small_buffer);
    return STP_CHECK_DONE();
}
