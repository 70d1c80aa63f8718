/*
 * domain_name_test: the one domain name check (RFC 5321 4.1.2 syntax with
 * the DNS limits) as a table, its length limits at their edges, and that
 * every prefix of a valid name is judged without reading past it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/domain_name.h"
#include "test/unit/check.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_table(void)
{
    static const struct {
        const char *name;
        int valid;
    } cases[] = {
        {"example.com", 1},
        {"EXAMPLE.Com", 1}, /* case is the caller's to fold */
        {"a", 1},
        {"localhost", 1},
        {"x.bank.test", 1},
        {"a-b.example", 1},
        {"a--b.example", 1},
        {"xn--caf-dma.example", 1}, /* an A-label */
        {"1.2.3.4", 1},             /* digits only: a name, not an address literal */
        {"3com.example", 1},
        {"", 0},
        {".", 0},
        {"example.com.", 0}, /* a trailing dot is the caller's to strip */
        {".example.com", 0},
        {"a..example", 0},
        {"-x.bank.test", 0}, /* a label starting with a hyphen */
        {"x-.bank.test", 0}, /* ...or ending with one */
        {"x.-bank.test", 0},
        {"x.bank-.test", 0},
        {"x.bank.test-", 0},
        {"-", 0},
        {"a_b.example", 0},
        {"*.example", 0},
        {"[192.0.2.1]", 0},
        {"[IPv6:2001:db8::1]", 0},
        {"a b.example", 0},
        {"a/b", 0},
        {"a:25", 0},
        {"\xc3\xbc.example", 0}, /* a U-label: not without IDNA */
        {"a\x7f.example", 0},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        int got = stp_domain_name_valid(cases[i].name, strlen(cases[i].name));
        if (got != cases[i].valid) {
            fprintf(stderr, "  '%s': %d, want %d\n", cases[i].name, got, cases[i].valid);
            CHECK(0);
        }
    }
    CHECK(!stp_domain_name_valid(NULL, 0));
    CHECK(!stp_domain_name_valid("a\0b", 3)); /* a NUL inside is not a letter */
    CHECK(stp_domain_name_valid("example.com.", 11)); /* the caller stripped the dot */
}

static void test_limits(void)
{
    char name[300];
    /* a label of 63 is the most */
    memset(name, 'a', 64);
    CHECK(stp_domain_name_valid(name, 63));
    CHECK(!stp_domain_name_valid(name, 64));
    /* 253 octets is the most: four labels of 63 and a dot between each (255
     * with its root label), less two */
    for (size_t i = 0; i < sizeof(name); i++) {
        name[i] = i % 64 == 63 ? '.' : 'a';
    }
    CHECK(stp_domain_name_valid(name, 253));
    CHECK(!stp_domain_name_valid(name, 254)); /* ends in '.' */
    name[253] = 'a';
    CHECK(!stp_domain_name_valid(name, 254)); /* too long */
}

/* A valid name cut short is judged on the prefix alone (ASan would see a read past it). */
static void test_prefixes(void)
{
    const char *s = "mx1.x-y.example.test";
    size_t n = strlen(s);
    for (size_t k = 0; k <= n; k++) {
        char *buf = malloc(k + 1); /* exactly the prefix, for ASan */
        if (buf == NULL) {
            CHECK(0);
            return;
        }
        memcpy(buf, s, k);
        int want = k > 0 && s[k - 1] != '.' && s[k - 1] != '-';
        CHECK_EQ_INT(stp_domain_name_valid(buf, k), want);
        free(buf);
    }
}

/* Names in A-labels: ASCII copied in lower case, UTF-8 converted by
 * IDNA2008 after UTS #46's mapping; anything else refused. */
static void test_ascii(void)
{
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {"Example.TEST", "example.test"},
        {"xn--tda.example", "xn--tda.example"},
        {"XN--TDA.Example", "xn--tda.example"},
        {"\xc3\xbc.example", "xn--tda.example"},                     /* u-umlaut */
        {"B\xc3\xbc" "cher.Example", "xn--bcher-kva.example"},      /* mapped to lower case */
        {"stra\xc3\x9f" "e.example", "xn--strae-oqa.example"},      /* sharp s kept (non-transitional) */
        {"\xef\xbd\x82\xef\xbd\x81\xef\xbd\x8e\xef\xbd\x8b.test", "bank.test"}, /* fullwidth */
        {"\xc3\xbc.bank.test", "xn--tda.bank.test"},
        {"\xff.example", NULL},                             /* not UTF-8 */
        {"\xc3.example", NULL},                             /* cut short */
        {"-\xc3\xbc.example", NULL},                        /* leading hyphen */
        {"\xc3\xbc-.example", NULL},                        /* trailing hyphen */
        {"a_\xc3\xbc.example", NULL},                       /* UTS #46 would drop the '_' */
        {"a \xc3\xbc.example", NULL},
        {"\xc3\xbc..example", NULL},
        {"\xe2\x80\x8b.example", NULL},                     /* zero-width space */
        {"a\xe2\x80\xa8" "b.example", NULL},               /* line separator */
        {"\xc3\xbc.example.", NULL},                        /* the caller strips the dot */
        {"a_b.example", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256] = "";
        int rc = stp_domain_name_ascii(cases[i].in, strlen(cases[i].in), out);
        if (cases[i].out == NULL) {
            CHECK_EQ_INT(rc, -1);
        } else {
            CHECK_EQ_INT(rc, (int)strlen(cases[i].out));
            CHECK_STR(out, cases[i].out);
        }
    }
    /* 63 octets of A-label is the most for one label */
    char name[300];
    size_t k = 0;
    for (int i = 0; i < 25; i++) { /* 25 u-umlauts: an A-label well under 63 */
        name[k++] = '\xc3';
        name[k++] = '\xbc';
    }
    memcpy(name + k, ".example", 8);
    k += 8;
    char out[256];
    CHECK(stp_domain_name_ascii(name, k, out) > 0);
    for (int i = 0; i < 70; i++) {
        name[i * 2] = '\xc3';
        name[i * 2 + 1] = '\xbc';
    }
    memcpy(name + 140, ".example", 8);
    CHECK_EQ_INT(stp_domain_name_ascii(name, 148, out), -1); /* the A-label would pass 63 */
    /* every prefix, exactly allocated (ASan): never a read past it */
    const char *u = "B\xc3\xbc" "cher.example";
    for (size_t j = 0; j <= strlen(u); j++) {
        char *buf = malloc(j + 1);
        memcpy(buf, u, j);
        (void)stp_domain_name_ascii(buf, j, out);
        free(buf);
    }
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_limits);
    STP_RUN(test_prefixes);
    STP_RUN(test_ascii);
    return STP_CHECK_DONE();
}
