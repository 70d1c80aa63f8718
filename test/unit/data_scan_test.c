/* data_scan_test: end of data and bare CR/LF, in both modes, fed whole,
 * split at every byte and byte by byte; every smuggling ending. */
#include <stdlib.h>
#include <string.h>

#include "proxy/data_scan.h"
#include "test/unit/check.h"

typedef struct {
    char out[8192]; /* what would be forwarded */
    size_t out_len;
    int bare;       /* BARE reported (count) */
    long done_at;   /* input offset just after the end, -1 if none */
} result_t;

static void run(stp_data_mode_t mode, const char *in, size_t n, size_t cut, int bytewise,
                result_t *r)
{
    static char out[6 * 8192 + 4];
    stp_data_scan_t s;
    size_t pos = 0;
    stp_data_scan_init(&s, mode);
    memset(r, 0, sizeof(*r));
    r->done_at = -1;
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t used = 0, produced = 0;
            int rc = stp_data_scan(&s, in + pos, end - pos, out, &used, &produced);
            memcpy(r->out + r->out_len, out, produced);
            r->out_len += produced;
            pos += used;
            if (rc == STP_DATA_BARE) {
                r->bare++;
            } else if (rc == STP_DATA_DONE) {
                r->done_at = (long)pos;
                return;
            }
        }
    }
}

static void same(const result_t *a, const result_t *b)
{
    CHECK_MEM(a->out, a->out_len, b->out, b->out_len);
    CHECK_EQ_INT(a->bare, b->bare);
    CHECK_EQ_INT(a->done_at, b->done_at);
}

static void check_case(const char *label, stp_data_mode_t mode, const char *in, size_t n,
                       const char *want_out, size_t want_len, int want_bare, long want_done)
{
    static result_t whole, piece;
    run(mode, in, n, n, 0, &whole);
    if (whole.bare != want_bare || whole.done_at != want_done) {
        fprintf(stderr, "case '%s': bare=%d done_at=%ld\n", label, whole.bare, whole.done_at);
    }
    CHECK_MEM(whole.out, whole.out_len, want_out, want_len);
    CHECK_EQ_INT(whole.bare, want_bare);
    CHECK_EQ_INT(whole.done_at, want_done);
    for (size_t cut = 0; cut <= n; cut++) {
        run(mode, in, n, cut, 0, &piece);
        same(&piece, &whole);
    }
    run(mode, in, n, 0, 1, &piece);
    same(&piece, &whole);
}

#define S(x) x, sizeof(x) - 1

static void test_clean_messages(void)
{
    check_case("empty message", STP_DATA_REJECT, S(".\r\n"), S(".\r\n"), 0, 3);
    check_case("simple", STP_DATA_REJECT, S("a\r\nb\r\n.\r\nQUIT\r\n"), S("a\r\nb\r\n.\r\n"), 0, 9);
    check_case("stuffed dot kept", STP_DATA_REJECT, S("..x\r\n.\r\n"), S("..x\r\n.\r\n"), 0, 8);
    check_case("dot not at line start", STP_DATA_REJECT, S("a.\r\n.\r\n"), S("a.\r\n.\r\n"), 0, 7);
    check_case("no end yet", STP_DATA_REJECT, S("a\r\n.\r"), S("a\r\n"), 0, -1);
    check_case("nul is content", STP_DATA_REJECT, S("a\r\n\0.\r\n.\r\n"), S("a\r\n\0.\r\n.\r\n"),
               0, 10);
}

/* Every non-standard ending, followed by a smuggled transaction and the real end. */
static const struct {
    const char *label, *ending;
    size_t len;
} endings[] = {
    {"LF.LF", S("\n.\n")},     {"LF.CR", S("\n.\r")},       {"CR.LF", S("\r.\n")},
    {"CR.CR", S("\r.\r")},     {"LF.CRLF", S("\n.\r\n")},   {"CR.CRLF", S("\r.\r\n")},
    {"CRLF.LF", S("\r\n.\n")}, {"CRLF.CR", S("\r\n.\r")},   {"CR.CR.LF", S("\r.\r.\n")},
};

static const char second[] = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n";

static int has_lone_dot_line(const char *p, size_t n, size_t upto)
{
    /* a "\r\n.\r\n" anywhere before `upto` (the real end) */
    for (size_t i = 0; i + 5 <= n && i < upto; i++) {
        if (memcmp(p + i, "\r\n.\r\n", 5) == 0 && i + 5 < n) {
            return 1;
        }
    }
    return 0;
}

static void test_smuggling_reject(void)
{
    char in[512];
    for (size_t i = 0; i < sizeof(endings) / sizeof(endings[0]); i++) {
        size_t n = 0;
        memcpy(in + n, "first", 5), n += 5;
        memcpy(in + n, endings[i].ending, endings[i].len), n += endings[i].len;
        memcpy(in + n, second, sizeof(second) - 1), n += sizeof(second) - 1;
        memcpy(in + n, ".\r\n", 3), n += 3;
        static result_t whole, piece;
        run(STP_DATA_REJECT, in, n, n, 0, &whole);
        if (whole.bare != 1 || whole.done_at != (long)n) {
            fprintf(stderr, "ending %s\n", endings[i].label);
        }
        CHECK_EQ_INT(whole.bare, 1);
        CHECK_EQ_INT(whole.done_at, (long)n);
        /* nothing is forwarded from the first bare CR/LF on: at most "first"
         * and a complete CRLF, never half a terminator */
        CHECK(whole.out_len <= 7);
        CHECK(memmem(whole.out, whole.out_len, "smuggled", 8) == NULL);
        CHECK(whole.out_len == 0 || whole.out[whole.out_len - 1] != '\r');
        CHECK(whole.out_len == 0 || whole.out[whole.out_len - 1] != '.');
        for (size_t cut = 0; cut <= n; cut++) {
            run(STP_DATA_REJECT, in, n, cut, 0, &piece);
            same(&piece, &whole);
        }
    }
}

static void test_smuggling_normalize(void)
{
    char in[512];
    for (size_t i = 0; i < sizeof(endings) / sizeof(endings[0]); i++) {
        size_t n = 0;
        memcpy(in + n, "first", 5), n += 5;
        memcpy(in + n, endings[i].ending, endings[i].len), n += endings[i].len;
        memcpy(in + n, second, sizeof(second) - 1), n += sizeof(second) - 1;
        memcpy(in + n, ".\r\n", 3), n += 3;
        static result_t whole, piece;
        run(STP_DATA_NORMALIZE, in, n, n, 0, &whole);
        CHECK_EQ_INT(whole.bare, 0);
        CHECK_EQ_INT(whole.done_at, (long)n);
        /* the output has CRLF line ends only and exactly one end of data */
        for (size_t k = 0; k < whole.out_len; k++) {
            if (whole.out[k] == '\n') {
                CHECK(k > 0 && whole.out[k - 1] == '\r');
            }
            if (whole.out[k] == '\r') {
                CHECK(k + 1 < whole.out_len && whole.out[k + 1] == '\n');
            }
        }
        CHECK(!has_lone_dot_line(whole.out, whole.out_len, whole.out_len - 5));
        CHECK(whole.out_len >= 5 &&
              memcmp(whole.out + whole.out_len - 5, "\r\n.\r\n", 5) == 0);
        CHECK(memmem(whole.out, whole.out_len, "smuggled", 8) != NULL);
        for (size_t cut = 0; cut <= n; cut++) {
            run(STP_DATA_NORMALIZE, in, n, cut, 0, &piece);
            same(&piece, &whole);
        }
    }
}

static void test_normalize_examples(void)
{
    check_case("bare lf", STP_DATA_NORMALIZE, S("a\nb\r\n.\r\n"), S("a\r\nb\r\n.\r\n"), 0, 8);
    check_case("lf dot lf", STP_DATA_NORMALIZE, S("a\n.\nb\r\n.\r\n"), S("a\r\n..\r\nb\r\n.\r\n"),
               0, 10);
    /* ".\r\n" behind a repaired line end is content, not the end */
    check_case("lf dot crlf", STP_DATA_NORMALIZE, S("a\n.\r\n"), S("a\r\n..\r\n"), 0, -1);
    check_case("bare cr then dot", STP_DATA_NORMALIZE, S("a\r.x\r\n.\r\n"),
               S("a\r\n..x\r\n.\r\n"), 0, 9);
}

static void test_random_soak(void)
{
    static const char alphabet[] = "a.\r\n";
    static char in[1000];
    static result_t whole, piece;
    srand(3);
    for (int round = 0; round < 60; round++) {
        for (size_t i = 0; i < sizeof(in); i++) {
            in[i] = alphabet[rand() % 4];
        }
        for (int mode = 0; mode < 2; mode++) {
            run((stp_data_mode_t)mode, in, sizeof(in), sizeof(in), 0, &whole);
            for (size_t cut = 0; cut <= sizeof(in); cut += 29) {
                run((stp_data_mode_t)mode, in, sizeof(in), cut, 0, &piece);
                same(&piece, &whole);
            }
            run((stp_data_mode_t)mode, in, sizeof(in), 0, 1, &piece);
            same(&piece, &whole);
        }
    }
}

int main(void)
{
    STP_RUN(test_clean_messages);
    STP_RUN(test_smuggling_reject);
    STP_RUN(test_smuggling_normalize);
    STP_RUN(test_normalize_examples);
    STP_RUN(test_random_soak);
    return STP_CHECK_DONE();
}
