/*
 * smtp_reply_test: server replies, as a table of transcripts. Every case is
 * fed whole, cut in two at every byte and one byte at a time; all must give
 * the same events, rendered as text:
 *   "R<code>:<text 0>/<text 1>/...|"  a complete reply and its line texts
 *   "E<reason>|"                      an error (the parser's static string)
 * Bytes after an error are not fed (the parser must be re-inited).
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_reply.h"
#include "test/unit/check.h"

#define S(x) x, sizeof(x) - 1

typedef struct {
    char text[131072];
    size_t len;
} events_t;

static void put(events_t *e, const char *s, size_t n)
{
    if (e->len + n < sizeof(e->text)) {
        memcpy(e->text + e->len, s, n);
        e->len += n;
        e->text[e->len] = '\0';
    }
}

static void put_str(events_t *e, const char *s)
{
    put(e, s, strlen(s));
}

/* Checks what every DONE reply must satisfy, whatever the input. */
static void check_reply_shape(const stp_reply_t *r, const char *fed, size_t fed_len)
{
    CHECK(r->code >= 100 && r->code <= 599);
    CHECK(r->nlines >= 1 && r->nlines <= STP_REPLY_MAX_LINES);
    CHECK(r->raw_len <= STP_REPLY_MAX_BYTES);
    /* raw is exactly the bytes that made up the reply */
    CHECK_MEM(r->raw, r->raw_len, fed, fed_len);
    for (size_t i = 0; i < r->nlines; i++) {
        CHECK(r->text_off[i] + r->text_len[i] <= r->raw_len);
    }
}

static void run(const char *in, size_t n, size_t cut, int bytewise, events_t *e)
{
    static stp_reply_parser_t p;
    size_t pos = 0, reply_start = 0;

    stp_reply_parser_init(&p);
    e->len = 0;
    e->text[0] = '\0';
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t avail = end - pos, used = 0;
            int rc = stp_reply_feed(&p, in + pos, avail, &used);
            CHECK(used <= avail);
            pos += used;
            if (rc == STP_REPLY_ERROR) {
                CHECK(p.error != NULL);
                put_str(e, "E");
                put_str(e, p.error ? p.error : "(null)");
                put_str(e, "|");
                return;
            }
            if (rc == STP_REPLY_AGAIN) {
                CHECK_EQ_INT(used, avail);
                continue;
            }
            CHECK_EQ_INT(rc, STP_REPLY_DONE);
            const stp_reply_t *r = &p.reply;
            check_reply_shape(r, in + reply_start, pos - reply_start);
            reply_start = pos;
            char code[8];
            snprintf(code, sizeof(code), "R%d:", r->code);
            put_str(e, code);
            for (size_t i = 0; i < r->nlines; i++) {
                size_t len;
                const char *t = stp_reply_text(r, i, &len);
                put(e, t, len);
                put_str(e, i + 1 < r->nlines ? "/" : "");
            }
            put_str(e, r->bare_lf ? "~|" : "|");
        }
    }
}

static void check_case(const char *label, const char *in, size_t n, const char *want)
{
    static events_t got;
    run(in, n, n, 0, &got);
    if (strcmp(got.text, want) != 0) {
        fprintf(stderr, "case '%s' whole\n", label);
    }
    CHECK_STR(got.text, want);
    for (size_t cut = 0; cut <= n; cut++) {
        run(in, n, cut, 0, &got);
        if (strcmp(got.text, want) != 0) {
            fprintf(stderr, "case '%s' cut at %zu\n", label, cut);
        }
        CHECK_STR(got.text, want);
    }
    run(in, n, 0, 1, &got);
    if (strcmp(got.text, want) != 0) {
        fprintf(stderr, "case '%s' byte by byte\n", label);
    }
    CHECK_STR(got.text, want);
}

static void test_table(void)
{
    static const struct {
        const char *label, *in;
        size_t len;
        const char *want;
    } cases[] = {
        {"single line", S("220 mx ESMTP\r\n"), "R220:mx ESMTP|"},
        {"multi-line", S("250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n"),
         "R250:mx/PIPELINING/SIZE 100|"},
        {"pipelined replies", S("250 ok\r\n354 go\r\n"), "R250:ok|R354:go|"},
        {"bare lf accepted and flagged", S("250-a\n250 b\n"), "R250:a/b~|"},
        {"one bare lf line flags the reply", S("250-a\r\n250 b\n220 c\r\n"), "R250:a/b~|R220:c|"},
        {"code only", S("250\r\n"), "R250:|"},
        {"empty continuation text", S("250-\r\n250 x\r\n"), "R250:/x|"},
        {"text with spaces and 8-bit", S("550 5.1.1 <\xc3\xbc@b> no\r\n"),
         "R550:5.1.1 <\xc3\xbc@b> no|"},
        {"incomplete reply waits", S("250-a\r\n250 b"), ""},
        {"incomplete after cr", S("250 b\r"), ""},
        {"inconsistent codes", S("250-a\r\n251 b\r\n"), "Ereply code changes between lines|"},
        {"inconsistent class", S("250-a\r\n550 b\r\n"), "Ereply code changes between lines|"},
        {"no code", S("hello\r\n"), "Ereply line without a 3-digit code|"},
        {"code too short", S("25\r\n"), "Ereply line without a 3-digit code|"},
        {"code 600", S("600 x\r\n"), "Ereply line without a 3-digit code|"},
        {"code 099", S("099 x\r\n"), "Ereply line without a 3-digit code|"},
        {"letter in code", S("2x0 x\r\n"), "Ereply line without a 3-digit code|"},
        {"bad separator", S("250_x\r\n"), "Ebad separator after reply code|"},
        {"tab separator", S("250\tx\r\n"), "Ebad separator after reply code|"},
        {"empty line", S("\r\n"), "Ereply line without a 3-digit code|"},
        {"cr inside a line", S("250 a\rb\r\n"), "ENUL or CR inside a reply line|"},
        {"double cr", S("250 a\r\r\n"), "ENUL or CR inside a reply line|"},
        {"nul inside a line", S("250 a\0b\r\n"), "ENUL or CR inside a reply line|"},
        {"good reply then error", S("250 ok\r\nxyz\r\n"),
         "R250:ok|Ereply line without a 3-digit code|"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(cases[i].label, cases[i].in, cases[i].len, cases[i].want);
    }
}

/* Builds a reply of `nlines` lines "250-x...x" (the last "250 x...x"),
 * each `line_bytes` long with its line end (CRLF, or LF if `bare`), except
 * the first, which is `first_bytes` long. */
static size_t build(char *out, size_t nlines, size_t first_bytes, size_t line_bytes, int bare)
{
    size_t o = 0, end = bare ? 1 : 2;
    for (size_t i = 0; i < nlines; i++) {
        size_t len = i == 0 ? first_bytes : line_bytes;
        memcpy(out + o, i + 1 == nlines ? "250 " : "250-", 4);
        memset(out + o + 4, 'x', len - 4 - end);
        memcpy(out + o + len - end, bare ? "\n" : "\r\n", end);
        o += len;
    }
    return o;
}

/* The limits, at and one past each; the error cases are also split. */
static void test_limits(void)
{
    enum { L = STP_REPLY_MAX_LINE, B = STP_REPLY_MAX_BYTES, N = STP_REPLY_MAX_LINES };
    static char in[STP_REPLY_MAX_BYTES * 2];
    static events_t whole;
    static const struct {
        const char *label;
        size_t nlines, first_bytes, line_bytes;
        int bare;
        const char *error; /* NULL: one good reply */
    } cases[] = {
        {"line at the limit", 1, L, L, 0, NULL},
        {"bare-lf line at the limit", 1, L, L, 1, NULL},
        {"line one byte over", 1, L + 1, L + 1, 0, "reply line too long"},
        {"bare-lf line one byte over", 1, L + 1, L + 1, 1, "reply line too long"},
        {"most lines", N, 9, 9, 0, NULL},
        {"too many lines", N + 1, 9, 9, 0, "reply has too many lines"},
        {"most bytes", B / L, L, L, 0, NULL},
        /* B / L + 1 lines, all but the first L - 10 bytes long, B + 1 in all */
        {"one byte too many", B / L + 1, B + 1 - (B / L) * (L - 10), L - 10, 0, "reply too long"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int before = stp_check_failures;
        size_t n =
            build(in, cases[i].nlines, cases[i].first_bytes, cases[i].line_bytes, cases[i].bare);
        run(in, n, n, 0, &whole);
        if (cases[i].error == NULL) {
            /* one reply, with nothing after it */
            CHECK(whole.len > 0 && whole.text[0] == 'R' &&
                  strchr(whole.text, '|') == whole.text + whole.len - 1);
        } else {
            char want[64];
            snprintf(want, sizeof(want), "E%s|", cases[i].error);
            CHECK_STR(whole.text, want);
        }
        if (stp_check_failures != before) {
            fprintf(stderr, "case '%s' (%zu bytes)\n", cases[i].label, n);
        }
        check_case(cases[i].label, in, n, whole.text);
    }
}

static void test_raw_kept_exactly(void)
{
    static stp_reply_parser_t p;
    const char *in = "550-5.1.1 first\r\n550 5.1.1 second\n250 next\r\n";
    size_t used;
    stp_reply_parser_init(&p);
    CHECK_EQ_INT(stp_reply_feed(&p, in, strlen(in), &used), STP_REPLY_DONE);
    CHECK_EQ_INT(used, 34);
    CHECK_MEM(p.reply.raw, p.reply.raw_len, in, 34);
    CHECK_EQ_INT(p.reply.code, 550);
    CHECK_EQ_INT(p.reply.bare_lf, 1);
    /* the next feed starts a new reply, flags included */
    CHECK_EQ_INT(stp_reply_feed(&p, in + used, strlen(in) - used, &used), STP_REPLY_DONE);
    CHECK_MEM(p.reply.raw, p.reply.raw_len, "250 next\r\n", 10);
    CHECK_EQ_INT(p.reply.bare_lf, 0);
    CHECK_EQ_INT(p.reply.nlines, 1);
}

/* idle: nothing of a reply held, so the session may drop the parser (and
 * init a fresh, or a reused dirty, one for the next reply). */
static void test_idle_between_replies(void)
{
    static stp_reply_parser_t p;
    size_t used;
    memset(&p, 0x5a, sizeof(p)); /* a reused block: init must not rely on zeroes */
    stp_reply_parser_init(&p);
    CHECK(stp_reply_parser_idle(&p));
    CHECK_EQ_INT(stp_reply_feed(&p, "25", 2, &used), STP_REPLY_AGAIN);
    CHECK(!stp_reply_parser_idle(&p));
    CHECK_EQ_INT(stp_reply_feed(&p, "0-a\r\n", 5, &used), STP_REPLY_AGAIN);
    CHECK(!stp_reply_parser_idle(&p));
    CHECK_EQ_INT(stp_reply_feed(&p, "250 b\r\n", 7, &used), STP_REPLY_DONE);
    CHECK(stp_reply_parser_idle(&p));
    CHECK_EQ_INT(p.reply.nlines, 2);
    CHECK_EQ_INT(p.reply.code, 250);
    CHECK_MEM(p.reply.raw, p.reply.raw_len, "250-a\r\n250 b\r\n", 14);
    /* after an error, init starts over */
    CHECK_EQ_INT(stp_reply_feed(&p, "x\r\n", 3, &used), STP_REPLY_ERROR);
    stp_reply_parser_init(&p);
    CHECK(stp_reply_parser_idle(&p) && p.error == NULL);
    CHECK_EQ_INT(stp_reply_feed(&p, "221 bye\r\n", 9, &used), STP_REPLY_DONE);
    CHECK_EQ_INT(p.reply.code, 221);
}

static void test_error_is_sticky(void)
{
    static stp_reply_parser_t p;
    size_t used;
    stp_reply_parser_init(&p);
    CHECK_EQ_INT(stp_reply_feed(&p, "bad\r\n", 5, &used), STP_REPLY_ERROR);
    const char *why = p.error;
    CHECK(why != NULL);
    CHECK_EQ_INT(stp_reply_feed(&p, "250 ok\r\n", 8, &used), STP_REPLY_ERROR);
    CHECK_EQ_INT(used, 0);
    CHECK(p.error == why);
    stp_reply_parser_init(&p);
    CHECK_EQ_INT(stp_reply_feed(&p, "250 ok\r\n", 8, &used), STP_REPLY_DONE);
}

/* 1000 bytes of random reply fragments: every cut and byte by byte give the
 * same events as the whole. */
static void test_random_soak(void)
{
    static const char *pieces[] = {"250-", "250 ", "220 ", "x", "\r\n", "\n",
                                   "55",   "0 ",   "\r",   "-", "251 ", "250-"};
    static char in[1100];
    static events_t whole;
    srand(11);
    for (int round = 0; round < 30; round++) {
        size_t n = 0;
        while (n < 1000) {
            const char *s = pieces[rand() % 12];
            size_t k = strlen(s);
            if (n + k > 1000) {
                k = 1000 - n;
            }
            memcpy(in + n, s, k);
            n += k;
        }
        run(in, n, n, 0, &whole);
        check_case("random soak", in, n, whole.text);
    }
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_limits);
    STP_RUN(test_raw_kept_exactly);
    STP_RUN(test_idle_between_replies);
    STP_RUN(test_error_is_sticky);
    STP_RUN(test_random_soak);
    return STP_CHECK_DONE();
}
