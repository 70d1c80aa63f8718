/*
 * nexthop: the MX dance of route = mx (see nexthop.h).
 *
 * One attempt is a chain of steps, each waiting on one thing (a DNS answer,
 * the MTA-STS fetch, a TCP connect, an SMTP reply, the TLS handshake) under
 * one step timer, plus a timer over the whole attempt:
 *
 *   MX -> [_mta-sts TXT -> cache -> (fetch)] -> for each MX host:
 *       addresses -> [TLSA at the CNAME-expanded name, then at the MX host]
 *                 '-> (insecure CNAME chain) [its first CNAME -> TLSA at the MX host]
 *       -> requirement -> for each address:
 *           connect -> 220 -> EHLO -> STARTTLS -> handshake -> verify -> EHLO
 *                              '-> (EHLO refused, plaintext allowed) HELO
 *
 * A host or address that fails leaves its reply in `err` and the next one is
 * tried; a policy failure (4.7.x) is kept over later connection errors, so
 * the legacy MTA learns the reason that matters. Nothing of the envelope is
 * sent here: the caller replays MAIL FROM once the connection is ready.
 */
#include "proxy/nexthop.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/dns_msg.h"
#include "policy/domain_policy.h"
#include "policy/mta_sts.h"
#include "proxy/domain_state.h"
#include "proxy/ehlo.h"
#include "proxy/log.h"
#include "proxy/mta_sts_fetch.h"
#include "proxy/resolver.h"
#include "proxy/session_metrics.h"
#include "proxy/smtp_reply.h"
#include "proxy/sts_refresh.h"
#include "tls/dane.h"
#include "tls/tls_ctx.h"
#include "tls/tls_verify.h"

#define SMTP_PORT 25

/* What the current MX host must give. */
typedef enum { R_NONE = 0, R_MAY, R_ENCRYPT, R_VERIFY, R_SECURE, R_DANE, R_STS } req_t;

typedef enum {
    P_MX = 1,
    P_STS_TXT,
    P_STS_ADDR,
    P_STS_FETCH,
    P_ADDRS,
    P_CNAME,
    P_TLSA,
    P_CONNECT,
    P_GREETING,
    P_EHLO1,
    P_HELO,
    P_STARTTLS,
    P_HANDSHAKE,
    P_EHLO2,
    P_DONE,
} phase_t;

typedef enum { STS_NONE = 0, STS_POLICY, STS_TEMPFAIL } sts_state_t;

struct stp_nexthop_s {
    uv_loop_t *loop;
    const stp_config_t *cf;
    const stp_listener_conf_t *lc;
    SSL_CTX *ctx;
    SSL_CTX *own_ctx; /* the policy's ca_file, when it has one */
    char domain[256];
    char id[24];
    stp_nexthop_cb cb;
    void *arg;

    stp_conn_t *conn;
    int conn_live; /* initialised and its close callback not yet run */
    stp_resolver_t *res;
    int dns_pending;
    stp_mta_sts_fetch_t *fetch;
    uv_timer_t step_timer, total_timer;
    int handles; /* timers not yet closed */
    int finishing, delivered;

    const stp_domain_policy_t *pol;
    int remembered;
    int64_t remembered_since;

    stp_mx_t mx[STP_RESOLVER_MAX_MX];
    size_t nmx;
    int imx; /* current host, -1 before the first */
    int mx_secure;

    struct sockaddr_storage addr[STP_RESOLVER_MAX_ADDR];
    size_t naddr, iaddr;
    int addr_secure;
    char expanded[1024]; /* the current host after its CNAMEs, if they validated and it differs */
    int at_expanded;     /* the TLSA base domain is `expanded` (asked there, or found there) */
    int partial;         /* the host's own CNAME validated, its expansion did not: TLSA at
                          * the host only, the expansion no base and no reference name */
    stp_dns_result_t *tlsa; /* the current host's secure TLSA records, or NULL */

    sts_state_t sts;
    stp_mta_sts_policy_t sts_policy;
    char sts_id[STP_MTA_STS_ID_MAX + 1];
    char sts_why[400];

    req_t req;
    const char *source;
    int plain_retry; /* this connection is the plaintext retry (may) */
    int plain_next;  /* the next connection is (same address again) */
    int no_esmtp;    /* the host refused EHLO: HELO, no extensions, so no TLS */
    phase_t phase;
    unsigned caps;
    size_t extra;
    stp_reply_parser_t rp;

    char err[768]; /* the reply so far if everything fails */
    int err_policy;
    int temp_seen; /* a host or address failed in a way a later try may not */
    stp_nexthop_result_t result;
};

static void next_mx(stp_nexthop_t *nh);
static void next_addr(stp_nexthop_t *nh);
static void finish(stp_nexthop_t *nh, stp_nexthop_status_t st);

static const char *req_name(req_t r)
{
    static const char *const n[] = {"none",   "may",  "encrypt", "verify",
                                    "secure", "dane", "mta-sts"};
    return n[r];
}

static const char *mx_host(const stp_nexthop_t *nh)
{
    return nh->imx >= 0 && (size_t)nh->imx < nh->nmx ? nh->mx[nh->imx].host : nh->domain;
}

/* The TLSA base domain (RFC 7672 2.2.2): the MX host's CNAME-expanded name
 * where TLSA records are asked for or were found, else the MX host. */
static const char *tlsa_base(const stp_nexthop_t *nh)
{
    return nh->at_expanded ? nh->expanded : mx_host(nh);
}

/* For the log, where TLSA records were used and the MX host is a CNAME:
 * " tlsa_base=NAME" (its expansion), or " tlsa_base=HOST expansion=insecure"
 * (the MX host, whose expansion did not validate); else "". */
static const char *base_note(const stp_nexthop_t *nh, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (nh->at_expanded && nh->tlsa) {
        snprintf(buf, cap, " tlsa_base=%s", nh->expanded);
    } else if (nh->partial && nh->tlsa) {
        snprintf(buf, cap, " tlsa_base=%s expansion=insecure", mx_host(nh));
    }
    return buf;
}

/* The reason fmt gives, into text, and escaped for the log into esc (both `size` bytes). */
static void format_reason(char *text, char *esc, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void format_reason(char *text, char *esc, size_t size, const char *fmt, va_list ap)
{
    vsnprintf(text, size, fmt, ap);
    stp_log_escape(esc, size, text, strlen(text));
}

/* What a failure recorded by set_err is. */
typedef enum {
    F_CONN = 0,    /* the host or address failed: a policy failure says more */
    F_POLICY,      /* the policy refused the host (4.7.x) */
    F_POLICY_TEMP, /* the policy could not be learnt (a DNS failure): a later
                    * try may succeed, so it is never a bounce */
} failure_t;

/* Records why the current host or address failed; `code` is "451 4.4.1"
 * etc. A policy failure is not overwritten by a later non-policy one. */
static void set_err(stp_nexthop_t *nh, const char *code, failure_t kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err(stp_nexthop_t *nh, const char *code, failure_t kind, const char *fmt, ...)
{
    char text[600], esc[600];
    va_list ap;
    va_start(ap, fmt);
    format_reason(text, esc, sizeof(text), fmt, ap);
    va_end(ap);
    stp_log(STP_LOG_INFO, "mx_attempt id=%s domain=%s mx=%s addr=%s result=failed reason=\"%s\"",
            nh->id, nh->domain, mx_host(nh), nh->result.addr[0] ? nh->result.addr : "-", esc);
    /* on_failure = reject bounces what the policy refused (4.7.x becomes
     * 5.7.x) only when every host was refused so: a DNS failure, or a host
     * that could not be reached, may go better at the legacy MTA's next try
     * (a resolver outage, or the preferred MX down, must not bounce mail),
     * whichever host failed first. */
    if (kind == F_POLICY_TEMP || (kind == F_CONN && code[0] == '4')) {
        nh->temp_seen = 1;
        if (strncmp(nh->err, "550 5.7.", 8) == 0) {
            memcpy(nh->err, "451 4", 5); /* the refusal said so far, deferred */
        }
    }
    if (nh->err_policy && kind == F_CONN) {
        return;
    }
    int reject = kind == F_POLICY && nh->lc->on_failure == STP_ON_FAILURE_REJECT &&
                 !nh->temp_seen && strncmp(code, "451 4.7.", 8) == 0;
    if (reject) {
        snprintf(nh->err, sizeof(nh->err), "550 5%s %s\r\n", code + 5, text);
    } else {
        snprintf(nh->err, sizeof(nh->err), "%s %s\r\n", code, text);
    }
    nh->err_policy = kind != F_CONN;
}

/* A policy refusal (`kind` F_POLICY or F_POLICY_TEMP): logged as a decision and counted. */
static void vrefuse(stp_nexthop_t *nh, const char *code, failure_t kind, const char *down_reason,
                    const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static void vrefuse(stp_nexthop_t *nh, const char *code, failure_t kind, const char *down_reason,
                    const char *fmt, va_list ap)
{
    char text[600], esc[600], note[1100];
    format_reason(text, esc, sizeof(text), fmt, ap);
    stp_log(STP_LOG_WARN,
            "mx_decision id=%s domain=%s mx=%s%s addr=%s source=%s policy=%s outcome=refused "
            "reason=\"%s\"",
            nh->id, nh->domain, mx_host(nh), base_note(nh, note, sizeof(note)),
            nh->result.addr[0] ? nh->result.addr : "-", nh->source, req_name(nh->req), esc);
    stp_sm_policy(nh->lc->name, nh->source, "refused");
    if (down_reason) {
        stp_sm_downgrade(nh->lc->name, req_name(nh->req), down_reason);
    }
    if (nh->remembered && down_reason) {
        int64_t since = nh->remembered_since;
        stp_log(STP_LOG_WARN,
                "possible_downgrade id=%s domain=%s mx=%s addr=%s remembered_since=%lld "
                "reason=\"%s\"",
                nh->id, nh->domain, mx_host(nh), nh->result.addr[0] ? nh->result.addr : "-",
                (long long)since, esc);
    }
    set_err(nh, code, kind, "%s", text);
}

static void refuse(stp_nexthop_t *nh, const char *code, const char *down_reason, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
static void refuse(stp_nexthop_t *nh, const char *code, const char *down_reason, const char *fmt,
                   ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(nh, code, F_POLICY, down_reason, fmt, ap);
    va_end(ap);
}

/* A host refused because a lookup its policy needs failed: 4xx even
 * under on_failure = reject. */
static void refuse_temp(stp_nexthop_t *nh, const char *code, const char *down_reason,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void refuse_temp(stp_nexthop_t *nh, const char *code, const char *down_reason,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vrefuse(nh, code, F_POLICY_TEMP, down_reason, fmt, ap);
    va_end(ap);
}

/*
 * Under `testing = yes`: logs and counts what enforcement would have
 * refused, and returns 1 (the caller goes on). Otherwise returns 0 and the
 * caller refuses.
 */
static int would_refuse(stp_nexthop_t *nh, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int would_refuse(stp_nexthop_t *nh, const char *fmt, ...)
{
    if (!nh->lc->testing) {
        return 0;
    }
    char text[600], esc[600];
    va_list ap;
    va_start(ap, fmt);
    format_reason(text, esc, sizeof(text), fmt, ap);
    va_end(ap);
    stp_log(STP_LOG_WARN,
            "mx_decision id=%s domain=%s mx=%s source=%s policy=%s "
            "outcome=testing-override would_refuse=\"%s\"",
            nh->id, nh->domain, mx_host(nh), nh->source, req_name(nh->req), esc);
    stp_sm_policy(nh->lc->name, nh->source, "would_refuse");
    return 1;
}

/*
 * An MTA-STS policy in mode testing asks for failures to be reported,
 * not acted on (RFC 8461 5): logs and counts what its enforcement would
 * have refused. Not where DANE authenticates the host (it takes
 * precedence, RFC 8461 2).
 */
static void sts_testing_failure(stp_nexthop_t *nh, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sts_testing_failure(stp_nexthop_t *nh, const char *fmt, ...)
{
    if (nh->sts != STS_POLICY || nh->sts_policy.mode != STP_MTA_STS_MODE_TESTING ||
        nh->req == R_DANE) {
        return;
    }
    char text[600], esc[600];
    va_list ap;
    va_start(ap, fmt);
    format_reason(text, esc, sizeof(text), fmt, ap);
    va_end(ap);
    stp_log(STP_LOG_WARN,
            "mx_decision id=%s domain=%s mx=%s source=mta-sts mode=testing "
            "outcome=would_refuse reason=\"%s\"",
            nh->id, nh->domain, mx_host(nh), esc);
    stp_sm_policy(nh->lc->name, "mta-sts", "would_refuse");
}

/* ---- lifetime ---- */

static void maybe_free(stp_nexthop_t *nh)
{
    if (nh->delivered && nh->handles == 0 && nh->dns_pending == 0 && !nh->conn_live) {
        SSL_CTX_free(nh->own_ctx);
        free(nh);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    stp_nexthop_t *nh = h->data;
    nh->handles--;
    maybe_free(nh);
}

static void on_deliver(uv_timer_t *t)
{
    stp_nexthop_t *nh = t->data;
    nh->delivered = 1;
    nh->cb(&nh->result, nh->arg);
    /* Nothing of the caller's is touched from here on. */
    stp_resolver_close(nh->res); /* pending DNS callbacks run now, as cancelled */
    nh->res = NULL;
    uv_close((uv_handle_t *)&nh->step_timer, on_timer_closed);
    uv_close((uv_handle_t *)&nh->total_timer, on_timer_closed);
}

/* The callback runs once the conn is handed over (OK) or closed. */
static void deliver_when_ready(stp_nexthop_t *nh)
{
    if (!nh->finishing || nh->delivered) {
        return;
    }
    if (nh->result.status != STP_NEXTHOP_OK && nh->conn_live) {
        return; /* on_conn_close comes back here */
    }
    uv_timer_stop(&nh->total_timer);
    uv_timer_start(&nh->step_timer, on_deliver, 0, 0);
}

static void finish(stp_nexthop_t *nh, stp_nexthop_status_t st)
{
    if (nh->finishing) {
        return;
    }
    nh->finishing = 1;
    nh->phase = P_DONE;
    nh->result.status = st;
    uv_timer_stop(&nh->step_timer);
    uv_timer_stop(&nh->total_timer);
    if (nh->fetch) {
        stp_mta_sts_fetch_cancel(nh->fetch);
        nh->fetch = NULL;
    }
    stp_dns_result_free(nh->tlsa);
    nh->tlsa = NULL;
    if (st == STP_NEXTHOP_OK) {
        stp_conn_read_stop(nh->conn);
        nh->conn_live = 0; /* the caller's from now on */
    } else {
        if (st == STP_NEXTHOP_FAILED) {
            snprintf(nh->result.reply, sizeof(nh->result.reply), "%s",
                     nh->err[0] ? nh->err : "451 4.4.0 delivery attempt failed\r\n");
        }
        if (nh->conn_live) {
            stp_conn_close(nh->conn);
        }
    }
    deliver_when_ready(nh);
}

static void fail(stp_nexthop_t *nh)
{
    char esc[800];
    if (nh->err[0] == '\0') {
        snprintf(nh->err, sizeof(nh->err), "451 4.4.0 delivery attempt failed\r\n");
    }
    size_t n = strlen(nh->err);
    stp_log_escape(esc, sizeof(esc), nh->err, n >= 2 ? n - 2 : n);
    /* The outcome is what the legacy MTA is told: it retries a 4xx only. */
    stp_log(STP_LOG_WARN, "mx_decision id=%s domain=%s source=%s policy=%s outcome=%s reply=\"%s\"",
            nh->id, nh->domain, nh->source ? nh->source : "config", req_name(nh->req),
            nh->err[0] == '5' ? "rejected" : "deferred", esc);
    finish(nh, STP_NEXTHOP_FAILED);
}

/* ---- timers ---- */

static void on_total_timeout(uv_timer_t *t)
{
    stp_nexthop_t *nh = t->data;
    set_err(nh, "451 4.4.7", F_CONN, "no mail server of %s could be reached in time", nh->domain);
    fail(nh);
}

static void on_step_timeout(uv_timer_t *t);

static void step_timer(stp_nexthop_t *nh, uint64_t ms)
{
    uv_timer_start(&nh->step_timer, on_step_timeout, ms, 0);
}

/* ---- connections ---- */

static void drop_conn(stp_nexthop_t *nh)
{
    uv_timer_stop(&nh->step_timer);
    if (nh->conn_live) {
        stp_conn_close(nh->conn); /* on_conn_close goes on with the next address */
    } else {
        next_addr(nh);
    }
}

static void on_step_timeout(uv_timer_t *t)
{
    stp_nexthop_t *nh = t->data;
    static const char *const what[] = {
        [P_CONNECT] = "connecting",
        [P_GREETING] = "waiting for the greeting",
        [P_EHLO1] = "waiting for the EHLO reply",
        [P_HELO] = "waiting for the HELO reply",
        [P_STARTTLS] = "waiting for the STARTTLS reply",
        [P_HANDSHAKE] = "in the TLS handshake",
        [P_EHLO2] = "waiting for the EHLO reply",
    };
    if (nh->phase < P_CONNECT || nh->phase > P_EHLO2) {
        return; /* DNS and the fetch have their own bounds */
    }
    if (nh->phase == P_HANDSHAKE && (nh->req >= R_ENCRYPT || nh->remembered)) {
        refuse(nh, "451 4.7.5", "handshake", "TLS handshake with %s timed out", mx_host(nh));
    } else {
        set_err(nh, nh->phase == P_CONNECT ? "451 4.4.1" : "451 4.4.2", F_CONN,
                "%s [%s] timed out %s", mx_host(nh), nh->result.addr, what[nh->phase]);
    }
    drop_conn(nh);
}

static void send_line(stp_nexthop_t *nh, const char *line, phase_t next, uint64_t ms)
{
    uv_buf_t b[2] = {uv_buf_init((char *)line, (unsigned)strlen(line)), uv_buf_init("\r\n", 2)};
    nh->phase = next;
    if (stp_conn_writev(nh->conn, b, 2) < 0) {
        set_err(nh, "451 4.4.2", F_CONN, "write to %s [%s] failed", mx_host(nh), nh->result.addr);
        drop_conn(nh);
        return;
    }
    step_timer(nh, ms);
}

static void send_ehlo(stp_nexthop_t *nh, phase_t next)
{
    char line[300];
    snprintf(line, sizeof(line), "EHLO %s", nh->cf->hostname);
    send_line(nh, line, next, nh->lc->command_timeout);
}

/* After a refused EHLO: plain SMTP (RFC 5321 3.2), ready at its 250. */
static void send_helo(stp_nexthop_t *nh)
{
    char line[300];
    snprintf(line, sizeof(line), "HELO %s", nh->cf->hostname);
    send_line(nh, line, P_HELO, nh->lc->command_timeout);
}

static void ready(stp_nexthop_t *nh, unsigned caps)
{
    stp_nexthop_result_t *r = &nh->result;
    if (nh->extra) {
        /* Unsolicited bytes after the last reply: the session would read
         * them as answers to its own commands. */
        set_err(nh, "451 4.4.2", F_CONN, "%s sent data nobody asked for", mx_host(nh));
        drop_conn(nh);
        return;
    }
    r->caps = caps;
    r->tls = nh->conn->tls != NULL;
    r->source = nh->source;
    r->level = req_name(nh->req);
    snprintf(r->mx, sizeof(r->mx), "%s", mx_host(nh));
    const char *outcome = !r->tls ? "plaintext" : r->verified ? "tls_verified" : "tls_encrypted";
    char note[1100];
    stp_log(STP_LOG_INFO,
            "mx_decision id=%s domain=%s mx=%s%s addr=%s source=%s policy=%s tls=%s cipher=%s "
            "verified=%s outcome=%s",
            nh->id, nh->domain, r->mx, base_note(nh, note, sizeof(note)), r->addr, r->source,
            r->level, r->version[0] ? r->version : "none", r->cipher[0] ? r->cipher : "none",
            r->verified ? "yes" : "no", outcome);
    stp_sm_policy(nh->lc->name, r->source, outcome);
    finish(nh, STP_NEXTHOP_OK);
}

/* TLS was wanted but did not happen (`why`); `not_offered` says whether
 * the server never offered it (4.7.4) or the attempt failed (4.7.5). */
static void no_tls(stp_nexthop_t *nh, int not_offered, const char *down_reason, const char *why)
{
    /* Opportunistic TLS goes on without it (once more in plaintext after a
     * failed attempt, the injected bytes gone with the connection); `testing`
     * too where a plaintext way is left, but never after an injection: the
     * README promises a refusal then even while testing. */
    int injected = strcmp(down_reason, "injection") == 0;
    int plain_left = not_offered || (!nh->plain_retry && !injected);
    if (nh->req <= R_MAY && !nh->remembered) {
        sts_testing_failure(nh, "%s", why);
    }
    if ((nh->req <= R_MAY && !nh->remembered) || (plain_left && would_refuse(nh, "%s", why))) {
        if (not_offered && nh->no_esmtp) {
            send_helo(nh);
        } else if (not_offered) {
            ready(nh, nh->caps);
        } else if (!nh->plain_retry) {
            /* Once more in plaintext on the same address. */
            stp_log(STP_LOG_INFO,
                    "mx_attempt id=%s domain=%s mx=%s addr=%s retry=plaintext "
                    "reason=\"%s\"",
                    nh->id, nh->domain, mx_host(nh), nh->result.addr, why);
            nh->plain_next = 1;
            nh->iaddr--;
            drop_conn(nh);
        } else {
            set_err(nh, "451 4.4.2", F_CONN, "%s", why);
            drop_conn(nh);
        }
        return;
    }
    if (nh->remembered && nh->req <= R_MAY) {
        nh->source = "remembered";
    }
    refuse(nh, not_offered ? "451 4.7.4" : "451 4.7.5", down_reason, "%s", why);
    drop_conn(nh);
}

static void start_handshake(stp_nexthop_t *nh)
{
    /* A [policy:DOMAIN] ca_file replaces the listener's trust store. */
    if (nh->pol->ca_file[0] && nh->own_ctx == NULL) {
        char err[300];
        nh->own_ctx = stp_tls_ctx_client_new(nh->pol->ca_file, TLS1_2_VERSION, err, sizeof(err));
        if (nh->own_ctx == NULL) {
            set_err(nh, "451 4.3.0", F_CONN, "policy ca_file: %s", err);
            fail(nh);
            return;
        }
    }
    /* SNI is the TLSA base domain (RFC 7672 8.1): the MX host, or its
     * CNAME-expanded name where the TLSA records were found (never an
     * expansion that did not validate). */
    stp_tls_engine_t *e =
        stp_tls_engine_new_client(nh->own_ctx ? nh->own_ctx : nh->ctx, tlsa_base(nh));
    if (e == NULL) {
        set_err(nh, "451 4.3.0", F_CONN, "out of resources");
        drop_conn(nh);
        return;
    }
    stp_tls_verify_prepare(stp_tls_engine_ssl(e));
    nh->phase = P_HANDSHAKE;
    step_timer(nh, nh->lc->handshake_timeout);
    stp_conn_start_tls(nh->conn, e);
}

/* After the handshake: authenticate the server as the requirement says. */
static void check_peer(stp_nexthop_t *nh)
{
    SSL *ssl = stp_tls_engine_ssl(nh->conn->tls);
    char why[600];
    const char *host = mx_host(nh);

    if (nh->req == R_DANE) {
        /* DANE-TA(2) name checks (RFC 7672 3.2.3): the TLSA base domain,
         * the MX host (when the base is its CNAME expansion) and the
         * next-hop domain; an expansion that did not validate is none of
         * them (2.2.2); DANE-EE(3) checks none */
        const char *names[3] = {tlsa_base(nh), nh->domain, host};
        size_t nnames = nh->at_expanded ? 3 : 2;
        stp_dane_result_t d = stp_dane_verify(ssl, nh->tlsa->tlsa, nh->tlsa->ntlsa, names, nnames,
                                              NULL, why, sizeof(why));
        if (d == STP_DANE_OK) {
            nh->result.verified = 1;
        } else if (d == STP_DANE_NO_USABLE) {
            /* Only under dane-only (decide_host), which wants DANE
             * authentication; unusable records (e.g. PKIX usages) give
             * none: defer, as Postfix does */
            if (!would_refuse(nh, "%s (tls = dane-only) for %s", why, host)) {
                refuse(nh, "451 4.7.5", "dane", "%s (tls = dane-only) for %s", why, host);
                drop_conn(nh);
                return;
            }
        } else if (!would_refuse(nh, "DANE verification of %s failed: %s", host, why)) {
            refuse(nh, "451 4.7.5", "dane", "DANE verification of %s failed: %s", host, why);
            drop_conn(nh);
            return;
        }
        send_ehlo(nh, P_EHLO2);
        return;
    }
    const char *names[2];
    size_t n = 0;
    if ((nh->req == R_VERIFY || nh->req == R_SECURE) && nh->pol->servername[0]) {
        names[n++] = nh->pol->servername;
    } else if (nh->req == R_SECURE) {
        names[n++] = nh->domain;
        size_t hl = strlen(host), dl = strlen(nh->domain);
        if (hl > dl && host[hl - dl - 1] == '.' && strcasecmp(host + hl - dl, nh->domain) == 0) {
            names[n++] = host; /* an MX host below the domain */
        }
    } else {
        names[n++] = host;
    }
    stp_verify_result_t vr = stp_tls_verify_peer(ssl, names, n, why, sizeof(why));
    nh->result.verified = vr == STP_VERIFY_OK;
    int enforce = nh->req == R_VERIFY || nh->req == R_SECURE || nh->req == R_STS || nh->remembered;
    if (vr != STP_VERIFY_OK && enforce && nh->req != R_NONE) {
        if (!would_refuse(nh, "certificate: %s", why)) {
            if (nh->remembered && nh->req < R_VERIFY) {
                nh->source = "remembered";
            }
            refuse(nh, "451 4.7.5", "certificate", "certificate verification failed for %s: %s",
                   host, why);
            drop_conn(nh);
            return;
        }
    } else if (vr != STP_VERIFY_OK) {
        sts_testing_failure(nh, "certificate: %s", why);
    }
    send_ehlo(nh, P_EHLO2);
}

static void on_reply(stp_nexthop_t *nh, const stp_reply_t *r)
{
    char why[600];
    const char *host = mx_host(nh);

    uv_timer_stop(&nh->step_timer);
    switch (nh->phase) {
    case P_GREETING:
        if (r->code != 220) {
            set_err(nh, "451 4.4.1", F_CONN, "%s [%s] refused the connection (%d)", host,
                    nh->result.addr, r->code);
            drop_conn(nh);
            return;
        }
        send_ehlo(nh, P_EHLO1);
        return;
    case P_EHLO1:
        if (r->code >= 500 && r->code < 600) {
            /* No ESMTP, so no STARTTLS: HELO where plaintext is allowed,
             * else TLS was not offered (as for a missing STARTTLS). */
            nh->no_esmtp = 1;
            nh->caps = 0;
            if (nh->req == R_NONE || nh->plain_retry) {
                send_helo(nh);
                return;
            }
            snprintf(why, sizeof(why),
                     "TLS is required, but was not offered by host %s (EHLO refused: %d)", host,
                     r->code);
            no_tls(nh, 1, "not_offered", why);
            return;
        }
        if (r->code != 250) {
            set_err(nh, "451 4.4.2", F_CONN, "%s [%s] refused EHLO (%d)", host, nh->result.addr,
                    r->code);
            drop_conn(nh);
            return;
        }
        nh->caps = stp_ehlo_caps(r);
        if (nh->req == R_NONE || nh->plain_retry) {
            ready(nh, nh->caps);
            return;
        }
        if (!(nh->caps & STP_EHLO_STARTTLS)) {
            snprintf(why, sizeof(why), "TLS is required, but was not offered by host %s", host);
            no_tls(nh, 1, "not_offered", why);
            return;
        }
        send_line(nh, "STARTTLS", P_STARTTLS, nh->lc->command_timeout);
        return;
    case P_STARTTLS:
        if (r->code != 220) {
            snprintf(why, sizeof(why), "TLS is required, but host %s refused STARTTLS (%d)", host,
                     r->code);
            no_tls(nh, 1, "starttls_refused", why);
            return;
        }
        if (nh->extra) {
            /* Bytes behind the 220 were sent in plaintext: an injection. */
            snprintf(why, sizeof(why), "%s sent data after its STARTTLS response", host);
            no_tls(nh, 0, "injection", why);
            return;
        }
        start_handshake(nh);
        return;
    case P_HELO:
        if (r->code != 250) {
            set_err(nh, "451 4.4.2", F_CONN, "%s [%s] refused HELO (%d)", host, nh->result.addr,
                    r->code);
            drop_conn(nh);
            return;
        }
        ready(nh, 0);
        return;
    case P_EHLO2:
        if (r->code != 250) {
            set_err(nh, "451 4.4.2", F_CONN, "%s rejected EHLO after TLS (%d)", host, r->code);
            drop_conn(nh);
            return;
        }
        ready(nh, stp_ehlo_caps(r));
        return;
    default:
        set_err(nh, "451 4.4.2", F_CONN, "%s sent an unexpected reply (%d)", host, r->code);
        drop_conn(nh);
        return;
    }
}

/*
 * The next hop spoke or closed between its last EHLO reply and the hand-over
 * (conn.c still decrypts the rest of the read that held that reply): the
 * conn is not the caller's after all. The attempt fails (451 4.4.2, the
 * legacy MTA retries) and its callback waits for the close, so the caller
 * never gets a closed conn it would count twice or not at all.
 */
static int revoke_handover(stp_nexthop_t *nh, const char *what)
{
    if (!nh->finishing || nh->result.status != STP_NEXTHOP_OK || nh->delivered ||
        nh->conn->closing) {
        return 0;
    }
    stp_log(STP_LOG_INFO,
            "mx_attempt id=%s domain=%s mx=%s addr=%s result=failed reason=\"%s after its EHLO "
            "reply\"",
            nh->id, nh->domain, mx_host(nh), nh->result.addr, what);
    nh->result.status = STP_NEXTHOP_FAILED;
    snprintf(nh->result.reply, sizeof(nh->result.reply), "451 4.4.2 %s [%s] %s\r\n",
             mx_host(nh), nh->result.addr, what);
    uv_timer_stop(&nh->step_timer); /* deliver_when_ready starts it again at the close */
    nh->conn_live = 1;
    stp_conn_close(nh->conn);
    return 1;
}

static void on_conn_read(stp_conn_t *c, const char *data, size_t len)
{
    stp_nexthop_t *nh = c->owner;
    if (revoke_handover(nh, "sent data nobody asked for")) {
        return;
    }
    while (len > 0 && !nh->finishing && nh->conn_live && !nh->conn->closing) {
        size_t used = 0;
        int rc = stp_reply_feed(&nh->rp, data, len, &used);
        data += used;
        len -= used;
        if (rc == STP_REPLY_ERROR) {
            set_err(nh, "451 4.4.2", F_CONN, "protocol error from %s: %s", mx_host(nh),
                    nh->rp.error);
            drop_conn(nh);
            return;
        }
        if (rc == STP_REPLY_DONE) {
            nh->extra = len;
            on_reply(nh, &nh->rp.reply);
        }
    }
}

static void on_conn_eof(stp_conn_t *c, const char *err)
{
    stp_nexthop_t *nh = c->owner;
    char why[400];
    if (revoke_handover(nh, "closed the connection")) {
        return;
    }
    if (nh->finishing || !nh->conn_live) {
        stp_conn_close(c);
        return;
    }
    snprintf(why, sizeof(why), "%s [%s] closed the connection%s%s", mx_host(nh), nh->result.addr,
             err ? ": " : "", err ? err : "");
    if (nh->phase == P_HANDSHAKE) {
        no_tls(nh, 0, "handshake", why);
        return;
    }
    set_err(nh, "451 4.4.2", F_CONN, "%s", why);
    drop_conn(nh);
}

static void on_conn_connect(stp_conn_t *c, const char *err)
{
    stp_nexthop_t *nh = c->owner;
    if (nh->finishing) {
        return;
    }
    uv_timer_stop(&nh->step_timer);
    if (err) {
        set_err(nh, "451 4.4.1", F_CONN, "cannot connect to %s [%s]: %s", mx_host(nh),
                nh->result.addr, err);
        drop_conn(nh);
        return;
    }
    stp_conn_tune(c);
    nh->phase = P_GREETING;
    step_timer(nh, nh->lc->greeting_timeout);
    stp_conn_read_start(c);
}

static void on_conn_handshake(stp_conn_t *c, const char *err)
{
    stp_nexthop_t *nh = c->owner;
    char why[600];
    if (nh->finishing) {
        return;
    }
    uv_timer_stop(&nh->step_timer);
    if (err) {
        snprintf(why, sizeof(why), "TLS handshake with %s failed: %s", mx_host(nh), err);
        stp_sm_handshake(nh->lc->name, "client", NULL, 0, 0);
        no_tls(nh, 0, "handshake", why);
        return;
    }
    snprintf(nh->result.version, sizeof(nh->result.version), "%s", stp_tls_engine_version(c->tls));
    snprintf(nh->result.cipher, sizeof(nh->result.cipher), "%s", stp_tls_engine_cipher(c->tls));
    stp_sm_handshake(nh->lc->name, "client", nh->result.version, 1, 0);
    check_peer(nh);
}

static void on_conn_drain(stp_conn_t *c)
{
    (void)c;
}

static void on_conn_close(stp_conn_t *c)
{
    stp_nexthop_t *nh = c->owner;
    nh->conn_live = 0;
    if (nh->finishing) {
        deliver_when_ready(nh);
        maybe_free(nh);
        return;
    }
    next_addr(nh);
}

static const stp_conn_cb_t conn_cb = {
    .on_read = on_conn_read,
    .on_eof = on_conn_eof,
    .on_connect = on_conn_connect,
    .on_handshake = on_conn_handshake,
    .on_drain = on_conn_drain,
    .on_close = on_conn_close,
};

/* Connects to the next address of the current host, or moves on. */
static void next_addr(stp_nexthop_t *nh)
{
    if (nh->finishing) {
        return;
    }
    if (nh->iaddr >= nh->naddr) {
        next_mx(nh);
        return;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&nh->addr[nh->iaddr++];
    stp_sockaddr_str(sa, nh->result.addr, sizeof(nh->result.addr), 1);
    nh->result.version[0] = nh->result.cipher[0] = '\0';
    nh->result.verified = 0;
    nh->plain_retry = nh->plain_next;
    nh->plain_next = 0;
    nh->no_esmtp = 0;
    nh->extra = 0;
    nh->caps = 0;
    stp_reply_parser_init(&nh->rp);
    memset(nh->conn, 0, sizeof(*nh->conn));
    if (stp_conn_init(nh->loop, nh->conn, &conn_cb, nh) < 0) {
        set_err(nh, "451 4.3.0", F_CONN, "out of resources");
        fail(nh);
        return;
    }
    nh->conn_live = 1;
    nh->phase = P_CONNECT;
    int rc = stp_conn_connect(nh->conn, sa);
    if (rc == UV_EMFILE || rc == UV_ENFILE) {
        /* the proxy's own shortage, not the MX host's (4.3.2, as its
         * listeners say it); the next address may find one freed */
        set_err(nh, "451 4.3.2", F_CONN, "too many open files in the proxy, try again later");
        drop_conn(nh);
        return;
    }
    if (rc < 0) {
        set_err(nh, "451 4.4.1", F_CONN, "cannot connect to %s [%s]: %s", mx_host(nh),
                nh->result.addr, uv_strerror(rc));
        drop_conn(nh);
        return;
    }
    step_timer(nh, nh->lc->connect_timeout);
}

/* ---- the requirement for one MX host ---- */

static void decide_host(stp_nexthop_t *nh)
{
    const char *host = mx_host(nh);
    stp_policy_tls_t level = nh->pol->tls;

    nh->source = "config";
    switch (level) {
    case STP_POLICY_TLS_NONE:
        nh->req = R_NONE;
        break;
    case STP_POLICY_TLS_MAY:
        nh->req = R_MAY;
        break;
    case STP_POLICY_TLS_ENCRYPT:
        nh->req = R_ENCRYPT;
        break;
    case STP_POLICY_TLS_VERIFY:
        nh->req = R_VERIFY;
        break;
    case STP_POLICY_TLS_SECURE:
        nh->req = R_SECURE;
        break;
    case STP_POLICY_TLS_DANE:
    case STP_POLICY_TLS_DANE_ONLY:
    case STP_POLICY_TLS_MTA_STS:
        /* Validated TLSA records make the host DANE's, but records that
         * are all unusable (PKIX-TA/PKIX-EE, unknown parameters)
         * authenticate nothing: under dane the host must still use TLS
         * (RFC 7672 2.2, below), and what else asks for a verified
         * certificate (an MTA-STS enforce policy, remembered TLS) applies
         * as if there were no records. dane-only refuses them after the
         * handshake, where the log can say what the host presented. */
        if (nh->tlsa && (level == STP_POLICY_TLS_DANE_ONLY ||
                         stp_dane_any_usable(nh->tlsa->tlsa, nh->tlsa->ntlsa))) {
            nh->req = R_DANE;
            nh->source = "dane";
            break;
        }
        /* Under `testing`, what these refuse is delivered with
         * opportunistic TLS (or, for an MX the MTA-STS policy does not
         * name, verified as the policy says, failures logged). */
        if (level == STP_POLICY_TLS_DANE_ONLY) {
            nh->req = R_DANE;
            nh->source = "dane";
            if (!would_refuse(nh, "no DNSSEC-validated TLSA records for %s (tls = dane-only)",
                              host)) {
                refuse(nh, "451 4.7.5", "dane",
                       "no DNSSEC-validated TLSA records for %s (tls = dane-only)", host);
                next_mx(nh);
                return;
            }
            nh->req = R_MAY;
        } else if (nh->sts == STS_TEMPFAIL) {
            nh->req = R_STS;
            nh->source = "mta-sts";
            if (!would_refuse(nh, "MTA-STS policy of %s unknown: %s", nh->domain, nh->sts_why)) {
                set_err(nh, "451 4.4.3", F_POLICY_TEMP, "MTA-STS policy of %s unknown: %s",
                        nh->domain, nh->sts_why);
                stp_sm_policy(nh->lc->name, "mta-sts", "refused");
                fail(nh);
                return;
            }
            nh->req = R_MAY;
        } else if (nh->sts == STS_POLICY && nh->sts_policy.mode == STP_MTA_STS_MODE_ENFORCE) {
            nh->req = R_STS;
            nh->source = "mta-sts";
            /* Only the MX hosts the policy names (RFC 8461 4.1). Checked
             * here, after DANE had its say: a host with usable validated TLSA
             * records is DANE's, whatever the MTA-STS policy lists (2). */
            if (!stp_mta_sts_policy_match(&nh->sts_policy, host) &&
                !would_refuse(nh, "MX host %s is not allowed by the MTA-STS policy of %s", host,
                              nh->domain)) {
                refuse(nh, "451 4.7.5", "mta_sts_mx",
                       "MX host %s is not allowed by the MTA-STS policy of %s", host, nh->domain);
                next_mx(nh);
                return;
            }
        } else {
            nh->req = R_MAY;
            nh->source = nh->sts == STS_POLICY ? "mta-sts" : "config";
            if (nh->sts == STS_POLICY && !stp_mta_sts_policy_match(&nh->sts_policy, host)) {
                sts_testing_failure(nh, "MX host %s is not allowed by the MTA-STS policy of %s",
                                    host, nh->domain);
            }
        }
        if (nh->tlsa && nh->req < R_ENCRYPT) {
            nh->req = R_ENCRYPT; /* unusable TLSA records: TLS, unauthenticated */
            nh->source = "dane";
        }
        break;
    }
    if (nh->remembered && nh->req >= R_MAY && nh->req <= R_ENCRYPT) {
        nh->source = "remembered";
    }
    nh->plain_next = 0;
    char note[1100];
    stp_log(STP_LOG_DEBUG, "mx_host id=%s domain=%s mx=%s%s policy=%s source=%s addresses=%zu",
            nh->id, nh->domain, host, base_note(nh, note, sizeof(note)), req_name(nh->req),
            nh->source, nh->naddr);
    nh->iaddr = 0;
    next_addr(nh);
}

/* Every DNS callback starts here: 1 if the attempt ended while the query
 * ran (the answer is freed, the attempt may be freed), else 0. */
static int dns_answer_stale(stp_nexthop_t *nh, stp_dns_result_t *res)
{
    nh->dns_pending--;
    if (!nh->finishing) {
        return 0;
    }
    stp_dns_result_free(res);
    maybe_free(nh);
    return 1;
}

static void start_tlsa(stp_nexthop_t *nh, int at_expanded);

static void on_tlsa(stp_dns_result_t *res, void *arg)
{
    stp_nexthop_t *nh = arg;
    if (dns_answer_stale(nh, res)) {
        return;
    }
    switch (res->status) {
    case STP_DNS_OK:
        if (res->secure && res->ntlsa > 0) {
            nh->tlsa = res;
            decide_host(nh);
            return;
        }
        break; /* insecure: as if there were none (RFC 7672 2.1.1) */
    case STP_DNS_NODATA:
    case STP_DNS_NXDOMAIN:
        break;
    default:
        /* Bogus or failed, at either name: the host is unusable (RFC 7672
         * 2.1.1), and never a reason to fall back to MTA-STS. */
        nh->source = "dane";
        nh->req = R_DANE;
        if (would_refuse(nh, "TLSA lookup for _25._tcp.%s failed: %s", tlsa_base(nh), res->why)) {
            break; /* as if there were no records */
        }
        refuse_temp(nh, "451 4.7.5", "dane", "TLSA lookup for _25._tcp.%s failed: %s",
                    tlsa_base(nh), res->why);
        stp_dns_result_free(res);
        next_mx(nh);
        return;
    }
    stp_dns_result_free(res);
    if (nh->at_expanded) {
        start_tlsa(nh, 0); /* none at the expanded name: the MX host's own (RFC 7672 2.2.2) */
        return;
    }
    decide_host(nh);
}

/* Asks for the TLSA records at the TLSA base domain (`at_expanded`: the
 * CNAME-expanded name, tried first; else the MX host as listed). */
static void start_tlsa(stp_nexthop_t *nh, int at_expanded)
{
    nh->at_expanded = at_expanded;
    nh->phase = P_TLSA;
    nh->dns_pending++;
    if (stp_resolver_tlsa(nh->res, tlsa_base(nh), SMTP_PORT, on_tlsa, nh) < 0) {
        nh->dns_pending--; /* a name too long to have TLSA records */
        if (at_expanded) {
            start_tlsa(nh, 0);
        } else {
            decide_host(nh);
        }
    }
}

/* The MX host's own CNAME could not be learnt (`why`): the host may be
 * DANE's, so as after a failed TLSA lookup it is unusable for now (RFC 7672
 * 2.1.1), never a reason for plaintext or MTA-STS. */
static void cname_failed(stp_nexthop_t *nh, const char *why)
{
    nh->source = "dane";
    nh->req = R_DANE;
    if (would_refuse(nh, "CNAME lookup for %s failed: %s", mx_host(nh), why)) {
        decide_host(nh); /* as if the host were not secure */
        return;
    }
    refuse_temp(nh, "451 4.7.5", "dane", "CNAME lookup for %s failed: %s", mx_host(nh), why);
    next_mx(nh);
}

/*
 * The MX host's own CNAME record, asked when its address answer came through
 * a CNAME chain that did not validate as a whole: the AD bit is the
 * response's, so it cannot say whether the first link, the name the MX
 * record lists, is in a signed zone. When that CNAME validated, the MX host
 * is secure and its expansion is not: TLSA records are asked for at the MX
 * host only, which is the TLSA base domain, SNI and reference name (RFC 7672
 * 2.2.2; Postfix asks the same question). Insecure: no DANE, as before.
 */
static void on_cname(stp_dns_result_t *res, void *arg)
{
    stp_nexthop_t *nh = arg;
    if (dns_answer_stale(nh, res)) {
        return;
    }
    if (res->status == STP_DNS_OK && res->secure) {
        stp_dns_result_free(res);
        nh->partial = 1;
        start_tlsa(nh, 0);
        return;
    }
    if (stp_dns_answered(res->status) && !res->secure) {
        stp_dns_result_free(res); /* the MX host is in an unsigned zone too */
        decide_host(nh);
        return;
    }
    /* Failed, or a validated answer that the name is no alias after all
     * (the DNS changed between the two questions). */
    const char *why = stp_dns_answered(res->status) ? "no longer a CNAME" : res->why; /* static */
    stp_dns_result_free(res);
    cname_failed(nh, why);
}

static void on_addrs(stp_dns_result_t *res, void *arg)
{
    stp_nexthop_t *nh = arg;
    if (dns_answer_stale(nh, res)) {
        return;
    }
    if (res->status != STP_DNS_OK || res->naddr == 0) {
        int temp = res->status != STP_DNS_NXDOMAIN && res->status != STP_DNS_NODATA;
        set_err(nh, temp ? "451 4.4.3" : "451 4.4.4", F_CONN, "address lookup for %s failed: %s",
                mx_host(nh), res->why ? res->why : stp_dns_status_name(res->status));
        stp_dns_result_free(res);
        next_mx(nh);
        return;
    }
    nh->naddr = res->naddr;
    memcpy(nh->addr, res->addr, res->naddr * sizeof(res->addr[0]));
    nh->addr_secure = res->secure;
    /* An MX host that is a CNAME: its expanded name is the first TLSA base
     * domain to try, when the whole chain validated (RFC 7672 2.2.2). An
     * insecure chain leaves the addresses insecure: TLSA at the MX host
     * only, if its own CNAME validated (on_cname). */
    int cname = !stp_dns_name_eq(res->name, mx_host(nh));
    if (res->secure && cname) {
        snprintf(nh->expanded, sizeof(nh->expanded), "%s", res->name);
    }
    stp_dns_result_free(res);

    stp_policy_tls_t level = nh->pol->tls;
    int dane = level == STP_POLICY_TLS_DANE || level == STP_POLICY_TLS_DANE_ONLY;
    /* TLSA only where the MX and address answers validated (RFC 7672 2.2). */
    if (dane && nh->mx_secure && nh->addr_secure) {
        start_tlsa(nh, nh->expanded[0] != '\0');
        return;
    }
    /* An insecure chain may still start secure: ask the MX host's own CNAME. */
    if (dane && nh->mx_secure && cname) {
        nh->phase = P_CNAME;
        nh->dns_pending++;
        if (stp_resolver_cname(nh->res, mx_host(nh), on_cname, nh) == 0) {
            return;
        }
        nh->dns_pending--; /* the MX host is a valid name: out of memory */
        cname_failed(nh, "out of memory");
        return;
    }
    decide_host(nh);
}

/* Moves to the next usable MX host, or gives up with the best reason. */
static void next_mx(stp_nexthop_t *nh)
{
    if (nh->finishing) {
        return;
    }
    stp_dns_result_free(nh->tlsa);
    nh->tlsa = NULL;
    nh->expanded[0] = '\0';
    nh->at_expanded = 0;
    nh->partial = 0;
    nh->result.addr[0] = '\0';
    while (++nh->imx < (int)nh->nmx) {
        const char *host = mx_host(nh);
        nh->phase = P_ADDRS;
        nh->dns_pending++;
        if (stp_resolver_addrs(nh->res, host, (uint16_t)nh->cf->mx_port, on_addrs, nh) < 0) {
            nh->dns_pending--;
            set_err(nh, "451 4.4.3", F_CONN, "invalid MX host name %s", host);
            continue;
        }
        return;
    }
    if (nh->err[0] == '\0') {
        set_err(nh, "451 4.4.1", F_CONN, "no usable mail server for %s", nh->domain);
    }
    fail(nh);
}

/* ---- MTA-STS ---- */

static void sts_set(stp_nexthop_t *nh, stp_sts_action_t a, const stp_mta_sts_policy_t *p,
                    const char *how)
{
    if (a == STP_STS_USE_CACHED || a == STP_STS_USE_CACHED_REFRESH) {
        nh->sts = STS_POLICY;
        memcpy(&nh->sts_policy, p, sizeof(*p));
    } else if (a == STP_STS_TEMPFAIL) {
        nh->sts = STS_TEMPFAIL;
    } else {
        nh->sts = STS_NONE;
    }
    stp_log(STP_LOG_INFO, "mta_sts id=%s domain=%s action=%s policy=%s%s%s", nh->id, nh->domain,
            how,
            nh->sts == STS_POLICY     ? stp_mta_sts_mode_name(nh->sts_policy.mode)
            : nh->sts == STS_TEMPFAIL ? "unknown"
                                      : "none",
            nh->sts_why[0] ? " reason=" : "", nh->sts_why[0] ? "\"lookup failed\"" : "");
    next_mx(nh);
}

static void on_fetch(const stp_mta_sts_fetch_result_t *r, void *arg)
{
    stp_nexthop_t *nh = arg;
    stp_mta_sts_policy_t p = {0};
    nh->fetch = NULL;
    if (r->status == STP_MTA_STS_FETCH_OK) {
        stp_domain_state_sts_put(nh->loop, nh->domain, nh->sts_id, r->policy);
        sts_set(nh, STP_STS_USE_CACHED, r->policy, "fetched");
        return;
    }
    char esc[300];
    stp_log_escape(esc, sizeof(esc), r->error, strlen(r->error));
    stp_log(STP_LOG_WARN, "mta_sts id=%s domain=%s fetch=%s error=\"%s\"", nh->id, nh->domain,
            stp_mta_sts_fetch_status_name(r->status), esc);
    stp_sts_action_t a = stp_domain_state_sts_after_failure(nh->domain, &p);
    sts_set(nh, a, &p, "fetch-failed");
}

static void on_sts_addr(stp_dns_result_t *res, void *arg)
{
    stp_nexthop_t *nh = arg;
    stp_mta_sts_policy_t p = {0};
    if (dns_answer_stale(nh, res)) {
        return;
    }
    if (res->status == STP_DNS_OK && res->naddr > 0) {
        char err[400];
        SSL_CTX *ctx =
            stp_tls_ctx_client_new(nh->cf->mta_sts_ca_file[0] ? nh->cf->mta_sts_ca_file : NULL,
                                   TLS1_2_VERSION, err, sizeof(err));
        if (ctx) {
            stp_mta_sts_fetch_opts_t o = {
                .ctx = ctx,
                .domain = nh->domain,
                .addrs = res->addr,
                .naddr = res->naddr,
                .timeout_ms = nh->cf->mta_sts_timeout,
            };
            nh->phase = P_STS_FETCH;
            nh->fetch = stp_mta_sts_fetch_start(nh->loop, &o, on_fetch, nh);
            SSL_CTX_free(ctx);
            if (nh->fetch) {
                stp_dns_result_free(res);
                return;
            }
        }
    }
    stp_log(STP_LOG_WARN,
            "mta_sts id=%s domain=%s fetch=failed error=\"no address for mta-sts.%s\"", nh->id,
            nh->domain, nh->domain);
    stp_dns_result_free(res);
    stp_sts_action_t a = stp_domain_state_sts_after_failure(nh->domain, &p);
    sts_set(nh, a, &p, "fetch-failed");
}

static void on_sts_txt(stp_dns_result_t *res, void *arg)
{
    stp_nexthop_t *nh = arg;
    stp_sts_txt_state_t txt = STP_STS_TXT_ABSENT;
    stp_mta_sts_policy_t p = {0};
    if (dns_answer_stale(nh, res)) {
        return;
    }
    if (res->status == STP_DNS_OK) {
        const char *recs[STP_RESOLVER_MAX_TXT];
        size_t lens[STP_RESOLVER_MAX_TXT];
        for (size_t i = 0; i < res->ntxt; i++) {
            recs[i] = res->txt[i].text;
            lens[i] = res->txt[i].len;
        }
        if (stp_mta_sts_txt_select(recs, lens, res->ntxt, nh->sts_id, NULL) ==
            STP_MTA_STS_TXT_FOUND) {
            txt = STP_STS_TXT_FOUND;
        }
    } else if (res->status != STP_DNS_NXDOMAIN && res->status != STP_DNS_NODATA) {
        txt = STP_STS_TXT_DNS_ERROR;
        snprintf(nh->sts_why, sizeof(nh->sts_why), "_mta-sts.%s TXT lookup failed: %s", nh->domain,
                 res->why ? res->why : stp_dns_status_name(res->status));
    }
    stp_dns_result_free(res);
    stp_sts_action_t a = stp_domain_state_sts_action(nh->domain, txt, nh->sts_id, &p);
    if (a == STP_STS_USE_CACHED_REFRESH) {
        /* Half of the cached policy's max_age has gone: fetch it again
         * while the delivery goes on under the cached copy (RFC 8461 5.1),
         * so the policy never lapses while the domain keeps publishing it.
         * The refresh is not this attempt's: it outlives it. */
        stp_sts_refresh_start(nh->loop, nh->cf, nh->domain, nh->sts_id, nh->id);
    }
    if (a != STP_STS_FETCH) {
        sts_set(nh, a, &p, stp_sts_action_name(a));
        return;
    }
    char name[300];
    snprintf(name, sizeof(name), "mta-sts.%s", nh->domain);
    nh->phase = P_STS_ADDR;
    nh->dns_pending++;
    if (stp_resolver_addrs(nh->res, name, (uint16_t)nh->cf->mta_sts_port, on_sts_addr, nh) < 0) {
        nh->dns_pending--;
        a = stp_domain_state_sts_after_failure(nh->domain, &p);
        sts_set(nh, a, &p, "fetch-failed");
    }
}

/* ---- MX ---- */

static void on_mx(stp_dns_result_t *res, void *arg)
{
    stp_nexthop_t *nh = arg;
    if (dns_answer_stale(nh, res)) {
        return;
    }
    if (res->status == STP_DNS_OK && res->null_mx) {
        set_err(nh, "556 5.1.10", F_CONN, "domain %s does not accept mail (null MX)", nh->domain);
        stp_dns_result_free(res);
        fail(nh);
        return;
    }
    if (res->status == STP_DNS_NXDOMAIN) {
        set_err(nh, "550 5.1.2", F_CONN, "domain %s does not exist", nh->domain);
        stp_dns_result_free(res);
        fail(nh);
        return;
    }
    if (res->status != STP_DNS_OK || res->nmx == 0) {
        set_err(nh, "451 4.4.3", F_CONN, "DNS lookup of the MX records of %s failed: %s",
                nh->domain, res->why ? res->why : stp_dns_status_name(res->status));
        stp_dns_result_free(res);
        fail(nh);
        return;
    }
    nh->nmx = res->nmx;
    memcpy(nh->mx, res->mx, res->nmx * sizeof(res->mx[0]));
    nh->mx_secure = res->secure;
    stp_log(STP_LOG_INFO, "mx_lookup id=%s domain=%s mx=%zu first=%s implicit=%s dnssec=%s", nh->id,
            nh->domain, nh->nmx, nh->mx[0].host, res->implicit_mx ? "yes" : "no",
            res->secure ? "secure" : "insecure");
    stp_dns_result_free(res);

    stp_policy_tls_t level = nh->pol->tls;
    if (level == STP_POLICY_TLS_DANE || level == STP_POLICY_TLS_MTA_STS) {
        char name[300];
        snprintf(name, sizeof(name), "_mta-sts.%s", nh->domain);
        nh->phase = P_STS_TXT;
        nh->dns_pending++;
        if (stp_resolver_txt(nh->res, name, on_sts_txt, nh) == 0) {
            return;
        }
        nh->dns_pending--;
    }
    next_mx(nh);
}

stp_nexthop_t *stp_nexthop_start(const stp_nexthop_opts_t *o, stp_conn_t *conn, stp_nexthop_cb cb,
                                 void *arg)
{
    char err[200];
    stp_nexthop_t *nh = calloc(1, sizeof(*nh));
    if (nh == NULL) {
        return NULL;
    }
    nh->loop = o->loop;
    nh->cf = o->cf;
    nh->lc = o->lc;
    nh->ctx = o->ctx;
    snprintf(nh->domain, sizeof(nh->domain), "%s", o->domain);
    for (char *p = nh->domain; *p; p++) {
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
    snprintf(nh->id, sizeof(nh->id), "%s", o->id);
    nh->cb = cb;
    nh->arg = arg;
    nh->conn = conn;
    nh->imx = -1;
    nh->source = "config";
    nh->res =
        stp_resolver_new(o->loop, o->cf->resolver, (unsigned)o->cf->dns_timeout, err, sizeof(err));
    if (nh->res == NULL) {
        stp_log(STP_LOG_ERROR, "mx id=%s domain=%s error=\"resolver: %s\"", nh->id, nh->domain,
                err);
        free(nh);
        return NULL;
    }
    uv_timer_init(o->loop, &nh->step_timer);
    uv_timer_init(o->loop, &nh->total_timer);
    nh->step_timer.data = nh->total_timer.data = nh;
    nh->handles = 2;
    nh->pol = stp_policy_lookup(&o->cf->policies, nh->domain);
    if (nh->pol == NULL) {
        /* Not a domain name (the envelope's check is the lookup's, so only
         * a caller that skipped it gets here): no section can be said to
         * cover it, and the default must not stand in for one. */
        stp_log(STP_LOG_WARN, "mx id=%s domain=%s policy=none error=\"not a domain name\"", nh->id,
                nh->domain);
        set_err(nh, "501 5.1.3", F_CONN, "bad recipient domain syntax");
        fail(nh);
        return nh;
    }
    nh->remembered =
        o->cf->remember_tls && stp_domain_state_tls_required(nh->domain, &nh->remembered_since);
    nh->req = R_MAY;

    /* Every step has its own bound; this one caps the sum, so a domain
     * with many slow hosts cannot hold the legacy MTA's RCPT for ever, and
     * mx_attempt_timeout (under the legacy MTA's own RCPT timeout, 300 s
     * in Postfix) makes it hear the proxy's 4.x.x before it gives up. */
    uint64_t total = 2 * o->cf->dns_timeout + o->cf->mta_sts_timeout + o->lc->connect_timeout +
                     o->lc->greeting_timeout + o->lc->handshake_timeout + o->lc->command_timeout;
    if (total > o->cf->mx_attempt_timeout) {
        total = o->cf->mx_attempt_timeout;
    }
    uv_timer_start(&nh->total_timer, on_total_timeout, total, 0);

    stp_log(STP_LOG_INFO, "mx id=%s domain=%s policy=%s policy_section=%s remembered=%s", nh->id,
            nh->domain, stp_policy_tls_name(nh->pol->tls), nh->pol->name,
            nh->remembered ? "yes" : "no");
    nh->phase = P_MX;
    nh->dns_pending++;
    if (stp_resolver_mx(nh->res, nh->domain, on_mx, nh) < 0) {
        nh->dns_pending--;
        set_err(nh, "501 5.1.3", F_CONN, "bad recipient domain %s", nh->domain);
        fail(nh);
    }
    return nh;
}

void stp_nexthop_cancel(stp_nexthop_t *nh)
{
    finish(nh, STP_NEXTHOP_CANCELLED);
}

void stp_nexthop_delivered(uv_loop_t *loop, const stp_config_t *cf, const char *domain)
{
    stp_domain_state_tls_seen(loop, domain, cf->remember_tls);
}
