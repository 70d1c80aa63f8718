/*
 * upcache_test: the connection cache over real loopback TCP. Parked conns
 * are found by key, most recent first; one whose peer speaks or closes is
 * dropped; one parked past its time says QUIT; closing the cache says QUIT
 * on every parked conn and reports once nothing is left open; a full cache
 * refuses. Memory is checked by the sanitizer pass (every conn the cache
 * owned is freed by it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proxy/upcache.h"
#include "test/unit/check.h"

#define PEERS (STP_UPCACHE_MAX + 2)

/* The next hop's end of one connection: keeps what it reads until EOF. */
typedef struct {
    uv_tcp_t tcp;
    char buf[256];
    size_t len;
    int eof;
} peer_t;

static uv_loop_t loop;
static uv_tcp_t server;
static peer_t peers[PEERS];
static int accepted, connected, freed, cache_closed;

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    peer_t *p = h->data;
    (void)suggested;
    *b = uv_buf_init(p->buf + p->len, (unsigned)(sizeof(p->buf) - p->len));
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    peer_t *p = s->data;
    (void)b;
    if (n > 0) {
        p->len += (size_t)n;
    } else if (n < 0) {
        p->eof = 1;
        uv_read_stop(s);
    }
}

static void on_connection(uv_stream_t *srv, int status)
{
    CHECK_EQ_INT(status, 0);
    peer_t *p = &peers[accepted++];
    uv_tcp_init(&loop, &p->tcp);
    p->tcp.data = p;
    CHECK_EQ_INT(uv_accept(srv, (uv_stream_t *)&p->tcp), 0);
    uv_read_start((uv_stream_t *)&p->tcp, peer_alloc, peer_read);
}

/* The session's callbacks, for conns the test owns (before put, after take). */
static void s_read(stp_conn_t *c, const char *d, size_t n)
{
    (void)c, (void)d, (void)n;
}

static void s_eof(stp_conn_t *c, const char *err)
{
    (void)err;
    stp_conn_close(c);
}

static void s_connect(stp_conn_t *c, const char *err)
{
    (void)c;
    CHECK(err == NULL);
    connected++;
}

static void s_close(stp_conn_t *c)
{
    stp_upconn_free((stp_upconn_t *)c);
    freed++;
}

static const stp_conn_cb_t session_cb = {
    .on_read = s_read, .on_eof = s_eof, .on_connect = s_connect, .on_close = s_close};

static void run_while(int *flag, int value)
{
    while (*flag == value && uv_run(&loop, UV_RUN_ONCE)) {
    }
}

static void run_until_count(stp_upcache_t *c, unsigned n)
{
    while (stp_upcache_count(c) != n && uv_run(&loop, UV_RUN_ONCE)) {
    }
}

static void run_until_eof(peer_t *p)
{
    while (!p->eof && uv_run(&loop, UV_RUN_ONCE)) {
    }
}

/* A connected upconn (and its peer, peers[accepted - 1]). */
static stp_upconn_t *open_upconn(const char *key)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    stp_upconn_t *u = stp_upconn_new();
    CHECK(u != NULL);
    uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &sl);
    CHECK_EQ_INT(stp_conn_init(&loop, &u->conn, &session_cb, NULL), 0);
    CHECK_EQ_INT(stp_conn_connect(&u->conn, (struct sockaddr *)&ss), 0);
    int want = connected + 1;
    while ((connected < want || accepted < want) && uv_run(&loop, UV_RUN_ONCE)) {
    }
    snprintf(u->key, sizeof(u->key), "%s", key);
    return u;
}

static void on_cache_closed(void *arg)
{
    CHECK(arg == &cache_closed);
    cache_closed++;
}

static stp_upcache_t *new_cache(void)
{
    cache_closed = 0;
    stp_upcache_t *c = stp_upcache_new(&loop, on_cache_closed, &cache_closed);
    CHECK(c != NULL);
    return c;
}

static void close_cache(stp_upcache_t *c)
{
    stp_upcache_close(c);
    run_while(&cache_closed, 0);
    CHECK_EQ_INT(cache_closed, 1);
}

/* Closes a conn the test owns and waits for its close callback. */
static void close_owned(stp_upconn_t *u)
{
    int before = freed;
    u->conn.cb = &session_cb;
    stp_conn_close(&u->conn);
    while (freed == before && uv_run(&loop, UV_RUN_ONCE)) {
    }
}

static int peers_open;

static void on_peer_closed(uv_handle_t *h)
{
    (void)h;
    peers_open--;
}

/* Closes every peer (a test may have closed one already) and forgets them. */
static void reset_peers(void)
{
    for (int i = 0; i < accepted; i++) {
        if (!uv_is_closing((uv_handle_t *)&peers[i].tcp)) {
            peers_open++;
            uv_close((uv_handle_t *)&peers[i].tcp, on_peer_closed);
        }
    }
    while (peers_open > 0 && uv_run(&loop, UV_RUN_ONCE)) {
    }
    memset(peers, 0, sizeof(peers));
    accepted = connected = 0;
}

static void test_take_finds_the_key_most_recent_first(void)
{
    stp_upcache_t *c = new_cache();
    stp_upconn_t *a1 = open_upconn("relay:a"), *a2 = open_upconn("relay:a");
    stp_upconn_t *b = open_upconn("relay:b");
    CHECK_EQ_INT(stp_upcache_put(c, a1, 60000), 0);
    CHECK_EQ_INT(stp_upcache_put(c, a2, 60000), 0);
    CHECK_EQ_INT(stp_upcache_put(c, b, 60000), 0);
    CHECK_EQ_INT(stp_upcache_count(c), 3);
    CHECK(a1->conn.owner == a1 && a1->conn.cb != &session_cb); /* the cache's now */
    CHECK(stp_upcache_take(c, "relay:c") == NULL);
    CHECK(stp_upcache_take(c, "relay:a") == a2);
    CHECK(stp_upcache_take(c, "relay:a") == a1);
    CHECK(stp_upcache_take(c, "relay:a") == NULL);
    CHECK(stp_upcache_take(c, "relay:b") == b);
    CHECK_EQ_INT(stp_upcache_count(c), 0);
    close_owned(a1);
    close_owned(a2);
    close_owned(b);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(peers[i].len, 0); /* taken conns were never said QUIT to */
    }
    close_cache(c);
    reset_peers();
}

static void test_next_hop_speaking_or_closing_drops_the_conn(void)
{
    stp_upcache_t *c = new_cache();
    stp_upconn_t *u1 = open_upconn("k"), *u2 = open_upconn("k");
    CHECK_EQ_INT(stp_upcache_put(c, u1, 60000), 0);
    CHECK_EQ_INT(stp_upcache_put(c, u2, 60000), 0);
    /* u1's next hop times the session out; u2's closes silently */
    uv_buf_t b = uv_buf_init("421 4.4.2 timeout\r\n", 19);
    CHECK_EQ_INT(uv_try_write((uv_stream_t *)&peers[0].tcp, &b, 1), 19);
    peers_open++;
    uv_close((uv_handle_t *)&peers[1].tcp, on_peer_closed);
    run_until_count(c, 0);
    CHECK(stp_upcache_take(c, "k") == NULL);
    run_until_eof(&peers[0]);
    CHECK_EQ_INT(peers[0].len, 0); /* dropped, not said QUIT to: it spoke first */
    close_cache(c);
    reset_peers();
}

static void test_time_up_says_quit(void)
{
    stp_upcache_t *c = new_cache();
    stp_upconn_t *u = open_upconn("k");
    CHECK_EQ_INT(stp_upcache_put(c, u, 30), 0);
    run_until_eof(&peers[0]);
    CHECK_MEM(peers[0].buf, peers[0].len, "QUIT\r\n", 6);
    CHECK_EQ_INT(stp_upcache_count(c), 0);
    close_cache(c);
    reset_peers();
}

static void test_flush_and_close_say_quit_to_every_parked_conn(void)
{
    stp_upcache_t *c = new_cache();
    CHECK_EQ_INT(stp_upcache_put(c, open_upconn("k"), 60000), 0);
    CHECK_EQ_INT(stp_upcache_put(c, open_upconn("k"), 60000), 0);
    stp_upcache_flush(c); /* a reload */
    CHECK_EQ_INT(stp_upcache_count(c), 0);
    run_until_eof(&peers[0]);
    run_until_eof(&peers[1]);
    CHECK_MEM(peers[0].buf, peers[0].len, "QUIT\r\n", 6);
    CHECK_MEM(peers[1].buf, peers[1].len, "QUIT\r\n", 6);
    CHECK_EQ_INT(stp_upcache_put(c, open_upconn("k"), 60000), 0);
    close_cache(c); /* a stop: QUIT, and the callback once it is all closed */
    CHECK_MEM(peers[2].buf, peers[2].len, "QUIT\r\n", 6);
    reset_peers();
}

static void test_full_or_closing_cache_refuses(void)
{
    stp_upcache_t *c = new_cache();
    for (int i = 0; i < STP_UPCACHE_MAX; i++) {
        CHECK_EQ_INT(stp_upcache_put(c, open_upconn("k"), 60000), 0);
    }
    stp_upconn_t *extra = open_upconn("k");
    CHECK_EQ_INT(stp_upcache_put(c, extra, 60000), -1);
    CHECK(extra->conn.cb == &session_cb); /* still the caller's */
    close_owned(extra);
    stp_upconn_t *late = open_upconn("k");
    stp_upcache_close(c); /* the cache is freed once its close is done: use it before */
    CHECK_EQ_INT(stp_upcache_put(c, late, 60000), -1); /* closing */
    close_owned(late);
    run_while(&cache_closed, 0);
    CHECK_EQ_INT(cache_closed, 1);
    reset_peers();
}

int main(void)
{
    struct sockaddr_in sa;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &server);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    if (uv_tcp_bind(&server, (struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&server, 128, on_connection) != 0) {
        fprintf(stderr, "upcache_test: cannot listen on 127.0.0.1\n");
        return 1;
    }
    STP_RUN(test_take_finds_the_key_most_recent_first);
    STP_RUN(test_next_hop_speaking_or_closing_drops_the_conn);
    STP_RUN(test_time_up_says_quit);
    STP_RUN(test_flush_and_close_say_quit_to_every_parked_conn);
    STP_RUN(test_full_or_closing_cache_refuses);
    uv_close((uv_handle_t *)&server, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return STP_CHECK_DONE();
}
