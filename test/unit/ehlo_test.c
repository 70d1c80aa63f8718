/* ehlo_test: EHLO reply rewriting as data. */
#include <string.h>

#include "proxy/ehlo.h"
#include "test/unit/check.h"

static stp_reply_parser_t parser;

static const stp_reply_t *parse(const char *text)
{
    size_t used;
    stp_reply_parser_init(&parser);
    int rc = stp_reply_feed(&parser, text, strlen(text), &used);
    CHECK_EQ_INT(rc, STP_REPLY_DONE);
    return &parser.reply;
}

static const char backend[] = "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                              "250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n"
                              "250-CHUNKING\r\n250-BINARYMIME\r\n250-XCLIENT NAME ADDR\r\n"
                              "250-XFORWARD NAME\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n"
                              "250-XEXCH50\r\n250 ENHANCEDSTATUSCODES\r\n";

static void test_inbound_before_tls(void)
{
    char out[1024];
    size_t len;
    unsigned seen = 0;
    stp_ehlo_opts_t o = {
        .drop = STP_EHLO_STARTTLS | STP_EHLO_CHUNKING | STP_EHLO_BINARYMIME | STP_EHLO_XCLIENT |
                STP_EHLO_XFORWARD | STP_EHLO_AUTH,
        .drop_unknown = 1,
        .add_starttls = 1,
    };
    CHECK_EQ_INT(stp_ehlo_rewrite(parse(backend), &o, out, sizeof(out), &len, &seen), 0);
    const char *want = "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                       "250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
                       "250 STARTTLS\r\n";
    CHECK_MEM(out, len, want, strlen(want));
    CHECK(seen & STP_EHLO_STARTTLS);
    CHECK(seen & STP_EHLO_AUTH);
    CHECK(seen & STP_EHLO_CHUNKING);
    CHECK(seen & STP_EHLO_OTHER);
}

static void test_inbound_after_tls(void)
{
    char out[1024];
    size_t len;
    stp_ehlo_opts_t o = {
        .drop = STP_EHLO_STARTTLS | STP_EHLO_CHUNKING | STP_EHLO_BINARYMIME | STP_EHLO_XCLIENT |
                STP_EHLO_XFORWARD,
        .drop_unknown = 1,
    };
    CHECK_EQ_INT(stp_ehlo_rewrite(parse(backend), &o, out, sizeof(out), &len, NULL), 0);
    CHECK(strstr(out, "STARTTLS") == NULL || (size_t)(strstr(out, "STARTTLS") - out) >= len);
    const char *want = "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                       "250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                       "250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n";
    CHECK_MEM(out, len, want, strlen(want));
}

static void test_shrinks_to_one_line(void)
{
    char out[256];
    size_t len;
    stp_ehlo_opts_t o = {.drop = STP_EHLO_STARTTLS | STP_EHLO_AUTH};
    CHECK_EQ_INT(stp_ehlo_rewrite(parse("250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"), &o, out,
                                  sizeof(out), &len, NULL),
                 0);
    CHECK_MEM(out, len, "250 mx\r\n", 8);
}

static void test_single_line_gains_starttls_once(void)
{
    char out[256];
    size_t len;
    stp_ehlo_opts_t o = {.add_starttls = 1};
    CHECK_EQ_INT(stp_ehlo_rewrite(parse("250 mx\r\n"), &o, out, sizeof(out), &len, NULL), 0);
    CHECK_MEM(out, len, "250-mx\r\n250 STARTTLS\r\n", 22);
    /* the backend's own STARTTLS kept: never duplicated */
    CHECK_EQ_INT(stp_ehlo_rewrite(parse("250-mx\r\n250 STARTTLS\r\n"), &o, out, sizeof(out), &len,
                                  NULL),
                 0);
    CHECK_MEM(out, len, "250-mx\r\n250 STARTTLS\r\n", 22);
}

static void test_greeting_replaced_and_errors(void)
{
    char out[256];
    size_t len;
    stp_ehlo_opts_t o = {.greeting = "proxy.example"};
    CHECK_EQ_INT(stp_ehlo_rewrite(parse("250-mx\r\n250 DSN\r\n"), &o, out, sizeof(out), &len, NULL),
                 0);
    CHECK_MEM(out, len, "250-proxy.example\r\n250 DSN\r\n", 28);
    CHECK_EQ_INT(stp_ehlo_rewrite(parse("502 5.5.1 no EHLO\r\n"), &o, out, sizeof(out), &len, NULL),
                 -1);
    CHECK_EQ_INT(stp_ehlo_rewrite(parse("250-mx\r\n250 DSN\r\n"), &o, out, 10, &len, NULL), -1);
}

static void test_caps_and_size(void)
{
    const stp_reply_t *r = parse(backend);
    unsigned caps = stp_ehlo_caps(r);
    CHECK(caps & STP_EHLO_PIPELINING);
    CHECK(caps & STP_EHLO_SIZE);
    CHECK(!(caps & STP_EHLO_REQUIRETLS));
    CHECK_EQ_INT(stp_ehlo_size(r), 10240000);
    CHECK_EQ_INT(stp_ehlo_size(parse("250-mx\r\n250 SIZE\r\n")), 0);
}

/* A reply already at the limits still rebuilds into one that parses. */
static void test_full_reply_stays_parseable(void)
{
    static char in[STP_REPLY_MAX_BYTES + 64], out[STP_REPLY_MAX_BYTES + 64];
    static stp_reply_parser_t q;
    size_t n = 0, len, used;
    n += (size_t)snprintf(in + n, sizeof(in) - n, "250-mx\r\n");
    for (int i = 0; i < STP_REPLY_MAX_LINES - 2; i++) {
        n += (size_t)snprintf(in + n, sizeof(in) - n, "250-X%0100d\r\n", i);
    }
    n += (size_t)snprintf(in + n, sizeof(in) - n, "250 DSN\r\n");
    stp_reply_parser_init(&parser);
    if (stp_reply_feed(&parser, in, n, &used) != STP_REPLY_DONE) {
        /* too long for the parser itself: shorten the keywords */
        CHECK(0);
        return;
    }
    stp_ehlo_opts_t o = {.add_starttls = 1};
    CHECK_EQ_INT(stp_ehlo_rewrite(&parser.reply, &o, out, sizeof(out), &len, NULL), 0);
    stp_reply_parser_init(&q);
    CHECK_EQ_INT(stp_reply_feed(&q, out, len, &used), STP_REPLY_DONE);
    CHECK_EQ_INT(used, len);
    size_t tl;
    const char *t = stp_reply_text(&q.reply, q.reply.nlines - 1, &tl);
    CHECK_MEM(t, tl, "STARTTLS", 8);
}

int main(void)
{
    STP_RUN(test_full_reply_stays_parseable);
    STP_RUN(test_inbound_before_tls);
    STP_RUN(test_inbound_after_tls);
    STP_RUN(test_shrinks_to_one_line);
    STP_RUN(test_single_line_gains_starttls_once);
    STP_RUN(test_greeting_replaced_and_errors);
    STP_RUN(test_caps_and_size);
    return STP_CHECK_DONE();
}
