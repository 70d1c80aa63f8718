/*
 * envelope_test: MAIL FROM / RCPT TO arguments for route = mx, as tables:
 * paths (quoted strings, brackets), recipient domains, the MAIL parameters
 * the proxy accepts, and the MAIL FROM line replayed to next hops with
 * different capabilities. Each argument is also checked cut short at every
 * byte: a prefix never yields a path longer than the input, and any result
 * stays inside it.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/ehlo.h"
#include "policy/domain_name.h"
#include "proxy/envelope.h"
#include "test/unit/check.h"

typedef struct {
    const char *label;
    const char *arg;
    const char *path; /* NULL: no path */
} path_case_t;

static const path_case_t path_cases[] = {
    {"simple", "<a@b.example>", "<a@b.example>"},
    {"null path", "<>", "<>"},
    {"with parameters", "<a@b> SIZE=10", "<a@b>"},
    {"leading spaces", "  <a@b>", "<a@b>"},
    {"quoted >", "<\"x>y\"@b> SIZE=1", "<\"x>y\"@b>"},
    {"escaped quote", "<\"x\\\">y\"@b>", "<\"x\\\">y\"@b>"},
    {"escaped backslash", "<\"x\\\\\"@b>", "<\"x\\\\\"@b>"},
    {"unbracketed", "a@b", NULL},
    {"unterminated", "<a@b", NULL},
    {"unterminated quote", "<\"a>@b>", NULL},
    {"empty", "", NULL},
};

static void test_paths(void)
{
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const path_case_t *c = &path_cases[i];
        size_t s = 0, e = 0, n = strlen(c->arg);
        int rc = stp_env_path(c->arg, n, &s, &e);
        if (c->path == NULL) {
            if (rc != -1) {
                fprintf(stderr, "case %s\n", c->label);
            }
            CHECK_EQ_INT(rc, -1);
            continue;
        }
        CHECK_EQ_INT(rc, 0);
        if (rc == 0) {
            CHECK_MEM(c->arg + s, e - s, c->path, strlen(c->path));
        }
        /* every prefix: no path, or one inside the prefix */
        for (size_t k = 0; k < n; k++) {
            if (stp_env_path(c->arg, k, &s, &e) == 0) {
                CHECK(e <= k && s < e);
            }
        }
    }
}

typedef struct {
    const char *label;
    const char *arg;
    const char *domain; /* NULL: refused */
    const char *code;   /* refusal's prefix */
} rcpt_case_t;

static const rcpt_case_t rcpt_cases[] = {
    {"plain", "<bob@Example.TEST>", "example.test", NULL},
    {"trailing dot", "<bob@example.test.>", "example.test", NULL},
    {"quoted @ in local part", "<\"a@b\"@c.example>", "c.example", NULL},
    {"source route", "<@relay.example:bob@d.example>", "d.example", NULL},
    {"parameters after", "<bob@d.example> NOTIFY=NEVER", "d.example", NULL},
    {"no domain", "<postmaster>", NULL, "550 5.1.3"},
    {"only quoted @", "<\"a@b\">", NULL, "550 5.1.3"},
    {"address literal", "<bob@[192.0.2.1]>", NULL, "550 5.1.3"},
    {"empty domain", "<bob@>", NULL, "501 5.1.3"},
    {"only a dot", "<bob@.>", NULL, "501 5.1.3"},
    {"double dot", "<bob@a..example>", NULL, "501 5.1.3"},
    {"leading dot", "<bob@.example>", NULL, "501 5.1.3"},
    {"underscore", "<bob@a_b.example>", NULL, "501 5.1.3"},
    /* SMTPUTF8: routed (and judged by the policy table) by its A-labels */
    {"utf-8 domain", "<bob@\xc3\xbc.example>", "xn--tda.example", NULL},
    {"utf-8 domain, upper case", "<bob@B\xc3\x9c" "CHER.example.>", "xn--bcher-kva.example", NULL},
    {"utf-8 local part", "<j\xc3\xb6rg@example.test>", "example.test", NULL},
    {"not utf-8", "<bob@\xff.example>", NULL, "501 5.1.3"},
    {"utf-8 with an underscore", "<bob@a_\xc3\xbc.example>", NULL, "501 5.1.3"},
    {"utf-8 label with a leading hyphen", "<bob@-\xc3\xbc.bank.test>", NULL, "501 5.1.3"},
    /* what the policy lookup could not judge, refused here (one check) */
    {"label starting with a hyphen", "<bob@-x.bank.test>", NULL, "501 5.1.3"},
    {"label ending with a hyphen", "<bob@x-.bank.test>", NULL, "501 5.1.3"},
    {"last label ending with a hyphen", "<bob@x.bank.test->", NULL, "501 5.1.3"},
    {"hyphen alone", "<bob@->", NULL, "501 5.1.3"},
    {"hyphen before the trailing dot", "<bob@x.test-.>", NULL, "501 5.1.3"},
    {"two trailing dots", "<bob@x.test..>", NULL, "501 5.1.3"},
    {"hyphens inside", "<bob@a--b.x-y.test>", "a--b.x-y.test", NULL},
    {"ipv6 literal", "<bob@[IPv6:2001:db8::1]>", NULL, "550 5.1.3"},
    {"no brackets", "bob@example.test", NULL, "501 5.1.3"},
};

static void test_rcpt_domains(void)
{
    for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
        const rcpt_case_t *c = &rcpt_cases[i];
        char out[256];
        size_t params = 0, n = strlen(c->arg);
        const char *bad = stp_env_rcpt_domain(c->arg, n, &params, out);
        if (c->domain) {
            if (bad) {
                fprintf(stderr, "case %s: %s", c->label, bad);
            }
            CHECK(bad == NULL);
            if (bad == NULL) {
                CHECK_STR(out, c->domain);
                CHECK(params <= n);
            }
        } else {
            CHECK(bad != NULL && strncmp(bad, c->code, strlen(c->code)) == 0);
        }
        for (size_t k = 0; k < n; k++) {
            if (stp_env_rcpt_domain(c->arg, k, &params, out) == NULL) {
                CHECK(params <= k && stp_domain_name_valid(out, strlen(out)));
            }
        }
    }
    /* a 254-octet domain is one too long; 253 (labels of 63) fits */
    char arg[300] = "<a@";
    for (size_t i = 0; i < 254; i++) {
        arg[3 + i] = i % 64 == 63 ? '.' : 'a';
    }
    strcpy(arg + 257, ">");
    char out[256];
    size_t params;
    CHECK(stp_env_rcpt_domain(arg, strlen(arg), &params, out) != NULL);
    arg[256] = '>';
    arg[257] = '\0';
    CHECK(stp_env_rcpt_domain(arg, strlen(arg), &params, out) == NULL);
    /* a label of 64 is one too long */
    memset(arg + 3, 'a', 64);
    strcpy(arg + 67, ".test>");
    CHECK(stp_env_rcpt_domain(arg, strlen(arg), &params, out) != NULL);
    strcpy(arg + 66, ".test>");
    CHECK(stp_env_rcpt_domain(arg, strlen(arg), &params, out) == NULL);
}

static void test_mail_params(void)
{
    CHECK(stp_env_mail_params("", 0, 0) == NULL);
    CHECK(stp_env_mail_params(" SIZE=1000 BODY=8BITMIME SMTPUTF8", 33, 0) == NULL);
    CHECK(stp_env_mail_params(" size=10 body=7bit", 18, 100) == NULL);
    CHECK(strncmp(stp_env_mail_params(" SIZE=101", 9, 100), "552 5.3.4", 9) == 0);
    CHECK(stp_env_mail_params(" SIZE=100", 9, 100) == NULL);
    CHECK(strncmp(stp_env_mail_params(" SIZE=1x", 8, 0), "501 5.5.4", 9) == 0);
    CHECK(strncmp(stp_env_mail_params(" SIZE=", 6, 0), "555 5.5.4", 9) == 0);
    CHECK(strncmp(stp_env_mail_params(" SIZE=99999999999999999999999", 29, 0), "501", 3) == 0);
    CHECK(strncmp(stp_env_mail_params(" RET=HDRS", 9, 0), "555 5.5.4", 9) == 0);
    CHECK(strncmp(stp_env_mail_params(" AUTH=<>", 8, 0), "555 5.5.4", 9) == 0);
    CHECK(strncmp(stp_env_mail_params(" BODY=BINARYMIME", 16, 0), "555 5.5.4", 9) == 0);
}

static void test_mail_size(void)
{
    static const struct {
        const char *arg;
        int found;
        uint64_t size;
    } cases[] = {
        {"<a@b> SIZE=1000", 1, 1000},
        {"<a@b> BODY=8BITMIME size=42 RET=HDRS", 1, 42},
        {"<>  SIZE=0", 1, 0},
        {"<a@b> SIZE=99999999999999999999999", 1, UINT64_MAX},
        {"<a@b> SIZE=18446744073709551615", 1, UINT64_MAX},
        {"<a@b> SIZE=18446744073709551614", 1, UINT64_MAX - 1},
        {"<a@b>", 0, 0},
        {"<a@b> SIZE=", 0, 0},
        {"<a@b> SIZE=12x", 0, 0},
        {"<a@b> XSIZE=12", 0, 0},
        {"a@b SIZE=12", 0, 0},        /* no path: the backend answers */
        {"<a@b SIZE=12", 0, 0},
        {"<a@b> SIZE=5 SIZE=7", 1, 5}, /* the first counts */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        int found = stp_env_mail_size(cases[i].arg, strlen(cases[i].arg), &v);
        CHECK_EQ_INT(found, cases[i].found);
        if (found) {
            CHECK(v == cases[i].size);
        }
        /* every prefix parses without reading past it */
        for (size_t n = 0; n < strlen(cases[i].arg); n++) {
            char *copy = malloc(n ? n : 1);
            memcpy(copy, cases[i].arg, n);
            (void)stp_env_mail_size(copy, n, &v);
            free(copy);
        }
    }
}

typedef struct {
    const char *label;
    const char *arg;
    unsigned caps;
    const char *line;    /* NULL: refused */
    const char *refusal; /* prefix, or NULL for "does not fit / invalid" */
} line_case_t;

static const line_case_t line_cases[] = {
    {"path only", "<a@b>", 0, "MAIL FROM:<a@b>", NULL},
    {"everything offered", "<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8",
     STP_EHLO_SIZE | STP_EHLO_8BITMIME | STP_EHLO_SMTPUTF8,
     "MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8", NULL},
    {"no SIZE at the next hop", "<a@b> SIZE=10 BODY=7BIT", STP_EHLO_8BITMIME,
     "MAIL FROM:<a@b> BODY=7BIT", NULL},
    {"nothing offered", "<a@b> SIZE=10 BODY=8BITMIME", 0, "MAIL FROM:<a@b>", NULL},
    {"extra spaces", "<a@b>   SIZE=10  ", STP_EHLO_SIZE, "MAIL FROM:<a@b> SIZE=10", NULL},
    {"SMTPUTF8 not offered", "<\xc3\xbc@b> SMTPUTF8", STP_EHLO_SIZE, NULL, "553 5.6.7"},
    {"null path", "<>", STP_EHLO_SIZE, "MAIL FROM:<>", NULL},
    {"no path", "a@b", 0, NULL, NULL},
    {"a parameter never accepted", "<a@b> RET=HDRS", STP_EHLO_SMTPUTF8, NULL, NULL},
    {"an empty SIZE= is still SIZE", "<a@b> SIZE=", 0, "MAIL FROM:<a@b>", NULL},
};

static void test_mail_lines(void)
{
    for (size_t i = 0; i < sizeof(line_cases) / sizeof(line_cases[0]); i++) {
        const line_case_t *c = &line_cases[i];
        char out[200];
        const char *refusal = "unset";
        int len = stp_env_mail_line(c->arg, strlen(c->arg), c->caps, out, sizeof(out), &refusal);
        if (c->line) {
            CHECK_EQ_INT(len, (int)strlen(c->line));
            if (len >= 0) {
                CHECK_STR(out, c->line);
            }
            CHECK(refusal == NULL);
        } else {
            CHECK_EQ_INT(len, -1);
            if (c->refusal) {
                CHECK(refusal && strncmp(refusal, c->refusal, strlen(c->refusal)) == 0);
            } else {
                CHECK(refusal == NULL);
            }
        }
        /* too small a buffer at every size: -1, never an overflow */
        if (c->line) {
            for (size_t cap = 1; cap <= strlen(c->line); cap++) {
                char small[200];
                CHECK_EQ_INT(stp_env_mail_line(c->arg, strlen(c->arg), c->caps, small, cap,
                                               &refusal),
                             -1);
            }
        }
    }
}

/* SIZE= dropped for a backend without SIZE: the rest kept as it was. */
static void test_mail_without_size(void)
{
    static const struct {
        const char *arg;
        const char *out; /* NULL: -1 */
    } cases[] = {
        {"<a@b> SIZE=1000", "<a@b>"},
        {"<a@b> size=1000 BODY=8BITMIME", "<a@b> BODY=8BITMIME"},
        {"<a@b> BODY=8BITMIME SIZE=1000 SMTPUTF8", "<a@b> BODY=8BITMIME SMTPUTF8"},
        {"<a@b>   SIZE=1   SIZE=2  SMTPUTF8", "<a@b> SMTPUTF8"},
        {"<a@b> SIZE=", "<a@b>"},
        {"<a@b> SIZEX=1 RET=HDRS", "<a@b> SIZEX=1 RET=HDRS"},
        {"<a@b>", "<a@b>"},
        {"<>", "<>"},
        {"  <\"x SIZE=1\"@b> SIZE=5", "  <\"x SIZE=1\"@b>"},
        {"<a@b>SMTPUTF8 SIZE=5", "<a@b> SMTPUTF8"},
        {"a@b SIZE=5", NULL},
        {"<a@b SIZE=5", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *arg = cases[i].arg;
        size_t n = strlen(arg);
        char out[200];
        int len = stp_env_mail_without_size(arg, n, out, sizeof(out));
        if (cases[i].out == NULL) {
            CHECK_EQ_INT(len, -1);
            continue;
        }
        CHECK_EQ_INT(len, (int)strlen(cases[i].out));
        if (len >= 0) {
            CHECK_STR(out, cases[i].out);
            CHECK((size_t)len <= n + 1);
            uint64_t size;
            CHECK(!stp_env_mail_size(out, (size_t)len, &size)); /* no SIZE= is left */
        }
        /* every smaller buffer: -1, never an overflow (out has room for the NUL) */
        for (size_t cap = 0; cap <= strlen(cases[i].out); cap++) {
            char *small = malloc(cap ? cap : 1);
            CHECK_EQ_INT(stp_env_mail_without_size(arg, n, small, cap), -1);
            free(small);
        }
        /* cut short at every byte: within its buffer, never longer than the cut + 1 */
        for (size_t cut = 0; cut < n; cut++) {
            char part[200];
            int k = stp_env_mail_without_size(arg, cut, part, sizeof(part));
            CHECK(k == -1 || (size_t)k <= cut + 1);
        }
    }
}

int main(void)
{
    STP_RUN(test_paths);
    STP_RUN(test_rcpt_domains);
    STP_RUN(test_mail_params);
    STP_RUN(test_mail_size);
    STP_RUN(test_mail_lines);
    STP_RUN(test_mail_without_size);
    return STP_CHECK_DONE();
}
