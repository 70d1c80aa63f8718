/*
 * sts_refresh: MTA-STS policy refreshes that outlive the delivery attempt
 * that started them (see sts_refresh.h).
 *
 * One refresh: resolve mta-sts.DOMAIN (its own resolver) -> fetch from its
 * addresses in turn -> store the policy and log, or log the failure ->
 * done(), which defers the teardown to a zero timer (never close a
 * resolver from inside its own callback) -> teardown(): off the list, the
 * resolver closed, the timer closed; the memory goes in the timer's close
 * callback. stp_sts_refresh_stop() runs the teardown at once for every
 * refresh of its loop, whatever step it is at (a fetch still running is
 * cancelled first: its callback never comes).
 */
#include "proxy/sts_refresh.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/mta_sts.h"
#include "proxy/domain_state.h"
#include "proxy/log.h"
#include "proxy/mta_sts_fetch.h"
#include "proxy/resolver.h"
#include "tls/tls_ctx.h"

typedef struct refresh_s refresh_t;

struct refresh_s {
    refresh_t *next; /* in `running`, under `lock`, until teardown() */
    uv_loop_t *loop;
    uv_timer_t timer; /* the deferred teardown */
    stp_resolver_t *res;
    stp_mta_sts_fetch_t *fetch;
    int finished; /* its outcome is logged; the teardown is on its way */
    int torn;     /* teardown() ran: answers that still arrive are dropped */
    char domain[256];
    char txt_id[STP_MTA_STS_ID_MAX + 1];
    char id[24];
    /* copies of the configuration, which a reload may free meanwhile */
    char ca_file[1024];
    uint64_t timeout_ms;
    uint64_t retry_ms; /* after a failure, the next refresh waits this long */
    uint16_t port;
};

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t lock;
static refresh_t *running; /* every refresh of the process, on any loop */
static unsigned nrunning;

/* Domains whose last refresh failed, and until when (uv_hrtime ns) the
 * next one waits: a quarter of the time the cached policy has left, at
 * least a second, at most STP_STS_REFRESH_RETRY_MAX_MS. Under `lock`. A
 * full table forgets the failure that would end first. */
#define FAILED_MAX 256
static struct {
    char domain[256];
    uint64_t until;
} failed[FAILED_MAX];
static unsigned nfailed;

/* With `lock` held: the slot of `domain`'s failure, or -1. Forgets the
 * failures whose wait is over. */
static int failed_slot(const char *domain, uint64_t now)
{
    int found = -1;
    for (unsigned i = 0; i < nfailed;) {
        if (failed[i].until <= now) {
            failed[i] = failed[--nfailed];
            continue;
        }
        if (strcmp(failed[i].domain, domain) == 0) {
            found = (int)i;
        }
        i++;
    }
    return found;
}

static void failure_note(const char *domain, uint64_t wait_ms)
{
    uint64_t now = uv_hrtime();
    uv_mutex_lock(&lock);
    int i = failed_slot(domain, now);
    if (i < 0 && nfailed < FAILED_MAX) {
        i = (int)nfailed++;
    } else if (i < 0) {
        i = 0;
        for (unsigned k = 1; k < nfailed; k++) {
            i = failed[k].until < failed[i].until ? (int)k : i;
        }
    }
    snprintf(failed[i].domain, sizeof(failed[i].domain), "%s", domain);
    failed[i].until = now + wait_ms * 1000000;
    uv_mutex_unlock(&lock);
}

static void failure_forget(const char *domain)
{
    uv_mutex_lock(&lock);
    int i = failed_slot(domain, uv_hrtime());
    if (i >= 0) {
        failed[i] = failed[--nfailed];
    }
    uv_mutex_unlock(&lock);
}

static void init_lock(void)
{
    if (uv_mutex_init(&lock) != 0) {
        abort(); /* at the first refresh; nothing sensible is left to do */
    }
}

/* Takes the domain's place in the list: 0, or -1 if a refresh of it is
 * running already or the list is full, -2 if its last one failed too
 * recently (*wait_ms: how long it still waits). */
static int claim(refresh_t *r, uint64_t *wait_ms)
{
    int rc = 0;
    uv_once(&once, init_lock);
    uv_mutex_lock(&lock);
    uint64_t now = uv_hrtime();
    int f = failed_slot(r->domain, now);
    if (f >= 0) {
        *wait_ms = (failed[f].until - now) / 1000000;
        uv_mutex_unlock(&lock);
        return -2;
    }
    if (nrunning >= STP_STS_REFRESH_MAX) {
        rc = -1;
    }
    for (refresh_t *o = running; o && rc == 0; o = o->next) {
        if (strcmp(o->domain, r->domain) == 0) {
            rc = -1;
        }
    }
    if (rc == 0) {
        r->next = running;
        running = r;
        nrunning++;
    }
    uv_mutex_unlock(&lock);
    return rc;
}

static void unlink_refresh(refresh_t *r)
{
    uv_mutex_lock(&lock);
    for (refresh_t **p = &running; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            nrunning--;
            break;
        }
    }
    uv_mutex_unlock(&lock);
}

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Off the list and closed; runs once. Pending DNS callbacks run inside
 * stp_resolver_close (cancelled) and find `torn` set. */
static void teardown(refresh_t *r)
{
    if (r->torn) {
        return;
    }
    r->torn = 1;
    unlink_refresh(r);
    uv_timer_stop(&r->timer);
    if (r->fetch) {
        stp_mta_sts_fetch_cancel(r->fetch);
        r->fetch = NULL;
    }
    if (r->res) {
        stp_resolver_close(r->res);
        r->res = NULL;
    }
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

static void on_teardown_timer(uv_timer_t *t)
{
    teardown(t->data);
}

/* The refresh is over: its teardown runs from the loop. */
static void done(refresh_t *r)
{
    r->finished = 1;
    uv_timer_start(&r->timer, on_teardown_timer, 0, 0);
}

static void on_fetch(const stp_mta_sts_fetch_result_t *f, void *arg)
{
    refresh_t *r = arg;
    r->fetch = NULL;
    if (f->status == STP_MTA_STS_FETCH_OK) {
        failure_forget(r->domain);
        stp_domain_state_sts_put(r->loop, r->domain, r->txt_id, f->policy);
        stp_log(STP_LOG_INFO, "mta_sts id=%s domain=%s refresh=ok mode=%s max_age=%u", r->id,
                r->domain, stp_mta_sts_mode_name(f->policy->mode), f->policy->max_age);
    } else {
        char esc[600];
        stp_log_escape(esc, sizeof(esc), f->error, strlen(f->error));
        failure_note(r->domain, r->retry_ms);
        stp_log(STP_LOG_WARN,
                "mta_sts id=%s domain=%s refresh=%s error=\"%s\" retry_after=%llums", r->id,
                r->domain, stp_mta_sts_fetch_status_name(f->status), esc,
                (unsigned long long)r->retry_ms);
    }
    done(r);
}

static void on_addrs(stp_dns_result_t *res, void *arg)
{
    refresh_t *r = arg;
    if (r->torn) {
        stp_dns_result_free(res);
        return;
    }
    char why[400];
    if (res->status != STP_DNS_OK || res->naddr == 0) {
        snprintf(why, sizeof(why), "no address for mta-sts.%s: %s", r->domain,
                 res->status == STP_DNS_OK ? "none" : stp_dns_status_name(res->status));
    } else {
        SSL_CTX *ctx = stp_tls_ctx_client_new(r->ca_file[0] ? r->ca_file : NULL, TLS1_2_VERSION,
                                              why, sizeof(why));
        if (ctx) {
            stp_mta_sts_fetch_opts_t o = {
                .ctx = ctx,
                .domain = r->domain,
                .addrs = res->addr,
                .naddr = res->naddr,
                .timeout_ms = r->timeout_ms,
            };
            r->fetch = stp_mta_sts_fetch_start(r->loop, &o, on_fetch, r);
            SSL_CTX_free(ctx); /* the fetch holds its own reference */
            if (r->fetch) {
                stp_dns_result_free(res);
                return;
            }
            snprintf(why, sizeof(why), "the fetch could not start");
        }
    }
    stp_dns_result_free(res);
    char esc[600];
    stp_log_escape(esc, sizeof(esc), why, strlen(why));
    failure_note(r->domain, r->retry_ms);
    stp_log(STP_LOG_WARN, "mta_sts id=%s domain=%s refresh=failed error=\"%s\" retry_after=%llums",
            r->id, r->domain, esc, (unsigned long long)r->retry_ms);
    done(r);
}

int stp_sts_refresh_start(uv_loop_t *loop, const stp_config_t *cf, const char *domain,
                          const char *txt_id, const char *id)
{
    char err[200];
    refresh_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        stp_log(STP_LOG_WARN, "mta_sts id=%s domain=%s refresh=failed error=\"out of memory\"", id,
                domain);
        return 0;
    }
    r->loop = loop;
    snprintf(r->domain, sizeof(r->domain), "%s", domain);
    snprintf(r->txt_id, sizeof(r->txt_id), "%s", txt_id);
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->ca_file, sizeof(r->ca_file), "%s", cf->mta_sts_ca_file);
    r->timeout_ms = cf->mta_sts_timeout;
    r->port = (uint16_t)cf->mta_sts_port;
    uint64_t left_ms = (uint64_t)stp_domain_state_sts_left(domain) * 1000;
    r->retry_ms = left_ms / 4;
    if (r->retry_ms < 1000) {
        r->retry_ms = 1000;
    } else if (r->retry_ms > STP_STS_REFRESH_RETRY_MAX_MS) {
        r->retry_ms = STP_STS_REFRESH_RETRY_MAX_MS;
    }
    uint64_t wait_ms = 0;
    int claimed = claim(r, &wait_ms);
    if (claimed == -2) {
        stp_log(STP_LOG_DEBUG,
                "mta_sts id=%s domain=%s refresh=skipped reason=failed-recently retry_in=%llums",
                id, domain, (unsigned long long)wait_ms);
        free(r);
        return 0;
    }
    if (claimed < 0) {
        stp_log(STP_LOG_DEBUG, "mta_sts id=%s domain=%s refresh=skipped reason=running", id,
                domain);
        free(r);
        return 0;
    }
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->res = stp_resolver_new(loop, cf->resolver, (unsigned)cf->dns_timeout, err, sizeof(err));
    char name[300];
    snprintf(name, sizeof(name), "mta-sts.%s", r->domain);
    if (r->res == NULL || stp_resolver_addrs(r->res, name, r->port, on_addrs, r) < 0) {
        char esc[300];
        const char *why = r->res ? "invalid name" : err;
        stp_log_escape(esc, sizeof(esc), why, strlen(why));
        stp_log(STP_LOG_WARN, "mta_sts id=%s domain=%s refresh=failed error=\"%s\"", id, domain,
                esc);
        teardown(r); /* not inside a resolver callback: at once */
        return 0;
    }
    stp_log(STP_LOG_DEBUG, "mta_sts id=%s domain=%s refresh=started", id, domain);
    return 1;
}

void stp_sts_refresh_stop(uv_loop_t *loop)
{
    uv_once(&once, init_lock);
    for (;;) {
        refresh_t *mine = NULL;
        uv_mutex_lock(&lock);
        for (refresh_t *r = running; r; r = r->next) {
            if (r->loop == loop) {
                mine = r;
                break;
            }
        }
        uv_mutex_unlock(&lock);
        if (mine == NULL) {
            return;
        }
        if (!mine->finished) {
            stp_log(STP_LOG_INFO, "mta_sts id=%s domain=%s refresh=cancelled reason=shutdown",
                    mine->id, mine->domain);
        }
        teardown(mine); /* takes it off the list */
    }
}

unsigned stp_sts_refresh_running(uv_loop_t *loop)
{
    unsigned n = 0;
    uv_once(&once, init_lock);
    uv_mutex_lock(&lock);
    for (refresh_t *r = running; r; r = r->next) {
        n += r->loop == loop;
    }
    uv_mutex_unlock(&lock);
    return n;
}
