/* smtp_line_test: the line splitter, fed every input whole, split at every
 * byte, and one byte at a time; all three must give the same events. */
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_line.h"
#include "test/unit/check.h"

/* Feeds `in` in pieces cut at `cuts` positions and renders the events as
 * text: "L<line>|" for a line (with "~" when it ended in a bare LF), "T|"
 * for an over-long line. */
static void run(const char *in, size_t n, size_t max, size_t cut, int bytewise, char *out,
                size_t cap)
{
    char buf[64];
    stp_line_t l;
    size_t o = 0, pos = 0;
    stp_line_init(&l, buf, max);
    out[0] = '\0';
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t used = 0;
            int rc = stp_line_feed(&l, in + pos, end - pos, &used);
            pos += used;
            if (rc == STP_LINE_DONE) {
                o += (size_t)snprintf(out + o, cap - o, "L%.*s%s|", (int)l.len, l.buf,
                                      l.bare_lf ? "~" : "");
            } else if (rc == STP_LINE_TOOLONG) {
                o += (size_t)snprintf(out + o, cap - o, "T|");
            }
        }
    }
}

static void test_table(void)
{
    static const struct {
        const char *label;
        const char *in;
        size_t max;
        const char *want;
    } cases[] = {
        {"two lines", "EHLO a\r\nNOOP\r\n", 16, "LEHLO a|LNOOP|"},
        {"bare lf", "NOOP\nQUIT\r\n", 16, "LNOOP~|LQUIT|"},
        {"partial tail", "NOOP\r\nQU", 16, "LNOOP|"},
        {"cr inside kept", "A\rB\r\n", 16, "LA\rB|"},
        {"exactly max", "0123456789\r\n", 10, "L0123456789|"},
        {"one over max", "01234567890\r\nNOOP\r\n", 10, "T|LNOOP|"},
        {"far over max", "0123456789012345678901234567890123\r\nX\r\n", 10, "T|LX|"},
        {"cr at max boundary", "0123456789\r\r\n", 10, "T|"},
        {"empty line", "\r\n\n", 10, "L|L~|"},
        {"overlong then bare lf", "0123456789012\nOK\r\n", 10, "T|LOK|"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].in);
        char whole[512], piece[512];
        run(cases[i].in, n, cases[i].max, n, 0, whole, sizeof(whole));
        if (strcmp(whole, cases[i].want) != 0) {
            fprintf(stderr, "case '%s'\n", cases[i].label);
        }
        CHECK_STR(whole, cases[i].want);
        for (size_t cut = 0; cut <= n; cut++) {
            run(cases[i].in, n, cases[i].max, cut, 0, piece, sizeof(piece));
            CHECK_STR(piece, cases[i].want);
        }
        run(cases[i].in, n, cases[i].max, 0, 1, piece, sizeof(piece));
        CHECK_STR(piece, cases[i].want);
    }
}

static void test_random_soak(void)
{
    static const char alphabet[] = "AB\r\n. ";
    char in[1000], whole[16384], piece[16384];
    srand(7);
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof(in); i++) {
            in[i] = alphabet[rand() % 6];
        }
        run(in, sizeof(in), 12, sizeof(in), 0, whole, sizeof(whole));
        for (size_t cut = 0; cut <= sizeof(in); cut += 37) {
            run(in, sizeof(in), 12, cut, 0, piece, sizeof(piece));
            CHECK_STR(piece, whole);
        }
        run(in, sizeof(in), 12, 0, 1, piece, sizeof(piece));
        CHECK_STR(piece, whole);
    }
}

static void test_reset_forgets_partial(void)
{
    char buf[16];
    stp_line_t l;
    size_t used;
    stp_line_init(&l, buf, sizeof(buf));
    CHECK_EQ_INT(stp_line_feed(&l, "MAIL FROM:<x", 12, &used), STP_LINE_AGAIN);
    stp_line_reset(&l);
    CHECK_EQ_INT(stp_line_feed(&l, "NOOP\r\n", 6, &used), STP_LINE_DONE);
    CHECK_MEM(l.buf, l.len, "NOOP", 4);
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_random_soak);
    STP_RUN(test_reset_forgets_partial);
    return STP_CHECK_DONE();
}
