/*
 * http_req_test: the metrics endpoint's request parser as a specification.
 * Each case is fed whole, cut in two at every byte, and byte by byte; all
 * must give the same outcome, written as text:
 *   "GET /path used=N" / "HEAD /path used=N"   a request (N bytes consumed)
 *   "ERR 400"                                   refused with that status
 *   "again"                                     incomplete
 */
#include <stdio.h>
#include <string.h>

#include "proxy/http_req.h"
#include "test/unit/check.h"

#define S(x) x, sizeof(x) - 1

static void run(const char *in, size_t n, size_t cut, int bytewise, char *out, size_t cap)
{
    static stp_http_req_t r;
    size_t pos = 0;
    int rc = STP_HTTP_AGAIN;

    stp_http_req_init(&r);
    while (pos < n && rc == STP_HTTP_AGAIN) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        size_t used = 0;
        rc = stp_http_req_feed(&r, in + pos, end - pos, &used);
        CHECK(used <= end - pos);
        if (rc == STP_HTTP_AGAIN) {
            CHECK_EQ_INT(used, end - pos);
        }
        pos += used;
    }
    if (rc == STP_HTTP_ERROR) {
        snprintf(out, cap, "ERR %d", r.status);
    } else if (rc == STP_HTTP_AGAIN) {
        snprintf(out, cap, "again");
    } else {
        snprintf(out, cap, "%s %s used=%zu", r.method == STP_HTTP_GET ? "GET" : "HEAD", r.path,
                 pos);
    }
}

static void check_case(const char *label, const char *in, size_t n, const char *want)
{
    char got[512];
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

static void test_table(void)
{
    static const struct {
        const char *label;
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        {"prometheus",
         S("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9925\r\nAccept: text/plain;"
           "version=0.0.4\r\nUser-Agent: Prometheus/2\r\n\r\n"),
         "GET /metrics used=107"},
        {"http/1.0 no headers", S("GET /healthz HTTP/1.0\r\n\r\n"), "GET /healthz used=25"},
        {"head", S("HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"), "HEAD /readyz used=34"},
        {"query dropped", S("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), "GET /metrics used=29"},
        {"bytes after ignored", S("GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n"),
         "GET / used=18"},
        {"content-length 0", S("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), "GET / used=37"},
        {"empty header value", S("GET / HTTP/1.1\r\nX-A:\r\n\r\n"), "GET / used=24"},
        {"incomplete", S("GET /metrics HTTP/1.1\r\nHost: x\r\n"), "again"},
        {"post", S("POST /metrics HTTP/1.1\r\n\r\n"), "ERR 405"},
        {"lowercase method", S("get /metrics HTTP/1.1\r\n\r\n"), "ERR 405"},
        {"http/2", S("GET / HTTP/2.0\r\n\r\n"), "ERR 505"},
        {"http/1.2", S("GET / HTTP/1.2\r\n\r\n"), "ERR 505"},
        {"no version", S("GET /\r\n\r\n"), "ERR 400"},
        {"absolute form", S("GET http://x/metrics HTTP/1.1\r\n\r\n"), "ERR 400"},
        {"double space", S("GET  / HTTP/1.1\r\n\r\n"), "ERR 400"},
        {"bare lf", S("GET / HTTP/1.1\n\n"), "ERR 400"},
        {"bare lf in header", S("GET / HTTP/1.1\r\nA: b\n\r\n"), "ERR 400"},
        {"bare cr", S("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), "ERR 400"},
        {"nul", S("GET /\0 HTTP/1.1\r\n\r\n"), "ERR 400"},
        {"leading blank line", S("\r\nGET / HTTP/1.1\r\n\r\n"), "ERR 400"},
        {"folded header", S("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), "ERR 400"},
        {"space before colon", S("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), "ERR 400"},
        {"no colon", S("GET / HTTP/1.1\r\nHost\r\n\r\n"), "ERR 400"},
        {"control in value", S("GET / HTTP/1.1\r\nA: \x01\r\n\r\n"), "ERR 400"},
        {"body", S("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), "ERR 400"},
        {"chunked", S("GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"), "ERR 400"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(cases[i].label, cases[i].in, cases[i].len, cases[i].want);
    }
}

static void test_limits(void)
{
    static char req[STP_HTTP_REQ_MAX + 64];
    /* a path of 255 bytes fits, 256 does not */
    size_t n = 0;
    memcpy(req, "GET /", 5);
    n = 5;
    memset(req + n, 'a', 254);
    n += 254;
    memcpy(req + n, " HTTP/1.1\r\n\r\n", 13);
    n += 13;
    char want[400];
    snprintf(want, sizeof(want), "GET /%.*s used=%zu", 254, req + 5, n);
    check_case("longest path", req, n, want);
    memcpy(req + 5, "aa", 2);
    memset(req + 5, 'a', 255);
    memcpy(req + 260, " HTTP/1.1\r\n\r\n", 13);
    check_case("path too long", req, 273, "ERR 414");

    /* the head must fit STP_HTTP_REQ_MAX bytes, CRLFCRLF included */
    memcpy(req, "GET / HTTP/1.1\r\nX: ", 19);
    memset(req + 19, 'x', STP_HTTP_REQ_MAX - 19 - 4);
    memcpy(req + STP_HTTP_REQ_MAX - 4, "\r\n\r\n", 4);
    check_case("head at the cap", req, STP_HTTP_REQ_MAX, "GET / used=4096");
    memset(req + 19, 'x', STP_HTTP_REQ_MAX - 19 - 3);
    memcpy(req + STP_HTTP_REQ_MAX - 3, "\r\n\r\n", 4);
    check_case("head over the cap", req, STP_HTTP_REQ_MAX + 1, "ERR 431");
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_limits);
    return STP_CHECK_DONE();
}
