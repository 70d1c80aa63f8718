/*
 * metrics: the registry behind metrics.h. Families are declared once in
 * families[]; series live in a fixed table (no allocation after start-up,
 * bounded memory whatever the traffic) found through an open-addressing
 * index hashed on family and labels. One mutex guards everything.
 */
#include "proxy/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_SERIES 2048
#define INDEX_SIZE 4096 /* power of two, > MAX_SERIES */
#define MAX_LABELS 200
#define MAX_BUCKETS 12

typedef enum { COUNTER, GAUGE, HISTOGRAM } kind_t;

typedef struct {
    const char *name;
    kind_t kind;
    const char *help;
    const double *buckets; /* HISTOGRAM: upper bounds, ascending */
    size_t nbuckets;
} family_t;

static const double latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,   0.25,   0.5,   1,    2.5,   5};

static const family_t families[] = {
    {STP_M_SESSIONS, COUNTER, "Sessions accepted, by listener and TLS version used.", NULL, 0},
    {STP_M_SESSIONS_ACTIVE, GAUGE, "Sessions open now.", NULL, 0},
    {STP_M_CONN_REFUSED, COUNTER, "Connections refused before a session started.", NULL, 0},
    {STP_M_STARTTLS, COUNTER, "Client-side STARTTLS offered, accepted and failed.", NULL, 0},
    {STP_M_HANDSHAKES, COUNTER, "TLS handshakes by side, version and result.", NULL, 0},
    {STP_M_HANDSHAKE_SECONDS, HISTOGRAM, "TLS handshake duration.", latency_buckets,
     sizeof(latency_buckets) / sizeof(latency_buckets[0])},
    {STP_M_DOWNGRADE_REFUSED, COUNTER,
     "Next-hop sessions refused because policy required TLS and it was not obtained.", NULL, 0},
    {STP_M_POLICY, COUNTER, "TLS policy decisions toward next hops, by source.", NULL, 0},
    {STP_M_CONN_CACHE, COUNTER, "Next hop connections parked, reused and found dead.", NULL, 0},
    {STP_M_MESSAGES, COUNTER, "Messages whose final reply was relayed, by result.", NULL, 0},
    {STP_M_BYTES, COUNTER, "Message bytes relayed after DATA.", NULL, 0},
    {STP_M_CERT_EXPIRY, GAUGE, "Certificate notAfter as a Unix time.", NULL, 0},
    {STP_M_RELOADS, COUNTER, "Configuration reloads by result.", NULL, 0},
    {"stp_metrics_dropped_series_total", COUNTER,
     "Updates dropped because the series table was full.", NULL, 0},
};

#define NFAMILIES (sizeof(families) / sizeof(families[0]))
#define DROPPED_FAMILY (NFAMILIES - 1)

typedef struct {
    unsigned family;
    int hidden; /* a gauge cleared by stp_metrics_gauge_clear, until set again */
    char labels[MAX_LABELS];
    union {
        uint64_t count;
        double gauge;
        struct {
            uint64_t le[MAX_BUCKETS]; /* non-cumulative; summed at render */
            uint64_t n;
            double sum;
        } h;
    } v;
} series_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static series_t series[MAX_SERIES];
static size_t nseries;
static int index_[INDEX_SIZE]; /* series number + 1; 0 = empty */
static uint64_t dropped;

static int family_of(const char *name)
{
    for (size_t i = 0; i < NFAMILIES; i++) {
        if (strcmp(families[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static uint32_t hash(unsigned fam, const char *labels)
{
    uint32_t h = 2166136261u ^ fam;
    for (const unsigned char *p = (const unsigned char *)labels; *p; p++) {
        h = (h ^ *p) * 16777619u;
    }
    return h;
}

/* Finds or creates the series; NULL when the family is unknown or the
 * table is full. Called with the lock held. */
static series_t *lookup(const char *family, const char *labels, kind_t want)
{
    int fam = family_of(family);
    if (fam < 0 || fam == (int)DROPPED_FAMILY || families[fam].kind != want) {
        return NULL;
    }
    if (labels == NULL) {
        labels = "";
    }
    if (strlen(labels) >= MAX_LABELS) {
        dropped++;
        return NULL;
    }
    for (uint32_t h = hash((unsigned)fam, labels), probe = 0; probe < INDEX_SIZE; probe++) {
        int *slot = &index_[(h + probe) & (INDEX_SIZE - 1)];
        if (*slot == 0) {
            if (nseries == MAX_SERIES) {
                dropped++;
                return NULL;
            }
            series_t *s = &series[nseries];
            memset(s, 0, sizeof(*s));
            s->family = (unsigned)fam;
            memcpy(s->labels, labels, strlen(labels) + 1);
            *slot = (int)++nseries;
            return s;
        }
        series_t *s = &series[*slot - 1];
        if (s->family == (unsigned)fam && strcmp(s->labels, labels) == 0) {
            return s;
        }
    }
    dropped++;
    return NULL;
}

void stp_metrics_count(const char *family, const char *labels, uint64_t n)
{
    pthread_mutex_lock(&lock);
    series_t *s = lookup(family, labels, COUNTER);
    if (s) {
        s->v.count += n;
    }
    pthread_mutex_unlock(&lock);
}

void stp_metrics_gauge_add(const char *family, const char *labels, int64_t delta)
{
    pthread_mutex_lock(&lock);
    series_t *s = lookup(family, labels, GAUGE);
    if (s) {
        s->v.gauge += (double)delta;
    }
    pthread_mutex_unlock(&lock);
}

void stp_metrics_gauge_set(const char *family, const char *labels, double value)
{
    pthread_mutex_lock(&lock);
    series_t *s = lookup(family, labels, GAUGE);
    if (s) {
        s->v.gauge = value;
        s->hidden = 0;
    }
    pthread_mutex_unlock(&lock);
}

void stp_metrics_gauge_retain(const char *family, const char *const *labels, size_t n)
{
    int fam = family_of(family);
    pthread_mutex_lock(&lock);
    for (size_t i = 0; fam >= 0 && families[fam].kind == GAUGE && i < nseries; i++) {
        if (series[i].family != (unsigned)fam) {
            continue;
        }
        int keep = 0;
        for (size_t k = 0; k < n && !keep; k++) {
            keep = strcmp(series[i].labels, labels[k]) == 0;
        }
        series[i].hidden = !keep;
    }
    pthread_mutex_unlock(&lock);
}

void stp_metrics_observe(const char *family, const char *labels, double value)
{
    pthread_mutex_lock(&lock);
    series_t *s = lookup(family, labels, HISTOGRAM);
    if (s) {
        const family_t *f = &families[s->family];
        for (size_t i = 0; i < f->nbuckets; i++) {
            if (value <= f->buckets[i]) {
                s->v.h.le[i]++;
                break;
            }
        }
        s->v.h.n++;
        s->v.h.sum += value;
    }
    pthread_mutex_unlock(&lock);
}

/* Appends like snprintf; `*len` grows by what the text needs even when it
 * does not fit, so the caller learns the full size. */
static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(*len < cap ? buf + *len : NULL, *len < cap ? cap - *len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) {
        *len += (size_t)n;
    }
}

/* `name{labels,extra}` with the braces only when there is a label. */
static void put_name(char *buf, size_t cap, size_t *len, const char *name, const char *suffix,
                     const char *labels, const char *extra)
{
    int any = labels[0] || extra[0];
    put(buf, cap, len, "%s%s%s%s%s%s%s", name, suffix, any ? "{" : "", labels,
        labels[0] && extra[0] ? "," : "", extra, any ? "}" : "");
}

size_t stp_metrics_render(char *buf, size_t cap)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    size_t len = 0;
    char extra[48];

    if (cap) {
        buf[0] = '\0';
    }
    pthread_mutex_lock(&lock);
    for (unsigned f = 0; f < DROPPED_FAMILY; f++) {
        int header = 0;
        for (size_t i = 0; i < nseries; i++) {
            const series_t *s = &series[i];
            if (s->family != f || s->hidden) {
                continue;
            }
            if (!header) {
                put(buf, cap, &len, "# HELP %s %s\n# TYPE %s %s\n", families[f].name,
                    families[f].help, families[f].name, types[families[f].kind]);
                header = 1;
            }
            switch (families[f].kind) {
            case COUNTER:
                put_name(buf, cap, &len, families[f].name, "", s->labels, "");
                put(buf, cap, &len, " %llu\n", (unsigned long long)s->v.count);
                break;
            case GAUGE:
                put_name(buf, cap, &len, families[f].name, "", s->labels, "");
                put(buf, cap, &len, " %.17g\n", s->v.gauge);
                break;
            case HISTOGRAM: {
                uint64_t cum = 0;
                for (size_t b = 0; b < families[f].nbuckets; b++) {
                    cum += s->v.h.le[b];
                    snprintf(extra, sizeof(extra), "le=\"%g\"", families[f].buckets[b]);
                    put_name(buf, cap, &len, families[f].name, "_bucket", s->labels, extra);
                    put(buf, cap, &len, " %llu\n", (unsigned long long)cum);
                }
                put_name(buf, cap, &len, families[f].name, "_bucket", s->labels, "le=\"+Inf\"");
                put(buf, cap, &len, " %llu\n", (unsigned long long)s->v.h.n);
                put_name(buf, cap, &len, families[f].name, "_sum", s->labels, "");
                put(buf, cap, &len, " %.9g\n", s->v.h.sum);
                put_name(buf, cap, &len, families[f].name, "_count", s->labels, "");
                put(buf, cap, &len, " %llu\n", (unsigned long long)s->v.h.n);
                break;
            }
            }
        }
    }
    if (dropped) {
        const family_t *f = &families[DROPPED_FAMILY];
        put(buf, cap, &len, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", f->name, f->help,
            f->name, f->name, (unsigned long long)dropped);
    }
    pthread_mutex_unlock(&lock);
    return len;
}

char *stp_metrics_label_escape(char *out, size_t cap, const char *in)
{
    size_t o = 0;

    if (cap == 0) {
        return out;
    }
    for (; *in; in++) {
        const char *rep = *in == '\\' ? "\\\\" : *in == '"' ? "\\\"" : *in == '\n' ? "\\n" : NULL;
        size_t need = rep ? 2 : 1;
        if (o + need >= cap) {
            break;
        }
        if (rep) {
            memcpy(out + o, rep, 2);
        } else {
            out[o] = *in;
        }
        o += need;
    }
    out[o] = '\0';
    return out;
}

void stp_metrics_reset(void)
{
    pthread_mutex_lock(&lock);
    memset(index_, 0, sizeof(index_));
    nseries = 0;
    dropped = 0;
    pthread_mutex_unlock(&lock);
}
