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
static X509 *cert_with_sans(const char *cn, const char *const *sans, size_t n);

static X509 *cert_with(const char *cn, const char *san)
{
    char dns[300];
    snprintf(dns, sizeof(dns), "DNS:%s", san ? san : "");
    const char *sans[] = {dns};
    return cert_with_sans(cn, sans, san != NULL);
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

/* A certificate with the given subjectAltNames: "DNS:name" or "IP:address". */
static X509 *cert_with_sans(const char *cn, const char *const *sans, size_t n)
{
    X509 *x = X509_new();
    CHECK(x != NULL);
    CHECK(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                     (const unsigned char *)cn, -1, -1, 0) == 1);
    if (n == 0) {
        return x;
    }
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    CHECK(gens != NULL);
    for (size_t i = 0; i < n; i++) {
        GENERAL_NAME *gn = GENERAL_NAME_new();
        CHECK(gn != NULL);
        if (strncmp(sans[i], "IP:", 3) == 0) {
            unsigned char b[16];
            size_t blen = stp_tls_ip_literal(sans[i] + 3, b);
            CHECK(blen != 0);
            ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
            CHECK(os != NULL && ASN1_OCTET_STRING_set(os, b, (int)blen) == 1);
            GENERAL_NAME_set0_value(gn, GEN_IPADD, os);
        } else {
            ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
            CHECK(ia5 != NULL && ASN1_STRING_set(ia5, sans[i] + 4, -1) == 1);
            GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
        }
        CHECK(sk_GENERAL_NAME_push(gens, gn) > 0);
    }
    CHECK(X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, 0) == 1);
    GENERAL_NAMES_free(gens);
    return x;
}

/* A relay given by address (route = relay:192.0.2.1:587, its default
 * servername): the address matches an iPAddress SAN of the same bytes, and
 * never a DNS-ID or a CN spelling it out. */
static void test_ip_literal(void)
{
    unsigned char b[16];
    CHECK_EQ_INT((int)stp_tls_ip_literal("127.0.0.1", b), 4);
    CHECK_EQ_INT((int)stp_tls_ip_literal("::1", b), 16);
    CHECK_EQ_INT((int)stp_tls_ip_literal("[2001:db8::1]", b), 16);
    CHECK_EQ_INT((int)stp_tls_ip_literal("mx.example.test", b), 0);
    CHECK_EQ_INT((int)stp_tls_ip_literal("[127.0.0.1", b), 0);
    CHECK_EQ_INT((int)stp_tls_ip_literal("", b), 0);

    static const char *const both[] = {"DNS:mx.example.test", "IP:127.0.0.1", "IP:2001:db8::25"};
    static const char *const dns_ip[] = {"DNS:127.0.0.1"};
    X509 *x = cert_with_sans("mx.example.test", both, 3);
    X509 *spelt = cert_with_sans("127.0.0.1", dns_ip, 1);
    X509 *cn = cert_with("127.0.0.1", NULL);
    char seen[256];
    const char *v4[] = {"127.0.0.1"}, *v6[] = {"[2001:db8::25]"}, *v6b[] = {"2001:db8:0::25"},
               *other[] = {"127.0.0.2"}, *name[] = {"mx.example.test"};
    CHECK_EQ_INT(stp_tls_leaf_name_match(x, v4, 1, seen, sizeof(seen)), 1);
    CHECK_EQ_INT(stp_tls_leaf_name_match(x, v6, 1, seen, sizeof(seen)), 1);
    CHECK_EQ_INT(stp_tls_leaf_name_match(x, v6b, 1, seen, sizeof(seen)), 1);
    CHECK_EQ_INT(stp_tls_leaf_name_match(x, name, 1, seen, sizeof(seen)), 1);
    CHECK_EQ_INT(stp_tls_leaf_name_match(x, other, 1, seen, sizeof(seen)), 0);
    CHECK(strcmp(seen, "mx.example.test, 127.0.0.1, 2001:db8::25") == 0);
    CHECK_EQ_INT(stp_tls_leaf_name_match(spelt, v4, 1, seen, sizeof(seen)), 0);
    CHECK_EQ_INT(stp_tls_leaf_name_match(cn, v4, 1, seen, sizeof(seen)), 0);
    CHECK(strcmp(seen, "127.0.0.1") == 0);
    X509_free(x);
    X509_free(spelt);
    X509_free(cn);
}

int main(void)
{
    STP_RUN(test_name_match);
    STP_RUN(test_embedded_nul);
    STP_RUN(test_cn_only_without_dns_ids);
    STP_RUN(test_ip_literal);
    return STP_CHECK_DONE();
}
