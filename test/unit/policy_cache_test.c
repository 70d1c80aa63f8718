/*
 * policy_cache_test: the MTA-STS cache rules (RFC 8461 section 5.1 as
 * policy_cache.h states them), remembered TLS, the size bound, and the
 * state file: a round trip (what a restart reloads), and every truncation
 * and every single-byte corruption of a file rejected whole without a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy_cache.h"
#include "test/unit/check.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))
#define DAY 86400

static stp_mta_sts_policy_t policy(const char *text)
{
    stp_mta_sts_policy_t p;
    char why[128];
    if (stp_mta_sts_policy_parse(text, strlen(text), &p, why, sizeof(why)) < 0) {
        fprintf(stderr, "bad test policy: %s\n", why);
        abort();
    }
    return p;
}

#define ENFORCE                                                                                    \
    "version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.example.net\nmax_age: 86400\n"

static void test_sts_actions(void)
{
    stp_cache_t *c = stp_cache_new(100);
    stp_mta_sts_policy_t p = policy(ENFORCE);
    const int64_t t0 = 1700000000;

    /* nothing cached */
    CHECK_EQ_INT(stp_cache_sts_action(c, "example.com", STP_STS_TXT_FOUND, "id1", t0),
                 STP_STS_FETCH);
    CHECK_EQ_INT(stp_cache_sts_action(c, "example.com", STP_STS_TXT_ABSENT, NULL, t0),
                 STP_STS_NO_POLICY);
    CHECK_EQ_INT(stp_cache_sts_action(c, "example.com", STP_STS_TXT_DNS_ERROR, NULL, t0),
                 STP_STS_TEMPFAIL);
    CHECK_EQ_INT(stp_cache_sts_after_failure(c, "example.com", t0), STP_STS_NO_POLICY);

    CHECK_EQ_INT(stp_cache_sts_put(c, "Example.COM.", "id1", &p, t0), 0);
    const stp_cache_entry_t *e = stp_cache_get(c, "example.com");
    CHECK(e != NULL && e->has_sts);
    CHECK_STR(e->domain, "example.com");
    CHECK_EQ_INT(e->sts_fetched, t0);
    CHECK_EQ_INT(e->sts_expires, t0 + DAY);
    CHECK(stp_mta_sts_policy_match(&e->sts, "mx.example.com"));

    static const struct {
        const char *label;
        stp_sts_txt_state_t txt;
        const char *id;
        int64_t at;
        stp_sts_action_t want;
    } cases[] = {
        {"same id, fresh", STP_STS_TXT_FOUND, "id1", t0 + 10, STP_STS_USE_CACHED},
        {"same id, just before half", STP_STS_TXT_FOUND, "id1", t0 + DAY / 2 - 1,
         STP_STS_USE_CACHED},
        {"same id, half of max_age gone", STP_STS_TXT_FOUND, "id1", t0 + DAY / 2,
         STP_STS_USE_CACHED_REFRESH},
        {"new id", STP_STS_TXT_FOUND, "id2", t0 + 10, STP_STS_FETCH},
        {"record stripped", STP_STS_TXT_ABSENT, NULL, t0 + 10, STP_STS_USE_CACHED},
        {"dns outage", STP_STS_TXT_DNS_ERROR, NULL, t0 + DAY - 1, STP_STS_USE_CACHED},
        {"expired, same id", STP_STS_TXT_FOUND, "id1", t0 + DAY, STP_STS_FETCH},
        {"expired, no record", STP_STS_TXT_ABSENT, NULL, t0 + DAY, STP_STS_NO_POLICY},
        {"expired, dns outage", STP_STS_TXT_DNS_ERROR, NULL, t0 + DAY, STP_STS_TEMPFAIL},
    };
    for (size_t i = 0; i < COUNT_OF(cases); i++) {
        stp_sts_action_t got =
            stp_cache_sts_action(c, "EXAMPLE.com", cases[i].txt, cases[i].id, cases[i].at);
        if (got != cases[i].want) {
            fprintf(stderr, "  case %s: %s\n", cases[i].label, stp_sts_action_name(got));
        }
        CHECK_EQ_INT(got, cases[i].want);
    }
    CHECK_EQ_INT(stp_cache_sts_after_failure(c, "example.com", t0 + 5), STP_STS_USE_CACHED);
    CHECK_EQ_INT(stp_cache_sts_after_failure(c, "example.com", t0 + DAY), STP_STS_NO_POLICY);

    /* a refetch replaces policy, id and times */
    stp_mta_sts_policy_t q = policy("version: STSv1\nmode: testing\nmx: b.example\nmax_age: 600\n");
    CHECK_EQ_INT(stp_cache_sts_put(c, "example.com", "id2", &q, t0 + 100), 0);
    e = stp_cache_sts_valid(c, "example.com", t0 + 100);
    CHECK(e != NULL && e->sts.mode == STP_MTA_STS_MODE_TESTING && strcmp(e->sts_id, "id2") == 0);
    CHECK_EQ_INT(e->sts_expires, t0 + 700);
    CHECK(stp_cache_sts_valid(c, "example.com", t0 + 700) == NULL);
    CHECK_EQ_INT(stp_cache_count(c), 1);

    /* bad input */
    CHECK_EQ_INT(stp_cache_sts_put(c, "not a domain", "id", &p, t0), -1);
    CHECK_EQ_INT(stp_cache_sts_put(c, "example.org", "bad-id", &p, t0), -1);
    CHECK_EQ_INT(stp_cache_sts_put(c, "example.org", "", &p, t0), -1);
    CHECK(stp_cache_get(c, "") == NULL);
    CHECK(stp_cache_get(c, NULL) == NULL);
    stp_cache_free(c);
}

static void test_remembered_tls(void)
{
    stp_cache_t *c = stp_cache_new(10);
    const int64_t t0 = 1700000000, month = 30 * DAY;
    int64_t since = -1, until = -1;

    CHECK_EQ_INT(stp_cache_tls_required(c, "example.com", t0, &since, &until), 0);
    /* period 0: the feature is off */
    CHECK_EQ_INT(stp_cache_tls_seen(c, "example.com", t0, 0), 0);
    CHECK_EQ_INT(stp_cache_count(c), 0);

    CHECK_EQ_INT(stp_cache_tls_seen(c, "example.com", t0, month), 0);
    CHECK_EQ_INT(stp_cache_tls_required(c, "EXAMPLE.COM.", t0 + 1, &since, &until), 1);
    CHECK_EQ_INT(since, t0);
    CHECK_EQ_INT(until, t0 + month);
    /* another verified delivery pushes the end out, the start stays */
    CHECK_EQ_INT(stp_cache_tls_seen(c, "example.com", t0 + 10 * DAY, month), 0);
    CHECK_EQ_INT(stp_cache_tls_required(c, "example.com", t0 + 35 * DAY, &since, &until), 1);
    CHECK_EQ_INT(since, t0);
    CHECK_EQ_INT(until, t0 + 40 * DAY);
    CHECK_EQ_INT(stp_cache_tls_required(c, "example.com", t0 + 40 * DAY, NULL, NULL), 0);
    /* after a lapse, a new streak starts */
    CHECK_EQ_INT(stp_cache_tls_seen(c, "example.com", t0 + 50 * DAY, month), 0);
    CHECK_EQ_INT(stp_cache_tls_required(c, "example.com", t0 + 50 * DAY, &since, NULL), 1);
    CHECK_EQ_INT(since, t0 + 50 * DAY);
    /* other domains are not affected */
    CHECK_EQ_INT(stp_cache_tls_required(c, "mail.example.com", t0 + 50 * DAY, NULL, NULL), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "bad domain", t0, month), -1);
    stp_cache_free(c);
}

static void test_bound_and_expiry(void)
{
    stp_cache_t *c = stp_cache_new(3);
    stp_mta_sts_policy_t p = policy(ENFORCE); /* max_age one day */
    const int64_t t0 = 1700000000;
    CHECK_EQ_INT(stp_cache_sts_put(c, "a.example", "1", &p, t0), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "b.example", t0, 10 * DAY), 0);
    CHECK_EQ_INT(stp_cache_sts_put(c, "c.example", "1", &p, t0 + 100), 0);
    CHECK_EQ_INT(stp_cache_count(c), 3);
    stp_cache_entry_t gone;
    CHECK_EQ_INT(stp_cache_take_evicted(c, &gone), 0); /* nothing dropped yet */
    /* full: the entry that matters for the shortest time (a.example) goes */
    CHECK_EQ_INT(stp_cache_sts_put(c, "d.example", "1", &p, t0 + 200), 0);
    CHECK_EQ_INT(stp_cache_count(c), 3);
    CHECK(stp_cache_get(c, "a.example") == NULL);
    CHECK(stp_cache_get(c, "b.example") != NULL);
    CHECK(stp_cache_get(c, "d.example") != NULL);
    /* ...and the owner learns which, once (to log a protection lost early) */
    CHECK_EQ_INT(stp_cache_take_evicted(c, &gone), 1);
    CHECK_STR(gone.domain, "a.example");
    CHECK(gone.has_sts && gone.sts.mode == STP_MTA_STS_MODE_ENFORCE &&
          gone.sts_expires == t0 + DAY);
    CHECK_EQ_INT(stp_cache_take_evicted(c, &gone), 0);
    /* a domain already known takes no room: nothing dropped */
    CHECK_EQ_INT(stp_cache_tls_seen(c, "d.example", t0 + 300, DAY), 0);
    CHECK_EQ_INT(stp_cache_take_evicted(c, &gone), 0);

    /* expiry drops policies, then the domains with nothing left */
    CHECK_EQ_INT(stp_cache_expire(c, t0 + DAY + 100), 1); /* c.example */
    CHECK_EQ_INT(stp_cache_count(c), 2);
    CHECK_EQ_INT(stp_cache_expire(c, t0 + 10 * DAY), 2);
    CHECK_EQ_INT(stp_cache_count(c), 0);
    CHECK(stp_cache_new(0) == NULL);
    stp_cache_free(c);
    stp_cache_free(NULL);
}

/* A cache with every kind of record, as a file. */
static char *sample_file(size_t *len, int64_t t0)
{
    stp_cache_t *c = stp_cache_new(100);
    stp_mta_sts_policy_t p = policy(ENFORCE);
    stp_mta_sts_policy_t none = policy("version: STSv1\nmode: none\nmax_age: 604800\n");
    CHECK_EQ_INT(stp_cache_sts_put(c, "example.com", "20240101T0000", &p, t0), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "example.com", t0, 30 * DAY), 0);
    CHECK_EQ_INT(stp_cache_sts_put(c, "retired.example", "x1", &none, t0), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "tofu.example", t0 - DAY, 30 * DAY), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "tofu.example", t0, 30 * DAY), 0);
    char *text = stp_cache_serialize(c, len);
    stp_cache_free(c);
    return text;
}

static void test_file_round_trip(void)
{
    const int64_t t0 = 1700000000;
    size_t len, len2;
    char *text = sample_file(&len, t0);
    char why[200];

    CHECK(text != NULL);
    CHECK(strncmp(text, "smtp-tls-proxy state 1\n", 23) == 0);
    CHECK(strstr(text, "\nsts example.com 20240101T0000 1700000000 1700086400 enforce 86400 "
                       "mx.example.com *.example.net\n") != NULL);
    CHECK(strstr(text, "\ntls tofu.example 1699913600 1700000000 1702592000\n") != NULL);
    CHECK(strstr(text, "\nsts retired.example x1 1700000000 1700604800 none 604800\n") != NULL);

    /* a restart: load it into a new cache; it says the same things */
    stp_cache_t *c = stp_cache_new(100);
    CHECK_EQ_INT(stp_cache_load(c, text, len, t0 + 60, why, sizeof(why)), 0);
    CHECK_STR(why, "");
    CHECK_EQ_INT(stp_cache_count(c), 3);
    CHECK_EQ_INT(stp_cache_sts_action(c, "example.com", STP_STS_TXT_DNS_ERROR, NULL, t0 + 60),
                 STP_STS_USE_CACHED);
    const stp_cache_entry_t *e = stp_cache_sts_valid(c, "example.com", t0 + 60);
    CHECK(e != NULL && stp_mta_sts_policy_match(&e->sts, "a.example.net"));
    int64_t since, until;
    CHECK_EQ_INT(stp_cache_tls_required(c, "tofu.example", t0 + 60, &since, &until), 1);
    CHECK_EQ_INT(since, t0 - DAY);
    CHECK_EQ_INT(until, t0 + 30 * DAY);
    char *again = stp_cache_serialize(c, &len2);
    CHECK_MEM(again, len2, text, len);
    free(again);

    /* loaded after the policies expired: they are dropped, the TLS memory stays */
    CHECK_EQ_INT(stp_cache_load(c, text, len, t0 + 8 * DAY, why, sizeof(why)), 0);
    CHECK_EQ_INT(stp_cache_count(c), 2);
    CHECK(stp_cache_sts_valid(c, "example.com", t0 + 8 * DAY) == NULL);
    CHECK_EQ_INT(stp_cache_tls_required(c, "example.com", t0 + 8 * DAY, NULL, NULL), 1);

    /* an empty cache is a valid file too */
    stp_cache_t *empty = stp_cache_new(1);
    char *etext = stp_cache_serialize(empty, &len2);
    CHECK_EQ_INT(stp_cache_load(c, etext, len2, t0, why, sizeof(why)), 0);
    CHECK_EQ_INT(stp_cache_count(c), 0);
    free(etext);
    stp_cache_free(empty);
    stp_cache_free(c);
    free(text);
}

/* A policy with as many mx patterns as the MTA-STS parser accepts
 * (STP_MTA_STS_MAX_MX) survives a restart, beside the other records: its
 * "sts" line is the longest record a file can hold. */
static void test_file_round_trip_most_mx(void)
{
    const int64_t t0 = 1700000000;
    char text[STP_MTA_STS_MAX_MX * 48 + 128], why[200];
    size_t n =
        (size_t)snprintf(text, sizeof(text), "version: STSv1\nmode: enforce\nmax_age: 86400\n");
    for (int i = 0; i < STP_MTA_STS_MAX_MX; i++) {
        n += (size_t)snprintf(text + n, sizeof(text) - n, "mx: mx%d.example.com\n", i);
    }
    CHECK(n < sizeof(text));
    stp_mta_sts_policy_t p = policy(text);
    CHECK_EQ_INT(p.nmx, STP_MTA_STS_MAX_MX);

    stp_cache_t *c = stp_cache_new(10);
    CHECK_EQ_INT(stp_cache_sts_put(c, "example.com", "big1", &p, t0), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "other.example", t0, 30 * DAY), 0);
    size_t len, len2;
    char *file = stp_cache_serialize(c, &len);
    CHECK(file != NULL);

    stp_cache_t *c2 = stp_cache_new(10);
    CHECK_EQ_INT(stp_cache_load(c2, file, len, t0 + 60, why, sizeof(why)), 0);
    CHECK_STR(why, "");
    CHECK_EQ_INT(stp_cache_count(c2), 2);
    const stp_cache_entry_t *e = stp_cache_sts_valid(c2, "example.com", t0 + 60);
    CHECK(e != NULL && e->sts.nmx == STP_MTA_STS_MAX_MX);
    CHECK(e != NULL && stp_mta_sts_policy_match(&e->sts, "mx63.example.com"));
    CHECK_EQ_INT(stp_cache_tls_required(c2, "other.example", t0 + 60, NULL, NULL), 1);
    char *again = stp_cache_serialize(c2, &len2);
    CHECK_MEM(again, len2, file, len);
    free(again);
    free(file);
    stp_cache_free(c2);
    stp_cache_free(c);
}

/* The file's checksum (policy_cache.h: FNV-1a 64 of every byte before "end"),
 * for files written by hand. */
static char *with_end(const char *body, size_t records, size_t *len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = body; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ULL;
    }
    size_t cap = strlen(body) + 64;
    char *out = malloc(cap);
    CHECK(out != NULL);
    int n = snprintf(out, cap, "%send %zu %016llx\n", body, records, (unsigned long long)h);
    *len = (size_t)n;
    return out;
}

/* A verified delivery after the clock stepped back: the streak's start is
 * never written later than its latest delivery, and a file written so by an
 * older version is read (since taken as last), not refused whole. */
static void test_clock_stepped_back(void)
{
    const int64_t t0 = 1700000000, month = 30 * DAY;
    char why[200];
    size_t len;
    stp_cache_t *c = stp_cache_new(10);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "a.example", t0 + 2000, month), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "b.example", t0, month), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "a.example", t0 + 1000, month), 0); /* 1000 s back */
    int64_t since = 0, until = 0;
    CHECK_EQ_INT(stp_cache_tls_required(c, "a.example", t0 + 1000, &since, &until), 1);
    CHECK_EQ_INT(since, t0 + 1000);
    CHECK_EQ_INT(until, t0 + 1000 + month);
    char *file = stp_cache_serialize(c, &len);
    CHECK(file != NULL);
    CHECK(strstr(file, "\ntls a.example 1700001000 1700001000 1702593000\n") != NULL);
    stp_cache_t *c2 = stp_cache_new(10);
    CHECK_EQ_INT(stp_cache_load(c2, file, len, t0 + 1100, why, sizeof(why)), 0);
    CHECK_STR(why, "");
    CHECK_EQ_INT(stp_cache_count(c2), 2);
    free(file);

    /* as an older version wrote it: since > last */
    file = with_end("smtp-tls-proxy state 1\n"
                    "tls a.example 1700002000 1700001000 1702593000\n"
                    "tls b.example 1700000000 1700000000 1702592000\n",
                    2, &len);
    CHECK_EQ_INT(stp_cache_load(c2, file, len, t0 + 1100, why, sizeof(why)), 0);
    CHECK_STR(why, "");
    CHECK_EQ_INT(stp_cache_count(c2), 2);
    CHECK_EQ_INT(stp_cache_tls_required(c2, "a.example", t0 + 1100, &since, &until), 1);
    CHECK_EQ_INT(since, t0 + 1000);
    CHECK_EQ_INT(until, t0 + 1000 + month);
    CHECK_EQ_INT(stp_cache_tls_required(c2, "b.example", t0 + 1100, NULL, NULL), 1);
    free(file);
    stp_cache_free(c2);
    stp_cache_free(c);
}

/* Every truncation and every one-byte change is refused whole, leaving the cache empty. */
static void test_file_damage(void)
{
    const int64_t t0 = 1700000000;
    size_t len;
    char *text = sample_file(&len, t0);
    char *copy = malloc(len);
    char why[200];
    stp_cache_t *c = stp_cache_new(100);

    for (size_t cut = 0; cut < len; cut++) {
        stp_mta_sts_policy_t p = policy(ENFORCE);
        stp_cache_sts_put(c, "before.example", "1", &p, t0); /* must be gone after */
        if (stp_cache_load(c, text, cut, t0, why, sizeof(why)) != -1 || stp_cache_count(c) != 0 ||
            why[0] == '\0') {
            fprintf(stderr, "  truncated at %zu accepted\n", cut);
            CHECK(0);
            break;
        }
    }
    for (size_t i = 0; i < len; i++) {
        static const unsigned char flips[] = {0x01, 0x20, 0x80};
        for (size_t k = 0; k < COUNT_OF(flips); k++) {
            memcpy(copy, text, len);
            copy[i] = (char)(copy[i] ^ flips[k]);
            if (stp_cache_load(c, copy, len, t0, why, sizeof(why)) != -1 ||
                stp_cache_count(c) != 0) {
                fprintf(stderr, "  byte %zu ^ %#x accepted\n", i, flips[k]);
                CHECK(0);
            }
        }
    }
    static const struct {
        const char *label, *text, *why;
    } bad[] = {
        {"empty", "", "empty file"},
        {"other header", "smtp-tls-proxy state 2\nend 0 0000000000000000\n",
         "line 1: not a state file of this version"},
        {"no end", "smtp-tls-proxy state 1\n", "truncated (no end line)"},
        {"no line end", "smtp-tls-proxy state 1\nend 0 x", "line 2: truncated (no line end)"},
        {"bad checksum", "smtp-tls-proxy state 1\nend 0 0000000000000000\n",
         "line 2: record count or checksum does not match"},
        {"unknown record", "smtp-tls-proxy state 1\nfoo bar\n", "line 2: unknown record"},
        {"bad policy", "smtp-tls-proxy state 1\nsts a.example 1 1 86401 enforce 86400\n",
         "line 2: bad policy"},
        {"bad mode", "smtp-tls-proxy state 1\nsts a.example 1 1 86401 strict 86400 a.example\n",
         "line 2: bad policy"},
        {"expiry mismatch",
         "smtp-tls-proxy state 1\nsts a.example 1 1 86402 enforce 86400 mx.a.example\n",
         "line 2: expiry does not match max_age"},
        {"upper-case domain", "smtp-tls-proxy state 1\ntls A.example 1 2 3\n",
         "line 2: bad tls record"},
        {"times out of order", "smtp-tls-proxy state 1\ntls a.example 1 3 3\n", "line 2: bad time"},
        {"negative time", "smtp-tls-proxy state 1\ntls a.example -1 2 3\n", "line 2: bad time"},
        {"two spaces", "smtp-tls-proxy state 1\ntls  a.example 1 2 3\n", "line 2: bad tls record"},
        {"duplicate",
         "smtp-tls-proxy state 1\ntls a.example 1 2 9999999999\ntls a.example 1 2 9999999999\n",
         "line 3: duplicate tls record"},
        {"CR", "smtp-tls-proxy state 1\r\nend 0 0\r\n", "line 1: unexpected byte"},
    };
    for (size_t i = 0; i < COUNT_OF(bad); i++) {
        int rc = stp_cache_load(c, bad[i].text, strlen(bad[i].text), t0, why, sizeof(why));
        if (rc != -1 || strcmp(why, bad[i].why) != 0) {
            fprintf(stderr, "  case %s: rc %d why '%s'\n", bad[i].label, rc, why);
            CHECK(0);
        }
    }
    /* data after the end line */
    char *longer = malloc(len + 2);
    memcpy(longer, text, len);
    memcpy(longer + len, "x\n", 2);
    CHECK_EQ_INT(stp_cache_load(c, longer, len + 2, t0, why, sizeof(why)), -1);
    CHECK(strstr(why, "data after the end line") != NULL);
    free(longer);
    stp_cache_free(c);
    free(copy);
    free(text);
}

static int64_t horizon_of(const stp_cache_entry_t *e)
{
    int64_t h = e->tls_until;
    return e->has_sts && e->sts_expires > h ? e->sts_expires : h;
}

/*
 * A full table always drops an entry whose knowledge ends first, however
 * entries were added, pushed out (tls_seen, a new policy) and expired in
 * between: random operations on 400 domains in a table of 150, each
 * eviction checked against a scan of what the table holds.
 */
static void test_eviction_order(void)
{
    enum { MAX = 150, DOMAINS = 400, ROUNDS = 4000 };
    stp_cache_t *c = stp_cache_new(MAX);
    stp_mta_sts_policy_t p = policy(ENFORCE);
    const int64_t t0 = 1700000000;
    uint32_t x = 2024;
    unsigned long evictions = 0;
#define RND(n) ((x = x * 1103515245u + 12345u), (int64_t)((x >> 8) % (n)))
    for (int r = 0; r < ROUNDS; r++) {
        char d[32];
        snprintf(d, sizeof(d), "d%d.example", (int)RND(DOMAINS));
        int64_t now = t0 + r * 10;
        /* what the table holds, and the earliest horizon in it */
        int64_t least = INT64_MAX;
        size_t held = 0;
        for (int k = 0; k < DOMAINS; k++) {
            char o[32];
            snprintf(o, sizeof(o), "d%d.example", k);
            const stp_cache_entry_t *e = stp_cache_get(c, o);
            if (e != NULL) {
                held++;
                least = horizon_of(e) < least ? horizon_of(e) : least;
            }
        }
        CHECK_EQ_INT(held, stp_cache_count(c));
        int is_new = stp_cache_get(c, d) == NULL;
        int64_t op = RND(10);
        if (op == 0) {
            stp_cache_expire(c, now);
            continue;
        } else if (op < 5) {
            CHECK_EQ_INT(stp_cache_tls_seen(c, d, now, 1 + RND(30 * DAY)), 0);
        } else {
            p.max_age = (uint32_t)(1 + RND(30 * DAY));
            CHECK_EQ_INT(stp_cache_sts_put(c, d, "1", &p, now), 0);
        }
        stp_cache_entry_t gone;
        int dropped = stp_cache_take_evicted(c, &gone);
        CHECK_EQ_INT(dropped, is_new && held == MAX);
        if (dropped) {
            evictions++;
            CHECK_EQ_INT(horizon_of(&gone), least);
            CHECK(stp_cache_get(c, gone.domain) == NULL);
        }
        CHECK(stp_cache_get(c, d) != NULL);
    }
#undef RND
    CHECK(evictions > 100);
    stp_cache_free(c);
}

int main(void)
{
    STP_RUN(test_sts_actions);
    STP_RUN(test_remembered_tls);
    STP_RUN(test_bound_and_expiry);
    STP_RUN(test_eviction_order);
    STP_RUN(test_file_round_trip);
    STP_RUN(test_file_round_trip_most_mx);
    STP_RUN(test_clock_stepped_back);
    STP_RUN(test_file_damage);
    return STP_CHECK_DONE();
}
