/*
 * http_resp_test: the policy fetch's HTTP response parser as a table. Each
 * response is fed whole, cut in two at every byte, and one byte at a time,
 * then the connection "ends"; every way must give the same transcript:
 *   "H200 len|"  headers accepted (status, framing: len, chunked or close)
 *   "B<body>|"   the body, pieces joined
 *   "D"          complete
 *   "E<message>" the error
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/http_resp.h"
#include "test/unit/check.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

typedef struct {
    char text[200000];
    size_t len;
    char body[80000];
    size_t blen;
} events_t;

static void put(events_t *e, const char *s)
{
    size_t n = strlen(s);
    if (e->len + n < sizeof(e->text)) {
        memcpy(e->text + e->len, s, n + 1);
        e->len += n;
    }
}

static void flush_body(events_t *e)
{
    if (e->blen == 0) {
        return;
    }
    put(e, "B");
    e->body[e->blen] = '\0';
    put(e, e->body);
    put(e, "|");
    e->blen = 0;
}

static const char *framing_name(stp_http_framing_t f)
{
    return f == STP_HTTP_FRAMING_LENGTH    ? "len"
           : f == STP_HTTP_FRAMING_CHUNKED ? "chunked"
                                           : "close";
}

/* Returns 1 when the parser said DONE or ERROR (the transcript is final). */
static int step(stp_http_resp_t *p, const char *in, size_t len, events_t *e)
{
    size_t pos = 0;
    do {
        size_t used = 0, blen = 0;
        const char *body = NULL;
        int rc = stp_http_resp_feed(p, in + pos, len - pos, &used, &body, &blen);
        CHECK(used <= len - pos);
        pos += used;
        char buf[300];
        switch (rc) {
        case STP_HTTP_AGAIN:
            CHECK_EQ_INT(pos, len);
            return 0;
        case STP_HTTP_HEADERS:
            snprintf(buf, sizeof(buf), "H%d %s|", p->status, framing_name(p->framing));
            put(e, buf);
            break;
        case STP_HTTP_BODY:
            CHECK(blen > 0 && body >= in && body + blen <= in + len);
            if (e->blen + blen < sizeof(e->body)) {
                memcpy(e->body + e->blen, body, blen);
                e->blen += blen;
            }
            break;
        case STP_HTTP_DONE:
            flush_body(e);
            put(e, "D");
            return 1;
        case STP_HTTP_ERROR:
            flush_body(e);
            put(e, "E");
            put(e, stp_http_resp_error(p, buf, sizeof(buf)));
            /* sticky */
            CHECK_EQ_INT(stp_http_resp_feed(p, "x", 1, &used, &body, &blen), STP_HTTP_ERROR);
            CHECK_EQ_INT(stp_http_resp_eof(p), STP_HTTP_ERROR);
            return 1;
        default:
            CHECK(0);
            return 1;
        }
    } while (1);
}

static void run(const char *in, size_t n, size_t cut, int bytewise, events_t *e)
{
    static stp_http_resp_t p;
    stp_http_resp_init(&p, STP_HTTP_MTA_STS_BODY_MAX);
    e->len = 0;
    e->text[0] = '\0';
    e->blen = 0;
    if (bytewise) {
        for (size_t i = 0; i < n; i++) {
            if (step(&p, in + i, 1, e)) {
                return;
            }
        }
    } else if (step(&p, in, cut, e) || step(&p, in + cut, n - cut, e)) {
        return;
    }
    /* a feed of nothing reports completion, then the connection ends */
    if (step(&p, in + n, 0, e)) {
        return;
    }
    int rc = stp_http_resp_eof(&p);
    flush_body(e);
    if (rc == STP_HTTP_DONE) {
        put(e, "D");
    } else {
        char buf[300];
        put(e, "E");
        put(e, stp_http_resp_error(&p, buf, sizeof(buf)));
    }
}

typedef struct {
    const char *label, *in, *want;
} resp_case_t;

#define OK_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
#define POLICY "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n"

static const resp_case_t cases[] = {
    {"content-length", OK_HEAD "Content-Length: 5\r\n\r\nhello", "H200 len|Bhello|D"},
    {"content-length zero", OK_HEAD "Content-Length: 0\r\n\r\n", "H200 len|D"},
    {"policy", OK_HEAD "Content-Length: 54\r\n\r\n" POLICY, "H200 len|B" POLICY "|D"},
    {"chunked", OK_HEAD "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n",
     "H200 chunked|Bhello!|D"},
    {"chunked upper hex, trailers",
     OK_HEAD "Transfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n"
             "0\r\nX-Trailer: 1\r\n\r\n",
     "H200 chunked|B0123456789|D"},
    {"close delimited", OK_HEAD "\r\nhello", "H200 close|Bhello|D"},
    {"close delimited empty", OK_HEAD "\r\n", "H200 close|D"},
    {"http/1.0", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody", "H200 close|Bbody|D"},
    {"no reason phrase", "HTTP/1.1 200\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx",
     "H200 len|Bx|D"},
    {"empty reason phrase",
     "HTTP/1.1 200 \r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx", "H200 len|Bx|D"},
    {"type with charset",
     "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
     "Content-Length: 1\r\n\r\nx",
     "H200 len|Bx|D"},
    {"type case and quoted parameter",
     "HTTP/1.1 200 OK\r\ncontent-type:TEXT/Plain ;a=\"b; \\\"c\";\r\n"
     "content-length:1\r\n\r\nx",
     "H200 len|Bx|D"},
    {"other headers ignored", OK_HEAD "Server: nginx\r\nX-Empty:\r\nContent-Length: 1\r\n\r\nx",
     "H200 len|Bx|D"},

    /* statuses */
    {"redirect",
     "HTTP/1.1 301 Moved Permanently\r\nLocation: https://evil.example/x\r\n"
     "Content-Type: text/html\r\nContent-Length: 0\r\n\r\n",
     "EHTTP status 301 (redirects are not followed; Location: https://evil.example/x)"},
    {"redirect without location", "HTTP/1.1 302 Found\r\n\r\n",
     "EHTTP status 302 (redirects are not followed)"},
    {"not found",
     "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found",
     "EHTTP status 404 (only 200 is accepted)"},
    {"no content", "HTTP/1.1 204 No Content\r\n\r\n", "EHTTP status 204 (only 200 is accepted)"},
    {"interim response", "HTTP/1.1 100 Continue\r\n\r\n",
     "EHTTP status 100 (only 200 is accepted)"},
    {"server error", "HTTP/1.1 503 Busy\r\nContent-Type: text/plain\r\n\r\n",
     "EHTTP status 503 (only 200 is accepted)"},

    /* content type */
    {"text/html",
     "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 1\r\n\r\nx",
     "EContent-Type 'text/html; charset=utf-8' is not text/plain"},
    {"text/plainx", "HTTP/1.1 200 OK\r\nContent-Type: text/plainx\r\n\r\nx",
     "EContent-Type 'text/plainx' is not text/plain"},
    {"no content type", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
     "Eno Content-Type (text/plain is required)"},
    {"two content types", OK_HEAD "Content-Type: text/plain\r\n\r\nx",
     "Emore than one Content-Type"},
    {"malformed content type", "HTTP/1.1 200 OK\r\nContent-Type: text\r\n\r\nx",
     "Emalformed Content-Type"},
    {"bad parameter", "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset\r\n\r\nx",
     "Emalformed Content-Type"},
    {"unterminated quote", "HTTP/1.1 200 OK\r\nContent-Type: text/plain; a=\"b\r\n\r\nx",
     "Emalformed Content-Type"},

    /* framing */
    {"two content lengths", OK_HEAD "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
     "Emore than one Content-Length"},
    {"content length with sign", OK_HEAD "Content-Length: +1\r\n\r\nx",
     "Emalformed Content-Length"},
    {"content length list", OK_HEAD "Content-Length: 1, 1\r\n\r\nx", "Emalformed Content-Length"},
    {"content length huge", OK_HEAD "Content-Length: 99999999999999999999\r\n\r\nx",
     "Emalformed Content-Length"},
    {"length and chunked", OK_HEAD "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
     "Eboth Content-Length and Transfer-Encoding"},
    {"gzip coding", OK_HEAD "Transfer-Encoding: gzip, chunked\r\n\r\n",
     "ETransfer-Encoding other than chunked"},
    {"chunked in 1.0",
     "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
     "ETransfer-Encoding in an HTTP/1.0 response"},
    {"bad chunk size", OK_HEAD "Transfer-Encoding: chunked\r\n\r\nz\r\n",
     "H200 chunked|Emalformed chunk size"},
    {"chunk size with junk", OK_HEAD "Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
     "H200 chunked|Emalformed chunk size"},
    {"chunk without crlf", OK_HEAD "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n",
     "H200 chunked|Bhello|Echunk data not followed by CRLF"},
    {"chunked cut short", OK_HEAD "Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
     "H200 chunked|Bhel|Econnection closed before the end of the body"},
    {"chunked without trailer end", OK_HEAD "Transfer-Encoding: chunked\r\n\r\n0\r\n",
     "H200 chunked|Econnection closed before the end of the body"},
    {"length cut short", OK_HEAD "Content-Length: 10\r\n\r\nhello",
     "H200 len|Bhello|Econnection closed before the end of the body"},
    {"bytes after the body left unread", OK_HEAD "Content-Length: 2\r\n\r\nhello",
     "H200 len|Bhe|D"},
    {"bytes after the chunked body left unread",
     OK_HEAD "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", "H200 chunked|D"},
    {"headers cut short", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",
     "Econnection closed before the end of the headers"},
    {"nothing at all", "", "Econnection closed before the end of the headers"},

    /* syntax */
    {"bare LF", "HTTP/1.1 200 OK\nContent-Type: text/plain\n\nx", "Ebare LF"},
    {"bare LF in headers", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\n\r\nx", "Ebare LF"},
    {"bare CR", "HTTP/1.1 200 OK\rContent-Type: text/plain\r\n\r\nx", "ECR not followed by LF"},
    {"http/2 version", "HTTP/2 200 OK\r\n\r\n", "Emalformed status line"},
    {"http/1.2", "HTTP/1.2 200 OK\r\n\r\n", "Emalformed status line"},
    {"lower case http", "http/1.1 200 OK\r\n\r\n", "Emalformed status line"},
    {"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", "Emalformed status line"},
    {"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", "Emalformed status line"},
    {"status 600", "HTTP/1.1 600 OK\r\n\r\n", "Emalformed status line"},
    {"control in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", "Emalformed status line"},
    {"blank before colon", "HTTP/1.1 200 OK\r\nContent-Type : text/plain\r\n\r\n",
     "Emalformed header field"},
    {"folded header", OK_HEAD "X-A: 1\r\n  continued\r\n\r\n", "Efolded header line (obs-fold)"},
    {"no colon", OK_HEAD "Garbage\r\n\r\n", "Emalformed header field"},
    {"NUL in value", OK_HEAD "X-A: a\0b\r\n\r\n", "Econtrol character in a header field"},
};

static size_t case_len(const resp_case_t *c)
{
    if (strcmp(c->label, "NUL in value") == 0) {
        return sizeof(OK_HEAD "X-A: a\0b\r\n\r\n") - 1;
    }
    return strlen(c->in);
}

static void test_table(void)
{
    static events_t whole, part;
    for (size_t k = 0; k < COUNT_OF(cases); k++) {
        const resp_case_t *c = &cases[k];
        size_t n = case_len(c);
        run(c->in, n, n, 0, &whole);
        if (strcmp(whole.text, c->want) != 0) {
            fprintf(stderr, "  case %s:\n    got  %s\n    want %s\n", c->label, whole.text,
                    c->want);
            CHECK(0);
            continue;
        }
        for (size_t cut = 0; cut <= n; cut++) {
            run(c->in, n, cut, 0, &part);
            if (strcmp(part.text, whole.text) != 0) {
                fprintf(stderr, "  case %s cut at %zu: %s\n", c->label, cut, part.text);
                CHECK(0);
                break;
            }
        }
        run(c->in, n, n, 1, &part);
        if (strcmp(part.text, whole.text) != 0) {
            fprintf(stderr, "  case %s byte by byte: %s\n", c->label, part.text);
            CHECK(0);
        }
    }
}

/* The 64 KiB body cap, in every framing, and the header caps. */
static void test_limits(void)
{
    static char in[200000], body[70000];
    static events_t e;
    size_t max = STP_HTTP_MTA_STS_BODY_MAX;
    memset(body, 'a', sizeof(body));

    /* Content-Length: exactly the cap passes, one more is refused before the body */
    int n =
        snprintf(in, sizeof(in), OK_HEAD "Content-Length: %zu\r\n\r\n%.*s", max, (int)max, body);
    run(in, (size_t)n, (size_t)n, 0, &e);
    CHECK(strncmp(e.text, "H200 len|Baaa", 13) == 0 && e.text[e.len - 1] == 'D');
    CHECK_EQ_INT(e.len, strlen("H200 len|B|D") + max);
    n = snprintf(in, sizeof(in), OK_HEAD "Content-Length: %zu\r\n\r\n", max + 1);
    run(in, (size_t)n, (size_t)n, 0, &e);
    CHECK_STR(e.text, "Ebody over 65536 bytes");

    /* close-delimited: refused when the body goes over */
    n = snprintf(in, sizeof(in), OK_HEAD "\r\n%.*s", (int)max + 1, body);
    run(in, (size_t)n, 100, 0, &e);
    CHECK(strncmp(e.text, "H200 close|Baaa", 15) == 0);
    CHECK(strstr(e.text, "|Ebody over 65536 bytes") != NULL);
    n = snprintf(in, sizeof(in), OK_HEAD "\r\n%.*s", (int)max, body);
    run(in, (size_t)n, 100, 0, &e);
    CHECK(e.text[e.len - 1] == 'D');

    /* chunked: a chunk size that would go over is refused before its data */
    n = snprintf(in, sizeof(in), OK_HEAD "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%.*s\r\n1\r\n",
                 max, (int)max, body);
    run(in, (size_t)n, (size_t)n, 0, &e);
    CHECK(strstr(e.text, "|Ebody over 65536 bytes") != NULL);
    n = snprintf(in, sizeof(in), OK_HEAD "Transfer-Encoding: chunked\r\n\r\n123456789\r\n");
    run(in, (size_t)n, (size_t)n, 0, &e);
    CHECK_STR(e.text, "H200 chunked|Ebody over 65536 bytes");

    /* a header line of the maximum length passes, one byte more does not */
    char line[STP_HTTP_MAX_LINE + 2];
    memset(line, 'v', sizeof(line));
    memcpy(line, "X-Long: ", 8);
    line[STP_HTTP_MAX_LINE] = '\0';
    n = snprintf(in, sizeof(in), OK_HEAD "%s\r\nContent-Length: 0\r\n\r\n", line);
    run(in, (size_t)n, (size_t)n, 0, &e);
    CHECK_STR(e.text, "H200 len|D");
    line[STP_HTTP_MAX_LINE] = 'v';
    line[STP_HTTP_MAX_LINE + 1] = '\0';
    n = snprintf(in, sizeof(in), OK_HEAD "%s\r\nContent-Length: 0\r\n\r\n", line);
    run(in, (size_t)n, (size_t)n, 0, &e);
    CHECK_STR(e.text, "Eline too long");

    /* all headers together */
    size_t used = (size_t)snprintf(in, sizeof(in), OK_HEAD);
    line[3000] = '\0';
    for (int i = 0; i < 6; i++) {
        used += (size_t)snprintf(in + used, sizeof(in) - used, "%s\r\n", line);
    }
    used += (size_t)snprintf(in + used, sizeof(in) - used, "\r\n");
    run(in, used, used, 0, &e);
    CHECK_STR(e.text, "Eresponse headers too large");

    /* number of fields */
    used = (size_t)snprintf(in, sizeof(in), OK_HEAD);
    for (int i = 0; i < STP_HTTP_MAX_FIELDS; i++) {
        used += (size_t)snprintf(in + used, sizeof(in) - used, "X-%d: 1\r\n", i);
    }
    used += (size_t)snprintf(in + used, sizeof(in) - used, "\r\n");
    run(in, used, used, 0, &e);
    CHECK_STR(e.text, "Etoo many header fields");
}

/* DONE consumes nothing past the response. */
static void test_done_leaves_rest(void)
{
    static const char in[] = OK_HEAD "Content-Length: 2\r\n\r\nokEXTRA";
    stp_http_resp_t p;
    size_t used, blen, pos = 0;
    const char *body;
    stp_http_resp_init(&p, 100);
    CHECK_EQ_INT(stp_http_resp_feed(&p, in, sizeof(in) - 1, &used, &body, &blen), STP_HTTP_HEADERS);
    pos += used;
    CHECK_EQ_INT(stp_http_resp_feed(&p, in + pos, sizeof(in) - 1 - pos, &used, &body, &blen),
                 STP_HTTP_BODY);
    CHECK_MEM(body, blen, "ok", 2);
    pos += used;
    CHECK_EQ_INT(stp_http_resp_feed(&p, in + pos, sizeof(in) - 1 - pos, &used, &body, &blen),
                 STP_HTTP_DONE);
    CHECK_EQ_INT(used, 0);
    CHECK_STR(in + pos, "EXTRA");
    CHECK_EQ_INT(stp_http_resp_eof(&p), STP_HTTP_DONE);
}

int main(void)
{
    STP_RUN(test_done_leaves_rest);
    STP_RUN(test_table);
    STP_RUN(test_limits);
    return STP_CHECK_DONE();
}
