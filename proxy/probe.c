/*
 * probe: `smtp-tls-proxy probe DOMAIN [--json] [-c FILE]`.
 *
 * Looks at a destination the way route = mx would, with the same resolver,
 * ports and trust stores as the configuration, and reports per MX host: the
 * addresses, whether STARTTLS is offered, the TLS version and cipher, the
 * certificate chain's validity and names, the TLSA records (where they were
 * found, whether DNSSEC validated them and they match), plus the domain's
 * MTA-STS record and policy, and the verdict the proxy would apply. Nothing
 * is delivered: the probe says EHLO, STARTTLS, completes the handshake and
 * leaves.
 *
 * The probe is a one-shot command, so it runs sequentially: DNS and the
 * MTA-STS fetch on a private libuv loop run until each answer, the SMTP
 * exchange over a blocking socket with timeouts, TLS through the memory-BIO
 * engine. It reads state_dir's file, as delivery would find it (a cached
 * MTA-STS policy, remembered TLS), and never writes there (it does not
 * teach the cache).
 */
#include "proxy/probe.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509v3.h>
#include <uv.h>

#include "policy/dns_msg.h"
#include "policy/domain_name.h"
#include "policy/domain_policy.h"
#include "policy/mta_sts.h"
#include "policy/policy_cache.h"
#include "proxy/config.h"
#include "proxy/conn.h"
#include "proxy/domain_state.h"
#include "proxy/ehlo.h"
#include "proxy/mta_sts_fetch.h"
#include "proxy/resolver.h"
#include "proxy/smtp_reply.h"
#include "proxy/state_store.h"
#include "tls/dane.h"
#include "tls/tls_ctx.h"
#include "tls/tls_engine.h"
#include "tls/tls_verify.h"

#define MAX_NAMES 8

typedef struct {
    uint16_t pref;
    char host[256];
    int addr_secure;
    char addrs[512]; /* "127.0.0.1, ::1" */
    char addr_err[200];
    char used[64]; /* the address the SMTP probe used */
    char smtp_err[400];
    int starttls; /* -1 unknown (no connection), 0 no, 1 yes */
    char version[16], cipher[64];
    int chain_ok, name_ok, have_cert;
    char chain_why[300];
    char names[MAX_NAMES][256];
    int nnames;
    char tlsa_base[1024]; /* the TLSA base domain: the host, or its CNAME expansion */
    char expanded[1024];  /* the host after its CNAMEs, "" when it is no alias */
    int host_secure;      /* the host's own name validated (its addresses, or its CNAME) */
    int cname_status;     /* stp_dns_status_t of the host's own CNAME, when it was asked */
    int cname_failed;     /* that lookup failed where delivery asks it: it defers */
    int tlsa_status;      /* stp_dns_status_t */
    int tlsa_failed;      /* a TLSA lookup delivery makes failed (bogus, SERVFAIL...) */
    int tlsa_secure;
    char tlsa[8][160];
    int ntlsa;
    int dane; /* -1 not tried, else stp_dane_result_t */
    char dane_why[300];
    const char *verdict;
    char reason[500];
} mx_report_t;

typedef struct {
    uv_loop_t loop;
    stp_resolver_t *res;
    stp_dns_result_t *r;
    int done;
    const stp_config_t *cf;
    const char *domain; /* the domain probed: the next-hop domain */
    SSL_CTX *ctx;
    /* MTA-STS */
    char sts_txt[120];
    int sts_policy;   /* 1 if a policy applies (fetched, or cached) */
    int sts_tempfail; /* the TXT lookup failed and nothing is cached: delivery defers */
    char sts_source[300]; /* where the policy came from */
    char sts_err[400];
    stp_mta_sts_policy_t pol;
    /* state_dir's file, read only: what delivery remembers */
    stp_cache_t *state;
    char state_note[600];
    int remembered; /* verified TLS required (remember_tls) */
    int64_t remembered_since, remembered_until;
} probe_t;

static void utc(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
        snprintf(out, 32, "%lld", (long long)t);
    }
}

/* ---- state_dir ---- */

/* Reads STATE_DIR/domains.state into p->state, as the proxy would load it at
 * start-up (a running proxy writes it after every change); never renames or
 * writes anything. p->state is an empty cache when there is no file. */
static void load_state(probe_t *p, const char *domain)
{
    char path[1200], why[200];
    p->state = stp_cache_new(STP_DOMAIN_STATE_MAX);
    if (p->state == NULL) {
        snprintf(p->state_note, sizeof(p->state_note), "not read: out of memory");
        return;
    }
    if (p->cf->state_dir[0] == '\0') {
        snprintf(p->state_note, sizeof(p->state_note),
                 "no state_dir: a running proxy's memory is not visible here");
        return;
    }
    if (stp_state_path(p->cf->state_dir, path, sizeof(path)) < 0) {
        snprintf(p->state_note, sizeof(p->state_note), "state_dir path too long");
        return;
    }
    size_t len = 0;
    const char *unread = NULL;
    char *text = stp_state_read(path, &len, &unread);
    if (text == NULL) {
        snprintf(p->state_note, sizeof(p->state_note), "%.300s: %s", path,
                 unread ? unread : "no file yet (nothing remembered)");
        return;
    }
    int64_t now = (int64_t)time(NULL);
    if (stp_cache_load(p->state, text, len, now, why, sizeof(why)) < 0) {
        snprintf(p->state_note, sizeof(p->state_note),
                 "%.200s: damaged (%.150s); a proxy starting now would begin empty", path, why);
    } else {
        snprintf(p->state_note, sizeof(p->state_note), "%.300s: %zu domains", path,
                 stp_cache_count(p->state));
    }
    free(text);
    if (p->cf->remember_tls &&
        stp_cache_tls_required(p->state, domain, now, &p->remembered_since,
                               &p->remembered_until)) {
        p->remembered = 1;
    }
}

/* The cached policy applies (`how`: why it was not fetched). */
static void use_cached(probe_t *p, const char *domain, const char *how)
{
    const stp_cache_entry_t *e = stp_cache_sts_valid(p->state, domain, (int64_t)time(NULL));
    if (e == NULL) {
        return;
    }
    char fetched[32], expires[32];
    utc(e->sts_fetched, fetched);
    utc(e->sts_expires, expires);
    memcpy(&p->pol, &e->sts, sizeof(p->pol));
    p->sts_policy = 1;
    snprintf(p->sts_source, sizeof(p->sts_source), "cached (%s): id %s, fetched %s, until %s",
             how, e->sts_id, fetched, expires);
}

/* ---- DNS on the private loop, one question at a time ---- */

static void on_dns(stp_dns_result_t *res, void *arg)
{
    probe_t *p = arg;
    p->r = res;
    p->done = 1;
}

static stp_dns_result_t *wait_dns(probe_t *p, int started)
{
    if (started < 0) {
        return NULL;
    }
    while (!p->done) {
        uv_run(&p->loop, UV_RUN_ONCE);
    }
    p->done = 0;
    stp_dns_result_t *r = p->r;
    p->r = NULL;
    return r;
}

/* ---- MTA-STS ---- */

static void on_fetch(const stp_mta_sts_fetch_result_t *r, void *arg)
{
    probe_t *p = arg;
    if (r->status == STP_MTA_STS_FETCH_OK) {
        memcpy(&p->pol, r->policy, sizeof(p->pol));
        p->sts_policy = 1;
    } else {
        snprintf(p->sts_err, sizeof(p->sts_err), "fetch failed (%s): %s",
                 stp_mta_sts_fetch_status_name(r->status), r->error);
    }
    p->done = 1;
}

static void fetch_sts(probe_t *p, const char *domain);

/* The record, then what delivery would do with it and the cache
 * (stp_cache_sts_action, as proxy/nexthop.c asks it). */
static void probe_sts(probe_t *p, const char *domain)
{
    char name[300], id[STP_MTA_STS_ID_MAX + 1] = "";
    stp_sts_txt_state_t txt = STP_STS_TXT_ABSENT;
    snprintf(name, sizeof(name), "_mta-sts.%s", domain);
    stp_dns_result_t *r = wait_dns(p, stp_resolver_txt(p->res, name, on_dns, p));
    if (r == NULL || r->status != STP_DNS_OK) {
        snprintf(p->sts_txt, sizeof(p->sts_txt), "none (%s)",
                 r ? stp_dns_status_name(r->status) : "invalid name");
        if (r != NULL && r->status != STP_DNS_NXDOMAIN && r->status != STP_DNS_NODATA) {
            txt = STP_STS_TXT_DNS_ERROR;
            snprintf(p->sts_txt, sizeof(p->sts_txt), "lookup failed (%s)",
                     r->why ? r->why : stp_dns_status_name(r->status));
        }
        stp_dns_result_free(r);
    } else {
        const char *recs[STP_RESOLVER_MAX_TXT];
        size_t lens[STP_RESOLVER_MAX_TXT];
        for (size_t i = 0; i < r->ntxt; i++) {
            recs[i] = r->txt[i].text;
            lens[i] = r->txt[i].len;
        }
        const char *why = NULL;
        stp_mta_sts_txt_t t = stp_mta_sts_txt_select(recs, lens, r->ntxt, id, &why);
        stp_dns_result_free(r);
        if (t == STP_MTA_STS_TXT_FOUND) {
            txt = STP_STS_TXT_FOUND;
            snprintf(p->sts_txt, sizeof(p->sts_txt), "id=%s", id);
        } else {
            snprintf(p->sts_txt, sizeof(p->sts_txt), "%s",
                     t == STP_MTA_STS_TXT_NONE       ? "none"
                     : t == STP_MTA_STS_TXT_MULTIPLE ? "unusable (several records)"
                                                     : "unusable (invalid record)");
        }
    }
    stp_sts_action_t a = stp_cache_sts_action(p->state, domain, txt, id, (int64_t)time(NULL));
    switch (a) {
    case STP_STS_USE_CACHED:
    case STP_STS_USE_CACHED_REFRESH:
        use_cached(p, domain,
                   txt == STP_STS_TXT_FOUND ? "the same id"
                   : txt == STP_STS_TXT_ABSENT
                       ? "no record now: a record removed from DNS does not end a policy"
                       : "the lookup failed");
        return;
    case STP_STS_TEMPFAIL:
        p->sts_tempfail = 1;
        snprintf(p->sts_err, sizeof(p->sts_err), "policy unknown: the record lookup failed and "
                                                 "nothing is cached");
        return;
    case STP_STS_NO_POLICY:
        return;
    case STP_STS_FETCH:
        break;
    }
    fetch_sts(p, domain);
    if (!p->sts_policy) {
        use_cached(p, domain, "the fetch failed");
    }
}

static void fetch_sts(probe_t *p, const char *domain)
{
    char name[300];
    snprintf(p->sts_source, sizeof(p->sts_source), "fetched");
    snprintf(name, sizeof(name), "mta-sts.%s", domain);
    stp_dns_result_t *r = wait_dns(p, stp_resolver_addrs(p->res, name, (uint16_t)p->cf->mta_sts_port, on_dns, p));
    if (r == NULL || r->status != STP_DNS_OK || r->naddr == 0) {
        snprintf(p->sts_err, sizeof(p->sts_err), "no address for %s", name);
        stp_dns_result_free(r);
        return;
    }
    char err[300];
    SSL_CTX *ctx = stp_tls_ctx_client_new(p->cf->mta_sts_ca_file[0] ? p->cf->mta_sts_ca_file : NULL,
                                          TLS1_2_VERSION, err, sizeof(err));
    if (ctx == NULL) {
        snprintf(p->sts_err, sizeof(p->sts_err), "%.300s", err);
        stp_dns_result_free(r);
        return;
    }
    stp_mta_sts_fetch_opts_t o = {
        .ctx = ctx,
        .domain = domain,
        .addrs = r->addr,
        .naddr = r->naddr,
        .timeout_ms = p->cf->mta_sts_timeout,
    };
    stp_mta_sts_fetch_t *f = stp_mta_sts_fetch_start(&p->loop, &o, on_fetch, p);
    SSL_CTX_free(ctx);
    stp_dns_result_free(r);
    if (f == NULL) {
        snprintf(p->sts_err, sizeof(p->sts_err), "fetch could not start");
        return;
    }
    while (!p->done) {
        uv_run(&p->loop, UV_RUN_ONCE);
    }
    p->done = 0;
}

/* ---- SMTP over a blocking socket ---- */

typedef struct {
    int fd;
    stp_tls_engine_t *tls;
    stp_reply_parser_t rp;
    char buf[16384];
    size_t len;
    int timeout_ms;
} smtp_t;

static int sock_wait(int fd, short ev, int ms)
{
    struct pollfd pf = {.fd = fd, .events = ev};
    return poll(&pf, 1, ms) > 0 ? 0 : -1;
}

static int raw_send(smtp_t *s, const void *b, size_t n)
{
    const char *p = b;
    while (n > 0) {
        ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static ssize_t raw_recv(smtp_t *s, void *b, size_t n)
{
    if (sock_wait(s->fd, POLLIN, s->timeout_ms) < 0) {
        return -1;
    }
    return recv(s->fd, b, n, 0);
}

/* One complete reply (plaintext phase). 0 or -1. */
static int read_reply(smtp_t *s, stp_reply_t **out)
{
    stp_reply_parser_init(&s->rp);
    for (;;) {
        if (s->len > 0) {
            size_t used = 0;
            int rc = stp_reply_feed(&s->rp, s->buf, s->len, &used);
            memmove(s->buf, s->buf + used, s->len - used);
            s->len -= used;
            if (rc == STP_REPLY_DONE) {
                *out = &s->rp.reply;
                return 0;
            }
            if (rc == STP_REPLY_ERROR) {
                return -1;
            }
        }
        ssize_t n = raw_recv(s, s->buf + s->len, sizeof(s->buf) - s->len);
        if (n <= 0) {
            return -1;
        }
        s->len += (size_t)n;
    }
}

static int command(smtp_t *s, const char *line, stp_reply_t **out)
{
    char b[600];
    int n = snprintf(b, sizeof(b), "%s\r\n", line);
    if (raw_send(s, b, (size_t)n) < 0) {
        return -1;
    }
    return read_reply(s, out);
}

static int flush_tls(smtp_t *s)
{
    uint8_t out[16384];
    while (stp_tls_engine_pending(s->tls) > 0) {
        size_t n = stp_tls_engine_take(s->tls, out, sizeof(out));
        if (raw_send(s, out, n) < 0) {
            return -1;
        }
    }
    return 0;
}

static int handshake(smtp_t *s, char *err, size_t errlen)
{
    for (;;) {
        int rc = stp_tls_engine_handshake(s->tls);
        if (flush_tls(s) < 0) {
            snprintf(err, errlen, "connection lost in the handshake");
            return -1;
        }
        if (rc == STP_TLS_OK) {
            return 0;
        }
        if (rc != STP_TLS_AGAIN) {
            snprintf(err, errlen, "%s", stp_tls_engine_error(s->tls));
            return -1;
        }
        uint8_t in[16384];
        ssize_t n = raw_recv(s, in, sizeof(in));
        if (n <= 0) {
            snprintf(err, errlen, "connection closed or timed out in the handshake");
            return -1;
        }
        stp_tls_engine_feed(s->tls, in, (size_t)n);
    }
}

static void cert_names(X509 *leaf, mx_report_t *m)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens) && m->nnames < MAX_NAMES;
         i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS) {
            const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
            int len = ASN1_STRING_length(g->d.dNSName);
            snprintf(m->names[m->nnames++], sizeof(m->names[0]), "%.*s", len, (const char *)d);
        }
    }
    GENERAL_NAMES_free(gens);
    if (m->nnames == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn)) >
            0) {
            snprintf(m->names[m->nnames++], sizeof(m->names[0]), "%s", cn);
        }
    }
}

/* EHLO, STARTTLS, handshake and the checks, on one address. */
static void probe_smtp(probe_t *p, mx_report_t *m, const struct sockaddr *sa,
                       const stp_dns_result_t *tlsa)
{
    smtp_t s = {.fd = -1, .timeout_ms = (int)p->cf->listeners[0].greeting_timeout};
    stp_reply_t *r;
    char line[300];

    if (s.timeout_ms > 15000) {
        s.timeout_ms = 15000; /* a probe waits less than a delivery would */
    }
    stp_sockaddr_str(sa, m->used, sizeof(m->used), 1);
    s.fd = socket(sa->sa_family, SOCK_STREAM, 0);
    if (s.fd < 0) {
        snprintf(m->smtp_err, sizeof(m->smtp_err), "socket: %s", strerror(errno));
        return;
    }
    socklen_t sl =
        sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(s.fd, sa, sl) < 0) {
        snprintf(m->smtp_err, sizeof(m->smtp_err), "connect to %s: %s", m->used, strerror(errno));
        goto out;
    }
    if (read_reply(&s, &r) < 0 || r->code != 220) {
        snprintf(m->smtp_err, sizeof(m->smtp_err), "no 220 greeting from %s", m->used);
        goto out;
    }
    snprintf(line, sizeof(line), "EHLO %s", p->cf->hostname);
    if (command(&s, line, &r) < 0 || r->code != 250) {
        snprintf(m->smtp_err, sizeof(m->smtp_err), "EHLO refused by %s", m->used);
        goto out;
    }
    m->starttls = (stp_ehlo_caps(r) & STP_EHLO_STARTTLS) != 0;
    if (!m->starttls) {
        goto quit;
    }
    if (command(&s, "STARTTLS", &r) < 0 || r->code != 220) {
        snprintf(m->smtp_err, sizeof(m->smtp_err), "STARTTLS refused by %s", m->used);
        m->starttls = 0;
        goto quit;
    }
    s.tls = stp_tls_engine_new_client(p->ctx, m->tlsa_base); /* SNI as in delivery */
    if (s.tls == NULL) {
        goto out;
    }
    stp_tls_verify_prepare(stp_tls_engine_ssl(s.tls));
    char err[300];
    if (handshake(&s, err, sizeof(err)) < 0) {
        snprintf(m->smtp_err, sizeof(m->smtp_err), "TLS handshake failed: %s", err);
        goto out;
    }
    SSL *ssl = stp_tls_engine_ssl(s.tls);
    snprintf(m->version, sizeof(m->version), "%s", stp_tls_engine_version(s.tls));
    snprintf(m->cipher, sizeof(m->cipher), "%s", stp_tls_engine_cipher(s.tls));
    X509 *leaf = SSL_get_peer_certificate(ssl);
    if (leaf) {
        m->have_cert = 1;
        cert_names(leaf, m);
        X509_free(leaf);
    }
    const char *names[1] = {m->host};
    stp_verify_result_t vr = stp_tls_verify_peer(ssl, names, 1, m->chain_why, sizeof(m->chain_why));
    m->chain_ok = vr == STP_VERIFY_OK || vr == STP_VERIFY_NAME;
    m->name_ok = vr == STP_VERIFY_OK;
    if (vr == STP_VERIFY_OK) {
        m->chain_why[0] = '\0';
    }
    if (tlsa && tlsa->ntlsa > 0) {
        /* DANE-TA(2) names as in delivery: the TLSA base domain, the MX
         * host (when the base is its CNAME expansion) and the next-hop
         * domain (RFC 7672 3.2.3) */
        const char *dn[3] = {m->tlsa_base, p->domain, m->host};
        size_t ndn = strcmp(m->tlsa_base, m->host) != 0 ? 3 : 2;
        m->dane = stp_dane_verify(ssl, tlsa->tlsa, tlsa->ntlsa, dn, ndn, NULL, m->dane_why,
                                  sizeof(m->dane_why));
    }
    stp_tls_engine_shutdown(s.tls);
    flush_tls(&s);
    goto out;
quit:
    raw_send(&s, "QUIT\r\n", 6);
out:
    stp_tls_engine_free(s.tls);
    close(s.fd);
}

/* ---- the verdict (the rules of proxy/nexthop.c, said in words) ---- */

static void verdict(const probe_t *p, const stp_domain_policy_t *pol, mx_report_t *m,
                    int dane_usable, int none_usable)
{
    stp_policy_tls_t lv = pol->tls;
    /* Validated records that are all unusable (PKIX usages) authenticate
     * nothing: under dane the host is judged as without records (MTA-STS
     * enforce still applies), TLS still required (RFC 7672 2.2). */
    int unusable_only = dane_usable && none_usable && lv == STP_POLICY_TLS_DANE;
    int tls = m->version[0] != '\0';
    int dane_level = lv == STP_POLICY_TLS_DANE || lv == STP_POLICY_TLS_DANE_ONLY;
    int sts_level = dane_level || lv == STP_POLICY_TLS_MTA_STS;
    int enforce = p->sts_policy && p->pol.mode == STP_MTA_STS_MODE_ENFORCE;

    if (m->starttls < 0 && m->smtp_err[0]) {
        m->verdict = "unreachable";
        snprintf(m->reason, sizeof(m->reason), "%s", m->smtp_err);
        return;
    }
    if (dane_level && m->cname_failed) {
        /* the host may be DANE's: as a failed TLSA lookup (nexthop.c) */
        m->verdict = "defer";
        snprintf(m->reason, sizeof(m->reason), "CNAME lookup for %s failed (%s)", m->host,
                 m->cname_status == STP_DNS_OK || m->cname_status == STP_DNS_NODATA ||
                         m->cname_status == STP_DNS_NXDOMAIN
                     ? "no longer a CNAME"
                     : stp_dns_status_name((stp_dns_status_t)m->cname_status));
        return;
    }
    if (dane_level && m->tlsa_failed) {
        /* never a reason to fall back, to MTA-STS or plaintext (nexthop.c) */
        m->verdict = "defer";
        snprintf(m->reason, sizeof(m->reason), "TLSA lookup failed (%s)",
                 stp_dns_status_name((stp_dns_status_t)m->tlsa_status));
        return;
    }
    if (dane_level && dane_usable && !unusable_only) {
        /* (unusable records under dane-only: no delivery, as check_peer) */
        m->verdict = tls && m->dane == STP_DANE_OK ? "deliver (DANE)" : "defer";
        snprintf(m->reason, sizeof(m->reason), "%s",
                 !tls ? "DANE requires TLS; the TLS session failed" : m->dane_why);
        return;
    }
    if (lv == STP_POLICY_TLS_DANE_ONLY) {
        m->verdict = "defer";
        snprintf(m->reason, sizeof(m->reason), "dane-only and no DNSSEC-validated TLSA records");
        return;
    }
    if (sts_level && p->sts_tempfail) {
        m->verdict = "defer";
        snprintf(m->reason, sizeof(m->reason), "MTA-STS %s", p->sts_err);
        return;
    }
    if (sts_level && enforce) {
        if (!stp_mta_sts_policy_match(&p->pol, m->host)) {
            m->verdict = "defer";
            snprintf(m->reason, sizeof(m->reason), "MX host not in the MTA-STS policy");
        } else if (!tls || !m->name_ok) {
            m->verdict = "defer";
            snprintf(m->reason, sizeof(m->reason), "MTA-STS enforce: %s",
                     !tls ? "no TLS" : m->chain_why);
        } else {
            m->verdict = "deliver (MTA-STS)";
            snprintf(m->reason, sizeof(m->reason), "certificate valid for %s", m->host);
        }
        return;
    }
    stp_policy_tls_t eff = unusable_only ? STP_POLICY_TLS_ENCRYPT
                           : sts_level   ? STP_POLICY_TLS_MAY
                                         : lv;
    if (p->remembered && (eff == STP_POLICY_TLS_MAY || eff == STP_POLICY_TLS_ENCRYPT)) {
        /* remember_tls: verified TLS, as under tls = verify (nexthop.c) */
        char since[32];
        utc(p->remembered_since, since);
        if (!tls || !m->name_ok) {
            m->verdict = "defer";
            snprintf(m->reason, sizeof(m->reason),
                     "remembered TLS (verified TLS since %s): %s", since,
                     tls           ? m->chain_why
                     : m->smtp_err[0] ? m->smtp_err
                                      : "STARTTLS not offered");
        } else {
            m->verdict = "deliver (TLS, verified)";
            snprintf(m->reason, sizeof(m->reason), "remembered TLS (verified TLS since %s)",
                     since);
        }
    } else if (eff == STP_POLICY_TLS_NONE) {
        m->verdict = "deliver (plaintext)";
        snprintf(m->reason, sizeof(m->reason), "tls = none");
    } else if (!tls) {
        m->verdict = eff == STP_POLICY_TLS_MAY ? "deliver (plaintext)" : "defer";
        snprintf(m->reason, sizeof(m->reason), "%s",
                 m->smtp_err[0] ? m->smtp_err : "STARTTLS not offered");
    } else if (eff >= STP_POLICY_TLS_VERIFY && !m->name_ok) {
        m->verdict = "defer";
        snprintf(m->reason, sizeof(m->reason), "%s", m->chain_why);
    } else {
        m->verdict = m->name_ok ? "deliver (TLS, verified)" : "deliver (TLS, unverified)";
        snprintf(m->reason, sizeof(m->reason), "tls = %s%s", stp_policy_tls_name(eff),
                 unusable_only ? " (TLSA records, none usable for SMTP)"
                 : sts_level && !p->sts_policy ? " (no DANE, no MTA-STS policy)"
                 : sts_level                   ? " (no DANE)"
                                               : "");
    }
    /* An MTA-STS policy in mode testing changes nothing, but delivery logs
     * what enforce would have refused (nexthop.c): so does the verdict. */
    if (sts_level && p->sts_policy && p->pol.mode == STP_MTA_STS_MODE_TESTING) {
        size_t n = strlen(m->reason);
        const char *fail = !stp_mta_sts_policy_match(&p->pol, m->host) ? "MX host not in the policy"
                           : !tls                                      ? "no TLS"
                           : !m->name_ok                               ? m->chain_why
                                                                       : NULL;
        snprintf(m->reason + n, sizeof(m->reason) - n, "; MTA-STS testing: %s%s",
                 fail ? "enforce would defer: " : "enforce would deliver", fail ? fail : "");
    }
}

/* ---- output ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

static void text_row(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_row(const char *key, const char *fmt, ...)
{
    va_list ap;
    printf("  %-13s", key);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static const char *dane_name(int d)
{
    switch (d) {
    case STP_DANE_OK:
        return "match";
    case STP_DANE_NO_USABLE:
        return "no usable record";
    case STP_DANE_NO_CERT:
        return "no certificate";
    case STP_DANE_FAIL:
        return "no match";
    }
    return "not checked";
}

static void print_text(const probe_t *p, const char *domain, const stp_domain_policy_t *pol,
                       const stp_dns_result_t *mx, mx_report_t *ms, size_t n)
{
    printf("%s\n", domain);
    text_row("policy", "tls = %s  ([policy:%s])", stp_policy_tls_name(pol->tls), pol->name);
    text_row("MX records", "%zu%s, DNSSEC %s", mx->nmx, mx->implicit_mx ? " (implicit: no MX)" : "",
             mx->secure ? "secure" : "insecure");
    text_row("MTA-STS", "%s", p->sts_txt);
    if (p->sts_policy) {
        char mxs[600] = "";
        size_t len = 0;
        for (size_t i = 0; i < p->pol.nmx; i++) {
            len += (size_t)snprintf(mxs + len, len < sizeof(mxs) ? sizeof(mxs) - len : 0, "%s%s",
                                    i ? ", " : "", stp_mta_sts_mx(&p->pol, i));
        }
        text_row("", "mode %s, max_age %u, mx %s", stp_mta_sts_mode_name(p->pol.mode),
                 p->pol.max_age, mxs);
        text_row("", "policy %s", p->sts_source);
    }
    if (p->sts_err[0]) {
        text_row("", "%s", p->sts_err);
    }
    if (p->remembered) {
        char since[32], until[32];
        utc(p->remembered_since, since);
        utc(p->remembered_until, until);
        text_row("remembered", "verified TLS required (since %s, until %s)", since, until);
    } else {
        text_row("remembered", "%s", p->cf->remember_tls ? "nothing" : "off (remember_tls = 0)");
    }
    text_row("state", "%s", p->state_note);
    for (size_t i = 0; i < n; i++) {
        mx_report_t *m = &ms[i];
        printf("\nMX %u %s\n", m->pref, m->host);
        text_row("addresses", "%s%s", m->addrs[0] ? m->addrs : m->addr_err,
                 m->addrs[0] ? (m->addr_secure ? "  (DNSSEC secure)" : "  (DNSSEC insecure)") : "");
        if (m->starttls < 0) {
            text_row("STARTTLS", "unknown: %s", m->smtp_err[0] ? m->smtp_err : "not probed");
        } else {
            text_row("STARTTLS", "%s (%s)", m->starttls ? "offered" : "NOT offered", m->used);
        }
        if (m->version[0]) {
            text_row("TLS", "%s, %s", m->version, m->cipher);
            char names[600] = "";
            size_t len = 0;
            for (int k = 0; k < m->nnames; k++) {
                len += (size_t)snprintf(names + len, len < sizeof(names) ? sizeof(names) - len : 0,
                                        "%s%s", k ? ", " : "", m->names[k]);
            }
            text_row("certificate", "chain %s; names %s", m->chain_ok ? "valid" : "NOT valid",
                     names[0] ? names : "-");
            text_row("name check", "%s", m->name_ok ? "matches the MX host" : m->chain_why);
        } else if (m->starttls > 0 && m->smtp_err[0]) {
            text_row("TLS", "%s", m->smtp_err);
        }
        if (m->ntlsa == 0) {
            text_row("TLSA", "none (%s)", stp_dns_status_name((stp_dns_status_t)m->tlsa_status));
        }
        for (int k = 0; k < m->ntlsa; k++) {
            text_row(k ? "" : "TLSA", "%s", m->tlsa[k]);
        }
        if (m->ntlsa > 0) {
            text_row("", "DNSSEC %s; %s%s%s", m->tlsa_secure ? "secure" : "insecure (ignored)",
                     dane_name(m->dane), m->dane_why[0] ? ": " : "", m->dane_why);
        }
        if (strcmp(m->tlsa_base, m->host) != 0) {
            text_row("TLSA base", "%s (the MX host's CNAME expansion)", m->tlsa_base);
        } else if (m->expanded[0] && m->host_secure && !m->addr_secure) {
            text_row("TLSA base", "%s (the MX host: its CNAME validated, not the expansion %s)",
                     m->tlsa_base, m->expanded);
        }
        text_row("verdict", "%s: %s", m->verdict, m->reason);
    }
}

static void print_json(const probe_t *p, const char *domain, const stp_domain_policy_t *pol,
                       const stp_dns_result_t *mx, mx_report_t *ms, size_t n)
{
    FILE *f = stdout;
    fprintf(f, "{\"domain\":");
    json_str(f, domain);
    fprintf(f, ",\"policy\":");
    json_str(f, stp_policy_tls_name(pol->tls));
    fprintf(f, ",\"policy_section\":");
    json_str(f, pol->name);
    fprintf(f, ",\"mx_dnssec\":%s,\"implicit_mx\":%s,\"mta_sts\":{\"record\":",
            mx->secure ? "true" : "false", mx->implicit_mx ? "true" : "false");
    json_str(f, p->sts_txt);
    if (p->sts_policy) {
        fprintf(f, ",\"mode\":");
        json_str(f, stp_mta_sts_mode_name(p->pol.mode));
        fprintf(f, ",\"max_age\":%u,\"mx\":[", p->pol.max_age);
        for (size_t i = 0; i < p->pol.nmx; i++) {
            fprintf(f, "%s", i ? "," : "");
            json_str(f, stp_mta_sts_mx(&p->pol, i));
        }
        fprintf(f, "],\"source\":");
        json_str(f, p->sts_source);
    }
    if (p->sts_err[0]) {
        fprintf(f, ",\"error\":");
        json_str(f, p->sts_err);
    }
    fprintf(f, "},\"remembered_tls\":");
    if (p->remembered) {
        fprintf(f, "{\"since\":%lld,\"until\":%lld}", (long long)p->remembered_since,
                (long long)p->remembered_until);
    } else {
        fprintf(f, "null");
    }
    fprintf(f, ",\"state\":");
    json_str(f, p->state_note);
    fprintf(f, ",\"mx\":[");
    for (size_t i = 0; i < n; i++) {
        mx_report_t *m = &ms[i];
        fprintf(f, "%s{\"preference\":%u,\"host\":", i ? "," : "", m->pref);
        json_str(f, m->host);
        fprintf(f, ",\"addresses\":");
        json_str(f, m->addrs);
        fprintf(f, ",\"addresses_dnssec\":%s,\"address\":", m->addr_secure ? "true" : "false");
        json_str(f, m->used);
        fprintf(f, ",\"starttls\":%s,\"tls_version\":",
                m->starttls < 0 ? "null"
                : m->starttls   ? "true"
                                : "false");
        json_str(f, m->version);
        fprintf(f, ",\"cipher\":");
        json_str(f, m->cipher);
        fprintf(f, ",\"chain_valid\":%s,\"name_match\":%s,\"certificate_error\":",
                m->chain_ok ? "true" : "false", m->name_ok ? "true" : "false");
        json_str(f, m->chain_why);
        fprintf(f, ",\"names\":[");
        for (int k = 0; k < m->nnames; k++) {
            fprintf(f, "%s", k ? "," : "");
            json_str(f, m->names[k]);
        }
        fprintf(f, "],\"tlsa\":[");
        for (int k = 0; k < m->ntlsa; k++) {
            fprintf(f, "%s", k ? "," : "");
            json_str(f, m->tlsa[k]);
        }
        fprintf(f, "],\"tlsa_base_domain\":");
        json_str(f, m->tlsa_base);
        fprintf(f, ",\"expanded_name\":");
        json_str(f, m->expanded);
        fprintf(f, ",\"host_dnssec\":%s", m->host_secure ? "true" : "false");
        fprintf(f, ",\"tlsa_lookup\":");
        json_str(f, stp_dns_status_name((stp_dns_status_t)m->tlsa_status));
        fprintf(f, ",\"tlsa_dnssec\":%s,\"dane\":", m->tlsa_secure ? "true" : "false");
        json_str(f, dane_name(m->dane));
        fprintf(f, ",\"dane_detail\":");
        json_str(f, m->dane_why);
        fprintf(f, ",\"error\":");
        json_str(f, m->smtp_err);
        fprintf(f, ",\"verdict\":");
        json_str(f, m->verdict);
        fprintf(f, ",\"reason\":");
        json_str(f, m->reason);
        fprintf(f, "}");
    }
    fprintf(f, "]}\n");
}

/* ---- main ---- */

static void tlsa_text(const stp_dane_tlsa_t *t, char *out, size_t cap)
{
    size_t len = (size_t)snprintf(out, cap, "%u %u %u ", t->usage, t->selector, t->mtype);
    for (size_t i = 0; i < t->len && len + 3 < cap; i++) {
        len += (size_t)snprintf(out + len, cap - len, "%02x", t->data[i]);
    }
    if (len + 3 >= cap && cap > 4) {
        memcpy(out + cap - 4, "...", 4);
    }
}

static void probe_mx(probe_t *p, const stp_domain_policy_t *pol, mx_report_t *m, int mx_secure)
{
    stp_dns_result_t *a =
        wait_dns(p, stp_resolver_addrs(p->res, m->host, (uint16_t)p->cf->mx_port, on_dns, p));
    m->starttls = -1;
    m->dane = -1;
    snprintf(m->tlsa_base, sizeof(m->tlsa_base), "%s", m->host);
    if (a == NULL || a->status != STP_DNS_OK || a->naddr == 0) {
        snprintf(m->addr_err, sizeof(m->addr_err), "lookup failed: %s",
                 a ? (a->why ? a->why : stp_dns_status_name(a->status)) : "invalid name");
        snprintf(m->smtp_err, sizeof(m->smtp_err), "%s", m->addr_err);
        stp_dns_result_free(a);
        verdict(p, pol, m, 0, 0);
        return;
    }
    m->addr_secure = a->secure;
    size_t len = 0;
    for (size_t i = 0; i < a->naddr; i++) {
        char s[64];
        stp_sockaddr_str((const struct sockaddr *)&a->addr[i], s, sizeof(s), 0);
        len += (size_t)snprintf(m->addrs + len, len < sizeof(m->addrs) ? sizeof(m->addrs) - len : 0,
                                "%s%s", i ? ", " : "", s);
    }
    /* TLSA as delivery looks for them: at the CNAME-expanded name first
     * when the chain validated, then at the MX host; when only the MX
     * host's own CNAME validated, at the MX host only (RFC 7672 2.2.2). */
    int cname = !stp_dns_name_eq(a->name, m->host);
    if (cname) {
        snprintf(m->expanded, sizeof(m->expanded), "%s", a->name);
    }
    m->host_secure = a->secure;
    if (!a->secure && cname) {
        stp_dns_result_t *c = wait_dns(p, stp_resolver_cname(p->res, m->host, on_dns, p));
        m->cname_status = c ? (int)c->status : STP_DNS_ERROR;
        m->host_secure = c && c->status == STP_DNS_OK && c->secure;
        m->cname_failed = mx_secure && !m->host_secure &&
                          (c == NULL || !stp_dns_answered(c->status) || c->secure);
        stp_dns_result_free(c);
    }
    stp_dns_result_t *t = NULL;
    if (a->secure && cname) {
        t = wait_dns(p, stp_resolver_tlsa(p->res, a->name, 25, on_dns, p));
        int failed = t && !stp_dns_answered(t->status);
        if (failed || (t && t->status == STP_DNS_OK && t->secure && t->ntlsa > 0)) {
            /* found there, or failed there (no fallback, as delivery) */
            snprintf(m->tlsa_base, sizeof(m->tlsa_base), "%s", a->name);
        } else {
            stp_dns_result_free(t);
            t = NULL;
        }
    }
    if (t == NULL) {
        t = wait_dns(p, stp_resolver_tlsa(p->res, m->host, 25, on_dns, p));
    }
    m->tlsa_status = t ? (int)t->status : STP_DNS_ERROR;
    m->tlsa_secure = t && t->secure;
    m->tlsa_failed =
        m->host_secure && mx_secure && !stp_dns_answered((stp_dns_status_t)m->tlsa_status);
    for (size_t i = 0; t && i < t->ntlsa && i < 8; i++) {
        tlsa_text(&t->tlsa[i], m->tlsa[m->ntlsa++], sizeof(m->tlsa[0]));
    }
    int usable =
        t && t->status == STP_DNS_OK && t->secure && t->ntlsa > 0 && m->host_secure && mx_secure;
    probe_smtp(p, m, (const struct sockaddr *)&a->addr[0], usable ? t : NULL);
    if (m->starttls < 0 && a->naddr > 1 && m->smtp_err[0]) {
        /* the first address did not answer: try the next, as delivery would */
        char first[400];
        snprintf(first, sizeof(first), "%s", m->smtp_err);
        m->smtp_err[0] = '\0';
        probe_smtp(p, m, (const struct sockaddr *)&a->addr[1], usable ? t : NULL);
        if (m->starttls < 0 && m->smtp_err[0] == '\0') {
            snprintf(m->smtp_err, sizeof(m->smtp_err), "%s", first);
        }
    }
    int none_usable = t == NULL || !stp_dane_any_usable(t->tlsa, t->ntlsa);
    stp_dns_result_free(a);
    stp_dns_result_free(t);
    verdict(p, pol, m, usable, none_usable);
}


/* The trust store delivery would verify DOMAIN's MX hosts with: its
 * [policy:] section's ca_file, else the route = mx listener's (which
 * defaults to [tls] ca_file), else [tls] ca_file. "" is the system's. */
static const char *probe_ca_file(const stp_config_t *cf, const char *domain)
{
    const stp_domain_policy_t *pol = stp_policy_lookup(&cf->policies, domain);
    if (pol != NULL && pol->ca_file[0]) {
        return pol->ca_file;
    }
    for (size_t i = 0; i < cf->nlisteners; i++) {
        const stp_listener_conf_t *lc = &cf->listeners[i];
        if (lc->mode == STP_MODE_OUTBOUND && lc->route == STP_ROUTE_MX) {
            return lc->ca_file;
        }
    }
    return cf->ca_file;
}

int stp_probe_main(int argc, char **argv, const char *default_config)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int json = 0, ch;
    char err[16384];

    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:jh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            printf("usage: smtp-tls-proxy probe DOMAIN [--json] [-c FILE]\n");
            return 0;
        default:
            fprintf(stderr, "usage: smtp-tls-proxy probe DOMAIN [--json] [-c FILE]\n");
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: smtp-tls-proxy probe DOMAIN [--json] [-c FILE]\n");
        return 2;
    }
    char domain[256];
    const char *arg = argv[optind];
    size_t arg_len = strlen(arg);
    if (arg_len > 1 && arg[arg_len - 1] == '.') {
        arg_len--;
    }
    /* lower case; a UTF-8 domain by its A-labels, as delivery routes it */
    if (stp_domain_name_ascii(arg, arg_len, domain) < 0 || !stp_mta_sts_domain_valid(domain)) {
        fprintf(stderr, "probe: %s is not a domain name\n", argv[optind]);
        return 2;
    }

    stp_config_t *cf = NULL;
    if (path == NULL && access(default_config, R_OK) == 0) {
        path = default_config;
    }
    if (path) {
        cf = stp_config_load(path, err, sizeof(err));
    } else {
        /* No configuration: the defaults (system resolver, port 25, 443). */
        cf = stp_config_load_string(
            "[listener:probe]\nmode = outbound\nlisten = 127.0.0.1:10025\nroute = mx\n",
            "(defaults)", err, sizeof(err));
    }
    if (cf == NULL) {
        fputs(err, stderr);
        return 1;
    }
    probe_t p = {.cf = cf, .domain = domain};
    const char *ca = probe_ca_file(cf, domain);
    p.ctx = stp_tls_ctx_client_new(ca[0] ? ca : NULL, TLS1_2_VERSION, err, sizeof(err));
    if (p.ctx == NULL || stp_resolver_global_init() < 0) {
        fprintf(stderr, "probe: %s\n", p.ctx ? "c-ares initialisation failed" : err);
        SSL_CTX_free(p.ctx);
        stp_config_free(cf);
        return 1;
    }
    uv_loop_init(&p.loop);
    p.res = stp_resolver_new(&p.loop, cf->resolver, (unsigned)cf->dns_timeout, err, sizeof(err));
    int rc = 0;
    if (p.res == NULL) {
        fprintf(stderr, "probe: resolver: %s\n", err);
        rc = 1;
        goto done;
    }
    const stp_domain_policy_t *pol = stp_policy_lookup(&cf->policies, domain);
    if (pol == NULL) { /* cannot be: the name was checked above, by the same rules */
        fprintf(stderr, "probe: %s is not a domain name\n", domain);
        rc = 2;
        goto done;
    }
    stp_dns_result_t *mx = wait_dns(&p, stp_resolver_mx(p.res, domain, on_dns, &p));
    if (mx == NULL || mx->status != STP_DNS_OK || mx->null_mx) {
        const char *what = mx == NULL                       ? "invalid name"
                           : mx->null_mx                    ? "null MX: the domain accepts no mail"
                           : mx->status == STP_DNS_NXDOMAIN ? "the domain does not exist"
                                                            : mx->why;
        if (json) {
            printf("{\"domain\":");
            json_str(stdout, domain);
            printf(",\"error\":");
            json_str(stdout, what ? what : "lookup failed");
            printf(",\"mx\":[]}\n");
        } else {
            printf("%s\n  %-13s%s\n", domain, "MX records", what ? what : "lookup failed");
        }
        stp_dns_result_free(mx);
        rc = 1;
        goto done;
    }
    load_state(&p, domain);
    if (p.state == NULL) {
        fprintf(stderr, "probe: out of memory\n");
        stp_dns_result_free(mx);
        rc = 1;
        goto done;
    }
    if (pol->tls == STP_POLICY_TLS_DANE || pol->tls == STP_POLICY_TLS_MTA_STS ||
        pol->tls == STP_POLICY_TLS_DANE_ONLY) {
        probe_sts(&p, domain);
    } else {
        snprintf(p.sts_txt, sizeof(p.sts_txt), "not used (tls = %s)",
                 stp_policy_tls_name(pol->tls));
    }
    mx_report_t *ms = calloc(mx->nmx, sizeof(*ms));
    if (ms == NULL) {
        stp_dns_result_free(mx);
        rc = 1;
        goto done;
    }
    for (size_t i = 0; i < mx->nmx; i++) {
        ms[i].pref = mx->mx[i].preference;
        snprintf(ms[i].host, sizeof(ms[i].host), "%s", mx->mx[i].host);
        probe_mx(&p, pol, &ms[i], mx->secure);
    }
    if (json) {
        print_json(&p, domain, pol, mx, ms, mx->nmx);
    } else {
        print_text(&p, domain, pol, mx, ms, mx->nmx);
    }
    free(ms);
    stp_dns_result_free(mx);
done:
    stp_cache_free(p.state);
    stp_resolver_close(p.res);
    uv_run(&p.loop, UV_RUN_DEFAULT);
    uv_loop_close(&p.loop);
    SSL_CTX_free(p.ctx);
    stp_config_free(cf);
    return rc;
}
