/*
 * mta_sts_fetch: the HTTPS policy fetch, built from parts the proxy already
 * has: proxy/conn (a TCP connection with the memory-BIO TLS engine), the
 * tls_ctx client context and tls_verify, and two pure parsers fed straight
 * from the socket (HTTP response, then MTA-STS policy), so no response is
 * ever buffered whole and nothing grows past the 64 KiB cap.
 *
 * Life cycle: start -> connect -> handshake -> verify -> request -> read
 * until the response is complete or fails; whatever happens first (an
 * error, the end, the timer, cancel) runs finish() once, which closes both
 * handles; the object is freed in the second close callback. The callback
 * is called from finish(), so always from a libuv callback.
 *
 * Connecting goes through the addresses in order: when one fails (refused,
 * unreachable, or no connection within its share of the time left: that
 * time divided among the addresses not yet tried), the conn is closed and,
 * in its close callback, set up again for the next one. The one timer and
 * its deadline bound the whole fetch, however many addresses it tries.
 */
#include "proxy/mta_sts_fetch.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/http_resp.h"
#include "proxy/conn.h"
#include "tls/tls_engine.h"
#include "tls/tls_verify.h"

#define DEFAULT_TIMEOUT_MS 30000

struct stp_mta_sts_fetch_s {
    stp_conn_t conn;
    uv_timer_t timer;
    uv_loop_t *loop;
    SSL_CTX *ctx;
    stp_mta_sts_fetch_cb cb;
    void *arg;
    uint64_t started;
    uint64_t timeout_ms;
    uint64_t deadline; /* started + timeout_ms (uv_now) */
    struct sockaddr_storage addrs[STP_MTA_STS_FETCH_MAX_ADDR];
    size_t naddr, iaddr;      /* iaddr: the address being connected to, or connected */
    char connect_errors[384]; /* "ADDR: error; ..." of the addresses that failed */
    char host[256]; /* mta-sts.DOMAIN, lower case, no trailing dot */
    char request[512];
    int port;

    stp_http_resp_t http;
    stp_mta_sts_parser_t sts;
    stp_mta_sts_policy_t policy;

    int open_handles; /* freed when it drops to 0 */
    unsigned done : 1;
    unsigned cancelled : 1;
    unsigned headers : 1;
    unsigned secured : 1; /* handshake done and peer verified */
    unsigned connected : 1;
    unsigned reconnecting : 1; /* the conn is closing; its close callback connects anew */

    /* a connect error found at once (inside start, or for the next
     * address), reported from the timer */
    const char *early_error;
};

static const stp_conn_cb_t conn_cb;

const char *stp_mta_sts_fetch_status_name(stp_mta_sts_fetch_status_t s)
{
    switch (s) {
    case STP_MTA_STS_FETCH_OK:
        return "ok";
    case STP_MTA_STS_FETCH_CONNECT:
        return "connect";
    case STP_MTA_STS_FETCH_TLS:
        return "tls";
    case STP_MTA_STS_FETCH_CERT:
        return "certificate";
    case STP_MTA_STS_FETCH_HTTP:
        return "http";
    case STP_MTA_STS_FETCH_TOO_BIG:
        return "too-big";
    case STP_MTA_STS_FETCH_POLICY:
        return "policy";
    case STP_MTA_STS_FETCH_TIMEOUT:
        return "timeout";
    case STP_MTA_STS_FETCH_IO:
        return "io";
    case STP_MTA_STS_FETCH_INTERNAL:
        return "internal";
    }
    return "?";
}

static void release(stp_mta_sts_fetch_t *f)
{
    if (--f->open_handles > 0) {
        return;
    }
    SSL_CTX_free(f->ctx);
    free(f);
}

static void on_timer_close(uv_handle_t *h)
{
    release(h->data);
}

static void connect_current(stp_mta_sts_fetch_t *f);
static void finish(stp_mta_sts_fetch_t *f, stp_mta_sts_fetch_status_t status, const char *error);

static void on_conn_close(stp_conn_t *c)
{
    stp_mta_sts_fetch_t *f = c->owner;
    if (f->reconnecting && !f->done) {
        f->reconnecting = 0;
        if (stp_conn_init(f->loop, &f->conn, &conn_cb, f) < 0) {
            f->open_handles--; /* no conn any more: only the timer is left */
            finish(f, STP_MTA_STS_FETCH_INTERNAL, "out of memory");
            return;
        }
        connect_current(f);
        return;
    }
    release(f);
}

/* The one way out: report (unless cancelled), then close both handles. */
static void finish(stp_mta_sts_fetch_t *f, stp_mta_sts_fetch_status_t status, const char *error)
{
    if (f->done) {
        return;
    }
    f->done = 1;
    uv_timer_stop(&f->timer);
    if (!f->cancelled && f->cb) {
        stp_mta_sts_fetch_result_t r;
        memset(&r, 0, sizeof(r));
        r.status = status;
        r.http_status = f->http.status;
        r.error = error ? error : "";
        r.policy = status == STP_MTA_STS_FETCH_OK ? &f->policy : NULL;
        r.elapsed_ms = uv_now(f->loop) - f->started;
        f->cb(&r, f->arg);
    }
    stp_conn_close(&f->conn);
    uv_close((uv_handle_t *)&f->timer, on_timer_close);
}

static void fail_fmt(stp_mta_sts_fetch_t *f, stp_mta_sts_fetch_status_t status, const char *what,
                     const char *detail)
{
    char msg[512];
    /* the detail is bounded so that -O2's truncation analysis sees it fit */
    snprintf(msg, sizeof(msg), "%s%s%.384s", what, detail && *detail ? ": " : "",
             detail ? detail : "");
    finish(f, status, msg);
}

/*
 * Connecting to the current address failed (`err`): the next address if
 * there is one and time is left, else the failure, naming every address
 * tried when there were several.
 */
static void connect_failed(stp_mta_sts_fetch_t *f, const char *err)
{
    char addr[80];
    size_t used = strlen(f->connect_errors);
    stp_sockaddr_str((const struct sockaddr *)&f->addrs[f->iaddr], addr, sizeof(addr), 1);
    snprintf(f->connect_errors + used, sizeof(f->connect_errors) - used, "%s%s: %s",
             used ? "; " : "", addr, err);
    if (f->iaddr + 1 < f->naddr && uv_now(f->loop) < f->deadline) {
        f->iaddr++;
        f->reconnecting = 1;
        uv_timer_stop(&f->timer);
        stp_conn_close(&f->conn); /* on_conn_close connects to the next address */
        return;
    }
    if (f->naddr == 1) {
        fail_fmt(f, STP_MTA_STS_FETCH_CONNECT, "cannot connect to the policy host", err);
    } else {
        fail_fmt(f, STP_MTA_STS_FETCH_CONNECT, "cannot connect to the policy host at any address",
                 f->connect_errors);
    }
}

static void on_timer(uv_timer_t *t)
{
    stp_mta_sts_fetch_t *f = t->data;
    char msg[384];
    if (f->early_error) {
        const char *err = f->early_error;
        f->early_error = NULL;
        connect_failed(f, err);
        return;
    }
    if (!f->connected && f->iaddr + 1 < f->naddr) {
        /* this address's share of the time is over: the next one */
        connect_failed(f, "connection timed out");
        return;
    }
    snprintf(msg, sizeof(msg), "no complete policy from %s within %llu ms", f->host,
             (unsigned long long)f->timeout_ms);
    finish(f, STP_MTA_STS_FETCH_TIMEOUT, msg);
}

/* The body is complete: it must parse as a policy. */
static void body_done(stp_mta_sts_fetch_t *f)
{
    char why[256];
    if (stp_mta_sts_parser_finish(&f->sts) != STP_MTA_STS_OK) {
        fail_fmt(f, STP_MTA_STS_FETCH_POLICY, "invalid policy",
                 stp_mta_sts_parser_error(&f->sts, why, sizeof(why)));
        return;
    }
    finish(f, STP_MTA_STS_FETCH_OK, NULL);
}

static void http_failed(stp_mta_sts_fetch_t *f)
{
    char why[256];
    stp_http_resp_error(&f->http, why, sizeof(why));
    /* the parser refuses an oversized body before it arrives */
    int big = strncmp(why, "body over ", 10) == 0;
    finish(f, big ? STP_MTA_STS_FETCH_TOO_BIG : STP_MTA_STS_FETCH_HTTP, why);
}

static void on_read(stp_conn_t *c, const char *data, size_t len)
{
    stp_mta_sts_fetch_t *f = c->owner;
    size_t pos = 0;

    while (!f->done) {
        size_t used = 0, blen = 0;
        const char *body = NULL;
        int rc = stp_http_resp_feed(&f->http, data + pos, len - pos, &used, &body, &blen);
        pos += used;
        switch (rc) {
        case STP_HTTP_AGAIN:
            return;
        case STP_HTTP_HEADERS:
            f->headers = 1;
            break;
        case STP_HTTP_BODY:
            /* judged as it arrives: an invalid policy ends the fetch early */
            if (stp_mta_sts_parser_feed(&f->sts, body, blen) == STP_MTA_STS_ERROR) {
                char why[256];
                fail_fmt(f, STP_MTA_STS_FETCH_POLICY, "invalid policy",
                         stp_mta_sts_parser_error(&f->sts, why, sizeof(why)));
            }
            break;
        case STP_HTTP_DONE:
            body_done(f);
            return;
        default:
            http_failed(f);
            return;
        }
    }
}

static void on_eof(stp_conn_t *c, const char *err)
{
    stp_mta_sts_fetch_t *f = c->owner;
    if (f->done) {
        return;
    }
    if (!f->secured) {
        fail_fmt(f, STP_MTA_STS_FETCH_TLS, "connection closed during the TLS handshake", err);
        return;
    }
    if (err) {
        fail_fmt(f, STP_MTA_STS_FETCH_IO, "connection to the policy host failed", err);
        return;
    }
    /*
     * A body that ends with the connection must end with TLS close_notify:
     * a bare TCP FIN could be an attacker cutting the policy short.
     */
    if (f->http.framing == STP_HTTP_FRAMING_CLOSE && f->headers && c->tls &&
        !(SSL_get_shutdown(stp_tls_engine_ssl(c->tls)) & SSL_RECEIVED_SHUTDOWN)) {
        finish(f, STP_MTA_STS_FETCH_IO,
               "connection closed without TLS close_notify before the end of the body");
        return;
    }
    if (stp_http_resp_eof(&f->http) != STP_HTTP_DONE) {
        char why[256];
        /* a response cut short is a transport failure, not the server's answer */
        finish(f, STP_MTA_STS_FETCH_IO, stp_http_resp_error(&f->http, why, sizeof(why)));
        return;
    }
    body_done(f);
}

static void on_handshake(stp_conn_t *c, const char *err)
{
    stp_mta_sts_fetch_t *f = c->owner;
    char why[512];
    if (err) {
        fail_fmt(f, STP_MTA_STS_FETCH_TLS, "TLS handshake with the policy host failed", err);
        return;
    }
    const char *name = f->host;
    if (stp_tls_verify_peer(stp_tls_engine_ssl(c->tls), &name, 1, why, sizeof(why)) !=
        STP_VERIFY_OK) {
        fail_fmt(f, STP_MTA_STS_FETCH_CERT, "certificate of the policy host not verified", why);
        return;
    }
    f->secured = 1;
    if (stp_conn_write(c, f->request, strlen(f->request)) < 0) {
        finish(f, STP_MTA_STS_FETCH_IO, "cannot send the request");
    }
}

static void on_connect(stp_conn_t *c, const char *err)
{
    stp_mta_sts_fetch_t *f = c->owner;
    if (err) {
        connect_failed(f, err);
        return;
    }
    f->connected = 1;
    if (f->iaddr + 1 < f->naddr) {
        /* the timer held this address's share: the rest of the whole time is the bound now */
        uint64_t now = uv_now(f->loop);
        uv_timer_start(&f->timer, on_timer, f->deadline > now ? f->deadline - now : 0, 0);
    }
    stp_tls_engine_t *e = stp_tls_engine_new_client(f->ctx, f->host);
    if (e == NULL) {
        finish(f, STP_MTA_STS_FETCH_INTERNAL, "out of memory");
        return;
    }
    stp_tls_verify_prepare(stp_tls_engine_ssl(e));
    stp_conn_read_start(c);
    stp_conn_start_tls(c, e);
}

static const stp_conn_cb_t conn_cb = {
    .on_read = on_read,
    .on_eof = on_eof,
    .on_connect = on_connect,
    .on_handshake = on_handshake,
    .on_close = on_conn_close,
};

static int port_of(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    }
    if (sa->sa_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    }
    return -1;
}

/* Connects to addrs[iaddr] under its share of the time left (see the top). */
static void connect_current(stp_mta_sts_fetch_t *f)
{
    uint64_t now = uv_now(f->loop);
    uint64_t left = f->deadline > now ? f->deadline - now : 0;
    uint64_t share = left / (f->naddr - f->iaddr);
    int rc = stp_conn_connect(&f->conn, (const struct sockaddr *)&f->addrs[f->iaddr]);
    if (rc < 0) {
        /* reported from the loop, like every other outcome */
        f->early_error = uv_strerror(rc);
        uv_timer_start(&f->timer, on_timer, 0, 0);
    } else {
        uv_timer_start(&f->timer, on_timer, share, 0);
    }
}

stp_mta_sts_fetch_t *stp_mta_sts_fetch_start(uv_loop_t *loop, const stp_mta_sts_fetch_opts_t *o,
                                             stp_mta_sts_fetch_cb cb, void *arg)
{
    if (loop == NULL || o == NULL || o->ctx == NULL || o->domain == NULL || o->addrs == NULL ||
        o->naddr == 0 || cb == NULL || !stp_mta_sts_domain_valid(o->domain)) {
        return NULL;
    }
    size_t naddr = o->naddr < STP_MTA_STS_FETCH_MAX_ADDR ? o->naddr : STP_MTA_STS_FETCH_MAX_ADDR;
    int port = port_of((const struct sockaddr *)&o->addrs[0]);
    for (size_t i = 1; i < naddr; i++) {
        if (port_of((const struct sockaddr *)&o->addrs[i]) != port) {
            return NULL; /* one host, one port: the Host header names it */
        }
    }
    size_t dlen = strlen(o->domain);
    if (o->domain[dlen - 1] == '.') {
        dlen--;
    }
    if (port <= 0 || dlen + 8 > 253) {
        return NULL;
    }
    stp_mta_sts_fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return NULL;
    }
    f->loop = loop;
    f->cb = cb;
    f->arg = arg;
    f->port = port;
    f->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    memcpy(f->addrs, o->addrs, naddr * sizeof(o->addrs[0]));
    f->naddr = naddr;
    memcpy(f->host, "mta-sts.", 8);
    for (size_t i = 0; i < dlen; i++) {
        char ch = o->domain[i];
        f->host[8 + i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
    f->host[8 + dlen] = '\0';
    char hostport[300];
    if (port == 443) {
        snprintf(hostport, sizeof(hostport), "%s", f->host);
    } else {
        snprintf(hostport, sizeof(hostport), "%s:%d", f->host, port);
    }
    snprintf(f->request, sizeof(f->request),
             "GET /.well-known/mta-sts.txt HTTP/1.1\r\n"
             "Host: %s\r\n"
             "User-Agent: smtp-tls-proxy\r\n"
             "Accept: text/plain\r\n"
             "Connection: close\r\n"
             "\r\n",
             hostport);
    stp_http_resp_init(&f->http, STP_HTTP_MTA_STS_BODY_MAX);
    stp_mta_sts_parser_init(&f->sts, &f->policy);

    if (uv_timer_init(loop, &f->timer) < 0) {
        free(f);
        return NULL;
    }
    f->timer.data = f;
    f->open_handles = 1;
    if (stp_conn_init(loop, &f->conn, &conn_cb, f) < 0) {
        uv_close((uv_handle_t *)&f->timer, on_timer_close);
        return NULL; /* freed by the timer's close callback */
    }
    f->open_handles = 2;
    SSL_CTX_up_ref(o->ctx);
    f->ctx = o->ctx;
    f->started = uv_now(loop);
    f->deadline = f->started + f->timeout_ms;
    connect_current(f);
    return f;
}

void stp_mta_sts_fetch_cancel(stp_mta_sts_fetch_t *f)
{
    if (f == NULL || f->done) {
        return;
    }
    f->cancelled = 1;
    finish(f, STP_MTA_STS_FETCH_INTERNAL, "cancelled");
}
