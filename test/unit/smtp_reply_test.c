/* smtp_reply_test: multi-line replies, fed whole, split at every byte and
 * byte by byte; malformed replies and limits. */
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_reply.h"
#include "test/unit/check.h"

/* Renders events: "R<code>:<nlines>:<text of last line>|", "E|" on error. */
static void run(const char *in, size_t n, size_t cut, int bytewise, char *out, size_t cap)
{
    static stp_reply_parser_t p;
    size_t o = 0, pos = 0;
    stp_reply_parser_init(&p);
    out[0] = '\0';
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t used = 0, len;
            int rc = stp_reply_feed(&p, in + pos, end - pos, &used);
            pos += used;
            if (rc == STP_REPLY_DONE) {
                const char *t = stp_reply_text(&p.reply, p.reply.nlines - 1, &len);
                o += (size_t)snprintf(out + o, cap - o, "R%d:%zu:%.*s|", p.reply.code,
                                      p.reply.nlines, (int)len, t);
            } else if (rc == STP_REPLY_ERROR) {
                o += (size_t)snprintf(out + o, cap - o, "E|");
                return;
            }
        }
    }
}

static void check_case(const char *label, const char *in, size_t n, const char *want)
{
    char whole[1024], piece[1024];
    run(in, n, n, 0, whole, sizeof(whole));
    if (strcmp(whole, want) != 0) {
        fprintf(stderr, "case '%s'\n", label);
    }
    CHECK_STR(whole, want);
    for (size_t cut = 0; cut <= n; cut++) {
        run(in, n, cut, 0, piece, sizeof(piece));
        CHECK_STR(piece, want);
    }
    run(in, n, 0, 1, piece, sizeof(piece));
    CHECK_STR(piece, want);
}

static void test_table(void)
{
    static const struct {
        const char *label, *in, *want;
    } cases[] = {
        {"single", "220 mx ESMTP\r\n", "R220:1:mx ESMTP|"},
        {"multi", "250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n", "R250:3:SIZE 100|"},
        {"two replies", "250 ok\r\n354 go\r\n", "R250:1:ok|R354:1:go|"},
        {"bare lf accepted", "250-a\n250 b\n", "R250:2:b|"},
        {"code only", "250\r\n", "R250:1:|"},
        {"incomplete", "250-a\r\n250 b", ""},
        {"code changes", "250-a\r\n251 b\r\n", "E|"},
        {"no code", "hello\r\n", "E|"},
        {"bad separator", "250_x\r\n", "E|"},
        {"six hundred", "600 x\r\n", "E|"},
        {"short", "25\r\n", "E|"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(cases[i].label, cases[i].in, strlen(cases[i].in), cases[i].want);
    }
}

static void test_limits(void)
{
    char big[STP_REPLY_MAX_LINE + 64], out[64];
    memset(big, 'x', sizeof(big));
    memcpy(big, "250 ", 4);
    memcpy(big + sizeof(big) - 2, "\r\n", 2);
    run(big, sizeof(big), sizeof(big), 0, out, sizeof(out));
    CHECK_STR(out, "E|");

    /* more than STP_REPLY_MAX_LINES continuation lines */
    static char many[(STP_REPLY_MAX_LINES + 2) * 9 + 8];
    size_t o = 0;
    for (int i = 0; i < STP_REPLY_MAX_LINES + 1; i++) {
        memcpy(many + o, "250-abc\r\n", 9);
        o += 9;
    }
    memcpy(many + o, "250 x\r\n", 7);
    o += 7;
    run(many, o, o, 0, out, sizeof(out));
    CHECK_STR(out, "E|");
}

static void test_raw_kept_exactly(void)
{
    static stp_reply_parser_t p;
    const char *in = "550-5.1.1 first\r\n550 5.1.1 second\r\n";
    size_t used;
    stp_reply_parser_init(&p);
    CHECK_EQ_INT(stp_reply_feed(&p, in, strlen(in), &used), STP_REPLY_DONE);
    CHECK_MEM(p.reply.raw, p.reply.raw_len, in, strlen(in));
    CHECK_EQ_INT(p.reply.code, 550);
}

static void test_random_soak(void)
{
    static const char *pieces[] = {"250-", "250 ", "220 ", "x", "\r\n", "\n", "55", "0 "};
    char in[1200], whole[4096], piece[4096];
    srand(11);
    for (int round = 0; round < 40; round++) {
        size_t n = 0;
        while (n < 1000) {
            const char *s = pieces[rand() % 8];
            memcpy(in + n, s, strlen(s));
            n += strlen(s);
        }
        run(in, n, n, 0, whole, sizeof(whole));
        for (size_t cut = 0; cut <= n; cut += 13) {
            run(in, n, cut, 0, piece, sizeof(piece));
            CHECK_STR(piece, whole);
        }
    }
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_limits);
    STP_RUN(test_raw_kept_exactly);
    STP_RUN(test_random_soak);
    return STP_CHECK_DONE();
}
