/* tls_name_test: RFC 6125 / RFC 7817 name matching for outbound verification. */
#include <string.h>

#include <openssl/x509v3.h>

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
        {"wildcard base a prefix of the host's", "*.example.com", "mx.example.com.evil.net", 0},
        {"exact name a prefix of the host", "mx.example.com", "mx.example.com.evil.net", 0},
        {"host a prefix of the name", "mx.example.com.evil.net", "mx.example.com", 0},
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

/* A certificate (unsigned: only its names matter here) with a subject CN
 * and, unless san is NULL, one DNS subjectAltName. */
static X509 *cert_with(const char *cn, const char *san)
{
    X509 *x = X509_new();
    CHECK(x != NULL);
    CHECK(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                     (const unsigned char *)cn, -1, -1, 0) == 1);
    if (san != NULL) {
        GENERAL_NAMES *gens = GENERAL_NAMES_new();
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
        CHECK(gens != NULL && gn != NULL && ia5 != NULL);
        CHECK(ASN1_STRING_set(ia5, san, (int)strlen(san)) == 1);
        GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
        CHECK(sk_GENERAL_NAME_push(gens, gn) > 0);
        CHECK(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) == 1);
        GENERAL_NAMES_free(gens);
    }
    return x;
}

/* RFC 6125 6.4.4: the CN is a name only when the certificate has no DNS-ID
 * at all; a CN naming the host beside DNS-IDs that do not is a mismatch. */
static void test_cn_only_without_dns_ids(void)
{
    static const char *const names[] = {"mx.example.test"};
    char seen[256];
    X509 *cn_only = cert_with("mx.example.test", NULL);
    X509 *cn_and_other_san = cert_with("mx.example.test", "other.example.test");
    X509 *san = cert_with("other.example.test", "mx.example.test");
    CHECK_EQ_INT(stp_tls_leaf_name_match(cn_only, names, 1, seen, sizeof(seen)), 1);
    CHECK_EQ_INT(stp_tls_leaf_name_match(cn_and_other_san, names, 1, seen, sizeof(seen)), 0);
    CHECK(strcmp(seen, "other.example.test") == 0);
    CHECK_EQ_INT(stp_tls_leaf_name_match(san, names, 1, seen, sizeof(seen)), 1);
    X509_free(cn_only);
    X509_free(cn_and_other_san);
    X509_free(san);
}

int main(void)
{
    STP_RUN(test_name_match);
    STP_RUN(test_embedded_nul);
    STP_RUN(test_cn_only_without_dns_ids);
    return STP_CHECK_DONE();
}
