/*
 * data_scan_test: end of data and bare CR/LF in message content, in both
 * modes. Every case is fed whole, cut in two at every byte and one byte at
 * a time; all must forward the same bytes, report BARE the same number of
 * times and end at the same input offset. Each smuggling ending of the
 * brief is tried in both modes with the exact bytes the next hop must get,
 * and a random soak is checked against an independent model of the rules.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/data_scan.h"
#include "test/unit/check.h"

#define S(x) x, sizeof(x) - 1

typedef struct {
    char out[16384]; /* what would be forwarded */
    size_t out_len;
    int bare;     /* BARE reports */
    long done_at; /* input offset just after the end, -1 if none */
    uint64_t size; /* stp_data_size at the end */
} result_t;

static int same_state(const stp_data_scan_t *a, const stp_data_scan_t *b)
{
    return a->mode == b->mode && a->bytes == b->bytes && a->saw_bare == b->saw_bare &&
           a->state == b->state && a->stuff_next == b->stuff_next && a->ended == b->ended &&
           a->lead_dots == b->lead_dots;
}

static unsigned long verbatim_calls; /* calls whose output was their input */

/* Feeds in[0..n) from the start of a message, in two pieces cut at `cut`
 * (n: whole), or one byte per call; stops at DONE. */
static void run(stp_data_mode_t mode, const char *in, size_t n, size_t cut, int bytewise,
                result_t *r)
{
    static char out[2 * 4096 + 4];
    stp_data_scan_t s;
    size_t pos = 0;

    stp_data_scan_init(&s, mode);
    memset(r, 0, sizeof(*r));
    r->done_at = -1;
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t avail = end - pos, used = 0, produced = 0;
            /* The same call without an output buffer counts the same,
             * and where the scanner says so its output is the input. */
            stp_data_scan_t twin = s;
            int verbatim = stp_data_scan_verbatim(&s);
            int rc = stp_data_scan(&s, in + pos, avail, out, &used, &produced);
            size_t twin_used = 0, twin_produced = 0;
            CHECK_EQ_INT(stp_data_scan(&twin, in + pos, avail, NULL, &twin_used, &twin_produced),
                         rc);
            CHECK_EQ_INT(twin_used, used);
            CHECK_EQ_INT(twin_produced, produced);
            CHECK(same_state(&twin, &s));
            if (verbatim) {
                CHECK_MEM(out, produced, in + pos, produced);
                verbatim_calls++;
            }
            CHECK(used <= avail);
            /* the header's bound */
            CHECK(produced <= 2 * avail + 4);
            if (r->out_len + produced <= sizeof(r->out)) {
                memcpy(r->out + r->out_len, out, produced);
                r->out_len += produced;
            }
            pos += used;
            CHECK(stp_data_size(&s) >= r->size); /* never goes down */
            CHECK(stp_data_size(&s) <= s.bytes);
            r->size = stp_data_size(&s);
            if (rc == STP_DATA_BARE) {
                CHECK_EQ_INT(mode, STP_DATA_REJECT);
                r->bare++;
            } else if (rc == STP_DATA_DONE) {
                r->done_at = (long)pos;
                CHECK_EQ_INT(s.bytes, pos);
                return;
            } else {
                CHECK_EQ_INT(rc, STP_DATA_AGAIN);
                CHECK_EQ_INT(used, avail);
            }
        }
    }
    CHECK_EQ_INT(s.bytes, pos);
}

static int same(const result_t *a, const result_t *b)
{
    int before = stp_check_failures;
    CHECK_MEM(a->out, a->out_len, b->out, b->out_len);
    CHECK_EQ_INT(a->bare, b->bare);
    CHECK_EQ_INT(a->done_at, b->done_at);
    CHECK_EQ_INT(a->size, b->size);
    return stp_check_failures == before;
}

/* Whole, every cut and byte by byte agree; returns the whole result. */
static const result_t *check_split(const char *label, stp_data_mode_t mode, const char *in,
                                   size_t n)
{
    static result_t whole, piece;
    run(mode, in, n, n, 0, &whole);
    for (size_t cut = 0; cut <= n; cut++) {
        run(mode, in, n, cut, 0, &piece);
        if (!same(&piece, &whole)) {
            fprintf(stderr, "case '%s' mode %d cut at %zu\n", label, mode, cut);
        }
    }
    run(mode, in, n, 0, 1, &piece);
    if (!same(&piece, &whole)) {
        fprintf(stderr, "case '%s' mode %d byte by byte\n", label, mode);
    }
    return &whole;
}

static void check_case(const char *label, stp_data_mode_t mode, const char *in, size_t n,
                       const char *want_out, size_t want_len, int want_bare, long want_done)
{
    const result_t *r = check_split(label, mode, in, n);
    int before = stp_check_failures;
    CHECK_MEM(r->out, r->out_len, want_out, want_len);
    CHECK_EQ_INT(r->bare, want_bare);
    CHECK_EQ_INT(r->done_at, want_done);
    if (stp_check_failures != before) {
        fprintf(stderr, "case '%s' mode %d\n", label, mode);
    }
}

/* REJECT mode forwards a clean message's own bytes (session.c then skips
 * the copy): verbatim from the start and after every line end; not while a
 * CR or a line-leading dot is held, nor after a bare CR/LF; never in
 * NORMALIZE mode. */
static void test_verbatim(void)
{
    stp_data_scan_t s;
    size_t used, produced;
    stp_data_scan_init(&s, STP_DATA_REJECT);
    CHECK(stp_data_scan_verbatim(&s));
    CHECK_EQ_INT(stp_data_scan(&s, S("line\r\nmore"), NULL, &used, &produced), STP_DATA_AGAIN);
    CHECK_EQ_INT(produced, 10);
    CHECK(stp_data_scan_verbatim(&s));
    CHECK_EQ_INT(stp_data_scan(&s, S("\r"), NULL, &used, &produced), STP_DATA_AGAIN);
    CHECK_EQ_INT(produced, 0);
    CHECK(!stp_data_scan_verbatim(&s)); /* the CR is held */
    CHECK_EQ_INT(stp_data_scan(&s, S("\n."), NULL, &used, &produced), STP_DATA_AGAIN);
    CHECK_EQ_INT(produced, 2);
    CHECK(!stp_data_scan_verbatim(&s)); /* the dot is held */
    CHECK_EQ_INT(stp_data_scan(&s, S("x\n"), NULL, &used, &produced), STP_DATA_BARE);
    CHECK(!stp_data_scan_verbatim(&s));

    stp_data_scan_init(&s, STP_DATA_NORMALIZE);
    CHECK(!stp_data_scan_verbatim(&s));

    unsigned long before = verbatim_calls;
    check_split("verbatim", STP_DATA_REJECT, S("a\r\nb\r\n.\r\n"));
    CHECK(verbatim_calls > before);
}

static void test_clean_messages(void)
{
    /* clean content is forwarded unchanged in both modes */
    for (int mode = 0; mode < 2; mode++) {
        stp_data_mode_t m = (stp_data_mode_t)mode;
        check_case("empty message", m, S(".\r\n"), S(".\r\n"), 0, 3);
        check_case("simple", m, S("a\r\nb\r\n.\r\nQUIT\r\n"), S("a\r\nb\r\n.\r\n"), 0, 9);
        check_case("empty lines", m, S("\r\n\r\n.\r\n"), S("\r\n\r\n.\r\n"), 0, 7);
        check_case("stuffed dot kept for the next hop", m, S("..x\r\n..\r\n.\r\n"),
                   S("..x\r\n..\r\n.\r\n"), 0, 12);
        check_case("dot line with text", m, S(". \r\n.x\r\n.\r\n"), S(". \r\n.x\r\n.\r\n"), 0, 11);
        check_case("dot not at line start", m, S("a.\r\n.\r\n"), S("a.\r\n.\r\n"), 0, 7);
        check_case("no end yet: held CR", m, S("a\r\nb\r"), S("a\r\nb"), 0, -1);
        check_case("no end yet: held dot", m, S("a\r\n."), S("a\r\n"), 0, -1);
        check_case("no end yet: held dot CR", m, S("a\r\n.\r"), S("a\r\n"), 0, -1);
        check_case("8-bit and controls are content", m, S("\xc3\xbc\t\x01\r\n.\r\n"),
                   S("\xc3\xbc\t\x01\r\n.\r\n"), 0, 9);
        check_case("the next command stays unread", m, S(".\r\nMAIL FROM:<a@b>\r\n"), S(".\r\n"), 0,
                   3);
    }
}

/*
 * The smuggling endings: "first" + ending + a would-be second transaction +
 * the real end. The proxy must never end the message at the ending; REJECT
 * forwards nothing from the bare CR/LF on; NORMALIZE forwards the ending as
 * `norm` (never a lone "." line) and the rest as content.
 */
/*
 * NUL: a backend that deletes NUL bytes would read "\0." or ".\0" as a dot
 * line. REJECT reports it and forwards nothing from it on; NORMALIZE deletes
 * it and doubles a dot that the deletion would bring to a line start.
 */
static void test_nul(void)
{
    check_case("nul before dot (reject)", STP_DATA_REJECT, S("a\r\n\0.\r\n.\r\n"), S("a\r\n"), 1,
               10);
    check_case("nul after dot (reject)", STP_DATA_REJECT, S(".\0\r\n.\r\n"), S(""), 1, 7);
    check_case("nul mid-line (reject)", STP_DATA_REJECT, S("ab\0c\r\n.\r\n"), S("ab"), 1, 9);
    check_case("nul before dot (normalize)", STP_DATA_NORMALIZE, S("a\r\n\0.\r\n.\r\n"),
               S("a\r\n..\r\n.\r\n"), 0, 10);
    check_case("nuls before dot (normalize)", STP_DATA_NORMALIZE, S("\0\0.\r\n.\r\n"),
               S("..\r\n.\r\n"), 0, 8);
    check_case("nul after dot (normalize)", STP_DATA_NORMALIZE, S(".\0\r\n.\r\n"),
               S("..\r\n.\r\n"), 0, 7);
    check_case("nul after dot CR (normalize)", STP_DATA_NORMALIZE, S(".\r\0\r\n.\r\n"),
               S("..\r\n\r\n.\r\n"), 0, 8);
    check_case("nul after CR (normalize)", STP_DATA_NORMALIZE, S("a\r\0\r\n.\r\n"),
               S("a\r\n\r\n.\r\n"), 0, 8);
    check_case("nul mid-line deleted (normalize)", STP_DATA_NORMALIZE, S("ab\0c\r\n.\r\n"),
               S("abc\r\n.\r\n"), 0, 9);
}

static const struct {
    const char *label;
    const char *ending;
    size_t len;
    const char *reject_out; /* forwarded in REJECT mode */
    int bare;               /* REJECT reports BARE */
    const char *norm;       /* the ending as forwarded in NORMALIZE mode */
    size_t norm_len;
} endings[] = {
    {"LF . LF", S("\n.\n"), "first", 1, S("\r\n..\r\n")},
    {"LF . CRLF", S("\n.\r\n"), "first", 1, S("\r\n..\r\n")},
    {"CR . CRLF", S("\r.\r\n"), "first", 1, S("\r\n..\r\n")},
    {"CRLF . LF", S("\r\n.\n"), "first\r\n", 1, S("\r\n..\r\n")},
    {"CRLF . CR", S("\r\n.\r"), "first\r\n", 1, S("\r\n..\r\n")},
    {"CRLF NUL . CRLF", S("\r\n\0.\r\n"), "first\r\n", 1, S("\r\n..\r\n")},
    {"CRLF . NUL CRLF", S("\r\n.\0\r\n"), "first\r\n", 1, S("\r\n..\r\n")},
    {"CR . CR", S("\r.\r"), "first", 1, S("\r\n..\r\n")},
    {"LF . CR", S("\n.\r"), "first", 1, S("\r\n..\r\n")},
    {"CR . LF", S("\r.\n"), "first", 1, S("\r\n..\r\n")},
    {"CR . CR . LF", S("\r.\r.\n"), "first", 1, S("\r\n..\r\n..\r\n")},
    {"LF . LF . LF", S("\n.\n.\n"), "first", 1, S("\r\n..\r\n..\r\n")},
    {"CRLF . CR CRLF", S("\r\n.\r\r\n"), "first\r\n", 1, S("\r\n..\r\n\r\n")},
    {"CR CRLF . CRLF is a real end", S("\r\r\n.\r\n"), "first", 1, NULL, 0},
};

static const char second[] = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n";

static size_t smuggle_input(char *in, size_t i)
{
    size_t n = 0;
    memcpy(in + n, "first", 5), n += 5;
    memcpy(in + n, endings[i].ending, endings[i].len), n += endings[i].len;
    memcpy(in + n, second, sizeof(second) - 1), n += sizeof(second) - 1;
    memcpy(in + n, ".\r\n", 3), n += 3;
    return n;
}

/* 1 if the output holds a line that is a lone "." anywhere but at its end. */
static int lone_dot_before_end(const char *p, size_t n)
{
    if (n > 3 && memcmp(p, ".\r\n", 3) == 0) {
        return 1;
    }
    for (size_t i = 0; i + 5 < n; i++) {
        if (memcmp(p + i, "\r\n.\r\n", 5) == 0) {
            return 1;
        }
    }
    return 0;
}

static void test_smuggling_reject(void)
{
    char in[512];
    for (size_t i = 0; i < sizeof(endings) / sizeof(endings[0]); i++) {
        size_t n = smuggle_input(in, i);
        const result_t *r = check_split(endings[i].label, STP_DATA_REJECT, in, n);
        int before = stp_check_failures;
        CHECK_EQ_INT(r->bare, endings[i].bare);
        if (endings[i].norm == NULL) {
            /* a bare CR, then a real CRLF "." CRLF: the end is there */
            CHECK_EQ_INT(r->done_at, 5 + endings[i].len);
        } else {
            CHECK_EQ_INT(r->done_at, (long)n);
        }
        if (endings[i].bare) {
            /* nothing from the first bare CR/LF on, never half a terminator */
            CHECK_MEM(r->out, r->out_len, endings[i].reject_out, strlen(endings[i].reject_out));
        } else {
            CHECK_MEM(r->out, r->out_len, in, n);
        }
        CHECK(!lone_dot_before_end(r->out, r->out_len));
        if (stp_check_failures != before) {
            fprintf(stderr, "ending '%s' (REJECT)\n", endings[i].label);
        }
    }
}

static void test_smuggling_normalize(void)
{
    char in[512], want[512];
    for (size_t i = 0; i < sizeof(endings) / sizeof(endings[0]); i++) {
        size_t n = smuggle_input(in, i), w = 0;
        const result_t *r = check_split(endings[i].label, STP_DATA_NORMALIZE, in, n);
        int before = stp_check_failures;
        CHECK_EQ_INT(r->bare, 0);
        if (endings[i].norm == NULL) {
            CHECK_MEM(r->out, r->out_len, "first\r\n\r\n.\r\n", 12);
            CHECK_EQ_INT(r->done_at, 5 + endings[i].len);
        } else {
            /* the smuggled transaction arrives as content of this message */
            memcpy(want + w, "first", 5), w += 5;
            memcpy(want + w, endings[i].norm, endings[i].norm_len), w += endings[i].norm_len;
            memcpy(want + w, second, sizeof(second) - 1), w += sizeof(second) - 1;
            memcpy(want + w, ".\r\n", 3), w += 3;
            CHECK_MEM(r->out, r->out_len, want, w);
            CHECK_EQ_INT(r->done_at, (long)n);
        }
        /* CRLF line ends only, and one end of data: the last line */
        for (size_t k = 0; k < r->out_len; k++) {
            if (r->out[k] == '\n') {
                CHECK(k > 0 && r->out[k - 1] == '\r');
            }
            if (r->out[k] == '\r') {
                CHECK(k + 1 < r->out_len && r->out[k + 1] == '\n');
            }
        }
        CHECK(!lone_dot_before_end(r->out, r->out_len));
        if (stp_check_failures != before) {
            fprintf(stderr, "ending '%s' (NORMALIZE)\n", endings[i].label);
        }
    }
}

static void test_normalize_examples(void)
{
    static const struct {
        const char *label, *in;
        size_t len;
        const char *out;
        size_t out_len;
        long done;
    } cases[] = {
        {"bare lf", S("a\nb\r\n.\r\n"), S("a\r\nb\r\n.\r\n"), 8},
        {"bare cr", S("a\rb\r\n.\r\n"), S("a\r\nb\r\n.\r\n"), 8},
        {"bare cr at line start", S("\rb\r\n.\r\n"), S("\r\nb\r\n.\r\n"), 7},
        {"bare lf at content start", S("\n.\r\n.\r\n"), S("\r\n..\r\n.\r\n"), 7},
        {"dot after repaired lf", S("a\n.\nb\r\n.\r\n"), S("a\r\n..\r\nb\r\n.\r\n"), 10},
        {"crlf dot crlf behind a repair is content", S("a\n.\r\n"), S("a\r\n..\r\n"), -1},
        {"dot line after repair then real end", S("a\n.\r\n.\r\n"), S("a\r\n..\r\n.\r\n"), 8},
        {"stuffed dot after repair stays content", S("a\n..\r\n.\r\n"), S("a\r\n...\r\n.\r\n"), 9},
        {"bare cr then dot text", S("a\r.x\r\n.\r\n"), S("a\r\n..x\r\n.\r\n"), 9},
        {"lone dot with bare lf", S(".\n.\r\n"), S("..\r\n..\r\n"), -1},
        {"lone dot with bare cr", S(".\rx\r\n.\r\n"), S("..\r\nx\r\n.\r\n"), 8},
        {"cr cr lf", S("a\r\r\n.\r\n"), S("a\r\n\r\n.\r\n"), 7},
        {"many bare lfs", S("\n\n\n.\r\n"), S("\r\n\r\n\r\n..\r\n"), -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(cases[i].label, STP_DATA_NORMALIZE, cases[i].in, cases[i].len, cases[i].out,
                   cases[i].out_len, 0, cases[i].done);
    }
}

static void test_reject_examples(void)
{
    static const struct {
        const char *label, *in;
        size_t len;
        const char *out;
        size_t out_len;
        long done;
    } cases[] = {
        {"bare lf at content start", S("\n.\r\n.\r\n"), S(""), 7},
        {"bare lf then real end", S("a\r\nb\nc\r\n.\r\n"), S("a\r\nb"), 11},
        {"held cr then bare", S("a\r\nb\rc\r\n.\r\n"), S("a\r\nb"), 11},
        {"held dot then bare lf", S("a\r\n.\n.\r\n"), S("a\r\n"), -1},
        {"many bare: reported once", S("\n\r\r\n\n.\r\n.\r\n"), S(""), 11},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(cases[i].label, STP_DATA_REJECT, cases[i].in, cases[i].len, cases[i].out,
                   cases[i].out_len, 1, cases[i].done);
    }
}

/* A second message after DONE: a fresh scanner starts at a line start. */
/* RFC 1870's size: without the stuffed dots and the terminating ".\r\n";
 * the same however the input is cut (check_split compares it). */
static void test_size(void)
{
    static const struct {
        const char *in;
        size_t n;
        uint64_t size;
    } cases[] = {
        {S(".\r\n"), 0},
        {S("ab\r\n.\r\n"), 4},
        {S("..x\r\n.\r\n"), 4},             /* ".x\r\n" */
        {S("a\r\n..\r\n.\r\n"), 6},         /* "a\r\n.\r\n" */
        {S("...\r\n..\r\nz\r\n.\r\n"), 10}, /* "..\r\n.\r\nz\r\n" */
        {S("x.\r\n.\r\n"), 4},              /* a dot inside a line is content */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int mode = 0; mode < 2; mode++) {
            const result_t *r = check_split("size", (stp_data_mode_t)mode, cases[i].in, cases[i].n);
            CHECK(r->done_at == (long)cases[i].n);
            CHECK_EQ_INT(r->size, cases[i].size);
        }
    }
}

static void test_bytes_and_restart(void)
{
    char out[64];
    size_t used, produced;
    stp_data_scan_t s;
    stp_data_scan_init(&s, STP_DATA_REJECT);
    CHECK_EQ_INT(stp_data_scan(&s, "ab\r\n.\r\nNOOP\r\n", 13, out, &used, &produced),
                 STP_DATA_DONE);
    CHECK_EQ_INT(used, 7);
    CHECK_EQ_INT(s.bytes, 7);
    CHECK_EQ_INT(s.saw_bare, 0);
    stp_data_scan_init(&s, STP_DATA_REJECT);
    CHECK_EQ_INT(stp_data_scan(&s, ".\r\n", 3, out, &used, &produced), STP_DATA_DONE);
    /* a scan without output buffer still finds the end */
    stp_data_scan_init(&s, STP_DATA_NORMALIZE);
    CHECK_EQ_INT(stp_data_scan(&s, "a\nb\r\n.\r\n", 8, NULL, &used, NULL), STP_DATA_DONE);
    CHECK_EQ_INT(s.saw_bare, 1);
}

/*
 * The model: the end of data is the first CR LF "." CR LF in CRLF + input
 * (the CRLF after "DATA" counts); a bare CR/LF is a CR not followed by LF
 * or an LF not after a CR, before that end. A CR that is the last input
 * byte is undecided.
 */
static long model_end(const char *in, size_t n)
{
    for (size_t i = 0; i + 3 <= n; i++) {
        if (memcmp(in + i, ".\r\n", 3) == 0 &&
            (i == 0 || (i >= 2 && in[i - 2] == '\r' && in[i - 1] == '\n'))) {
            return (long)(i + 3);
        }
    }
    return -1;
}

static int model_bare(const char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) {
            return 1;
        }
        if (in[i] == '\r' && i + 1 < n && in[i + 1] != '\n') {
            return 1;
        }
    }
    return 0;
}

/* 1000 random bytes from an alphabet that makes line ends and dots common,
 * in both modes: every cut and byte by byte agree with the whole, and the
 * whole agrees with the model. */
static void test_random_soak(void)
{
    static const char alphabet[] = "a.\r\n\r\n.";
    static char in[1000];
    srand(3);
    for (int round = 0; round < 40; round++) {
        for (size_t i = 0; i < sizeof(in); i++) {
            in[i] = alphabet[rand() % 7];
        }
        /* keep the end from coming too early, so that there is much to scan */
        size_t from = (size_t)(rand() % 900);
        for (size_t i = 0; i < from; i++) {
            if (in[i] == '.') {
                in[i] = 'a';
            }
        }
        long end = model_end(in, sizeof(in));
        size_t upto = end < 0 ? sizeof(in) : (size_t)end;
        for (int mode = 0; mode < 2; mode++) {
            int before = stp_check_failures;
            const result_t *r = check_split("random soak", (stp_data_mode_t)mode, in, sizeof(in));
            CHECK_EQ_INT(r->done_at, end);
            CHECK_EQ_INT(r->bare, mode == STP_DATA_REJECT ? model_bare(in, upto) : 0);
            CHECK(!lone_dot_before_end(r->out, r->out_len));
            if (mode == STP_DATA_REJECT) {
                /* REJECT forwards a prefix of the input, unchanged */
                CHECK(r->out_len <= upto && memcmp(r->out, in, r->out_len) == 0);
                if (!r->bare && end >= 0) {
                    CHECK_EQ_INT(r->out_len, upto);
                }
            }
            if (stp_check_failures != before) {
                fprintf(stderr, "soak round %d mode %d\n", round, mode);
            }
        }
    }
}

int main(void)
{
    STP_RUN(test_verbatim);
    STP_RUN(test_clean_messages);
    STP_RUN(test_nul);
    STP_RUN(test_smuggling_reject);
    STP_RUN(test_smuggling_normalize);
    STP_RUN(test_normalize_examples);
    STP_RUN(test_reject_examples);
    STP_RUN(test_bytes_and_restart);
    STP_RUN(test_size);
    STP_RUN(test_random_soak);
    return STP_CHECK_DONE();
}
