/*
 * mta_sts_test: the RFC 8461 policy file and TXT record rules as a table.
 * Every policy case is fed whole, cut in two at every byte, and one byte at a
 * time; all must give the same outcome, written as text:
 *   "enforce 86400 mx=a.example,*.b.example"   a valid policy
 *   "ERR line 3: duplicate 'mode' field"       the parser's error
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/mta_sts.h"
#include "test/unit/check.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static void render(const stp_mta_sts_parser_t *p, int rc, const stp_mta_sts_policy_t *pol,
                   char *out, size_t cap)
{
    char err[256];
    if (rc != STP_MTA_STS_OK) {
        snprintf(out, cap, "ERR %s", stp_mta_sts_parser_error(p, err, sizeof(err)));
        return;
    }
    size_t n = (size_t)snprintf(out, cap, "%s %u mx=", stp_mta_sts_mode_name(pol->mode),
                                (unsigned)pol->max_age);
    for (size_t i = 0; i < pol->nmx && n < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "," : "", stp_mta_sts_mx(pol, i));
    }
}

/* Feeds in[0..n): two pieces cut at `cut` (cut == n: whole), or byte by byte. */
static void run(const char *in, size_t n, size_t cut, int bytewise, char *out, size_t cap)
{
    stp_mta_sts_parser_t p;
    stp_mta_sts_policy_t pol;
    int rc = STP_MTA_STS_AGAIN;
    stp_mta_sts_parser_init(&p, &pol);
    if (bytewise) {
        for (size_t i = 0; i < n && rc != STP_MTA_STS_ERROR; i++) {
            rc = stp_mta_sts_parser_feed(&p, in + i, 1);
        }
    } else {
        rc = stp_mta_sts_parser_feed(&p, in, cut);
        if (rc != STP_MTA_STS_ERROR) {
            rc = stp_mta_sts_parser_feed(&p, in + cut, n - cut);
        }
    }
    if (rc != STP_MTA_STS_ERROR) {
        CHECK_EQ_INT(rc, STP_MTA_STS_AGAIN);
        rc = stp_mta_sts_parser_finish(&p);
    } else {
        /* an error sticks */
        CHECK_EQ_INT(stp_mta_sts_parser_finish(&p), STP_MTA_STS_ERROR);
        CHECK_EQ_INT(stp_mta_sts_parser_feed(&p, "x", 1), STP_MTA_STS_ERROR);
    }
    render(&p, rc, &pol, out, cap);
}

typedef struct {
    const char *label;
    const char *in;
    const char *want;
} policy_case_t;

#define GOOD "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 86400\r\n"

static const policy_case_t policy_cases[] = {
    /* the RFC's example, CRLF and LF, and a last line without terminator */
    {"rfc example crlf", GOOD, "enforce 86400 mx=mail.example.com"},
    {"rfc example lf", "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n",
     "enforce 86400 mx=mail.example.com"},
    {"no final terminator", "version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 604800",
     "testing 604800 mx=mail.example.com"},
    {"mixed terminators", "version: STSv1\r\nmode: enforce\nmx: a.example\r\nmax_age: 1\n",
     "enforce 1 mx=a.example"},
    {"several mx, wildcard, case folded",
     "version: STSv1\nmode: enforce\nmx: MAIL.Example.COM\nmx: *.example.net\n"
     "mx: backupmx.example.com\nmax_age: 604800\n",
     "enforce 604800 mx=mail.example.com,*.example.net,backupmx.example.com"},
    {"same mx twice kept once",
     "version: STSv1\nmode: enforce\nmx: a.example\nmx: A.example\nmax_age: 5\n",
     "enforce 5 mx=a.example"},
    {"fields in another order after version",
     "version: STSv1\nmax_age: 10\nmx: a.example\nmode: testing\n", "testing 10 mx=a.example"},
    {"blanks after colon and at line end",
     "version:STSv1  \nmode:\tenforce\t\nmx:   a.example \nmax_age: 7 \n",
     "enforce 7 mx=a.example"},
    {"trailing empty lines", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 7\n\n\r\n\n",
     "enforce 7 mx=a.example"},
    {"unknown fields ignored",
     "version: STSv1\nmode: enforce\nfoo: bar baz\nX-ext.1_a: a=b;c\nmx: a.example\n"
     "utf8: caf\xc3\xa9\nmax_age: 7\n",
     "enforce 7 mx=a.example"},
    {"wrong-case name is an extension",
     "version: STSv1\nmode: enforce\nMode: none\nmx: a.example\nmax_age: 7\n",
     "enforce 7 mx=a.example"},
    {"mode none needs no mx", "version: STSv1\nmode: none\nmax_age: 86400\n", "none 86400 mx="},
    {"max_age zero", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0\n",
     "enforce 0 mx=a.example"},
    {"max_age at the limit", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557600\n",
     "enforce 31557600 mx=a.example"},
    {"max_age ten digits with leading zeros",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0000086400\n",
     "enforce 86400 mx=a.example"},

    /* RFC 8461 cases named in the issue: duplicate keys, bad max_age, missing mx */
    {"duplicate mode", "version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 1\n",
     "ERR line 3: duplicate 'mode' field"},
    {"duplicate mode, same value",
     "version: STSv1\nmode: enforce\nmx: a.example\nmode: enforce\nmax_age: 1\n",
     "ERR line 4: duplicate 'mode' field"},
    {"duplicate max_age", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nmax_age: 2\n",
     "ERR line 5: duplicate 'max_age' field"},
    {"duplicate version",
     "version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: duplicate 'version' field"},
    {"max_age over the limit", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
     "ERR line 4: 'max_age' over 31557600"},
    {"max_age eleven digits",
     "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 00000086400\n",
     "ERR line 4: bad 'max_age' (expected 1 to 10 digits)"},
    {"max_age negative", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
     "ERR line 4: bad 'max_age' (expected 1 to 10 digits)"},
    {"max_age with a plus", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: +86400\n",
     "ERR line 4: bad 'max_age' (expected 1 to 10 digits)"},
    {"max_age with a unit", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1d\n",
     "ERR line 4: bad 'max_age' (expected 1 to 10 digits)"},
    {"max_age hex", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0x10\n",
     "ERR line 4: bad 'max_age' (expected 1 to 10 digits)"},
    {"max_age empty", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age:\n",
     "ERR line 4: bad 'max_age' (expected 1 to 10 digits)"},
    {"max_age with inner blank", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86 400\n",
     "ERR line 4: bad 'max_age' (expected 1 to 10 digits)"},
    {"max_age huge", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
     "ERR line 4: 'max_age' over 31557600"},
    {"missing mx", "version: STSv1\nmode: enforce\nmax_age: 86400\n", "ERR missing 'mx' field"},
    {"missing mx in testing", "version: STSv1\nmode: testing\nmax_age: 86400\n",
     "ERR missing 'mx' field"},
    {"missing mode", "version: STSv1\nmx: a.example\nmax_age: 86400\n", "ERR missing 'mode' field"},
    {"missing max_age", "version: STSv1\nmode: enforce\nmx: a.example\n",
     "ERR missing 'max_age' field"},

    /* version first, and exactly STSv1 */
    {"version not first", "mode: enforce\nversion: STSv1\nmx: a.example\nmax_age: 1\n",
     "ERR line 1: the first line must be 'version: STSv1'"},
    {"missing version", "mode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 1: the first line must be 'version: STSv1'"},
    {"version lower case", "version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 1: unsupported version (only STSv1)"},
    {"version 2", "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 1: unsupported version (only STSv1)"},
    {"empty first line", "\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 1: the first line must be 'version: STSv1'"},
    {"byte order mark", "\xef\xbb\xbfversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 1: bad field name (a blank before ':' or at the line start?)"},

    /* whitespace and line rules */
    {"blank before colon", "version: STSv1\nmode : enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: bad field name (a blank before ':' or at the line start?)"},
    {"leading blank", "version: STSv1\n mode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: bad field name (a blank before ':' or at the line start?)"},
    {"empty line between fields", "version: STSv1\nmode: enforce\n\nmx: a.example\nmax_age: 1\n",
     "ERR line 3: empty line between fields"},
    {"bare CR", "version: STSv1\rmode: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 1: CR not followed by LF"},
    {"CR at the very end", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\r",
     "ERR line 4: CR not followed by LF"},
    {"NUL byte", "version: STSv1\nmode: enf\0orce\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: NUL byte"},
    {"control character", "version: STSv1\nmode: enforce\x01\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: control character"},
    {"no colon", "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: expected 'name: value'"},
    {"empty name", "version: STSv1\n: enforce\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: bad field name (a blank before ':' or at the line start?)"},
    {"name too long",
     "version: STSv1\nmode: enforce\nabcdefghijklmnopqrstuvwxyz0123456: x\nmx: a.example\nmax_age: "
     "1\n",
     "ERR line 3: bad field name (a blank before ':' or at the line start?)"},
    {"extension without value", "version: STSv1\nmode: enforce\nfoo:\nmx: a.example\nmax_age: 1\n",
     "ERR line 3: bad extension field value"},
    {"extension with bad utf-8",
     "version: STSv1\nmode: enforce\nfoo: \xc3\nmx: a.example\nmax_age: 1\n",
     "ERR line 3: bad extension field value"},
    {"mode unknown", "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: bad 'mode' (expected enforce, testing or none)"},
    {"mode upper case", "version: STSv1\nmode: ENFORCE\nmx: a.example\nmax_age: 1\n",
     "ERR line 2: bad 'mode' (expected enforce, testing or none)"},
    {"empty policy", "", "ERR empty policy"},
    {"only blank lines", "\n\n", "ERR line 1: the first line must be 'version: STSv1'"},

    /* mx patterns */
    {"mx trailing dot", "version: STSv1\nmode: enforce\nmx: a.example.\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx wildcard in the middle", "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx partial wildcard", "version: STSv1\nmode: enforce\nmx: mx*.example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx bare star", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx two stars", "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx empty", "version: STSv1\nmode: enforce\nmx:\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx with blank inside", "version: STSv1\nmode: enforce\nmx: a.example b.example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx hyphen at label end", "version: STSv1\nmode: enforce\nmx: a-.example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx underscore", "version: STSv1\nmode: enforce\nmx: a_b.example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx empty label", "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx with port", "version: STSv1\nmode: enforce\nmx: a.example:25\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
    {"mx non-ascii", "version: STSv1\nmode: enforce\nmx: caf\xc3\xa9.example\nmax_age: 1\n",
     "ERR line 3: bad 'mx' pattern (expected a domain name or *.domain)"},
};

static void test_policy_table(void)
{
    char whole[512], part[512];
    for (size_t k = 0; k < COUNT_OF(policy_cases); k++) {
        const policy_case_t *c = &policy_cases[k];
        /* the NUL case has its NUL inside: find the real length */
        size_t n = strlen(c->in);
        if (strcmp(c->label, "NUL byte") == 0) {
            n = sizeof("version: STSv1\nmode: enf\0orce\nmx: a.example\nmax_age: 1\n") - 1;
        }
        run(c->in, n, n, 0, whole, sizeof(whole));
        if (strcmp(whole, c->want) != 0) {
            fprintf(stderr, "  case %s: got \"%s\"\n       want \"%s\"\n", c->label, whole,
                    c->want);
            CHECK(0);
            continue;
        }
        for (size_t cut = 0; cut <= n; cut++) {
            run(c->in, n, cut, 0, part, sizeof(part));
            if (strcmp(part, whole) != 0) {
                fprintf(stderr, "  case %s cut at %zu: got \"%s\"\n", c->label, cut, part);
                CHECK(0);
                break;
            }
        }
        run(c->in, n, n, 1, part, sizeof(part));
        if (strcmp(part, whole) != 0) {
            fprintf(stderr, "  case %s byte by byte: got \"%s\"\n", c->label, part);
            CHECK(0);
        }
    }
}

/* Limits: the longest accepted line, one more byte, and too many patterns. */
static void test_policy_limits(void)
{
    static char buf[70000];
    stp_mta_sts_policy_t pol;
    char why[256];
    char ext[STP_MTA_STS_MAX_LINE + 2];

    memset(ext, 'x', sizeof(ext));
    memcpy(ext, "foo: ", 5);
    ext[STP_MTA_STS_MAX_LINE] = '\0';
    int n = snprintf(buf, sizeof(buf),
                     "version: STSv1\nmode: enforce\n%s\nmx: a.example\nmax_age: 1\n", ext);
    CHECK_EQ_INT(stp_mta_sts_policy_parse(buf, (size_t)n, &pol, why, sizeof(why)), 0);
    ext[STP_MTA_STS_MAX_LINE] = 'x';
    ext[STP_MTA_STS_MAX_LINE + 1] = '\0';
    n = snprintf(buf, sizeof(buf), "version: STSv1\nmode: enforce\n%s\nmx: a.example\nmax_age: 1\n",
                 ext);
    CHECK_EQ_INT(stp_mta_sts_policy_parse(buf, (size_t)n, &pol, why, sizeof(why)), -1);
    CHECK_STR(why, "line 3: line too long");

    /* 64 distinct patterns fit; the 65th is refused */
    size_t used = (size_t)snprintf(buf, sizeof(buf), "version: STSv1\nmode: enforce\nmax_age: 1\n");
    for (int i = 0; i < STP_MTA_STS_MAX_MX; i++) {
        used += (size_t)snprintf(buf + used, sizeof(buf) - used, "mx: mx%d.example\n", i);
    }
    CHECK_EQ_INT(stp_mta_sts_policy_parse(buf, used, &pol, why, sizeof(why)), 0);
    CHECK_EQ_INT(pol.nmx, STP_MTA_STS_MAX_MX);
    CHECK_STR(stp_mta_sts_mx(&pol, 63), "mx63.example");
    used += (size_t)snprintf(buf + used, sizeof(buf) - used, "mx: one-more.example\n");
    CHECK_EQ_INT(stp_mta_sts_policy_parse(buf, used, &pol, why, sizeof(why)), -1);
    CHECK_STR(why, "line 68: too many 'mx' patterns");

    /* long patterns exhaust the byte budget before the count */
    char label[64];
    memset(label, 'a', 63);
    label[63] = '\0';
    used = (size_t)snprintf(buf, sizeof(buf), "version: STSv1\nmode: enforce\nmax_age: 1\n");
    for (int i = 0; i < 20; i++) {
        used += (size_t)snprintf(buf + used, sizeof(buf) - used, "mx: %s.%s.%s.x%d.example\n",
                                 label, label, label, i);
    }
    CHECK_EQ_INT(stp_mta_sts_policy_parse(buf, used, &pol, why, sizeof(why)), -1);
    CHECK(strstr(why, "too many 'mx' patterns") != NULL);
}

/* RFC 8461 section 4.1: a wildcard covers exactly one left-most label. */
static void test_mx_match(void)
{
    static const struct {
        const char *pattern, *host;
        int want;
    } cases[] = {
        {"mail.example.com", "mail.example.com", 1},
        {"mail.example.com", "MAIL.Example.Com", 1},
        {"mail.example.com", "mail.example.com.", 1},
        {"mail.example.com", "mail.example.com..", 0},
        {"mail.example.com", "mail.example.co", 0},
        {"mail.example.com", "xmail.example.com", 0},
        {"mail.example.com", "example.com", 0},
        {"*.example.com", "a.example.com", 1},
        {"*.example.com", "A.EXAMPLE.COM.", 1},
        {"*.example.com", "a.b.example.com", 0},
        {"*.example.com", "example.com", 0},
        {"*.example.com", ".example.com", 0},
        {"*.example.com", "a.example.net", 0},
        {"*.example.com", "aexample.com", 0},
        {"*.example.com", "*.example.com", 0},
        {"*.example.com", "", 0},
        {"*.example.com", ".", 0},
        {"mail.example.com", "", 0},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        int got = stp_mta_sts_mx_match(cases[i].pattern, cases[i].host);
        if (got != cases[i].want) {
            fprintf(stderr, "  mx_match(%s, %s) = %d\n", cases[i].pattern, cases[i].host, got);
        }
        CHECK_EQ_INT(got, cases[i].want);
    }

    stp_mta_sts_policy_t pol;
    char why[128];
    const char *text = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\n"
                       "max_age: 60\n";
    CHECK_EQ_INT(stp_mta_sts_policy_parse(text, strlen(text), &pol, why, sizeof(why)), 0);
    CHECK(stp_mta_sts_policy_match(&pol, "Mail.Example.Com."));
    CHECK(stp_mta_sts_policy_match(&pol, "mx1.example.net"));
    CHECK(!stp_mta_sts_policy_match(&pol, "a.b.example.net"));
    CHECK(!stp_mta_sts_policy_match(&pol, "example.net"));
    CHECK(!stp_mta_sts_policy_match(&pol, "evil.example.com"));
}

static void test_txt_parse(void)
{
    static const struct {
        const char *label, *rec, *id, *why; /* id NULL: invalid with `why` */
    } cases[] = {
        {"rfc example", "v=STSv1; id=20160831085700Z;", "20160831085700Z", NULL},
        {"no trailing delimiter", "v=STSv1; id=abc", "abc", NULL},
        {"no blanks", "v=STSv1;id=abc;", "abc", NULL},
        {"blanks around delimiters", "v=STSv1 ;\tid=abc ; ", "abc", NULL},
        {"extension before id", "v=STSv1; foo=bar; id=abc", "abc", NULL},
        {"extension after id", "v=STSv1; id=abc; x.y-z_1=!\"#$%&'()*+,-./:<>?@[]^`{|}~", "abc",
         NULL},
        {"id of 32", "v=STSv1; id=0123456789abcdefABCDEF0123456789",
         "0123456789abcdefABCDEF0123456789", NULL},
        {"id of 33", "v=STSv1; id=0123456789abcdefABCDEF0123456789a", NULL,
         "id longer than 32 characters"},
        {"id empty", "v=STSv1; id=;", NULL, "malformed field value"},
        {"id with hyphen", "v=STSv1; id=2016-08-31;", NULL,
         "id with characters other than letters and digits"},
        {"two ids", "v=STSv1; id=a; id=b", NULL, "more than one id"},
        {"no id", "v=STSv1; foo=bar", NULL, "no id field"},
        {"nothing after version", "v=STSv1;", NULL, "no fields after v=STSv1"},
        {"version alone", "v=STSv1", NULL, "no fields after v=STSv1"},
        {"version lower case", "v=stsv1; id=a", NULL, "does not begin with v=STSv1"},
        {"version not first", "id=a; v=STSv1", NULL, "does not begin with v=STSv1"},
        {"leading blank", " v=STSv1; id=a", NULL, "does not begin with v=STSv1"},
        {"missing delimiter", "v=STSv1 id=a", NULL, "expected ';' between fields"},
        {"value with blank", "v=STSv1; id=a b", NULL, "expected ';' between fields"},
        {"double delimiter", "v=STSv1;; id=a", NULL, "malformed field (expected name=value)"},
        {"blank before equals", "v=STSv1; id =a", NULL, "malformed field (expected name=value)"},
        {"extension with equals in value", "v=STSv1; id=a; foo=b=c", NULL, "malformed field value"},
        {"extension with non-ascii", "v=STSv1; id=a; foo=caf\xc3\xa9", NULL,
         "malformed field value"},
        {"bad extension name", "v=STSv1; id=a; _foo=b", NULL,
         "malformed field (expected name=value)"},
        {"STSv10", "v=STSv10; id=a", NULL, "expected ';' between fields"},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        char id[STP_MTA_STS_ID_MAX + 1];
        const char *why = "";
        int rc = stp_mta_sts_txt_parse(cases[i].rec, strlen(cases[i].rec), id, &why);
        if (cases[i].id) {
            if (rc != 0 || strcmp(id, cases[i].id) != 0) {
                fprintf(stderr, "  txt case %s: rc %d id '%s' (%s)\n", cases[i].label, rc, id, why);
                CHECK(0);
            }
        } else if (rc != -1 || strcmp(why, cases[i].why) != 0 || id[0] != '\0') {
            fprintf(stderr, "  txt case %s: rc %d why '%s'\n", cases[i].label, rc, why);
            CHECK(0);
        }
    }
}

static stp_mta_sts_txt_t select_of(const char *const *recs, size_t n, char *id, const char **why)
{
    size_t lens[8];
    for (size_t i = 0; i < n; i++) {
        lens[i] = strlen(recs[i]);
    }
    return stp_mta_sts_txt_select(recs, lens, n, id, why);
}

/* Section 3.1: records not beginning with "v=STSv1;" are discarded; not exactly one left: none. */
static void test_txt_select(void)
{
    char id[STP_MTA_STS_ID_MAX + 1];
    const char *why = NULL;

    const char *one[] = {"v=spf1 -all", "v=STSv1; id=abc123;", "google-site-verification=x"};
    CHECK_EQ_INT(select_of(one, 3, id, &why), STP_MTA_STS_TXT_FOUND);
    CHECK_STR(id, "abc123");

    const char *none[] = {"v=spf1 -all", "v=STSv10; id=a", "v=STSv1"};
    CHECK_EQ_INT(select_of(none, 3, id, &why), STP_MTA_STS_TXT_NONE);
    CHECK_EQ_INT(select_of(none, 0, id, &why), STP_MTA_STS_TXT_NONE);

    const char *two[] = {"v=STSv1; id=a", "v=STSv1; id=b"};
    CHECK_EQ_INT(select_of(two, 2, id, &why), STP_MTA_STS_TXT_MULTIPLE);
    CHECK_STR(id, "");

    const char *same[] = {"v=STSv1; id=a", "v=STSv1; id=a"};
    CHECK_EQ_INT(select_of(same, 2, id, &why), STP_MTA_STS_TXT_MULTIPLE);

    const char *bad[] = {"v=spf1 -all", "v=STSv1; id=not-alnum"};
    CHECK_EQ_INT(select_of(bad, 2, id, &why), STP_MTA_STS_TXT_INVALID);
    CHECK_STR(why, "id with characters other than letters and digits");

    /* a record that is one valid and one invalid: still two candidates */
    const char *mixed[] = {"v=STSv1; id=a", "v=STSv1; junk"};
    CHECK_EQ_INT(select_of(mixed, 2, id, &why), STP_MTA_STS_TXT_MULTIPLE);

    /* the delimiter may follow blanks (the ABNF's *WSP) */
    const char *blank[] = {"v=STSv1 ; id=x"};
    CHECK_EQ_INT(select_of(blank, 1, id, &why), STP_MTA_STS_TXT_FOUND);
    CHECK_STR(id, "x");
}

static void test_domain_valid(void)
{
    CHECK(stp_mta_sts_domain_valid("example.com"));
    CHECK(stp_mta_sts_domain_valid("example.com."));
    CHECK(stp_mta_sts_domain_valid("xn--caf-dma.example"));
    CHECK(stp_mta_sts_domain_valid("localhost"));
    CHECK(!stp_mta_sts_domain_valid(""));
    CHECK(!stp_mta_sts_domain_valid("."));
    CHECK(!stp_mta_sts_domain_valid("a..b"));
    CHECK(!stp_mta_sts_domain_valid("-a.b"));
    CHECK(!stp_mta_sts_domain_valid("a-.b"));
    CHECK(!stp_mta_sts_domain_valid("a_b.c"));
    CHECK(!stp_mta_sts_domain_valid("a/b"));
    CHECK(!stp_mta_sts_domain_valid("*.example"));
    char label[70];
    memset(label, 'a', 64);
    label[64] = '\0';
    CHECK(!stp_mta_sts_domain_valid(label));
    label[63] = '\0';
    CHECK(stp_mta_sts_domain_valid(label));
}

int main(void)
{
    STP_RUN(test_policy_table);
    STP_RUN(test_policy_limits);
    STP_RUN(test_mx_match);
    STP_RUN(test_txt_parse);
    STP_RUN(test_txt_select);
    STP_RUN(test_domain_valid);
    return STP_CHECK_DONE();
}
