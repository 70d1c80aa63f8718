/*
 * policy_cache: what the proxy remembers about destination domains between
 * deliveries and across restarts, and the rules for using it. Pure: the
 * time comes in as an argument (Unix seconds), the file's text comes in and
 * goes out as bytes (proxy/state_store.c does the file I/O).
 *
 * Two kinds of memory, per domain (lower case, no trailing dot):
 *
 * MTA-STS policies (RFC 8461 section 5.1). A fetched policy is kept with its
 * id, fetch time and expiry (fetch time + max_age). The action for a
 * delivery follows from the TXT lookup and the cache:
 *   TXT id found, nothing valid cached, or another id cached -> FETCH now
 *   TXT id found, the same id cached                          -> USE_CACHED,
 *       or USE_CACHED_REFRESH once half of max_age has passed (fetch in
 *       the background to push the expiry out; use the cached copy now)
 *   no TXT record, a valid policy cached                      -> USE_CACHED
 *       (a record stripped from DNS must not switch a policy off: that is
 *       the attack the cache exists to stop; a domain retires its policy
 *       with mode: none)
 *   DNS failure, a valid policy cached                        -> USE_CACHED
 *   no TXT record, nothing cached                             -> NO_POLICY
 *   DNS failure, nothing cached                               -> TEMPFAIL
 *       (lookup errors fail closed: defer rather than guess)
 * A failed fetch falls back to a valid cached policy; with none, RFC 8461
 * says to deliver as if the domain had no policy (stp_cache_sts_after_failure
 * returns NO_POLICY; a caller whose configuration demands MTA-STS for the
 * domain may defer instead).
 *
 * Remembered TLS ("trust on first use" for STARTTLS). After a delivery over
 * verified TLS, stp_cache_tls_seen() records the domain until now + period;
 * while that lasts, stp_cache_tls_required() says the domain must keep
 * offering verified TLS, since when, and until when, so that a stripped
 * STARTTLS can be deferred and logged as a possible downgrade. Every
 * verified delivery pushes the end out again; "since" is kept as long as the
 * memory never lapsed, and never later than the latest delivery (after a
 * clock stepped back it becomes now; a file with SINCE > LAST, as older
 * versions wrote then, is read with SINCE = LAST). period 0 switches the
 * feature off.
 *
 * The table is bounded (max_entries); when full, the entry whose knowledge
 * ends first is dropped. Not thread-safe: the owner serialises access.
 *
 * File format (text, one record per line, checked whole on load):
 *   smtp-tls-proxy state 1
 *   sts DOMAIN ID FETCHED EXPIRES MODE MAX_AGE [MX...]
 *   tls DOMAIN SINCE LAST UNTIL
 *   end COUNT CHECKSUM
 * COUNT is the number of record lines, CHECKSUM the FNV-1a 64-bit hash (16
 * hex digits) of every byte before the "end" line. Anything that does not
 * fit (a bad line, a wrong count or checksum, a missing end: a truncated or
 * corrupted file) rejects the whole file, with the reason, and leaves the
 * cache empty. Expired records are dropped quietly on load.
 */
#ifndef STP_POLICY_CACHE_H
#define STP_POLICY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "policy/mta_sts.h"

typedef struct {
    char domain[254]; /* lower case, no trailing dot */

    /* MTA-STS */
    int has_sts;
    char sts_id[STP_MTA_STS_ID_MAX + 1];
    int64_t sts_fetched; /* Unix seconds of the fetch that produced the policy */
    int64_t sts_expires; /* sts_fetched + max_age */
    stp_mta_sts_policy_t sts;

    /* remembered TLS; tls_until == 0: nothing remembered */
    int64_t tls_since; /* first verified TLS delivery of the current streak */
    int64_t tls_last;  /* the latest one */
    int64_t tls_until; /* verified TLS required before this time */
} stp_cache_entry_t;

typedef struct stp_cache_s stp_cache_t;

typedef enum {
    STP_STS_TXT_FOUND = 0, /* one valid _mta-sts record: its id is passed along */
    STP_STS_TXT_ABSENT,    /* NXDOMAIN, no data, or no usable record (none, several, invalid) */
    STP_STS_TXT_DNS_ERROR, /* SERVFAIL, timeout, bogus: nothing is known */
} stp_sts_txt_state_t;

typedef enum {
    STP_STS_USE_CACHED = 0,     /* apply the cached policy */
    STP_STS_USE_CACHED_REFRESH, /* apply the cached policy; refetch in the background */
    STP_STS_FETCH,              /* fetch now; on failure ask stp_cache_sts_after_failure */
    STP_STS_NO_POLICY,          /* the domain has no MTA-STS policy */
    STP_STS_TEMPFAIL,           /* nothing known and DNS failed: defer */
} stp_sts_action_t;

/* "use-cached", "use-cached-refresh", "fetch", "no-policy", "tempfail" */
const char *stp_sts_action_name(stp_sts_action_t a);

/* A new empty cache holding at most max_entries domains (>= 1); NULL on ENOMEM. */
stp_cache_t *stp_cache_new(size_t max_entries);

/* Frees the cache; accepts NULL. */
void stp_cache_free(stp_cache_t *c);

/* Number of domains held. */
size_t stp_cache_count(const stp_cache_t *c);

/* The entry for `domain` (any case, trailing dot allowed), borrowed, or NULL.
 * Valid until the next call that changes the cache. */
const stp_cache_entry_t *stp_cache_get(const stp_cache_t *c, const char *domain);

/* A valid (unexpired) cached policy for `domain`, borrowed, or NULL. */
const stp_cache_entry_t *stp_cache_sts_valid(const stp_cache_t *c, const char *domain, int64_t now);

/* What to do for a delivery to `domain` (see the table above). txt_id is
 * the record's id when txt == STP_STS_TXT_FOUND, else ignored. */
stp_sts_action_t stp_cache_sts_action(const stp_cache_t *c, const char *domain,
                                      stp_sts_txt_state_t txt, const char *txt_id, int64_t now);

/* After a failed fetch: USE_CACHED if a valid policy is cached, else NO_POLICY. */
stp_sts_action_t stp_cache_sts_after_failure(const stp_cache_t *c, const char *domain, int64_t now);

/* Stores a freshly fetched policy with the id of the TXT record that led to
 * it. Returns 0, or -1 for an invalid domain or id, or out of memory. */
int stp_cache_sts_put(stp_cache_t *c, const char *domain, const char *id,
                      const stp_mta_sts_policy_t *p, int64_t now);

/* After a delivery over verified TLS: remember the domain until now + period
 * (seconds; 0: the feature is off and nothing is recorded). 0 or -1. */
int stp_cache_tls_seen(stp_cache_t *c, const char *domain, int64_t now, int64_t period);

/* The entry a put or tls_seen into the full table dropped to make room,
 * once: 1 with a copy in *out, then 0 until the next eviction (so the owner
 * can log a protection that went before its time). */
int stp_cache_take_evicted(stp_cache_t *c, stp_cache_entry_t *out);

/* 1 if `domain` must offer verified TLS at `now`, with *since and *until
 * filled in (either may be NULL); 0 if nothing is remembered. */
int stp_cache_tls_required(const stp_cache_t *c, const char *domain, int64_t now, int64_t *since,
                           int64_t *until);

/* Drops what has expired at `now`; returns how many domains were removed. */
size_t stp_cache_expire(stp_cache_t *c, int64_t now);

/* The whole cache as file text (format above), in a new buffer the caller
 * frees; *len gets its length. NULL on ENOMEM. Domains in sorted order, so
 * equal caches give equal files. */
char *stp_cache_serialize(const stp_cache_t *c, size_t *len);

/*
 * Replaces the cache's content with the records of `text`, dropping those
 * expired at `now`. Returns 0; or -1 with the cache left empty and `why`
 * saying what was wrong ("line 7: bad checksum", "truncated: no end line").
 */
int stp_cache_load(stp_cache_t *c, const char *text, size_t len, int64_t now, char *why,
                   size_t whylen);

#endif
