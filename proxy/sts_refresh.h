/*
 * sts_refresh: the background refresh of a cached MTA-STS policy (RFC 8461
 * 5.1: once half of its max_age has passed, fetch it again so that it never
 * lapses while the domain keeps publishing it).
 *
 * A delivery attempt (proxy/nexthop.c) that applies a cached policy due for
 * a refresh starts one here and goes on at once. The refresh is not the
 * attempt's: it has its own resolver for the addresses of mta-sts.DOMAIN,
 * its own fetch (every address in turn, proxy/mta_sts_fetch.h) and copies
 * of the few settings it needs, so it outlives the attempt, the session and
 * a reload. All it does at the end is store the policy in domain_state and
 * log the outcome (info; a failure at warn).
 *
 * One refresh per domain at a time in the whole process, and at most
 * STP_STS_REFRESH_MAX at once: a burst of messages to a domain starts one,
 * the others find it running. A refresh that failed is tried again by the
 * first delivery that finds the policy due once a quarter of the time the
 * policy had left has passed (at least a second, at most
 * STP_STS_REFRESH_RETRY_MAX_MS): a policy host that is down is not asked
 * again by every message to its domain, and the policy still gets several
 * tries before it lapses.
 *
 * Ownership: this module owns every refresh it started, in a process-wide
 * list behind a mutex; each refresh runs on the loop it was started on and
 * frees itself when done. At a worker's stop, stp_sts_refresh_stop(loop)
 * ends those still running on that loop (logged refresh=cancelled), so the
 * loop can close.
 */
#ifndef STP_STS_REFRESH_H
#define STP_STS_REFRESH_H

#include <uv.h>

#include "proxy/config.h"

/* Refreshes running at once, in the whole process, at most. */
#define STP_STS_REFRESH_MAX 64

/* The longest wait after a failed refresh (5 minutes). */
#define STP_STS_REFRESH_RETRY_MAX_MS (5 * 60 * 1000)

/*
 * Starts refreshing `domain`'s policy, published under TXT id `txt_id`, on
 * `loop`; `id` is the session id of the delivery, for the log. Reads cf's
 * resolver, dns_timeout, mta_sts_port, mta_sts_timeout and mta_sts_ca_file
 * now (cf may go before the refresh ends). Returns 1 when a refresh started,
 * 0 when one for the domain is running already or STP_STS_REFRESH_MAX are,
 * its last one failed too recently, or it could not start (logged). Only
 * from `loop`'s thread.
 */
int stp_sts_refresh_start(uv_loop_t *loop, const stp_config_t *cf, const char *domain,
                          const char *txt_id, const char *id);

/* Ends every refresh running on `loop` (no policy is stored), from that
 * loop's thread; their memory goes with the close callbacks the loop runs
 * next. For a worker's stop, before it closes what is left on its loop. */
void stp_sts_refresh_stop(uv_loop_t *loop);

/* How many refreshes run on `loop` now (for a test harness that waits for
 * them, as test/fuzz/fuzz_session does after each session). */
unsigned stp_sts_refresh_running(uv_loop_t *loop);

#endif
