/*
 * smtp_line_test: the line splitter as a specification. Every case is fed
 * whole, cut in two at every byte position, and one byte at a time; all of
 * these must produce the same events, and the events are written out as
 * text so a case reads like a transcript:
 *   "L<line>|"   a line (CR shown as <CR>, NUL as <NUL>)
 *   "L<line>~|"  a line that ended in a bare LF
 *   "T|"         an over-long line, discarded through its LF
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_line.h"
#include "test/unit/check.h"

#define S(x) x, sizeof(x) - 1

typedef struct {
    char text[65536];
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

static void put_line(events_t *e, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            put(e, "<CR>", 4);
        } else if (s[i] == '\0') {
            put(e, "<NUL>", 5);
        } else {
            put(e, s + i, 1);
        }
    }
}

/* Feeds in[0..n) to a splitter with limit `max`: in two pieces cut at `cut`
 * (cut == n: whole), or one byte per call if `bytewise`. */
static void run(const char *in, size_t n, size_t max, size_t cut, int bytewise, events_t *e)
{
    enum { GUARD = 16 };
    static char buf[4096 + GUARD];
    stp_line_t l;
    size_t pos = 0;

    memset(buf, 0x5a, sizeof(buf));
    stp_line_init(&l, buf, max);
    e->len = 0;
    e->text[0] = '\0';
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t avail = end - pos, used = 0;
            int rc = stp_line_feed(&l, in + pos, avail, &used);
            CHECK(used > 0 && used <= avail);
            pos += used;
            if (rc == STP_LINE_DONE) {
                CHECK(l.len <= max);
                put(e, "L", 1);
                put_line(e, l.buf, l.len);
                put(e, l.bare_lf ? "~|" : "|", l.bare_lf ? 2 : 1);
            } else if (rc == STP_LINE_TOOLONG) {
                put(e, "T|", 2);
            } else {
                CHECK_EQ_INT(rc, STP_LINE_AGAIN);
                CHECK_EQ_INT(used, avail); /* AGAIN consumes it all */
            }
        }
    }
    /* the splitter never writes past its limit */
    for (size_t i = max; i < max + GUARD; i++) {
        CHECK_EQ_INT(buf[i], 0x5a);
    }
}

/* The same result whole, at every cut, and byte by byte. */
static void check_split(const char *label, const char *in, size_t n, size_t max,
                        const events_t *want)
{
    static events_t got;
    for (size_t cut = 0; cut <= n; cut++) {
        run(in, n, max, cut, 0, &got);
        if (strcmp(got.text, want->text) != 0) {
            fprintf(stderr, "case '%s' cut at %zu\n", label, cut);
        }
        CHECK_STR(got.text, want->text);
    }
    run(in, n, max, 0, 1, &got);
    if (strcmp(got.text, want->text) != 0) {
        fprintf(stderr, "case '%s' byte by byte\n", label);
    }
    CHECK_STR(got.text, want->text);
}

static void test_table(void)
{
    static const struct {
        const char *label;
        const char *in;
        size_t len;
        size_t max;
        const char *want;
    } cases[] = {
        {"two lines", S("EHLO a\r\nNOOP\r\n"), 16, "LEHLO a|LNOOP|"},
        {"bare lf line", S("NOOP\nQUIT\r\n"), 16, "LNOOP~|LQUIT|"},
        {"only bare lf lines", S("A\nB\nC\n"), 16, "LA~|LB~|LC~|"},
        {"partial tail waits", S("NOOP\r\nQU"), 16, "LNOOP|"},
        {"tail ends in CR", S("NOOP\r"), 16, ""},
        {"cr inside kept", S("A\rB\r\n"), 16, "LA<CR>B|"},
        {"cr cr lf", S("A\r\r\n"), 16, "LA<CR>|"},
        {"nul kept", S("A\0B\r\n"), 16, "LA<NUL>B|"},
        {"empty lines", S("\r\n\n\r\n"), 10, "L|L~|L|"},
        {"exactly max", S("0123456789\r\n"), 10, "L0123456789|"},
        {"exactly max bare lf", S("0123456789\n"), 10, "L0123456789~|"},
        {"max then data cr", S("0123456789\r\r\n"), 10, "T|"},
        {"one over max", S("01234567890\r\nNOOP\r\n"), 10, "T|LNOOP|"},
        {"far over max then good line", S("0123456789012345678901234567890123\r\nX\r\n"), 10,
         "T|LX|"},
        {"over-long ended by bare lf, then good line", S("0123456789012\nOK\r\n"), 10, "T|LOK|"},
        {"two over-long in a row", S("aaaaaaaaaaaaa\r\nbbbbbbbbbbbbbbbb\r\nc\r\n"), 10, "T|T|Lc|"},
        {"over-long with CRs inside", S("a\rb\rc\rd\re\rf\r\r\nok\r\n"), 10, "T|Lok|"},
        {"limit zero", S("\r\nx\r\n\n"), 0, "L|T|L~|"},
        {"pipelined commands", S("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"), 64,
         "LMAIL FROM:<a@b>|LRCPT TO:<c@d>|LDATA|"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        static events_t want;
        want.len = strlen(cases[i].want);
        memcpy(want.text, cases[i].want, want.len + 1);
        check_split(cases[i].label, cases[i].in, cases[i].len, cases[i].max, &want);
    }
}

/* An independent statement of the rules, for the soak: lines end at LF; one
 * CR before the LF is the line end; a line longer than max is TOOLONG; a
 * trailing line without LF produces nothing. */
static void model(const char *in, size_t n, size_t max, events_t *e)
{
    size_t start = 0;
    e->len = 0;
    e->text[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (in[i] != '\n') {
            continue;
        }
        size_t len = i - start;
        int bare = !(len > 0 && in[i - 1] == '\r');
        if (!bare) {
            len--;
        }
        if (len > max) {
            put(e, "T|", 2);
        } else {
            put(e, "L", 1);
            put_line(e, in + start, len);
            put(e, bare ? "~|" : "|", bare ? 2 : 1);
        }
        start = i + 1;
    }
}

/* 1000 random bytes, rich in CR, LF and near-limit lines: every cut and
 * byte by byte give the model's events. */
static void test_random_soak(void)
{
    static const char alphabet[] = "AB\r\n. \0";
    static char in[1000];
    static events_t want;
    srand(7);
    for (int round = 0; round < 20; round++) {
        size_t max = (size_t)(round % 5) * 4; /* 0, 4, 8, 12, 16 */
        for (size_t i = 0; i < sizeof(in); i++) {
            in[i] = alphabet[rand() % 7];
        }
        model(in, sizeof(in), max, &want);
        static events_t whole;
        run(in, sizeof(in), max, sizeof(in), 0, &whole);
        CHECK_STR(whole.text, want.text);
        check_split("random soak", in, sizeof(in), max, &want);
    }
}

static void test_line_stays_until_next_feed(void)
{
    char buf[16];
    stp_line_t l;
    size_t used;
    stp_line_init(&l, buf, sizeof(buf));
    CHECK_EQ_INT(stp_line_feed(&l, "NOOP\r\nRSET\r\n", 12, &used), STP_LINE_DONE);
    CHECK_EQ_INT(used, 6);
    CHECK_MEM(l.buf, l.len, "NOOP", 4);
    CHECK_EQ_INT(l.bare_lf, 0);
    /* the caller feeds the rest again: the next line */
    CHECK_EQ_INT(stp_line_feed(&l, "RSET\r\n", 6, &used), STP_LINE_DONE);
    CHECK_MEM(l.buf, l.len, "RSET", 4);
    /* an empty feed after DONE starts a new (empty) line */
    CHECK_EQ_INT(stp_line_feed(&l, "", 0, &used), STP_LINE_AGAIN);
    CHECK_EQ_INT(used, 0);
    CHECK_EQ_INT(l.len, 0);
}

static void test_reset_forgets_partial(void)
{
    static const struct {
        const char *label, *before;
    } cases[] = {
        {"partial command", "MAIL FROM:<x"},
        {"held CR", "NOOP\r"},
        {"inside an over-long line", "0123456789012345678901234567890123456789"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[16];
        stp_line_t l;
        size_t used;
        stp_line_init(&l, buf, sizeof(buf));
        CHECK_EQ_INT(stp_line_feed(&l, cases[i].before, strlen(cases[i].before), &used),
                     STP_LINE_AGAIN);
        stp_line_reset(&l);
        /* "\n" alone: without the reset it would end the old line */
        int rc = stp_line_feed(&l, "\nNOOP\r\n", 7, &used);
        if (rc != STP_LINE_DONE || l.len != 0) {
            fprintf(stderr, "case '%s'\n", cases[i].label);
        }
        CHECK_EQ_INT(rc, STP_LINE_DONE);
        CHECK_EQ_INT(l.len, 0);
        CHECK_EQ_INT(l.bare_lf, 1);
        CHECK_EQ_INT(stp_line_feed(&l, "NOOP\r\n", 6, &used), STP_LINE_DONE);
        CHECK_MEM(l.buf, l.len, "NOOP", 4);
    }
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_random_soak);
    STP_RUN(test_line_stays_until_next_feed);
    STP_RUN(test_reset_forgets_partial);
    return STP_CHECK_DONE();
}
