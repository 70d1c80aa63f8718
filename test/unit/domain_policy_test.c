/*
 * domain_policy_test: the policy table lookup as a table. Exact names beat
 * suffixes, the longest suffix wins, a suffix never covers its own name,
 * names compare without case and trailing dot, every other domain gets the
 * default, and a name that is not a domain gets nothing (never the default).
 */
#include <stdio.h>
#include <string.h>

#include "policy/domain_policy.h"
#include "test/unit/check.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static stp_domain_policy_t entry(const char *name, stp_policy_tls_t tls)
{
    stp_domain_policy_t p;
    memset(&p, 0, sizeof(p));
    CHECK_EQ_INT(stp_policy_name_normalize(name, p.name), 0);
    p.tls = tls;
    return p;
}

static void test_lookup(void)
{
    stp_domain_policy_t entries[] = {
        entry(".example.com", STP_POLICY_TLS_VERIFY),
        entry("example.com", STP_POLICY_TLS_SECURE),
        entry(".mail.example.com", STP_POLICY_TLS_DANE_ONLY),
        entry("Bank.Example.", STP_POLICY_TLS_SECURE),
        entry(".com", STP_POLICY_TLS_MAY),
        entry("legacy.example.net", STP_POLICY_TLS_NONE),
    };
    stp_policy_table_t t = {entries, COUNT_OF(entries), entry("default", STP_POLICY_TLS_MTA_STS)};
    static const struct {
        const char *domain, *want; /* the name of the section that must win; NULL: none */
    } cases[] = {
        {"example.com", "example.com"},              /* exact over suffix */
        {"EXAMPLE.com.", "example.com"},             /* case, trailing dot */
        {"a.example.com", ".example.com"},           /* suffix */
        {"a.b.example.com", ".example.com"},         /* any depth */
        {"x.mail.example.com", ".mail.example.com"}, /* longest suffix wins */
        {"mail.example.com", ".example.com"},        /* a suffix does not cover its own name */
        {"other.com", ".com"},                       /* short suffix */
        {"bank.example", "bank.example"},            /* stored lower case, without the dot */
        {"sub.bank.example", "default"},             /* exact does not cover names below */
        {"legacy.example.net", "legacy.example.net"},
        {"example.net", "default"},
        {"xexample.com", ".com"}, /* not ".example.com": label boundary */
        {"com", "default"},
        /* not domains: no policy at all, never the default (a suffix
         * section might have been meant for them) */
        {"", NULL},
        {".", NULL},
        {".example.com", NULL},
        {"a..example.com", NULL},
        {"a b.example.com", NULL},
        {"*.example.com", NULL},
        {"-x.example.com", NULL},
        {"x-.example.com", NULL},
        {"x.example.com-", NULL},
        {"x.example.com..", NULL},
        {"a_b.example.com", NULL},
        {"[192.0.2.1]", NULL},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        const stp_domain_policy_t *p = stp_policy_lookup(&t, cases[i].domain);
        const char *got = p ? p->name : "(none)", *want = cases[i].want ? cases[i].want : "(none)";
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "  lookup(%s) = %s, want %s\n", cases[i].domain, got, want);
            CHECK(0);
        }
    }
    CHECK(stp_policy_lookup(&t, NULL) == NULL);
    CHECK_EQ_INT(stp_policy_lookup(&t, "x.mail.example.com")->tls, STP_POLICY_TLS_DANE_ONLY);

    /* an empty table: always the default */
    stp_policy_table_t empty = {NULL, 0, entry("default", STP_POLICY_TLS_DANE)};
    CHECK(stp_policy_lookup(&empty, "example.com") == &empty.deflt);
}

static void test_names(void)
{
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {"example.com", "example.com"},
        {"Example.COM.", "example.com"},
        {".example.com", ".example.com"},
        {".Example.com.", ".example.com"},
        {"default", "default"},
        {"xn--caf-dma.example", "xn--caf-dma.example"},
        {"caf\xc3\xa9.example", "xn--caf-dma.example"}, /* UTF-8: its A-labels */
        {".Caf\xc3\xa9.Example.", ".xn--caf-dma.example"},
        {"caf\xc3\xa9_.example", NULL},
        {"localhost", "localhost"},
        {"Default", "default"}, /* a one-label domain named "Default" is the default: documented */
        {"", NULL},
        {".", NULL},
        {"..example.com", NULL},
        {"*.example.com", NULL},
        {"exa mple.com", NULL},
        {"-example.com", NULL},
        {"example-.com", NULL},
        {"example..com", NULL},
        {"example.com..", NULL},
        {"a_b.example", NULL},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        char out[256] = "";
        int rc = stp_policy_name_normalize(cases[i].in, out);
        if (cases[i].out == NULL ? rc != -1 : rc != 0 || strcmp(out, cases[i].out) != 0) {
            fprintf(stderr, "  name '%s': rc %d '%s'\n", cases[i].in, rc, out);
            CHECK(0);
        }
    }
    char label[300];
    memset(label, 'a', 64);
    label[64] = '\0';
    char out[256];
    CHECK_EQ_INT(stp_policy_name_normalize(label, out), -1);
}

static void test_levels(void)
{
    static const char *const all[] = {"none",   "may",  "encrypt",   "verify",
                                      "secure", "dane", "dane-only", "mta-sts"};
    for (size_t i = 0; i < COUNT_OF(all); i++) {
        stp_policy_tls_t t;
        CHECK_EQ_INT(stp_policy_tls_parse(all[i], &t), 0);
        CHECK_EQ_INT(t, i);
        CHECK_STR(stp_policy_tls_name(t), all[i]);
    }
    stp_policy_tls_t t;
    CHECK_EQ_INT(stp_policy_tls_parse("DANE", &t), -1);
    CHECK_EQ_INT(stp_policy_tls_parse("mta_sts", &t), -1);
    CHECK_EQ_INT(stp_policy_tls_parse("", &t), -1);
}

int main(void)
{
    STP_RUN(test_lookup);
    STP_RUN(test_names);
    STP_RUN(test_levels);
    return STP_CHECK_DONE();
}
