/*
 * metrics_http: the monitoring endpoint (see metrics_http.h).
 *
 * Each connection reads one request head into its parser under a read
 * timer, answers once, shuts its write side down and then discards input
 * until the peer closes or the linger timer fires (closing with unread
 * input would reset the connection and could lose the answer). The timer
 * runs in every state: reading the request, writing the answer (a client
 * that never reads a large /metrics body must not keep its slot) and
 * lingering. Connections are capped, and a new one over the cap closes
 * the oldest connection that has not sent its request yet (else the oldest
 * of all): a probe must be answered even when idle connections fill the
 * table, or one stuck scraper takes every pod out of a Service. The
 * listening socket is an acceptor (acceptor.h), as the listeners' are: out
 * of descriptors or memory, a connection is closed and the endpoint goes
 * on, and the main thread's loop, which also runs signals and reloads,
 * never spins. The server's state is one static struct.
 */
#include "proxy/metrics_http.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/acceptor.h"
#include "proxy/http_req.h"
#include "proxy/log.h"
#include "proxy/metrics.h"

#define READ_TIMEOUT_MS 5000
/* Prometheus' default scrape_timeout: a scraper that has not read the
 * answer by then has given up on it. */
#define WRITE_TIMEOUT_MS 10000
#define LINGER_MS 2000
#define MAX_CONNS 32

typedef struct conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct conn_s *prev, *next;
    int closing;  /* handles closing: wait for both callbacks */
    int pending;  /* close callbacks still to come */
    int answered; /* response written: discard further input */
    char *out;    /* response bytes (owned) */
    char rbuf[1024];
    stp_http_req_t req;
} conn_t;

static struct {
    int running;
    stp_acceptor_t acceptor;
    uv_loop_t *loop;
    stp_metrics_ready_fn ready;
    void *arg;
    conn_t *conns;
    unsigned nconns;
    stp_log_ratelimit_t accept_err; /* refusals and pauses: a line a second */
} srv;

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->pending > 0) {
        return;
    }
    free(c->out);
    free(c);
}

static void conn_close(conn_t *c)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        srv.conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    srv.nconns--;
    c->pending = 2;
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_timer(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0) {
        conn_close(c);
    }
}

static void on_written(uv_write_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/* Renders the registry into a new buffer (grown until it fits). */
static char *render_metrics(size_t *len)
{
    size_t cap = 16384;
    for (int i = 0; i < 8; i++) {
        char *buf = malloc(cap);
        if (buf == NULL) {
            return NULL;
        }
        size_t need = stp_metrics_render(buf, cap);
        if (need < cap) {
            *len = need;
            return buf;
        }
        free(buf);
        cap = need + 1024;
    }
    return NULL;
}

static void respond(conn_t *c, int status, const char *ctype, const char *body, size_t blen,
                    int head)
{
    char hdr[256];
    int hl = snprintf(hdr, sizeof(hdr),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                      status, reason_of(status), ctype, blen);
    size_t bl = head ? 0 : blen;
    c->out = malloc((size_t)hl + bl);
    if (hl < 0 || (size_t)hl >= sizeof(hdr) || c->out == NULL) {
        conn_close(c);
        return;
    }
    memcpy(c->out, hdr, (size_t)hl);
    if (bl) {
        memcpy(c->out + hl, body, bl);
    }
    c->answered = 1;
    uv_buf_t b = uv_buf_init(c->out, (unsigned)((size_t)hl + bl));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        conn_close(c);
    }
}

static void route(conn_t *c)
{
    static const char text[] = "text/plain; charset=utf-8";
    int head = c->req.method == STP_HTTP_HEAD;
    const char *p = c->req.path;

    if (strcmp(p, "/metrics") == 0) {
        size_t len = 0;
        char *body = render_metrics(&len);
        if (body == NULL) {
            respond(c, 500, text, "out of memory\n", 14, head);
            return;
        }
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", body, len, head);
        free(body);
    } else if (strcmp(p, "/healthz") == 0) {
        respond(c, 200, text, "ok\n", 3, head);
    } else if (strcmp(p, "/readyz") == 0) {
        if (srv.ready == NULL || srv.ready(srv.arg)) {
            respond(c, 200, text, "ready\n", 6, head);
        } else {
            respond(c, 503, text, "draining\n", 9, head);
        }
    } else {
        respond(c, 404, text, "not found\n", 10, head);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->answered || c->closing) {
        return; /* after the answer, input is discarded until EOF */
    }
    size_t used = 0;
    int rc = stp_http_req_feed(&c->req, buf->base, (size_t)nread, &used);
    if (rc == STP_HTTP_AGAIN) {
        return;
    }
    uv_timer_start(&c->timer, on_timer, WRITE_TIMEOUT_MS, 0);
    if (rc == STP_HTTP_DONE) {
        route(c);
    } else {
        char body[64];
        int n = snprintf(body, sizeof(body), "%s\n", reason_of(c->req.status));
        respond(c, c->req.status, "text/plain; charset=utf-8", body, (size_t)n, 0);
    }
}

/* Makes room for a new connection (see the top of the file). */
static void evict_one(void)
{
    conn_t *oldest = NULL, *oldest_unanswered = NULL;
    for (conn_t *c = srv.conns; c; c = c->next) { /* newest first */
        oldest = c;
        if (!c->answered) {
            oldest_unanswered = c;
        }
    }
    if (oldest_unanswered || oldest) {
        conn_close(oldest_unanswered ? oldest_unanswered : oldest);
    }
}

static void accept_trouble(int err, const char *result)
{
    unsigned quiet;
    if (stp_log_allow(&srv.accept_err, uv_now(srv.loop), &quiet)) {
        stp_log(STP_LOG_WARN, "accept endpoint=metrics error=\"%s\" repeated=%u result=%s",
                err == UV_ENOMEM ? "out of memory" : uv_strerror(err), quiet, result);
    }
}

static void on_conn(stp_acceptor_t *a, int fd, const struct sockaddr *peer, socklen_t len)
{
    (void)a;
    (void)peer;
    (void)len;
    while (srv.nconns >= MAX_CONNS && srv.conns) {
        evict_one();
    }
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd); /* and the next connection is accepted as usual */
        accept_trouble(UV_ENOMEM, "closed");
        return;
    }
    uv_tcp_init(srv.loop, &c->tcp);
    uv_timer_init(srv.loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    stp_http_req_init(&c->req);
    c->next = srv.conns;
    if (srv.conns) {
        srv.conns->prev = c;
    }
    srv.conns = c;
    srv.nconns++;
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd); /* uv_tcp_open() takes it only on success */
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, READ_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_close(c);
    }
}

/* Out of descriptors: a scraper or a probe is told nothing it could
 * read before its request; the close (the acceptor's) makes it retry or
 * fail at once instead of waiting for its timeout. */
static void on_shed(stp_acceptor_t *a, int fd, int err)
{
    (void)a;
    (void)fd;
    accept_trouble(err, "closed");
}

static void on_pause(stp_acceptor_t *a, int err)
{
    (void)a;
    accept_trouble(err, "paused");
}

/* The listening socket, as uv_tcp_bind() made it before: SO_REUSEADDR, an
 * IPv6 address dual-stack whatever net.ipv6.bindv6only says. Returns the
 * descriptor or -1 (errno set). */
static int listen_socket(const struct sockaddr *addr)
{
    int one = 1, zero = 0;
    int v6 = addr->sa_family == AF_INET6;
    socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0) ||
        bind(fd, addr, len) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int stp_metrics_http_start(uv_loop_t *loop, const struct sockaddr *addr, stp_metrics_ready_fn ready,
                           void *arg, char *err, size_t errlen)
{
    if (srv.running) {
        snprintf(err, errlen, "metrics endpoint already running");
        return -1;
    }
    memset(&srv, 0, sizeof(srv));
    srv.ready = ready;
    srv.arg = arg;
    srv.loop = loop;
    int fd = listen_socket(addr);
    int rc = fd < 0 ? uv_translate_sys_error(errno) : 0;
    if (rc == 0) {
        srv.acceptor.on_conn = on_conn;
        srv.acceptor.on_shed = on_shed;
        srv.acceptor.on_pause = on_pause;
        rc = stp_acceptor_start(&srv.acceptor, loop, fd); /* closes itself on failure */
    }
    if (rc < 0) {
        snprintf(err, errlen, "metrics: cannot listen: %s", uv_strerror(rc));
        return -1;
    }
    srv.running = 1;
    return 0;
}

void stp_metrics_http_stop(void)
{
    if (!srv.running) {
        return;
    }
    srv.running = 0;
    stp_acceptor_close(&srv.acceptor);
    while (srv.conns) {
        conn_close(srv.conns);
    }
}
