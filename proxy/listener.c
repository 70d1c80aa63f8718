/*
 * listener: builds the runtime snapshot and runs the listening sockets.
 */
#include "proxy/listener.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/conn.h"
#include "proxy/log.h"
#include "proxy/session.h"
#include "proxy/session_metrics.h"
#include "proxy/upcache.h"
#include "tls/tls_ctx.h"

/* Appends "FILE:LINE: message\n" (without LINE when 0) to err. */
static void add_error(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void add_error(char *err, size_t errlen, const char *file, int line, const char *fmt, ...)
{
    char text[1200];
    va_list ap;
    size_t used = strnlen(err, errlen);
    if (used + 1 >= errlen) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (line > 0) {
        snprintf(err + used, errlen - used, "%s:%d: %s\n", file, line, text);
    } else {
        snprintf(err + used, errlen - used, "%s: %s\n", file, text);
    }
}

stp_runtime_t *stp_runtime_new(stp_config_t *conf, char *err, size_t errlen)
{
    const char *file = conf->path ? conf->path : "(configuration)";
    char e[1200];
    int failed = 0;

    if (errlen > 0) {
        err[0] = '\0';
    }
    stp_runtime_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        add_error(err, errlen, file, 0, "out of memory");
        stp_config_free(conf);
        return NULL;
    }
    rt->conf = conf;
    rt->refs = 1;
    if (conf->ncerts > 0) {
        stp_tls_keypair_t pairs[STP_CONF_MAX_CERTS];
        for (size_t i = 0; i < conf->ncerts; i++) {
            pairs[i].cert_file = conf->certs[i].cert;
            pairs[i].key_file = conf->certs[i].key[0] ? conf->certs[i].key : NULL;
        }
        /* Every bad pair, each at the line of the key that named its file. */
        for (size_t i = 0; i < conf->ncerts; i++) {
            if (stp_tls_keypair_check(&pairs[i], e, sizeof(e)) < 0) {
                int key = strncmp(e, "key ", 4) == 0 && conf->certs[i].key_line > 0;
                add_error(err, errlen, file,
                          key ? conf->certs[i].key_line : conf->certs[i].cert_line, "%s", e);
                failed = 1;
            }
        }
        if (!failed) {
            size_t bad;
            rt->server_ctx = stp_tls_ctx_server_new(pairs, conf->ncerts, conf->min_version, e,
                                                    sizeof(e), &bad);
            if (rt->server_ctx == NULL) {
                /* at the line of the cert it is about (the second of two that clash) */
                add_error(err, errlen, file, bad < conf->ncerts ? conf->certs[bad].cert_line : 0,
                          "%s", e);
                failed = 1;
            }
        }
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        stp_listener_conf_t *l = &conf->listeners[i];
        if (l->mode != STP_MODE_OUTBOUND) {
            continue;
        }
        /* A relay given by name is resolved once here, at start-up. */
        if (l->route == STP_ROUTE_RELAY && l->relay.addr_len == 0) {
            struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
            char port[8];
            snprintf(port, sizeof(port), "%u", l->relay.port);
            int rc = getaddrinfo(l->relay.host, port, &hints, &res);
            if (rc != 0 || res == NULL) {
                add_error(err, errlen, file, l->route_line,
                          "listener '%s': cannot resolve relay '%s': %s", l->name, l->relay.host,
                          gai_strerror(rc));
                failed = 1;
            } else {
                memcpy(&l->relay.addr, res->ai_addr, res->ai_addrlen);
                l->relay.addr_len = res->ai_addrlen;
                /* the check config.c makes for an address, once the name has one */
                const char *loop = stp_config_loop_note(&l->listen, &l->relay);
                if (loop != NULL) {
                    add_error(err, errlen, file, l->route_line,
                              "route: relay '%s' is the listener's own address%s: connections "
                              "would loop",
                              l->relay.host, loop);
                    failed = 1;
                }
            }
            if (res != NULL) {
                freeaddrinfo(res);
            }
        }
        if (l->tls == STP_TLS_LEVEL_NONE && l->route != STP_ROUTE_MX) {
            continue; /* route = mx: each domain's policy decides, TLS may be needed */
        }
        rt->client_ctx[i] =
            stp_tls_ctx_client_new(l->ca_file[0] ? l->ca_file : NULL, TLS1_2_VERSION, e, sizeof(e));
        if (rt->client_ctx[i] == NULL) {
            add_error(err, errlen, file, l->ca_file[0] ? l->ca_file_line : 0, "listener '%s': %s",
                      l->name, e);
            failed = 1;
        }
    }
    if (failed) {
        stp_runtime_unref(rt);
        return NULL;
    }
    return rt;
}

void stp_runtime_ref(stp_runtime_t *rt)
{
    rt->refs++;
}

void stp_runtime_unref(stp_runtime_t *rt)
{
    if (rt == NULL || --rt->refs > 0) {
        return;
    }
    SSL_CTX_free(rt->server_ctx);
    for (size_t i = 0; i < STP_CONF_MAX_LISTENERS; i++) {
        SSL_CTX_free(rt->client_ctx[i]);
    }
    stp_config_free(rt->conf);
    free(rt);
}

/* What a refused client is told, after the 421 4.3.2 and the host name. */
static const char *refusal_text(int err)
{
    switch (err) {
    case UV_EMFILE:
        return "Too many open files";
    case UV_ENFILE:
        return "Too many open files in system";
    default:
        return "Out of memory";
    }
}

/*
 * A connection no session can be had for: out of descriptors (taken in the
 * acceptor's reserve slot, which the acceptor closes) or out of memory (the
 * caller closes it). A listener that speaks first in plaintext tells the
 * client to come back (what an MTA does at a 421) with one write on the
 * fresh socket, whose empty send buffer takes the line at once; an implicit
 * TLS listener says nothing, having nothing readable to say before a
 * handshake. Counted, and logged at most once a second. Allocates nothing.
 */
static void refuse(stp_listener_t *l, int fd, int err)
{
    const stp_listener_conf_t *conf = l->conf;
    if (conf->mode == STP_MODE_OUTBOUND || conf->starttls != STP_STARTTLS_IMPLICIT) {
        char line[sizeof(l->rt->conf->hostname) + 64];
        int n = snprintf(line, sizeof(line), "421 4.3.2 %s %s, try again later\r\n",
                         l->rt->conf->hostname, refusal_text(err));
        if (n > 0 && (size_t)n < sizeof(line) &&
            send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            /* the close says it instead */
        }
    }
    stp_sm_refused(conf->name,
                   err == UV_EMFILE || err == UV_ENFILE ? "out_of_descriptors" : "out_of_memory");
    unsigned quiet;
    if (stp_log_allow(&l->accept_err, uv_now(l->loop), &quiet)) {
        stp_log(STP_LOG_WARN, "accept listener=%s error=\"%s\" repeated=%u result=closed",
                conf->name, err == UV_ENOMEM ? "out of memory" : uv_strerror(err), quiet);
    }
}

static void on_conn(stp_acceptor_t *a, int fd, const struct sockaddr *peer, socklen_t len)
{
    stp_listener_t *l = a->data;
    stp_log(STP_LOG_DEBUG, "accept listener=%s worker=%u", l->conf->name, l->worker);
    int rc = l->on_accept(l, fd, peer, len);
    if (rc < 0) {
        refuse(l, fd, rc);
        close(fd);
    }
}

static void on_shed(stp_acceptor_t *a, int fd, int err)
{
    refuse(a->data, fd, err);
}

static void on_pause(stp_acceptor_t *a, int err)
{
    stp_listener_t *l = a->data;
    unsigned quiet;
    if (stp_log_allow(&l->accept_err, uv_now(l->loop), &quiet)) {
        stp_log(STP_LOG_WARN,
                "accept listener=%s error=\"%s\" repeated=%u result=paused pause=%ums",
                l->conf->name, uv_strerror(err), quiet, (unsigned)STP_ACCEPT_PAUSE_MS);
    }
}

/*
 * SO_REUSEPORT would let a second proxy (or anything else running as the
 * same user) share the address silently. A first bind without it tells
 * whether the address is already taken, like a plain bind always did.
 */
static int address_taken(const stp_listener_conf_t *conf, socklen_t len)
{
    int one = 1;
    int fd = socket(conf->listen.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0; /* the real socket() will say why */
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (conf->listen.addr.ss_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    int taken = bind(fd, (const struct sockaddr *)&conf->listen.addr, len) < 0 &&
                errno == EADDRINUSE;
    close(fd);
    return taken;
}

/* The accept queue's length. 0 asks for the longest the kernel allows:
 * Linux silently caps listen()'s backlog at net.core.somaxconn (of the
 * socket's network namespace), so INT_MAX follows that setting, also when an
 * administrator raises it, without reading /proc. */
static int listen_backlog(const stp_listener_conf_t *conf)
{
    return conf->backlog ? (int)conf->backlog : INT_MAX;
}

int stp_listener_bind(const stp_listener_conf_t *conf, int first)
{
    char addr[80];
    int one = 1;
    unsigned family = conf->listen.addr.ss_family;
    socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);

    stp_sockaddr_str((const struct sockaddr *)&conf->listen.addr, addr, sizeof(addr), 1);
    if (first && address_taken(conf, len)) {
        stp_log(STP_LOG_ERROR, "listen listener=%s addr=%s error=\"%s\"", conf->name, addr,
                strerror(EADDRINUSE));
        return -1;
    }
    int fd = socket((int)family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&conf->listen.addr, len) < 0 ||
        listen(fd, listen_backlog(conf)) < 0) {
        int e = errno;
        stp_log(STP_LOG_ERROR, "listen listener=%s addr=%s error=\"%s\"", conf->name, addr,
                strerror(e));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static void on_acceptor_closed(stp_acceptor_t *a)
{
    stp_listener_t *l = a->data;
    l->released = 1;
    stp_listener_session_done(l);
}

int stp_listener_start(stp_listener_t *l, uv_loop_t *loop, stp_runtime_t *rt,
                       const stp_listener_conf_t *conf, int fd, stp_limits_t *limits,
                       unsigned worker)
{
    char addr[80];

    memset(l, 0, sizeof(*l));
    l->loop = loop;
    l->on_accept = stp_session_accept;
    l->rt = rt;
    l->conf = conf;
    l->limits = limits;
    l->worker = worker;
    stp_sockaddr_str((const struct sockaddr *)&conf->listen.addr, addr, sizeof(addr), 1);
    l->acceptor.data = l;
    l->acceptor.on_conn = on_conn;
    l->acceptor.on_shed = on_shed;
    l->acceptor.on_pause = on_pause;
    l->acceptor.on_closed = on_acceptor_closed;
    int rc = stp_acceptor_start(&l->acceptor, loop, fd);
    if (rc < 0) {
        stp_log(STP_LOG_ERROR, "listen listener=%s addr=%s error=\"%s\"", conf->name, addr,
                uv_strerror(rc));
        l->closed = 1; /* released once the acceptor's handles are closed */
        return -1;
    }
    if (worker > 0) {
        return 0; /* the first worker's copy says it for all */
    }
    if (conf->mode == STP_MODE_OUTBOUND) {
        static const char *const levels[] = {"none", "may", "encrypt", "verify", "secure"};
        char hop[300];
        if (conf->route == STP_ROUTE_RELAY) {
            snprintf(hop, sizeof(hop), "relay:%s:%u", conf->relay.host, conf->relay.port);
        } else {
            snprintf(hop, sizeof(hop), "%s",
                     conf->route == STP_ROUTE_ORIGINAL_DST ? "original-dst" : "mx");
        }
        stp_log(STP_LOG_INFO, "listen listener=%s mode=outbound addr=%s route=%s tls=%s%s",
                conf->name, addr, hop,
                conf->route == STP_ROUTE_MX ? "per-domain" : levels[conf->tls],
                conf->testing ? " testing=yes" : "");
        return 0;
    }
    stp_log(STP_LOG_INFO, "listen listener=%s mode=%s addr=%s starttls=%s", conf->name,
            conf->mode == STP_MODE_INBOUND ? "inbound" : "outbound", addr,
            conf->starttls == STP_STARTTLS_IMPLICIT  ? "implicit"
            : conf->starttls == STP_STARTTLS_REQUIRE ? "require"
            : rt->server_ctx                         ? "offer"
                                                     : "off");
    return 0;
}

void stp_listener_session_done(stp_listener_t *l)
{
    if ((l->draining || l->retired) && l->nsessions == 0 && l->released && l->upcache == NULL &&
        l->on_empty) {
        void (*cb)(stp_listener_t *) = l->on_empty;
        l->on_empty = NULL;
        cb(l);
    }
}

void stp_listener_upcache_closed(void *arg)
{
    stp_listener_t *l = arg;
    l->upcache = NULL;
    stp_listener_session_done(l);
}

void stp_listener_reconfigured(stp_listener_t *l)
{
    if (l->upcache) {
        stp_upcache_flush(l->upcache);
    }
}

static void close_socket(stp_listener_t *l)
{
    if (l->upcache) {
        stp_upcache_close(l->upcache); /* no session parks on a closing listener */
    }
    if (!l->closed) {
        l->closed = 1;
        stp_acceptor_close(&l->acceptor);
    }
}

void stp_listener_retire(stp_listener_t *l)
{
    if (l->retired || l->draining) {
        return;
    }
    l->retired = 1;
    close_socket(l);
    stp_listener_session_done(l);
}

void stp_listener_drain(stp_listener_t *l)
{
    if (l->draining) {
        return;
    }
    l->draining = 1;
    close_socket(l);
    for (stp_session_t *s = l->sessions; s; s = stp_session_next(s)) {
        stp_session_drain(s);
    }
    stp_listener_session_done(l);
}

void stp_listener_kill_sessions(stp_listener_t *l)
{
    for (stp_session_t *s = l->sessions; s; s = stp_session_next(s)) {
        stp_session_kill(s);
    }
}
