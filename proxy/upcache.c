/*
 * upcache: parked next hop connections (see upcache.h).
 *
 * The parked connections form one list in the order they were parked, so
 * the head is always the first to expire and one timer, armed for it, does
 * for all. take() searches from the tail: the most recently parked
 * connection is the one least likely to have been closed by its next hop.
 */
#include "proxy/upcache.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/log.h"

struct stp_upcache_s {
    uv_loop_t *loop;
    uv_timer_t timer;
    stp_upconn_t *head, *tail; /* parked */
    unsigned parked;
    unsigned open; /* connections of the cache not yet closed (parked or saying QUIT) */
    int closing;
    int timer_open;
    void (*on_closed)(void *arg);
    void *arg;
};

stp_upconn_t *stp_upconn_new(void)
{
    return calloc(1, sizeof(stp_upconn_t));
}

void stp_upconn_free(stp_upconn_t *u)
{
    if (u != NULL) {
        free(u->ehlo);
        free(u);
    }
}

static void maybe_done(stp_upcache_t *c)
{
    if (c->closing && c->open == 0 && !c->timer_open) {
        c->on_closed(c->arg);
        free(c);
    }
}

static void unlink_conn(stp_upcache_t *c, stp_upconn_t *u)
{
    if (!u->parked) {
        return;
    }
    if (u->prev) {
        u->prev->next = u->next;
    } else {
        c->head = u->next;
    }
    if (u->next) {
        u->next->prev = u->prev;
    } else {
        c->tail = u->prev;
    }
    u->prev = u->next = NULL;
    u->parked = 0;
    c->parked--;
}

static void on_timer(uv_timer_t *t);

static void rearm(stp_upcache_t *c)
{
    if (!c->timer_open || c->closing) {
        return;
    }
    if (c->head == NULL) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->timer, on_timer, c->head->expire_ms > now ? c->head->expire_ms - now : 0, 0);
}

/* Out of the list; the connection stays counted in `open` until its close
 * callback. A live one is left politely. */
static void quit(stp_upcache_t *c, stp_upconn_t *u)
{
    unlink_conn(c, u);
    if (!u->conn.closing && !u->conn.eof && !u->conn.close_after_write) {
        stp_conn_write(&u->conn, "QUIT\r\n", 6);
        stp_conn_close_after_write(&u->conn);
    } else {
        stp_conn_close(&u->conn);
    }
}

static void on_timer(uv_timer_t *t)
{
    stp_upcache_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    while (c->head && c->head->expire_ms <= now) {
        stp_log(STP_LOG_DEBUG, "upcache next_hop=%s result=expired uses=%u", c->head->key,
                c->head->uses);
        quit(c, c->head);
    }
    rearm(c);
}

/* A parked connection's next hop spoke (a 421 at its idle timeout, most
 * likely) or closed: it cannot be used again. */
static void parked_on_read(stp_conn_t *conn, const char *data, size_t len)
{
    stp_upconn_t *u = conn->owner;
    (void)data;
    (void)len;
    if (u->parked) {
        stp_log(STP_LOG_DEBUG, "upcache next_hop=%s result=closed-by-next-hop", u->key);
        unlink_conn(u->home, u);
        rearm(u->home);
    }
    stp_conn_close(conn);
}

static void parked_on_eof(stp_conn_t *conn, const char *err)
{
    (void)err;
    parked_on_read(conn, NULL, 0);
}

static void parked_on_connect(stp_conn_t *conn, const char *err)
{
    (void)conn;
    (void)err;
}

static void parked_on_close(stp_conn_t *conn);

static const stp_conn_cb_t parked_cb = {
    .on_read = parked_on_read,
    .on_eof = parked_on_eof,
    .on_connect = parked_on_connect,
    .on_handshake = parked_on_connect,
    .on_close = parked_on_close,
};

static void parked_on_close(stp_conn_t *conn)
{
    stp_upconn_t *u = conn->owner;
    stp_upcache_t *c = u->home;
    if (u->parked) {
        unlink_conn(c, u);
        rearm(c);
    }
    stp_upconn_free(u);
    c->open--;
    maybe_done(c);
}

stp_upcache_t *stp_upcache_new(uv_loop_t *loop, void (*on_closed)(void *arg), void *arg)
{
    stp_upcache_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->loop = loop;
    c->on_closed = on_closed;
    c->arg = arg;
    if (uv_timer_init(loop, &c->timer) < 0) {
        free(c);
        return NULL;
    }
    c->timer.data = c;
    c->timer_open = 1;
    return c;
}

int stp_upcache_put(stp_upcache_t *c, stp_upconn_t *u, uint64_t ttl_ms)
{
    if (c->closing || c->parked >= STP_UPCACHE_MAX || u->conn.closing || u->conn.eof ||
        u->conn.close_after_write) {
        return -1;
    }
    u->home = c;
    u->parked = 1;
    u->expire_ms = uv_now(c->loop) + ttl_ms;
    u->prev = c->tail;
    u->next = NULL;
    if (c->tail) {
        c->tail->next = u;
    } else {
        c->head = u;
    }
    c->tail = u;
    c->parked++;
    c->open++;
    u->conn.cb = &parked_cb;
    u->conn.owner = u;
    stp_conn_read_start(&u->conn);
    if (c->head == u) {
        rearm(c);
    }
    return 0;
}

stp_upconn_t *stp_upcache_take(stp_upcache_t *c, const char *key)
{
    for (stp_upconn_t *u = c->tail; u; u = u->prev) {
        if (u->conn.closing || u->conn.eof || strcmp(u->key, key) != 0) {
            continue;
        }
        unlink_conn(c, u);
        u->home = NULL;
        c->open--;
        rearm(c);
        return u;
    }
    return NULL;
}

void stp_upcache_flush(stp_upcache_t *c)
{
    while (c->head) {
        quit(c, c->head);
    }
    rearm(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    stp_upcache_t *c = h->data;
    c->timer_open = 0;
    maybe_done(c);
}

void stp_upcache_close(stp_upcache_t *c)
{
    if (c->closing) {
        return;
    }
    stp_upcache_flush(c);
    c->closing = 1;
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

unsigned stp_upcache_count(const stp_upcache_t *c)
{
    return c->parked;
}
