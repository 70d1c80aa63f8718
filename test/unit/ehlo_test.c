/*
 * ehlo_test: EHLO reply rewriting as data, as a table of server reply,
 * options and the exact reply the client must see. Each server reply is
 * parsed fed whole, cut at every byte and one byte at a time, and every
 * parse must rewrite to the same bytes; each rewritten reply must parse
 * again as one complete 250 reply.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/ehlo.h"
#include "test/unit/check.h"

#define S(x) x, sizeof(x) - 1

/* What a STARTTLS-offering inbound listener strips before TLS. */
#define INBOUND_DROP                                                                               \
    (STP_EHLO_STARTTLS | STP_EHLO_CHUNKING | STP_EHLO_BINARYMIME | STP_EHLO_XCLIENT |              \
     STP_EHLO_XFORWARD)

static const char backend[] = "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                              "250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n"
                              "250-CHUNKING\r\n250-BINARYMIME\r\n250-XCLIENT NAME ADDR\r\n"
                              "250-XFORWARD NAME\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n"
                              "250-XEXCH50\r\n250 ENHANCEDSTATUSCODES\r\n";

/* Parses in[0..n) fed in pieces cut at `cut`, or byte by byte. Returns 0 if
 * it did not give exactly one reply using all the bytes. */
static int parse(stp_reply_parser_t *p, const char *in, size_t n, size_t cut, int bytewise)
{
    size_t pos = 0;
    int replies = 0;
    stp_reply_parser_init(p);
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t used = 0;
            int rc = stp_reply_feed(p, in + pos, end - pos, &used);
            pos += used;
            if (rc == STP_REPLY_ERROR) {
                return 0;
            }
            if (rc == STP_REPLY_DONE) {
                replies++;
                if (pos != n) {
                    return 0;
                }
            }
        }
    }
    return replies == 1;
}

/* The rebuilt reply is one well-formed 250 reply within every limit. */
static void check_parses_again(const char *out, size_t len)
{
    static stp_reply_parser_t q;
    size_t used;
    stp_reply_parser_init(&q);
    CHECK_EQ_INT(stp_reply_feed(&q, out, len, &used), STP_REPLY_DONE);
    CHECK_EQ_INT(used, len);
    CHECK_EQ_INT(q.reply.code, 250);
    CHECK_EQ_INT(q.reply.bare_lf, 0);
}

typedef struct {
    const char *label;
    const char *in;
    size_t in_len;
    stp_ehlo_opts_t opts;
    const char *want;  /* NULL: rewrite refused (-1) */
    unsigned seen_all; /* bits that must all be in *seen */
} ehlo_case_t;

static const ehlo_case_t rewrite_cases[] = {
    {"inbound before TLS: strip, hide AUTH, add STARTTLS",
     S(backend),
     {.drop = INBOUND_DROP | STP_EHLO_AUTH, .drop_unknown = 1, .add_starttls = 1},
     "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
     "250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n",
     STP_EHLO_STARTTLS | STP_EHLO_AUTH | STP_EHLO_CHUNKING | STP_EHLO_BINARYMIME |
         STP_EHLO_XCLIENT | STP_EHLO_XFORWARD | STP_EHLO_PIPELINING | STP_EHLO_SIZE |
         STP_EHLO_8BITMIME | STP_EHLO_SMTPUTF8 | STP_EHLO_DSN | STP_EHLO_ENHANCEDSTATUSCODES |
         STP_EHLO_OTHER},
    {"inbound after TLS: AUTH shown, no STARTTLS",
     S(backend),
     {.drop = INBOUND_DROP, .drop_unknown = 1},
     "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n"
     "250-AUTH=LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n"
     "250 ENHANCEDSTATUSCODES\r\n",
     STP_EHLO_AUTH},
    {"unknown keywords kept unless told",
     S(backend),
     {.drop = INBOUND_DROP},
     "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n"
     "250-AUTH=LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-XEXCH50\r\n"
     "250 ENHANCEDSTATUSCODES\r\n",
     STP_EHLO_OTHER},
    {"size_limit lowers the server's SIZE",
     S(backend),
     {.drop = INBOUND_DROP | STP_EHLO_AUTH, .drop_unknown = 1, .add_starttls = 1,
      .size_limit = 1048576},
     "250-legacy.example\r\n250-PIPELINING\r\n250-SIZE 1048576\r\n250-8BITMIME\r\n"
     "250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n",
     STP_EHLO_SIZE},
    {"size_limit keeps a lower server SIZE",
     S("250-mx\r\n250-SIZE 1000\r\n250 DSN\r\n"),
     {.size_limit = 52428800},
     "250-mx\r\n250-SIZE 1000\r\n250 DSN\r\n",
     STP_EHLO_SIZE | STP_EHLO_DSN},
    {"size_limit replaces an unlimited SIZE (no number)",
     S("250-mx\r\n250-size\r\n250 DSN\r\n"),
     {.size_limit = 2000},
     "250-mx\r\n250-SIZE 2000\r\n250 DSN\r\n",
     STP_EHLO_SIZE},
    {"size_limit replaces SIZE 0, as the last line",
     S("250-mx\r\n250 SIZE 0\r\n"),
     {.size_limit = 18446744073709551615ull},
     "250-mx\r\n250 SIZE 18446744073709551615\r\n",
     STP_EHLO_SIZE},
    {"size_limit adds no SIZE the server did not offer",
     S("250-mx\r\n250 DSN\r\n"),
     {.size_limit = 2000},
     "250-mx\r\n250 DSN\r\n",
     STP_EHLO_DSN},
    {"add_size: a server without SIZE gets the proxy's limit, first",
     S("250-mx\r\n250-PIPELINING\r\n250 DSN\r\n"),
     {.size_limit = 2000, .add_size = 1},
     "250-mx\r\n250-SIZE 2000\r\n250-PIPELINING\r\n250 DSN\r\n",
     STP_EHLO_PIPELINING | STP_EHLO_DSN},
    {"add_size: a greeting-only reply gets SIZE and STARTTLS",
     S("250 mx\r\n"),
     {.size_limit = 10240000, .add_size = 1, .add_starttls = 1},
     "250-mx\r\n250-SIZE 10240000\r\n250 STARTTLS\r\n",
     0},
    {"add_size: never a second SIZE line",
     S("250-mx\r\n250 SIZE 5000\r\n"),
     {.size_limit = 2000, .add_size = 1},
     "250-mx\r\n250 SIZE 2000\r\n",
     STP_EHLO_SIZE},
    {"add_size: nothing without a limit",
     S("250-mx\r\n250 DSN\r\n"),
     {.add_size = 1},
     "250-mx\r\n250 DSN\r\n",
     STP_EHLO_DSN},
    {"add_size: not when SIZE is dropped",
     S("250-mx\r\n250 DSN\r\n"),
     {.drop = STP_EHLO_SIZE, .size_limit = 2000, .add_size = 1},
     "250-mx\r\n250 DSN\r\n",
     STP_EHLO_DSN},
    {"size_limit does not bring back a dropped SIZE",
     S("250-mx\r\n250-SIZE 5000\r\n250 DSN\r\n"),
     {.drop = STP_EHLO_SIZE, .size_limit = 2000},
     "250-mx\r\n250 DSN\r\n",
     STP_EHLO_SIZE},
    {"nothing to do: same reply",
     S("250-mx\r\n250-DSN\r\n250 8BITMIME\r\n"),
     {0},
     "250-mx\r\n250-DSN\r\n250 8BITMIME\r\n",
     STP_EHLO_DSN | STP_EHLO_8BITMIME},
    {"single-line reply stays single",
     S("250 mx greets you\r\n"),
     {.drop = INBOUND_DROP},
     "250 mx greets you\r\n",
     0},
    {"single-line reply gains STARTTLS",
     S("250 mx\r\n"),
     {.add_starttls = 1},
     "250-mx\r\n250 STARTTLS\r\n",
     0},
    {"reply shrinks to one line",
     S("250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"),
     {.drop = STP_EHLO_STARTTLS | STP_EHLO_AUTH},
     "250 mx\r\n",
     STP_EHLO_STARTTLS | STP_EHLO_AUTH},
    {"last kept line gets the space",
     S("250-mx\r\n250-DSN\r\n250 CHUNKING\r\n"),
     {.drop = STP_EHLO_CHUNKING},
     "250-mx\r\n250 DSN\r\n",
     STP_EHLO_CHUNKING},
    {"server STARTTLS kept in place, not added again",
     S("250-mx\r\n250-STARTTLS\r\n250 DSN\r\n"),
     {.add_starttls = 1},
     "250-mx\r\n250-STARTTLS\r\n250 DSN\r\n",
     STP_EHLO_STARTTLS},
    {"server STARTTLS twice: once",
     S("250-mx\r\n250-STARTTLS\r\n250 starttls\r\n"),
     {0},
     "250-mx\r\n250 STARTTLS\r\n",
     STP_EHLO_STARTTLS},
    {"server STARTTLS replaced by ours",
     S("250-mx\r\n250-STARTTLS\r\n250 DSN\r\n"),
     {.drop = STP_EHLO_STARTTLS, .add_starttls = 1},
     "250-mx\r\n250-DSN\r\n250 STARTTLS\r\n",
     STP_EHLO_STARTTLS},
    {"keyword variants all dropped",
     S("250-mx\r\n250-starttls\r\n250- STARTTLS\r\n250-StartTLS\t\r\n250-auth=login\r\n"
       "250-Auth plain\r\n250-xclient\r\n250-XFORWARD\r\n250-chunking\r\n250 BinaryMIME\r\n"),
     {.drop = INBOUND_DROP | STP_EHLO_AUTH},
     "250 mx\r\n",
     STP_EHLO_STARTTLS | STP_EHLO_AUTH | STP_EHLO_XCLIENT | STP_EHLO_XFORWARD | STP_EHLO_CHUNKING |
         STP_EHLO_BINARYMIME},
    {"a longer word is not the keyword",
     S("250-mx\r\n250-STARTTLSX\r\n250-STARTTLS-EXT\r\n250 AUTHX\r\n"),
     {.drop = STP_EHLO_STARTTLS | STP_EHLO_AUTH},
     "250-mx\r\n250-STARTTLSX\r\n250-STARTTLS-EXT\r\n250 AUTHX\r\n",
     STP_EHLO_OTHER},
    {"greeting replaced",
     S("250-mx\r\n250 DSN\r\n"),
     {.greeting = "proxy.example"},
     "250-proxy.example\r\n250 DSN\r\n",
     0},
    {"greeting cannot inject lines",
     S("250 mx\r\n"),
     {.greeting = "proxy.example\r\n250 XCLIENT"},
     "250 proxy.example\r\n",
     0},
    {"bare LF reply rebuilt with CRLF",
     S("250-mx\n250-PIPELINING\n250 DSN\n"),
     {0},
     "250-mx\r\n250-PIPELINING\r\n250 DSN\r\n",
     0},
    {"keyword text kept verbatim",
     S("250-mx\r\n250 AUTH  PLAIN LOGIN \r\n"),
     {0},
     "250-mx\r\n250 AUTH  PLAIN LOGIN \r\n",
     STP_EHLO_AUTH},
    {"empty keyword line is unknown",
     S("250-mx\r\n250-\r\n250 DSN\r\n"),
     {.drop_unknown = 1},
     "250-mx\r\n250 DSN\r\n",
     STP_EHLO_OTHER},
    {"other 2xx rebuilt as 250", S("251-mx\r\n251 DSN\r\n"), {0}, "250-mx\r\n250 DSN\r\n", 0},
    {"not a 2xx reply", S("502 5.5.1 no EHLO here\r\n"), {.add_starttls = 1}, NULL, 0},
    {"5xx multi-line", S("554-no\r\n554 really\r\n"), {0}, NULL, 0},
};

/* One case, with the server reply parsed from pieces cut at `cut` (or byte
 * by byte). Returns 0 on a failure. */
static int check_path(const ehlo_case_t *c, size_t cut, int bytewise)
{
    static stp_reply_parser_t p;
    static char out[STP_REPLY_MAX_BYTES + 64];
    int before = stp_check_failures;
    size_t len = 0;
    unsigned seen = 0;

    CHECK(parse(&p, c->in, c->in_len, cut, bytewise));
    int rc = stp_ehlo_rewrite(&p.reply, &c->opts, out, sizeof(out), &len, &seen);
    if (c->want == NULL) {
        CHECK_EQ_INT(rc, -1);
    } else {
        CHECK_EQ_INT(rc, 0);
        CHECK_MEM(out, len, c->want, strlen(c->want));
        CHECK_EQ_INT(seen & c->seen_all, c->seen_all);
        CHECK_EQ_INT(seen, stp_ehlo_caps(&p.reply));
        check_parses_again(out, len);
    }
    if (stp_check_failures != before) {
        fprintf(stderr, "case '%s' %s %zu\n", c->label, bytewise ? "byte by byte" : "cut at", cut);
        return 0;
    }
    return 1;
}

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(rewrite_cases) / sizeof(rewrite_cases[0]); i++) {
        const ehlo_case_t *c = &rewrite_cases[i];
        if (!check_path(c, c->in_len, 0)) {
            continue; /* whole: one report is enough */
        }
        for (size_t cut = 0; cut < c->in_len; cut++) {
            check_path(c, cut, 0);
        }
        check_path(c, 0, 1);
    }
}

static void test_output_too_small(void)
{
    static stp_reply_parser_t p;
    char out[64];
    size_t len = 12345;
    stp_ehlo_opts_t o = {.add_starttls = 1};
    static const char in[] = "250-mx.example\r\n250 DSN\r\n";
    const size_t need = 16 + 9 + 14; /* "250-mx.example", "250-DSN", "250 STARTTLS" */
    CHECK(parse(&p, in, sizeof(in) - 1, 0, 1));
    for (size_t cap = 0; cap < need; cap++) {
        CHECK_EQ_INT(stp_ehlo_rewrite(&p.reply, &o, out, cap, &len, NULL), -1);
    }
    CHECK_EQ_INT(stp_ehlo_rewrite(&p.reply, &o, out, need, &len, NULL), 0);
    CHECK_EQ_INT(len, need);
}

static void test_caps(void)
{
    static stp_reply_parser_t p;
    static const struct {
        const char *label, *in;
        unsigned caps;
    } cases[] = {
        {"greeting is not a keyword", "250 STARTTLS\r\n", 0},
        {"each known keyword",
         "250-mx\r\n250-PIPELINING\r\n250-ETRN\r\n250-ATRN\r\n250-REQUIRETLS\r\n250 SIZE\r\n",
         STP_EHLO_PIPELINING | STP_EHLO_ETRN | STP_EHLO_ATRN | STP_EHLO_REQUIRETLS | STP_EHLO_SIZE},
        {"TURN counts as ATRN", "250-mx\r\n250 TURN\r\n", STP_EHLO_ATRN},
        {"AUTH= form", "250-mx\r\n250 AUTH=PLAIN\r\n", STP_EHLO_AUTH},
        {"unknown", "250-mx\r\n250 X-FOO bar\r\n", STP_EHLO_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(parse(&p, cases[i].in, strlen(cases[i].in), 0, 1));
        if (stp_ehlo_caps(&p.reply) != cases[i].caps) {
            fprintf(stderr, "case '%s'\n", cases[i].label);
        }
        CHECK_EQ_INT(stp_ehlo_caps(&p.reply), cases[i].caps);
    }
}

static void test_size(void)
{
    static stp_reply_parser_t p;
    static const struct {
        const char *label, *in;
        unsigned long long size;
    } cases[] = {
        {"size", "250-mx\r\n250 SIZE 10240000\r\n", 10240000},
        {"lower case, extra spaces", "250-mx\r\n250 size  52428800 \r\n", 52428800},
        {"no number: no limit", "250-mx\r\n250 SIZE\r\n", 0},
        {"zero: no limit", "250-mx\r\n250 SIZE 0\r\n", 0},
        {"largest", "250-mx\r\n250 SIZE 18446744073709551615\r\n", 18446744073709551615ull},
        {"overflow: no limit", "250-mx\r\n250 SIZE 18446744073709551616\r\n", 0},
        {"garbage after number", "250-mx\r\n250 SIZE 100k\r\n", 0},
        {"not SIZE=", "250-mx\r\n250 SIZE=100\r\n", 0},
        {"absent", "250-mx\r\n250 DSN\r\n", 0},
        {"greeting is not a keyword", "250 SIZE 100\r\n", 0},
        {"first SIZE line counts", "250-mx\r\n250-SIZE 100\r\n250 SIZE 200\r\n", 100},
        {"SIZEX is not SIZE", "250-mx\r\n250-SIZEX 5\r\n250 SIZE 7\r\n", 7},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(parse(&p, cases[i].in, strlen(cases[i].in), 0, 1));
        if (stp_ehlo_size(&p.reply) != cases[i].size) {
            fprintf(stderr, "case '%s'\n", cases[i].label);
        }
        CHECK(stp_ehlo_size(&p.reply) == cases[i].size);
    }
}

/* Builds "250-<greeting>\r\n", then `n` keyword lines of `text_len` bytes
 * ("X<i>xxx..."), the last with "250 "; `bare` uses LF line ends. */
static size_t build(char *out, size_t n, size_t text_len, int bare, const char *last_kw)
{
    size_t o = 0;
    o += (size_t)snprintf(out, 64, "250-mx%s", bare ? "\n" : "\r\n");
    for (size_t i = 0; i < n; i++) {
        const char *kw = i + 1 == n && last_kw != NULL ? last_kw : NULL;
        memcpy(out + o, i + 1 == n ? "250 " : "250-", 4);
        o += 4;
        if (kw != NULL) {
            memcpy(out + o, kw, strlen(kw));
            o += strlen(kw);
        } else {
            char num[16];
            int k = snprintf(num, sizeof(num), "X%zu", i);
            memset(out + o, 'x', text_len);
            memcpy(out + o, num, (size_t)k);
            o += text_len;
        }
        memcpy(out + o, bare ? "\n" : "\r\n", bare ? 1 : 2);
        o += bare ? 1 : 2;
    }
    return o;
}

/* Replies at the parser's limits still rebuild into replies that parse,
 * STARTTLS included. */
static void test_limits(void)
{
    static char in[STP_REPLY_MAX_BYTES + 64], out[STP_REPLY_MAX_BYTES + 64];
    static stp_reply_parser_t p, q;
    static char long_greeting[1100];
    static const struct {
        const char *label;
        size_t n, text_len;
        int bare;
        const char *last_kw;
        stp_ehlo_opts_t opts;
        size_t want_lines; /* in the rebuilt reply */
        int starttls_last;
    } cases[] = {
        {"most lines: a keyword makes room for STARTTLS",
         STP_REPLY_MAX_LINES - 1,
         20,
         0,
         NULL,
         {.add_starttls = 1},
         STP_REPLY_MAX_LINES,
         1},
        {"most lines, server STARTTLS last",
         STP_REPLY_MAX_LINES - 1,
         20,
         0,
         "STARTTLS",
         {.add_starttls = 1},
         STP_REPLY_MAX_LINES,
         1},
        /* 8 + 8 * 1022 bytes: adding "250 STARTTLS\r\n" passes the limit */
        {"most bytes: a keyword makes room for STARTTLS",
         8,
         STP_REPLY_MAX_LINE - 8,
         0,
         NULL,
         {.add_starttls = 1},
         9,
         1},
        /* the greeting grows to a full line: keywords go, STARTTLS stays */
        {"long greeting, server STARTTLS kept",
         9,
         1000,
         0,
         "STARTTLS",
         {.greeting = long_greeting, .add_starttls = 1},
         9,
         1},
        {"bare-LF line at the limit is dropped", 2, STP_REPLY_MAX_LINE - 5, 1, "DSN", {0}, 2, 0},
        {"bare-LF line that fits is kept", 2, STP_REPLY_MAX_LINE - 6, 1, "DSN", {0}, 3, 0},
    };
    memset(long_greeting, 'g', sizeof(long_greeting) - 1);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int before = stp_check_failures;
        size_t n = build(in, cases[i].n, cases[i].text_len, cases[i].bare, cases[i].last_kw);
        size_t len, used, tl;
        CHECK(parse(&p, in, n, n, 0));
        CHECK_EQ_INT(stp_ehlo_rewrite(&p.reply, &cases[i].opts, out, sizeof(out), &len, NULL), 0);
        stp_reply_parser_init(&q);
        CHECK_EQ_INT(stp_reply_feed(&q, out, len, &used), STP_REPLY_DONE);
        CHECK_EQ_INT(used, len);
        CHECK_EQ_INT(q.reply.nlines, cases[i].want_lines);
        const char *t = stp_reply_text(&q.reply, q.reply.nlines - 1, &tl);
        CHECK_EQ_INT(tl == 8 && memcmp(t, "STARTTLS", 8) == 0, cases[i].starttls_last);
        (void)stp_reply_text(&q.reply, 0, &tl);
        if (cases[i].opts.greeting != NULL) {
            CHECK_EQ_INT(tl, STP_REPLY_MAX_LINE - 6); /* cut to a full line */
        }
        if (stp_check_failures != before) {
            fprintf(stderr, "case '%s'\n", cases[i].label);
        }
    }
}

/* Random EHLO replies from a set of keyword lines: rewriting never fails
 * on a 250 reply, parses again, never offers STARTTLS twice or a dropped
 * keyword, and is the same however the reply was split. */
static void test_random_soak(void)
{
    static const char *lines[] = {"STARTTLS",   "AUTH PLAIN", "AUTH=LOGIN", "CHUNKING",
                                  "PIPELINING", "SIZE 1000",  "DSN",        "XCLIENT NAME",
                                  "X-UNKNOWN",  "starttls",   "",           "8BITMIME"};
    static char in[2048], out[STP_REPLY_MAX_BYTES + 64], first[STP_REPLY_MAX_BYTES + 64];
    static stp_reply_parser_t p, q;
    srand(5);
    for (int round = 0; round < 200; round++) {
        size_t n = 0, nl = 1 + (size_t)(rand() % 12), first_len = 0;
        n += (size_t)snprintf(in + n, sizeof(in) - n, "250%cmx\r\n", nl > 1 ? '-' : ' ');
        for (size_t k = 1; k < nl; k++) {
            n += (size_t)snprintf(in + n, sizeof(in) - n, "250%c%s%s", k + 1 < nl ? '-' : ' ',
                                  lines[rand() % 12], rand() % 4 ? "\r\n" : "\n");
        }
        stp_ehlo_opts_t o = {.drop = (unsigned)rand() & (STP_EHLO_STARTTLS | STP_EHLO_AUTH |
                                                         STP_EHLO_CHUNKING | STP_EHLO_XCLIENT),
                             .drop_unknown = rand() % 2,
                             .add_starttls = rand() % 2};
        for (size_t cut = 0; cut <= n; cut++) {
            size_t len, used;
            unsigned seen;
            CHECK(parse(&p, in, n, cut, 0));
            CHECK_EQ_INT(stp_ehlo_rewrite(&p.reply, &o, out, sizeof(out), &len, &seen), 0);
            if (cut == 0) {
                memcpy(first, out, len);
                first_len = len;
            }
            CHECK_MEM(out, len, first, first_len);
            stp_reply_parser_init(&q);
            CHECK_EQ_INT(stp_reply_feed(&q, out, len, &used), STP_REPLY_DONE);
            CHECK_EQ_INT(used, len);
            int starttls = (stp_ehlo_caps(&q.reply) & STP_EHLO_STARTTLS) != 0;
            size_t count = 0;
            for (size_t k = 1; k < q.reply.nlines; k++) {
                size_t tl;
                const char *t = stp_reply_text(&q.reply, k, &tl);
                count += tl == 8 && strncasecmp(t, "STARTTLS", 8) == 0;
            }
            CHECK(count <= 1);
            CHECK_EQ_INT(starttls, o.add_starttls || ((seen & STP_EHLO_STARTTLS) &&
                                                      !(o.drop & STP_EHLO_STARTTLS)));
            CHECK_EQ_INT(stp_ehlo_caps(&q.reply) & o.drop & ~(unsigned)STP_EHLO_STARTTLS, 0);
            if (o.drop_unknown) {
                CHECK_EQ_INT(stp_ehlo_caps(&q.reply) & STP_EHLO_OTHER, 0);
            }
        }
    }
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_output_too_small);
    STP_RUN(test_caps);
    STP_RUN(test_size);
    STP_RUN(test_limits);
    STP_RUN(test_random_soak);
    return STP_CHECK_DONE();
}
