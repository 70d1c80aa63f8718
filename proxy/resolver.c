/*
 * resolver: c-ares driven by a libuv loop (see resolver.h).
 *
 * c-ares tells us which sockets it wants watched through its socket-state
 * callback; each gets a uv_poll_t, whose events go back through
 * ares_process_fd. One uv_timer_t is re-armed from ares_timeout() after
 * every query and every event, so retries and timeouts happen without any
 * blocking call. A job is one user request: one query (MX, TLSA, TXT,
 * DNSKEY, CNAME) or two (A and AAAA); it completes when all its queries have.
 */
#include "proxy/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/dns_msg.h"

typedef enum { JOB_MX, JOB_ADDRS, JOB_TLSA, JOB_TXT, JOB_DNSKEY, JOB_CNAME } job_kind_t;

typedef struct pollh_s {
    uv_poll_t h;
    ares_socket_t fd;
    stp_resolver_t *r;
    struct pollh_s *next;
} pollh_t;

struct stp_resolver_s {
    uv_loop_t *loop;
    ares_channel channel;
    uv_timer_t timer;
    pollh_t *polls;
    int handles; /* open libuv handles (timer + polls) */
    int closing;
    int ares_live;
    int depth;         /* inside ares_process_fd: c-ares forbids ares_destroy there */
    int close_pending; /* stp_resolver_close was called at depth > 0 */
};

typedef struct {
    stp_resolver_t *r;
    job_kind_t kind;
    stp_dns_cb cb;
    void *arg;
    stp_dns_result_t *res;
    uint16_t port;
    int pending;
    int secure_all;
    /* for JOB_ADDRS: the first failure and whether either name existed */
    stp_dns_status_t worst;
    const char *worst_why;
    int nx_count;
    struct sockaddr_storage v6[STP_RESOLVER_MAX_ADDR];
    size_t nv6;
} job_t;

typedef struct {
    job_t *job;
    uint16_t type;
} query_t;

static void rearm_timer(stp_resolver_t *r);
static void destroy(stp_resolver_t *r);

/* ares_process_fd, and a close requested by a callback inside it done after. */
static void process(stp_resolver_t *r, ares_socket_t rfd, ares_socket_t wfd)
{
    r->depth++;
    ares_process_fd(r->channel, rfd, wfd);
    if (--r->depth == 0 && r->close_pending) {
        destroy(r);
        return;
    }
    rearm_timer(r);
}

const char *stp_dns_status_name(stp_dns_status_t s)
{
    switch (s) {
    case STP_DNS_OK:
        return "ok";
    case STP_DNS_NODATA:
        return "nodata";
    case STP_DNS_NXDOMAIN:
        return "nxdomain";
    case STP_DNS_SERVFAIL:
        return "servfail";
    case STP_DNS_TIMEOUT:
        return "timeout";
    case STP_DNS_ERROR:
        return "error";
    case STP_DNS_CANCELLED:
        return "cancelled";
    }
    return "?";
}

int stp_resolver_global_init(void)
{
    return ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS ? 0 : -1;
}

/* ---- libuv <-> c-ares ---- */

static void on_handle_closed(uv_handle_t *h)
{
    stp_resolver_t *r = h->data;
    if (h->type == UV_POLL) {
        free(h); /* the pollh_t; h is its first member */
    }
    if (--r->handles == 0 && r->closing) {
        free(r);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pollh_t *p = (pollh_t *)h;
    stp_resolver_t *r = p->r;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (status < 0 || (events & UV_READABLE)) {
        rfd = p->fd; /* on an error, let c-ares read it and see the failure */
    }
    if (status < 0 || (events & UV_WRITABLE)) {
        wfd = p->fd;
    }
    process(r, rfd, wfd);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    stp_resolver_t *r = data;
    pollh_t **pp = &r->polls, *p;
    while ((p = *pp) != NULL && p->fd != fd) {
        pp = &p->next;
    }
    if (!readable && !writable) {
        if (p != NULL) {
            *pp = p->next;
            uv_poll_stop(&p->h);
            uv_close((uv_handle_t *)&p->h, on_handle_closed);
        }
        return;
    }
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL || uv_poll_init_socket(r->loop, &p->h, fd) != 0) {
            free(p); /* c-ares times the query out */
            return;
        }
        p->fd = fd;
        p->r = r;
        p->h.data = r;
        p->next = r->polls;
        r->polls = p;
        r->handles++;
    }
    uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

static void on_timer(uv_timer_t *t)
{
    stp_resolver_t *r = t->data;
    process(r, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

static void rearm_timer(stp_resolver_t *r)
{
    struct timeval tv, *tvp;
    if (r->closing || !r->ares_live) {
        return;
    }
    tvp = ares_timeout(r->channel, NULL, &tv);
    if (tvp == NULL) {
        uv_timer_stop(&r->timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + (uint64_t)(tvp->tv_usec + 999) / 1000;
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

stp_resolver_t *stp_resolver_new(uv_loop_t *loop, const char *server, unsigned timeout_ms,
                                 char *err, size_t errlen)
{
    stp_resolver_t *r = calloc(1, sizeof(*r));
    struct ares_options o;
    int rc;

    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->loop = loop;
    memset(&o, 0, sizeof(o));
    /* Two tries, each half the budget; c-ares retries over TCP by itself
     * when an answer is truncated. NOCHECKRESP: SERVFAIL and REFUSED reach
     * us as answers instead of being retried and turned into errors. */
    o.flags = ARES_FLAG_NOCHECKRESP;
    o.timeout = (int)(timeout_ms / 2 > 0 ? timeout_ms / 2 : 1);
    o.tries = 2;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = r;
    rc = ares_init_options(&r->channel, &o,
                           ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                               ARES_OPT_SOCK_STATE_CB);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        free(r);
        return NULL;
    }
    if (server != NULL && server[0] != '\0' &&
        (rc = ares_set_servers_ports_csv(r->channel, server)) != ARES_SUCCESS) {
        snprintf(err, errlen, "resolver '%s': %s", server, ares_strerror(rc));
        ares_destroy(r->channel);
        free(r);
        return NULL;
    }
    r->ares_live = 1;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->handles = 1;
    return r;
}

void stp_resolver_close(stp_resolver_t *r)
{
    if (r == NULL || r->closing) {
        return;
    }
    r->closing = 1;
    if (r->depth > 0) {
        r->close_pending = 1;
        return;
    }
    destroy(r);
}

static void destroy(stp_resolver_t *r)
{
    r->close_pending = 0;
    /* ares_destroy runs the pending callbacks (ARES_EDESTRUCTION) and the
     * socket-state callback for each socket, which closes our polls. */
    ares_destroy(r->channel);
    r->ares_live = 0;
    while (r->polls != NULL) {
        pollh_t *p = r->polls;
        r->polls = p->next;
        uv_poll_stop(&p->h);
        uv_close((uv_handle_t *)&p->h, on_handle_closed);
    }
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

/* ---- results ---- */

void stp_dns_result_free(stp_dns_result_t *res)
{
    free(res);
}

static const void *pool_add(stp_dns_result_t *res, const void *p, size_t n)
{
    if (n > sizeof(res->pool) - res->pool_len) {
        return NULL;
    }
    uint8_t *at = res->pool + res->pool_len;
    memcpy(at, p, n);
    res->pool_len += n;
    return at;
}

static void finish(job_t *job)
{
    stp_dns_result_t *res = job->res;
    if (job->kind == JOB_ADDRS) {
        for (size_t i = 0; i < job->nv6 && res->naddr < STP_RESOLVER_MAX_ADDR; i++) {
            res->addr[res->naddr++] = job->v6[i];
        }
        if (res->naddr > 0) {
            res->status = STP_DNS_OK;
            res->why = "ok";
        } else if (job->worst != STP_DNS_OK) {
            res->status = job->worst;
            res->why = job->worst_why;
        } else if (job->nx_count == 2) {
            res->status = STP_DNS_NXDOMAIN;
            res->why = "no such domain";
        } else {
            res->status = STP_DNS_NODATA;
            res->why = "no address records";
        }
    }
    res->secure = job->secure_all && stp_dns_answered(res->status);
    stp_dns_cb cb = job->cb;
    void *arg = job->arg;
    free(job);
    cb(res, arg);
}

/* Insertion sort by preference: stable, so equal preferences keep the
 * answer's order (the resolver's shuffling is the load balancing). */
static void sort_mx(stp_mx_t *mx, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        stp_mx_t t = mx[i];
        size_t j = i;
        while (j > 0 && mx[j - 1].preference > t.preference) {
            mx[j] = mx[j - 1];
            j--;
        }
        mx[j] = t;
    }
}

/* Fills the job's result from one answer of `type` (the answer's status is known OK/NODATA). */
static void collect(job_t *job, const stp_dns_msg_t *m, uint16_t type, const char *final)
{
    stp_dns_result_t *res = job->res;
    for (size_t i = 0; i < m->nrr; i++) {
        const stp_dns_rr_t *rr = &m->rr[i];
        if (rr->type != type || rr->rclass != STP_DNS_C_IN || !stp_dns_name_eq(rr->name, final)) {
            continue;
        }
        switch (type) {
        case STP_DNS_T_MX: {
            size_t hl = strlen(rr->target);
            if (res->nmx < STP_RESOLVER_MAX_MX && hl < sizeof(res->mx[0].host)) {
                res->mx[res->nmx].preference = rr->u.mx.preference;
                memcpy(res->mx[res->nmx].host, rr->target, hl + 1);
                res->nmx++;
            }
            break;
        }
        case STP_DNS_T_A:
        case STP_DNS_T_AAAA: {
            struct sockaddr_storage ss;
            memset(&ss, 0, sizeof(ss));
            if (type == STP_DNS_T_A) {
                struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
                sin->sin_family = AF_INET;
                sin->sin_port = htons(job->port);
                memcpy(&sin->sin_addr, rr->u.a, 4);
                if (res->naddr < STP_RESOLVER_MAX_ADDR) {
                    res->addr[res->naddr++] = ss;
                }
            } else {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(job->port);
                memcpy(&sin6->sin6_addr, rr->u.aaaa, 16);
                if (job->nv6 < STP_RESOLVER_MAX_ADDR) {
                    job->v6[job->nv6++] = ss;
                }
            }
            break;
        }
        case STP_DNS_T_TLSA:
            if (res->ntlsa < STP_RESOLVER_MAX_TLSA) {
                const void *d = pool_add(res, rr->data, rr->data_len);
                if (d != NULL) {
                    res->tlsa[res->ntlsa++] = (stp_dane_tlsa_t){
                        rr->u.tlsa.usage, rr->u.tlsa.selector, rr->u.tlsa.mtype, d, rr->data_len};
                }
            }
            break;
        case STP_DNS_T_TXT:
            if (res->ntxt < STP_RESOLVER_MAX_TXT) {
                const void *d = pool_add(res, rr->data, rr->data_len);
                if (d != NULL) {
                    res->txt[res->ntxt++] = (stp_txt_t){d, rr->data_len};
                }
            }
            break;
        default:
            break;
        }
    }
}

/* Turns one c-ares completion into a status and records. */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    query_t *q = arg;
    job_t *job = q->job;
    uint16_t type = q->type;
    stp_dns_result_t *res = job->res;
    stp_dns_status_t st = STP_DNS_ERROR;
    const char *why = "error";
    int secure = 0, nx = 0;
    stp_dns_msg_t *m = NULL;
    free(q);

    if (status == ARES_SUCCESS) {
        m = malloc(sizeof(*m));
        if (m == NULL) {
            why = "out of memory";
        } else if (stp_dns_msg_parse(m, abuf, (size_t)alen) != 0) {
            why = m->error; /* static */
        } else if (m->qtype != type) {
            why = "answer to another question";
        } else if (m->rcode == STP_DNS_RCODE_SERVFAIL) {
            st = STP_DNS_SERVFAIL;
            why = "SERVFAIL (DNSSEC bogus or resolver failure)";
        } else if (m->rcode == STP_DNS_RCODE_NXDOMAIN) {
            st = STP_DNS_NXDOMAIN;
            why = "no such domain";
            secure = m->ad;
            nx = 1;
        } else if (m->rcode != STP_DNS_RCODE_NOERROR) {
            why = m->rcode == STP_DNS_RCODE_REFUSED   ? "REFUSED"
                  : m->rcode == STP_DNS_RCODE_FORMERR ? "FORMERR"
                                                      : "unexpected RCODE";
        } else if (type == STP_DNS_T_CNAME) {
            /* The alias record owned by the name asked, not followed (a
             * longer chain in the answer says nothing about this link). */
            secure = m->ad;
            st = STP_DNS_NODATA;
            why = "not an alias";
            for (size_t i = 0; i < m->nrr; i++) {
                const stp_dns_rr_t *rr = &m->rr[i];
                size_t tl = strlen(rr->target);
                if (rr->type == STP_DNS_T_CNAME && rr->rclass == STP_DNS_C_IN &&
                    stp_dns_name_eq(rr->name, res->name) && tl < sizeof(res->target)) {
                    memcpy(res->target, rr->target, tl + 1);
                    st = STP_DNS_OK;
                    why = "ok";
                    break;
                }
            }
        } else {
            const char *final = stp_dns_msg_final_name(m);
            if (final == NULL) {
                why = "CNAME chain loops or is too long";
            } else {
                secure = m->ad;
                if (type != STP_DNS_T_DNSKEY) { /* A and AAAA: the same chain twice */
                    size_t fl = strlen(final);
                    if (fl < sizeof(res->name)) {
                        memcpy(res->name, final, fl + 1);
                    }
                }
                size_t before = res->nmx + res->naddr + job->nv6 + res->ntlsa + res->ntxt;
                collect(job, m, type, final);
                size_t after = res->nmx + res->naddr + job->nv6 + res->ntlsa + res->ntxt;
                int has_dnskey = 0;
                if (type == STP_DNS_T_DNSKEY) {
                    has_dnskey = m->ancount > 0;
                }
                if (after > before || has_dnskey) {
                    st = STP_DNS_OK;
                    why = "ok";
                } else {
                    st = STP_DNS_NODATA;
                    why = "no records of that type";
                }
            }
        }
    } else if (status == ARES_ETIMEOUT) {
        st = STP_DNS_TIMEOUT;
        why = "timed out";
    } else if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        st = STP_DNS_CANCELLED;
        why = "cancelled";
    } else {
        why = ares_strerror(status);
    }
    free(m);

    /* A result is secure when every answer it is made of validated. An
     * answer that failed (SERVFAIL, timeout...) gives no records and no
     * verdict: for addresses the other family's answer stands alone (as in
     * Postfix), or the whole lookup fails (finish) and is never secure. */
    if (stp_dns_answered(st)) {
        job->secure_all &= secure;
    }
    if (job->kind == JOB_ADDRS) {
        if (!stp_dns_answered(st) && job->worst == STP_DNS_OK) {
            job->worst = st;
            job->worst_why = why;
        }
        job->nx_count += nx;
    } else {
        res->status = st;
        res->why = why;
        if (job->kind == JOB_MX && st == STP_DNS_OK) {
            sort_mx(res->mx, res->nmx);
            size_t keep = 0;
            for (size_t i = 0; i < res->nmx; i++) {
                if (strcmp(res->mx[i].host, ".") != 0) {
                    res->mx[keep++] = res->mx[i];
                }
            }
            if (keep == 0) {
                res->null_mx = 1; /* RFC 7505: only "." */
                why = res->why = "null MX: the domain accepts no mail";
            }
            res->nmx = keep;
        } else if (job->kind == JOB_MX && st == STP_DNS_NODATA) {
            /* RFC 5321 §5.1: no MX, the domain itself is the only host. The
             * name is the end of any CNAME chain, in presentation form: with
             * \DDD escapes it may not fit where an MX host goes. */
            size_t nl = strlen(res->name);
            if (nl >= sizeof(res->mx[0].host)) {
                res->status = STP_DNS_ERROR;
                res->why = "no MX, and the name (after CNAMEs) is too long for a mail host";
            } else {
                res->status = STP_DNS_OK;
                res->why = "no MX: the domain's own address records";
                res->implicit_mx = 1;
                res->nmx = 1;
                res->mx[0].preference = 0;
                memcpy(res->mx[0].host, res->name, nl + 1);
            }
        }
    }
    if (--job->pending == 0) {
        finish(job);
    }
}

static int start_query(job_t *job, const char *name, uint16_t type)
{
    uint8_t buf[600];
    size_t n = stp_dns_query_build(buf, sizeof(buf), 0, name, type);
    query_t *q = malloc(sizeof(*q));
    if (n == 0 || q == NULL) {
        free(q);
        return -1;
    }
    q->job = job;
    q->type = type;
    job->pending++;
    ares_send(job->r->channel, buf, (int)n, on_answer, q);
    return 0;
}

static job_t *new_job(stp_resolver_t *r, job_kind_t kind, const char *name, stp_dns_cb cb,
                      void *arg)
{
    if (r->closing || strlen(name) >= sizeof(((stp_dns_result_t *)0)->name)) {
        return NULL;
    }
    job_t *job = calloc(1, sizeof(*job));
    stp_dns_result_t *res = calloc(1, sizeof(*res));
    if (job == NULL || res == NULL) {
        free(job);
        free(res);
        return NULL;
    }
    job->r = r;
    job->kind = kind;
    job->cb = cb;
    job->arg = arg;
    job->res = res;
    job->secure_all = 1;
    job->worst = STP_DNS_OK;
    size_t nl = strlen(name);
    if (nl > 1 && name[nl - 1] == '.') {
        nl--;
    }
    memcpy(res->name, name, nl);
    res->name[nl] = '\0';
    return job;
}

/*
 * Starts the job's queries. The user's callback must never run inside the
 * call that started the job (resolver.h promises it), but ares_send can
 * complete a query at once (no server, a send error). So the job holds one
 * extra pending count, dropped from a zero-delay timer on the next loop
 * iteration: the job finishes from the loop, whatever c-ares did.
 */
typedef struct {
    uv_timer_t t;
    job_t *job;
} defer_t;

static void on_deferred_closed(uv_handle_t *h)
{
    free(h);
}

static void on_deferred(uv_timer_t *t)
{
    defer_t *d = (defer_t *)t;
    job_t *job = d->job;
    uv_close((uv_handle_t *)t, on_deferred_closed);
    if (--job->pending == 0) {
        finish(job);
    }
}

static int run_job(job_t *job, const char *n1, uint16_t t1, const char *n2, uint16_t t2)
{
    stp_resolver_t *r = job->r;
    defer_t *d = malloc(sizeof(*d));
    if (d == NULL) {
        free(job->res);
        free(job);
        return -1;
    }
    uint8_t probe[600];
    if (stp_dns_query_build(probe, sizeof(probe), 0, n1, t1) == 0 ||
        (n2 != NULL && stp_dns_query_build(probe, sizeof(probe), 0, n2, t2) == 0)) {
        free(d);
        free(job->res);
        free(job);
        return -1;
    }
    job->pending = 1; /* held until the loop runs on_deferred */
    start_query(job, n1, t1);
    if (n2 != NULL) {
        start_query(job, n2, t2);
    }
    uv_timer_init(r->loop, &d->t);
    d->job = job;
    uv_timer_start(&d->t, on_deferred, 0, 0);
    rearm_timer(r);
    return 0;
}

int stp_resolver_mx(stp_resolver_t *r, const char *domain, stp_dns_cb cb, void *arg)
{
    job_t *job = new_job(r, JOB_MX, domain, cb, arg);
    return job ? run_job(job, job->res->name, STP_DNS_T_MX, NULL, 0) : -1;
}

int stp_resolver_addrs(stp_resolver_t *r, const char *host, uint16_t port, stp_dns_cb cb, void *arg)
{
    job_t *job = new_job(r, JOB_ADDRS, host, cb, arg);
    if (job == NULL) {
        return -1;
    }
    job->port = port;
    return run_job(job, job->res->name, STP_DNS_T_A, job->res->name, STP_DNS_T_AAAA);
}

int stp_resolver_tlsa(stp_resolver_t *r, const char *host, uint16_t port, stp_dns_cb cb, void *arg)
{
    char name[600];
    size_t hl = strlen(host);
    if (hl > 0 && host[hl - 1] == '.') {
        hl--;
    }
    int n = snprintf(name, sizeof(name), "_%u._tcp.%.*s", (unsigned)port, (int)hl, host);
    if (n < 0 || (size_t)n >= sizeof(name)) {
        return -1;
    }
    job_t *job = new_job(r, JOB_TLSA, name, cb, arg);
    return job ? run_job(job, job->res->name, STP_DNS_T_TLSA, NULL, 0) : -1;
}

int stp_resolver_txt(stp_resolver_t *r, const char *name, stp_dns_cb cb, void *arg)
{
    job_t *job = new_job(r, JOB_TXT, name, cb, arg);
    return job ? run_job(job, job->res->name, STP_DNS_T_TXT, NULL, 0) : -1;
}

int stp_resolver_cname(stp_resolver_t *r, const char *name, stp_dns_cb cb, void *arg)
{
    job_t *job = new_job(r, JOB_CNAME, name, cb, arg);
    return job ? run_job(job, job->res->name, STP_DNS_T_CNAME, NULL, 0) : -1;
}

int stp_resolver_check_dnssec(stp_resolver_t *r, const char *probe, stp_dns_cb cb, void *arg)
{
    const char *name = probe != NULL && probe[0] != '\0' ? probe : ".";
    job_t *job = new_job(r, JOB_DNSKEY, name, cb, arg);
    return job ? run_job(job, name, STP_DNS_T_DNSKEY, NULL, 0) : -1;
}

typedef struct {
    int done, validates;
    char *why;
    size_t whylen;
    const char *probe;
} sync_check_t;

int stp_resolver_dnssec_verdict(const stp_dns_result_t *res, const char *probe, char *why,
                                size_t whylen)
{
    const char *name = probe != NULL && probe[0] != '\0' ? probe : ".";
    if (res->status == STP_DNS_OK && res->secure) {
        snprintf(why, whylen, "the DNSKEY of %s validated (AD bit set)", name);
        return 1;
    }
    if (res->status == STP_DNS_OK) {
        snprintf(why, whylen, "no AD bit on the DNSKEY of %s: the resolver does not validate DNSSEC",
                 name);
    } else {
        snprintf(why, whylen, "DNSKEY of %s: %s", name, res->why);
    }
    return 0;
}

static void on_sync_check(stp_dns_result_t *res, void *arg)
{
    sync_check_t *c = arg;
    c->done = 1;
    c->validates = stp_resolver_dnssec_verdict(res, c->probe, c->why, c->whylen);
    stp_dns_result_free(res);
}

int stp_resolver_validates(const char *server, unsigned timeout_ms, const char *probe, char *why,
                           size_t whylen)
{
    uv_loop_t loop;
    sync_check_t c = {0, 0, why, whylen, probe != NULL && probe[0] != '\0' ? probe : "."};
    char err[256];

    if (uv_loop_init(&loop) != 0) {
        snprintf(why, whylen, "cannot make a loop");
        return 0;
    }
    stp_resolver_t *r = stp_resolver_new(&loop, server, timeout_ms, err, sizeof(err));
    if (r == NULL) {
        snprintf(why, whylen, "%s", err);
    } else {
        if (stp_resolver_check_dnssec(r, probe, on_sync_check, &c) != 0) {
            snprintf(why, whylen, "invalid probe name '%s'", c.probe);
        } else {
            uv_run(&loop, UV_RUN_DEFAULT); /* until the check is done (bounded by timeout_ms) */
        }
        stp_resolver_close(r);
        uv_run(&loop, UV_RUN_DEFAULT); /* the close callbacks */
    }
    uv_loop_close(&loop);
    return c.validates;
}
