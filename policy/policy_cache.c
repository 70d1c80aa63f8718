/*
 * policy_cache: a bounded hash table of per-domain knowledge (MTA-STS
 * policies and remembered TLS), its decision rules, and its text format.
 * See policy_cache.h for the rules and the format; this file is plumbing.
 *
 * On load, each "sts" record is turned back into policy text and run
 * through the same strict parser as a fetched policy, so a file can never
 * hold a policy the network could not have delivered.
 */
#include "policy/policy_cache.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER "smtp-tls-proxy state 1"
/* Times in the file are Unix seconds; anything beyond this is nonsense. */
#define MAX_TIME ((int64_t)1 << 40)

typedef struct node {
    stp_cache_entry_t e;
    struct node *next;
    size_t hi; /* its place in the heap */
} node_t;

/*
 * Every node is in a hash bucket (by domain) and in a binary min-heap by
 * horizon(), the time its last piece of knowledge stops mattering: the
 * entry a full table drops is the heap's root, found in O(1) and removed
 * in O(log n), where a scan of all 100,000 entries under the state lock
 * took milliseconds per new domain once the table was full (a sender
 * reaching that many domains pays it on every new one). A change of an
 * entry's times restores the heap (heap_fix).
 */
struct stp_cache_s {
    node_t **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;    /* nodes, and the heap's length */
    size_t max;
    node_t **heap;
    size_t heap_cap;
    int has_evicted; /* evicted holds the last entry dropped, not yet taken */
    stp_cache_entry_t evicted;
};

const char *stp_sts_action_name(stp_sts_action_t a)
{
    switch (a) {
    case STP_STS_USE_CACHED:
        return "use-cached";
    case STP_STS_USE_CACHED_REFRESH:
        return "use-cached-refresh";
    case STP_STS_FETCH:
        return "fetch";
    case STP_STS_NO_POLICY:
        return "no-policy";
    case STP_STS_TEMPFAIL:
        return "tempfail";
    }
    return "?";
}

/* Lower case, no trailing dot, checked; -1 if not a domain name. */
static int normalize(const char *in, char out[254])
{
    if (in == NULL || !stp_mta_sts_domain_valid(in)) {
        return -1;
    }
    size_t n = strlen(in);
    if (in[n - 1] == '.') {
        n--;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        out[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
    out[n] = '\0';
    return 0;
}

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static size_t bucket_of(const stp_cache_t *c, const char *domain)
{
    return (size_t)fnv1a(domain, strlen(domain)) & (c->nbuckets - 1);
}

/* When the last thing known about the entry stops mattering. */
static int64_t horizon(const stp_cache_entry_t *e)
{
    int64_t h = e->tls_until;
    if (e->has_sts && e->sts_expires > h) {
        h = e->sts_expires;
    }
    return h;
}

static void heap_set(stp_cache_t *c, size_t i, node_t *n)
{
    c->heap[i] = n;
    n->hi = i;
}

static void sift_up(stp_cache_t *c, size_t i)
{
    node_t *n = c->heap[i];
    int64_t h = horizon(&n->e);
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (horizon(&c->heap[parent]->e) <= h) {
            break;
        }
        heap_set(c, i, c->heap[parent]);
        i = parent;
    }
    heap_set(c, i, n);
}

static void sift_down(stp_cache_t *c, size_t i)
{
    node_t *n = c->heap[i];
    int64_t h = horizon(&n->e);
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= c->count) {
            break;
        }
        if (child + 1 < c->count &&
            horizon(&c->heap[child + 1]->e) < horizon(&c->heap[child]->e)) {
            child++;
        }
        if (horizon(&c->heap[child]->e) >= h) {
            break;
        }
        heap_set(c, i, c->heap[child]);
        i = child;
    }
    heap_set(c, i, n);
}

/* After n's times changed. */
static void heap_fix(stp_cache_t *c, node_t *n)
{
    sift_up(c, n->hi);
    sift_down(c, n->hi);
}

stp_cache_t *stp_cache_new(size_t max_entries)
{
    if (max_entries == 0 || max_entries > (1u << 24)) {
        return NULL;
    }
    stp_cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->nbuckets = 16;
    while (c->nbuckets < max_entries) {
        c->nbuckets *= 2;
    }
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->max = max_entries;
    return c;
}

static void clear(stp_cache_t *c)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        node_t *n = c->buckets[i];
        while (n) {
            node_t *next = n->next;
            free(n);
            n = next;
        }
        c->buckets[i] = NULL;
    }
    c->count = 0;
}

void stp_cache_free(stp_cache_t *c)
{
    if (c == NULL) {
        return;
    }
    clear(c);
    free(c->buckets);
    free(c->heap);
    free(c);
}

size_t stp_cache_count(const stp_cache_t *c)
{
    return c->count;
}

static node_t *find(const stp_cache_t *c, const char *norm)
{
    for (node_t *n = c->buckets[bucket_of(c, norm)]; n; n = n->next) {
        if (strcmp(n->e.domain, norm) == 0) {
            return n;
        }
    }
    return NULL;
}

static void unlink_node(stp_cache_t *c, node_t *victim)
{
    node_t **pp = &c->buckets[bucket_of(c, victim->e.domain)];
    while (*pp && *pp != victim) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = victim->next;
        size_t i = victim->hi;
        free(victim);
        c->count--;
        if (i < c->count) { /* the last leaf takes its place */
            heap_set(c, i, c->heap[c->count]);
            heap_fix(c, c->heap[i]);
        }
    }
}

static void evict_one(stp_cache_t *c)
{
    node_t *victim = c->count > 0 ? c->heap[0] : NULL;
    if (victim) {
        memcpy(&c->evicted, &victim->e, sizeof(c->evicted));
        c->has_evicted = 1;
        unlink_node(c, victim);
    }
}

int stp_cache_take_evicted(stp_cache_t *c, stp_cache_entry_t *out)
{
    if (!c->has_evicted) {
        return 0;
    }
    c->has_evicted = 0;
    memcpy(out, &c->evicted, sizeof(*out));
    return 1;
}

static node_t *get_or_create(stp_cache_t *c, const char *norm)
{
    node_t *n = find(c, norm);
    if (n) {
        return n;
    }
    if (c->count >= c->max) {
        evict_one(c);
    }
    if (c->count == c->heap_cap) {
        size_t cap = c->heap_cap ? c->heap_cap * 2 : 64;
        if (cap > c->max) {
            cap = c->max;
        }
        node_t **heap = realloc(c->heap, cap * sizeof(*heap));
        if (heap == NULL) {
            return NULL;
        }
        c->heap = heap;
        c->heap_cap = cap;
    }
    n = calloc(1, sizeof(*n));
    if (n == NULL) {
        return NULL;
    }
    memcpy(n->e.domain, norm, strlen(norm) + 1);
    size_t b = bucket_of(c, norm);
    n->next = c->buckets[b];
    c->buckets[b] = n;
    heap_set(c, c->count, n);
    c->count++;
    sift_up(c, n->hi); /* nothing known yet: horizon 0; the caller's heap_fix() places it */
    return n;
}

const stp_cache_entry_t *stp_cache_get(const stp_cache_t *c, const char *domain)
{
    char norm[254];
    if (normalize(domain, norm) < 0) {
        return NULL;
    }
    node_t *n = find(c, norm);
    return n ? &n->e : NULL;
}

const stp_cache_entry_t *stp_cache_sts_valid(const stp_cache_t *c, const char *domain, int64_t now)
{
    const stp_cache_entry_t *e = stp_cache_get(c, domain);
    return e && e->has_sts && now < e->sts_expires ? e : NULL;
}

stp_sts_action_t stp_cache_sts_action(const stp_cache_t *c, const char *domain,
                                      stp_sts_txt_state_t txt, const char *txt_id, int64_t now)
{
    const stp_cache_entry_t *e = stp_cache_sts_valid(c, domain, now);
    switch (txt) {
    case STP_STS_TXT_FOUND:
        if (e == NULL || txt_id == NULL || strcmp(e->sts_id, txt_id) != 0) {
            return STP_STS_FETCH;
        }
        /* half of max_age gone: fetch again so the policy never lapses */
        if (now >= e->sts_fetched + (e->sts_expires - e->sts_fetched) / 2) {
            return STP_STS_USE_CACHED_REFRESH;
        }
        return STP_STS_USE_CACHED;
    case STP_STS_TXT_ABSENT:
        return e ? STP_STS_USE_CACHED : STP_STS_NO_POLICY;
    case STP_STS_TXT_DNS_ERROR:
        return e ? STP_STS_USE_CACHED : STP_STS_TEMPFAIL;
    }
    return STP_STS_TEMPFAIL;
}

stp_sts_action_t stp_cache_sts_after_failure(const stp_cache_t *c, const char *domain, int64_t now)
{
    return stp_cache_sts_valid(c, domain, now) ? STP_STS_USE_CACHED : STP_STS_NO_POLICY;
}

static int valid_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > STP_MTA_STS_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))) {
            return 0;
        }
    }
    return 1;
}

int stp_cache_sts_put(stp_cache_t *c, const char *domain, const char *id,
                      const stp_mta_sts_policy_t *p, int64_t now)
{
    char norm[254];
    if (normalize(domain, norm) < 0 || !valid_id(id) || p == NULL ||
        p->max_age > STP_MTA_STS_MAX_AGE_LIMIT || now < 0 || now > MAX_TIME) {
        return -1;
    }
    node_t *n = get_or_create(c, norm);
    if (n == NULL) {
        return -1;
    }
    n->e.has_sts = 1;
    memcpy(n->e.sts_id, id, strlen(id) + 1);
    n->e.sts_fetched = now;
    n->e.sts_expires = now + (int64_t)p->max_age;
    n->e.sts = *p;
    heap_fix(c, n);
    return 0;
}

int stp_cache_tls_seen(stp_cache_t *c, const char *domain, int64_t now, int64_t period)
{
    char norm[254];
    if (period <= 0) {
        return 0;
    }
    if (normalize(domain, norm) < 0 || now < 0 || now > MAX_TIME || period > MAX_TIME) {
        return -1;
    }
    node_t *n = get_or_create(c, norm);
    if (n == NULL) {
        return -1;
    }
    if (n->e.tls_until <= now || n->e.tls_since > now) {
        n->e.tls_since = now; /* a new streak, or the clock stepped back */
    }
    n->e.tls_last = now;
    n->e.tls_until = now + period;
    heap_fix(c, n);
    return 0;
}

int stp_cache_tls_required(const stp_cache_t *c, const char *domain, int64_t now, int64_t *since,
                           int64_t *until)
{
    const stp_cache_entry_t *e = stp_cache_get(c, domain);
    if (e == NULL || e->tls_until <= now) {
        return 0;
    }
    if (since) {
        *since = e->tls_since;
    }
    if (until) {
        *until = e->tls_until;
    }
    return 1;
}

size_t stp_cache_expire(stp_cache_t *c, int64_t now)
{
    size_t removed = 0;
    for (size_t i = 0; i < c->nbuckets; i++) {
        node_t *n = c->buckets[i];
        while (n) {
            node_t *next = n->next;
            if (n->e.has_sts && now >= n->e.sts_expires) {
                n->e.has_sts = 0;
            }
            if (n->e.tls_until && now >= n->e.tls_until) {
                n->e.tls_since = n->e.tls_last = n->e.tls_until = 0;
            }
            if (!n->e.has_sts && n->e.tls_until == 0) {
                unlink_node(c, n);
                removed++;
            } else {
                heap_fix(c, n);
            }
            n = next;
        }
    }
    return removed;
}

/* ---- the file ---- */

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} out_t;

static void out_put(out_t *o, const char *s, size_t n)
{
    if (o->failed) {
        return;
    }
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (o->len + n + 1 > cap) {
            cap *= 2;
        }
        char *b = realloc(o->buf, cap);
        if (b == NULL) {
            o->failed = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void out_fmt(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_fmt(out_t *o, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        o->failed = 1;
        return;
    }
    out_put(o, line, (size_t)n);
}

static int by_domain(const void *a, const void *b)
{
    const node_t *x = *(const node_t *const *)a, *y = *(const node_t *const *)b;
    return strcmp(x->e.domain, y->e.domain);
}

char *stp_cache_serialize(const stp_cache_t *c, size_t *len)
{
    out_t o = {0};
    size_t records = 0;
    node_t **all = calloc(c->count ? c->count : 1, sizeof(*all));
    if (all == NULL) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (node_t *n = c->buckets[i]; n; n = n->next) {
            all[k++] = n;
        }
    }
    qsort(all, k, sizeof(*all), by_domain);

    out_put(&o, HEADER "\n", sizeof(HEADER));
    for (size_t i = 0; i < k; i++) {
        const stp_cache_entry_t *e = &all[i]->e;
        if (e->has_sts) {
            out_fmt(&o, "sts %s %s %" PRId64 " %" PRId64 " %s %u", e->domain, e->sts_id,
                    e->sts_fetched, e->sts_expires, stp_mta_sts_mode_name(e->sts.mode),
                    (unsigned)e->sts.max_age);
            for (size_t m = 0; m < e->sts.nmx; m++) {
                const char *mx = stp_mta_sts_mx(&e->sts, m);
                out_put(&o, " ", 1);
                out_put(&o, mx, strlen(mx));
            }
            out_put(&o, "\n", 1);
            records++;
        }
        if (e->tls_until) {
            out_fmt(&o, "tls %s %" PRId64 " %" PRId64 " %" PRId64 "\n", e->domain, e->tls_since,
                    e->tls_last, e->tls_until);
            records++;
        }
    }
    free(all);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    uint64_t sum = fnv1a(o.buf, o.len);
    out_fmt(&o, "end %zu %016" PRIx64 "\n", records, sum);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}

/* Splits line[0..n) at single spaces into at most max fields. */
static size_t split(const char *line, size_t n, const char **f, size_t *flen, size_t max)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || line[i] == ' ') {
            if (k == max) {
                return max + 1;
            }
            f[k] = line + start;
            flen[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    return k;
}

static int parse_time(const char *s, size_t n, int64_t *out)
{
    int64_t v = 0;
    if (n == 0 || n > 13) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v > MAX_TIME) {
        return -1;
    }
    *out = v;
    return 0;
}

/* A field as a domain exactly as serialize writes it. */
static int field_domain(const char *s, size_t n, char out[254])
{
    char tmp[254];
    if (n == 0 || n >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (normalize(tmp, out) < 0 || strcmp(out, tmp) != 0) {
        return -1;
    }
    return 0;
}

/* The longest record: "sts DOMAIN ID FETCHED EXPIRES MODE MAX_AGE", 7
 * fields, then one per mx pattern, as many as the MTA-STS parser accepts. */
#define MAX_FIELDS (7 + STP_MTA_STS_MAX_MX)

static const char *load_sts(stp_cache_t *c, const char **f, size_t *fl, size_t nf, int64_t now)
{
    char domain[254], id[STP_MTA_STS_ID_MAX + 1], why[160];
    int64_t fetched, expires;
    if (nf < 7 || field_domain(f[1], fl[1], domain) < 0) {
        return "bad sts record";
    }
    if (fl[2] == 0 || fl[2] > STP_MTA_STS_ID_MAX) {
        return "bad policy id";
    }
    memcpy(id, f[2], fl[2]);
    id[fl[2]] = '\0';
    if (!valid_id(id)) {
        return "bad policy id";
    }
    if (parse_time(f[3], fl[3], &fetched) < 0 || parse_time(f[4], fl[4], &expires) < 0) {
        return "bad time";
    }
    /* the policy's own text, parsed as if it had just been fetched */
    out_t o = {0};
    out_put(&o, "version: STSv1\nmode: ", 21);
    out_put(&o, f[5], fl[5]);
    out_put(&o, "\nmax_age: ", 10);
    out_put(&o, f[6], fl[6]);
    out_put(&o, "\n", 1);
    for (size_t i = 7; i < nf; i++) {
        out_put(&o, "mx: ", 4);
        out_put(&o, f[i], fl[i]);
        out_put(&o, "\n", 1);
    }
    stp_mta_sts_policy_t p;
    int bad = o.failed || stp_mta_sts_policy_parse(o.buf, o.len, &p, why, sizeof(why)) < 0;
    free(o.buf);
    if (bad) {
        return "bad policy";
    }
    if (expires != fetched + (int64_t)p.max_age) {
        return "expiry does not match max_age";
    }
    const stp_cache_entry_t *old = stp_cache_get(c, domain);
    if (old && old->has_sts) {
        return "duplicate sts record";
    }
    if (now >= expires) {
        return NULL; /* expired: dropped quietly */
    }
    if (stp_cache_sts_put(c, domain, id, &p, fetched) < 0) {
        return "out of memory";
    }
    return NULL;
}

static const char *load_tls(stp_cache_t *c, const char **f, size_t *fl, size_t nf, int64_t now)
{
    char domain[254];
    int64_t since, last, until;
    if (nf != 5 || field_domain(f[1], fl[1], domain) < 0) {
        return "bad tls record";
    }
    if (parse_time(f[2], fl[2], &since) < 0 || parse_time(f[3], fl[3], &last) < 0 ||
        parse_time(f[4], fl[4], &until) < 0 || last >= until) {
        return "bad time";
    }
    if (since > last) {
        since = last; /* written after the clock stepped back (older versions) */
    }
    const stp_cache_entry_t *old = stp_cache_get(c, domain);
    if (old && old->tls_until) {
        return "duplicate tls record";
    }
    if (now >= until) {
        return NULL;
    }
    char norm[254];
    normalize(domain, norm);
    node_t *n = get_or_create(c, norm);
    if (n == NULL) {
        return "out of memory";
    }
    n->e.tls_since = since;
    n->e.tls_last = last;
    n->e.tls_until = until;
    heap_fix(c, n);
    return NULL;
}

static int reject(stp_cache_t *c, char *why, size_t whylen, unsigned line, const char *msg)
{
    clear(c);
    if (why && whylen) {
        if (line) {
            snprintf(why, whylen, "line %u: %s", line, msg);
        } else {
            snprintf(why, whylen, "%s", msg);
        }
    }
    return -1;
}

int stp_cache_load(stp_cache_t *c, const char *text, size_t len, int64_t now, char *why,
                   size_t whylen)
{
    const char *f[MAX_FIELDS + 1];
    size_t fl[MAX_FIELDS + 1];
    size_t pos = 0, records = 0;
    unsigned lineno = 0;

    clear(c);
    if (why && whylen) {
        why[0] = '\0';
    }
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        if (nl == NULL) {
            return reject(c, why, whylen, lineno + 1, "truncated (no line end)");
        }
        size_t n = (size_t)(nl - line);
        size_t line_start = pos;
        pos += n + 1;
        lineno++;
        if (memchr(line, '\0', n) || memchr(line, '\r', n)) {
            return reject(c, why, whylen, lineno, "unexpected byte");
        }
        if (lineno == 1) {
            if (n != sizeof(HEADER) - 1 || memcmp(line, HEADER, n) != 0) {
                return reject(c, why, whylen, 1, "not a state file of this version");
            }
            continue;
        }
        size_t nf = split(line, n, f, fl, MAX_FIELDS);
        if (nf > MAX_FIELDS) {
            return reject(c, why, whylen, lineno, "too many fields");
        }
        const char *err = NULL;
        if (fl[0] == 3 && memcmp(f[0], "end", 3) == 0) {
            char want[64];
            int k = snprintf(want, sizeof(want), "end %zu %016" PRIx64, records,
                             fnv1a(text, line_start));
            if (k < 0 || (size_t)k != n || memcmp(want, line, n) != 0) {
                return reject(c, why, whylen, lineno, "record count or checksum does not match");
            }
            if (pos != len) {
                return reject(c, why, whylen, lineno + 1, "data after the end line");
            }
            return 0;
        }
        if (fl[0] == 3 && memcmp(f[0], "sts", 3) == 0) {
            err = load_sts(c, f, fl, nf, now);
        } else if (fl[0] == 3 && memcmp(f[0], "tls", 3) == 0) {
            err = load_tls(c, f, fl, nf, now);
        } else {
            err = "unknown record";
        }
        if (err) {
            return reject(c, why, whylen, lineno, err);
        }
        records++;
    }
    return reject(c, why, whylen, 0, lineno ? "truncated (no end line)" : "empty file");
}
