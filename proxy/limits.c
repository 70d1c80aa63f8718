/*
 * limits: a small chained hash table of per-address connection counts.
 * Entries exist only while an address has connections, so memory follows
 * the number of distinct connected clients, never the history.
 */
#include "proxy/limits.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct stp_ip_count_s {
    stp_ip_count_t *next;
    unsigned char key[16];
    unsigned count;
};

/* IPv4 and IPv4-mapped IPv6 use the same key, so both count together. An
 * IPv6 client counts by its /64: one subscriber's network (RFC 6177), from
 * which it could otherwise open max_connections_per_ip connections per
 * address it picks. */
static void addr_key(const struct sockaddr *sa, unsigned char key[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        memcpy(key, a, memcmp(a, mapped, sizeof(mapped)) == 0 ? 16 : 8);
    }
}

static size_t hash_key(const unsigned char key[16], size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = 0; i < 16; i++) {
        h = (h ^ key[i]) * 1099511628211ull;
    }
    return (size_t)(h % n);
}

int stp_limits_init(stp_limits_t *l, unsigned max_total, unsigned max_per_ip)
{
    memset(l, 0, sizeof(*l));
    l->max_total = max_total;
    l->max_per_ip = max_per_ip;
    l->nbuckets = 1024;
    l->buckets = calloc(l->nbuckets, sizeof(*l->buckets));
    if (l->buckets == NULL) {
        return -1;
    }
    pthread_mutex_init(&l->lock, NULL);
    return 0;
}

void stp_limits_set(stp_limits_t *l, unsigned max_total, unsigned max_per_ip)
{
    pthread_mutex_lock(&l->lock);
    l->max_total = max_total;
    l->max_per_ip = max_per_ip;
    pthread_mutex_unlock(&l->lock);
}

unsigned stp_limits_total(stp_limits_t *l)
{
    pthread_mutex_lock(&l->lock);
    unsigned n = l->total;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void stp_limits_free(stp_limits_t *l)
{
    if (l->buckets == NULL) {
        return;
    }
    for (size_t i = 0; i < l->nbuckets; i++) {
        stp_ip_count_t *e = l->buckets[i];
        while (e) {
            stp_ip_count_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(l->buckets);
    l->buckets = NULL;
    pthread_mutex_destroy(&l->lock);
}

static stp_limit_result_t acquire_locked(stp_limits_t *l, const struct sockaddr *sa)
{
    unsigned char key[16];
    stp_ip_count_t *e;

    if (l->max_total && l->total >= l->max_total) {
        return STP_LIMIT_TOTAL;
    }
    addr_key(sa, key);
    size_t b = hash_key(key, l->nbuckets);
    for (e = l->buckets[b]; e; e = e->next) {
        if (memcmp(e->key, key, 16) == 0) {
            break;
        }
    }
    if (e && l->max_per_ip && e->count >= l->max_per_ip) {
        return STP_LIMIT_PER_IP;
    }
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            return STP_LIMIT_TOTAL; /* out of memory: refuse like a full table */
        }
        memcpy(e->key, key, 16);
        e->next = l->buckets[b];
        l->buckets[b] = e;
    }
    e->count++;
    l->total++;
    return STP_LIMIT_OK;
}

stp_limit_result_t stp_limits_acquire(stp_limits_t *l, const struct sockaddr *sa)
{
    pthread_mutex_lock(&l->lock);
    stp_limit_result_t r = acquire_locked(l, sa);
    pthread_mutex_unlock(&l->lock);
    return r;
}

void stp_limits_release(stp_limits_t *l, const struct sockaddr *sa)
{
    unsigned char key[16];

    pthread_mutex_lock(&l->lock);

    addr_key(sa, key);
    size_t b = hash_key(key, l->nbuckets);
    for (stp_ip_count_t **pp = &l->buckets[b]; *pp; pp = &(*pp)->next) {
        stp_ip_count_t *e = *pp;
        if (memcmp(e->key, key, 16) == 0) {
            if (--e->count == 0) {
                *pp = e->next;
                free(e);
            }
            if (l->total > 0) {
                l->total--;
            }
            break;
        }
    }
    pthread_mutex_unlock(&l->lock);
}
