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

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_limits);
    STP_RUN(test_prefixes);
    return STP_CHECK_DONE();
}
