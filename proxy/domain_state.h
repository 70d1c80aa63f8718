/*
 * domain_state: the process-wide memory of destination domains for
 * route = mx (the policy cache of policy/policy_cache.h: MTA-STS policies
 * and remembered TLS), shared by every worker behind one mutex, loaded from
 * `state_dir` at start-up and written back (proxy/state_store.c) from the
 * libuv thread pool after each change, so no worker loop waits on the disk.
 *
 * Without a state_dir the memory lives only as long as the process.
 */
#ifndef STP_DOMAIN_STATE_H
#define STP_DOMAIN_STATE_H

#include <stdint.h>

#include <uv.h>

#include "policy/policy_cache.h"

/* Domains remembered at most (the file holds no more). */
#define STP_DOMAIN_STATE_MAX 100000

/* At start-up, before the workers run: an empty cache, then the file of
 * `state_dir` ("" = none) if there is one. 0, or -1 (out of memory). */
int stp_domain_state_init(const char *state_dir);

/* At exit, after the workers stopped. */
void stp_domain_state_free(void);

/* What to do about MTA-STS for `domain` (stp_cache_sts_action); when the
 * answer uses the cache, *policy gets a copy of the cached policy. */
stp_sts_action_t stp_domain_state_sts_action(const char *domain, stp_sts_txt_state_t txt,
                                             const char *txt_id, stp_mta_sts_policy_t *policy);

/* Seconds until `domain`'s cached MTA-STS policy expires (0: none valid). */
int64_t stp_domain_state_sts_left(const char *domain);

/* After a failed fetch (stp_cache_sts_after_failure), with the same copy. */
stp_sts_action_t stp_domain_state_sts_after_failure(const char *domain,
                                                    stp_mta_sts_policy_t *policy);

/* Stores a fetched policy; the file is written from `loop`'s thread pool. */
void stp_domain_state_sts_put(uv_loop_t *loop, const char *domain, const char *id,
                              const stp_mta_sts_policy_t *p);

/* 1 if `domain` was reached over verified TLS recently enough that it must
 * keep offering it (*since: the start of that memory). */
int stp_domain_state_tls_required(const char *domain, int64_t *since);

/* After a delivery over verified TLS (period_ms 0: nothing recorded). */
void stp_domain_state_tls_seen(uv_loop_t *loop, const char *domain, uint64_t period_ms);

#endif
