/* tls_name_test: RFC 6125 / RFC 7817 name matching for outbound verification. */
#include <string.h>

#include "test/unit/check.h"
#include "tls/tls_verify.h"

static void test_name_match(void)
{
    static const struct {
        const char *label, *pattern, *host;
        int want;
    } cases[] = {
        {"exact", "mx.example.com", "mx.example.com", 1},
        {"case insensitive", "MX.Example.COM", "mx.example.com", 1},
        {"trailing dot host", "mx.example.com", "mx.example.com.", 1},
        {"different", "mx.example.com", "mx2.example.com", 0},
        {"suffix is not a match", "example.com", "mx.example.com", 0},
        {"wildcard one label", "*.example.com", "mx.example.com", 1},
        {"wildcard not the base", "*.example.com", "example.com", 0},
        {"wildcard one label only", "*.example.com", "a.b.example.com", 0},
        {"partial label wildcard", "m*.example.com", "mx.example.com", 0},
        {"wildcard not leftmost", "mx.*.com", "mx.example.com", 0},
        {"wildcard over tld", "*.com", "example.com", 0},
        {"bare star", "*", "localhost", 0},
        {"double wildcard", "*.*.example.com", "a.b.example.com", 0},
        {"wildcard with empty label", "*.example.com", ".example.com", 0},
        {"lookalike suffix", "*.example.com", "mx.evilexample.com", 0},
        {"empty pattern", "", "mx.example.com", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = stp_tls_name_match(cases[i].pattern, strlen(cases[i].pattern), cases[i].host);
        if (got != cases[i].want) {
            fprintf(stderr, "case '%s': %s vs %s\n", cases[i].label, cases[i].pattern,
                    cases[i].host);
        }
        CHECK_EQ_INT(got, cases[i].want);
    }
}

static void test_embedded_nul(void)
{
    /* "mx.example.com\0.evil.net" must not match mx.example.com */
    static const char p[] = "mx.example.com\0.evil.net";
    CHECK_EQ_INT(stp_tls_name_match(p, sizeof(p) - 1, "mx.example.com"), 0);
}

int main(void)
{
    STP_RUN(test_name_match);
    STP_RUN(test_embedded_nul);
    return STP_CHECK_DONE();
}
