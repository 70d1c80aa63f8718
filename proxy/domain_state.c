/*
 * domain_state: one policy cache for the whole process (see domain_state.h).
 *
 * Every access takes the mutex; the calls are short (a table lookup). A
 * change marks the cache dirty and queues one save on the caller's loop's
 * thread pool; a save already queued or running picks the change up, so a
 * burst of deliveries writes the file once or twice, not once each. An
 * entry the full cache drops while it still protected its domain is logged.
 */
#include "proxy/domain_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/log.h"
#include "proxy/state_store.h"

static uv_mutex_t lock;
static uv_mutex_t file_lock; /* one save at a time, in order */
static stp_cache_t *cache;
static char path[1100]; /* "" without state_dir */
static int save_queued; /* under lock: a save request is in the pool */

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

int stp_domain_state_init(const char *state_dir)
{
    if (uv_mutex_init(&lock) != 0) {
        return -1;
    }
    if (uv_mutex_init(&file_lock) != 0) {
        uv_mutex_destroy(&lock);
        return -1;
    }
    cache = stp_cache_new(STP_DOMAIN_STATE_MAX);
    if (cache == NULL) {
        uv_mutex_destroy(&file_lock);
        uv_mutex_destroy(&lock);
        return -1;
    }
    path[0] = '\0';
    if (state_dir && state_dir[0] && stp_state_path(state_dir, path, sizeof(path)) == 0) {
        int rc = stp_state_load(cache, path, now_s());
        if (rc == 1) {
            stp_log(STP_LOG_INFO, "state path=\"%s\" domains=%zu", path, stp_cache_count(cache));
        }
    }
    return 0;
}

void stp_domain_state_free(void)
{
    if (cache == NULL) {
        return;
    }
    stp_cache_free(cache);
    cache = NULL;
    uv_mutex_destroy(&file_lock);
    uv_mutex_destroy(&lock);
}

/*
 * In the thread pool. The cache lock is held only to take a copy of the
 * text: a worker looking up a domain never waits for the disk. file_lock
 * keeps saves in order (the later copy is written last) and one at a time
 * (they share the temporary file).
 */
static void save_work(uv_work_t *w)
{
    (void)w;
    uv_mutex_lock(&file_lock);
    uv_mutex_lock(&lock);
    save_queued = 0; /* changes from now on need another save */
    size_t len = 0;
    char *text = stp_cache_serialize(cache, &len);
    uv_mutex_unlock(&lock);
    stp_state_write(text, len, path);
    uv_mutex_unlock(&file_lock);
}

static void save_done(uv_work_t *w, int status)
{
    (void)status;
    free(w);
}

/* Called with the lock held. */
static void queue_save(uv_loop_t *loop)
{
    if (path[0] == '\0' || save_queued || loop == NULL) {
        return;
    }
    uv_work_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return;
    }
    if (uv_queue_work(loop, w, save_work, save_done) != 0) {
        free(w);
        return;
    }
    save_queued = 1;
}

/* Copies the cached policy an action says to apply, judged at the same
 * `now` as the action. An action with nothing to copy (it cannot happen with
 * one `now`, but a policy is never left uninitialised) becomes `fallback`. */
static stp_sts_action_t copy_policy(const char *domain, stp_sts_action_t a, int64_t now,
                                    stp_mta_sts_policy_t *policy, stp_sts_action_t fallback)
{
    if (a != STP_STS_USE_CACHED && a != STP_STS_USE_CACHED_REFRESH) {
        return a;
    }
    const stp_cache_entry_t *e = stp_cache_sts_valid(cache, domain, now);
    if (e == NULL) {
        return fallback;
    }
    if (policy) {
        memcpy(policy, &e->sts, sizeof(*policy));
    }
    return a;
}

stp_sts_action_t stp_domain_state_sts_action(const char *domain, stp_sts_txt_state_t txt,
                                             const char *txt_id, stp_mta_sts_policy_t *policy)
{
    uv_mutex_lock(&lock);
    int64_t now = now_s();
    stp_sts_action_t a = copy_policy(domain, stp_cache_sts_action(cache, domain, txt, txt_id, now),
                                     now, policy, STP_STS_FETCH);
    uv_mutex_unlock(&lock);
    return a;
}

int64_t stp_domain_state_sts_left(const char *domain)
{
    uv_mutex_lock(&lock);
    int64_t now = now_s();
    const stp_cache_entry_t *e = stp_cache_sts_valid(cache, domain, now);
    int64_t left = e != NULL ? e->sts_expires - now : 0;
    uv_mutex_unlock(&lock);
    return left;
}

stp_sts_action_t stp_domain_state_sts_after_failure(const char *domain,
                                                    stp_mta_sts_policy_t *policy)
{
    uv_mutex_lock(&lock);
    int64_t now = now_s();
    stp_sts_action_t a = copy_policy(domain, stp_cache_sts_after_failure(cache, domain, now), now,
                                     policy, STP_STS_TEMPFAIL);
    uv_mutex_unlock(&lock);
    return a;
}

/*
 * Called with the lock held, after an insertion: takes the entry the full
 * cache dropped for it, if any. Returns 1 when that entry still protected
 * its domain (a valid MTA-STS policy in enforce or testing mode, or
 * remembered TLS), which the caller logs once the lock is released: a
 * flood of new domains must not take protections away unseen.
 */
static int evicted_protection(int64_t now, stp_cache_entry_t *e)
{
    if (!stp_cache_take_evicted(cache, e)) {
        return 0;
    }
    int sts = e->has_sts && e->sts_expires > now && e->sts.mode != STP_MTA_STS_MODE_NONE;
    return sts || e->tls_until > now;
}

static void log_eviction(const stp_cache_entry_t *e, int64_t now)
{
    int sts = e->has_sts && e->sts_expires > now;
    stp_log(STP_LOG_INFO,
            "state evicted=%s reason=cache-full mta_sts=%s sts_expires=%lld remembered_until=%lld",
            e->domain, sts ? stp_mta_sts_mode_name(e->sts.mode) : "none",
            sts ? (long long)e->sts_expires : 0LL,
            e->tls_until > now ? (long long)e->tls_until : 0LL);
}

void stp_domain_state_sts_put(uv_loop_t *loop, const char *domain, const char *id,
                              const stp_mta_sts_policy_t *p)
{
    stp_cache_entry_t gone;
    uv_mutex_lock(&lock);
    int64_t now = now_s();
    if (stp_cache_sts_put(cache, domain, id, p, now) == 0) {
        queue_save(loop);
    }
    int lost = evicted_protection(now, &gone);
    uv_mutex_unlock(&lock);
    if (lost) {
        log_eviction(&gone, now);
    }
}

int stp_domain_state_tls_required(const char *domain, int64_t *since)
{
    uv_mutex_lock(&lock);
    int r = stp_cache_tls_required(cache, domain, now_s(), since, NULL);
    uv_mutex_unlock(&lock);
    return r;
}

void stp_domain_state_tls_seen(uv_loop_t *loop, const char *domain, uint64_t period_ms)
{
    if (period_ms == 0) {
        return;
    }
    stp_cache_entry_t gone;
    uv_mutex_lock(&lock);
    int64_t now = now_s();
    if (stp_cache_tls_seen(cache, domain, now, (int64_t)(period_ms / 1000)) == 0) {
        queue_save(loop); /* coalesced with a save already queued */
    }
    int lost = evicted_protection(now, &gone);
    uv_mutex_unlock(&lock);
    if (lost) {
        log_eviction(&gone, now);
    }
}
