/*
 * conn_test: the write side of stp_conn over real loopback TCP. While a conn
 * is corked, what is written is staged per thread and leaves at the uncork;
 * these tests check that every byte arrives, once and in order, whatever the
 * mix of staged and oversized writes, with three conns corked at once (two
 * stages per thread), when a conn is closed with bytes staged (they are
 * dropped, and never reach the next conn that takes the stage), and when it
 * is closed after write (they are sent first). And the read side of a
 * connect: reading starts with it, a refused one reports only its error.
 * And a lingering close: the peer reads the last bytes and its end of file
 * (no reset) while what it still sends is read and dropped, until it closes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "proxy/conn.h"
#include "test/unit/check.h"

#define PEERS 3
#define BIG (40 * 1024)

/* The receiving end of one connection: a plain libuv socket that keeps
 * everything it reads until EOF. */
typedef struct {
    uv_tcp_t tcp;
    char *buf;
    size_t len, cap;
    int eof;
    int err; /* what ended its reading: UV_EOF, or a reset */
} peer_t;

static uv_loop_t loop;
static uv_tcp_t server;
static peer_t peers[PEERS];
static int accepted;
static stp_conn_t conns[PEERS];
static int connected, closed;

static void peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    peer_t *p = h->data;
    (void)suggested;
    if (p->cap - p->len < 65536) {
        p->cap = p->cap * 2 + 65536;
        p->buf = realloc(p->buf, p->cap);
    }
    *b = uv_buf_init(p->buf + p->len, (unsigned)(p->cap - p->len));
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    peer_t *p = s->data;
    (void)b;
    if (n > 0) {
        p->len += (size_t)n;
    } else if (n < 0) {
        p->eof = 1;
        p->err = (int)n;
        uv_read_stop(s);
    }
}

static int greet; /* peers write a greeting as soon as they accept */

static void on_connection(uv_stream_t *srv, int status)
{
    CHECK_EQ_INT(status, 0);
    peer_t *p = &peers[accepted++];
    uv_tcp_init(&loop, &p->tcp);
    p->tcp.data = p;
    CHECK_EQ_INT(uv_accept(srv, (uv_stream_t *)&p->tcp), 0);
    uv_read_start((uv_stream_t *)&p->tcp, peer_alloc, peer_read);
    if (greet) {
        uv_buf_t b = uv_buf_init("220 peer\r\n", 10);
        CHECK_EQ_INT(uv_try_write((uv_stream_t *)&p->tcp, &b, 1), 10);
    }
}

static void c_read(stp_conn_t *c, const char *d, size_t n)
{
    (void)c, (void)d, (void)n;
}

static void c_eof(stp_conn_t *c, const char *err)
{
    (void)c, (void)err;
}

static void c_connect(stp_conn_t *c, const char *err)
{
    (void)c;
    CHECK(err == NULL);
    connected++;
}

static void c_close(stp_conn_t *c)
{
    (void)c;
    closed++;
}

static const stp_conn_cb_t cb = {
    .on_read = c_read, .on_eof = c_eof, .on_connect = c_connect, .on_close = c_close};

static int all_eof(int n)
{
    for (int i = 0; i < n; i++) {
        if (!peers[i].eof) {
            return 0;
        }
    }
    return 1;
}

/* Runs the loop until `done` says so (or the loop has nothing left). */
static void run_until(int (*done)(int), int n)
{
    while (!done(n) && uv_run(&loop, UV_RUN_ONCE)) {
    }
}

static int all_connected(int n)
{
    return connected == n && accepted == n;
}

static int all_closed(int n)
{
    return closed == n;
}

/* n conns, each connected to its own peer. */
static void open_conns(int n)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    memset(peers, 0, sizeof(peers));
    accepted = connected = closed = 0;
    uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &sl);
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(stp_conn_init(&loop, &conns[i], &cb, NULL), 0);
        CHECK_EQ_INT(stp_conn_connect(&conns[i], (struct sockaddr *)&ss), 0);
        run_until(all_connected, i + 1);
    }
}

/* Closes the conns after their writes, waits for every peer's EOF and every
 * close, and frees the peers' buffers after the caller checked them. */
static void finish_conns(int n)
{
    for (int i = 0; i < n; i++) {
        stp_conn_close_after_write(&conns[i]);
    }
    run_until(all_eof, n);
    run_until(all_closed, n);
}

static int peers_closed;

static void on_peer_closed(uv_handle_t *h)
{
    (void)h;
    peers_closed++;
}

static int all_peers_closed(int n)
{
    return peers_closed == n;
}

static void free_peers(int n)
{
    peers_closed = 0;
    for (int i = 0; i < n; i++) {
        uv_close((uv_handle_t *)&peers[i].tcp, on_peer_closed);
    }
    run_until(all_peers_closed, n);
    for (int i = 0; i < n; i++) {
        free(peers[i].buf);
    }
}

/* Appends to want what is also written to c. */
static void put(stp_conn_t *c, char *want, size_t *wlen, const char *p, size_t n)
{
    memcpy(want + *wlen, p, n);
    *wlen += n;
    CHECK_EQ_INT(stp_conn_write(c, p, n), 0);
}

static void test_staged_and_oversized_writes_keep_their_order(void)
{
    static char want[4 * BIG], big[BIG];
    size_t wlen = 0;
    for (size_t i = 0; i < sizeof(big); i++) {
        big[i] = (char)('a' + i % 26);
    }
    open_conns(1);
    stp_conn_cork(&conns[0]);
    char line[64];
    for (int i = 0; i < 10; i++) {
        int n = snprintf(line, sizeof(line), "RCPT TO:<r%d@example.test>\r\n", i);
        put(&conns[0], want, &wlen, line, (size_t)n);
    }
    put(&conns[0], want, &wlen, big, sizeof(big)); /* behind the staged lines */
    put(&conns[0], want, &wlen, "tail\r\n", 6);    /* staged again */
    uv_buf_t v[5] = {uv_buf_init("a", 1), uv_buf_init("bc", 2), uv_buf_init("def", 3),
                     uv_buf_init("g", 1), uv_buf_init(big, 20000)};
    memcpy(want + wlen, "abcdefg", 7);
    memcpy(want + wlen + 7, big, 20000);
    wlen += 20007;
    CHECK_EQ_INT(stp_conn_writev(&conns[0], v, 5), 0); /* more pieces than a stage flush joins */
    CHECK_EQ_INT(peers[0].len, 0);                     /* corked: nothing sent yet... */
    CHECK_EQ_INT(stp_conn_uncork(&conns[0]), 0);
    put(&conns[0], want, &wlen, "after\r\n", 7); /* uncorked: written at once */
    finish_conns(1);
    CHECK_MEM(peers[0].buf, peers[0].len, want, wlen);
    free_peers(1);
}

static void test_three_corked_conns_each_get_their_own_bytes(void)
{
    static char want[PEERS][1024];
    size_t wlen[PEERS] = {0};
    open_conns(PEERS);
    for (int i = 0; i < PEERS; i++) {
        stp_conn_cork(&conns[i]);
    }
    char line[64];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < PEERS; i++) {
            int n = snprintf(line, sizeof(line), "conn %d line %d\r\n", i, round);
            put(&conns[i], want[i], &wlen[i], line, (size_t)n);
        }
    }
    for (int i = 0; i < PEERS; i++) {
        CHECK_EQ_INT(stp_conn_uncork(&conns[i]), 0);
    }
    finish_conns(PEERS);
    for (int i = 0; i < PEERS; i++) {
        CHECK_MEM(peers[i].buf, peers[i].len, want[i], wlen[i]);
    }
    free_peers(PEERS);
}

static void test_close_drops_what_was_staged(void)
{
    open_conns(2);
    stp_conn_cork(&conns[0]);
    CHECK_EQ_INT(stp_conn_write(&conns[0], "never sent\r\n", 12), 0);
    stp_conn_close(&conns[0]);
    /* the stage it held is free again, and holds nothing of it */
    stp_conn_cork(&conns[1]);
    CHECK_EQ_INT(stp_conn_write(&conns[1], "mine\r\n", 6), 0);
    CHECK_EQ_INT(stp_conn_uncork(&conns[1]), 0);
    stp_conn_close_after_write(&conns[1]);
    run_until(all_eof, 2);
    run_until(all_closed, 2);
    CHECK_EQ_INT(peers[0].len, 0);
    CHECK_MEM(peers[1].buf, peers[1].len, "mine\r\n", 6);
    free_peers(2);
}

static void test_close_after_write_sends_what_was_staged(void)
{
    open_conns(1);
    stp_conn_cork(&conns[0]);
    CHECK_EQ_INT(stp_conn_write(&conns[0], "221 2.0.0 Bye\r\n", 15), 0);
    finish_conns(1); /* still corked: closing after write sends it first */
    CHECK_MEM(peers[0].buf, peers[0].len, "221 2.0.0 Bye\r\n", 15);
    free_peers(1);
}

/* Reading starts with the connect: what the peer sends first arrives
 * without the owner asking, and never before on_connect. A refused connect
 * reports its error once and nothing else (no read, no EOF). */
static char events[64];
static size_t nevents;

static void ev(char e)
{
    if (nevents < sizeof(events) - 1) {
        events[nevents++] = e;
    }
}

static void ev_read(stp_conn_t *c, const char *d, size_t n)
{
    (void)c;
    CHECK_MEM(d, n, "220 peer\r\n", 10);
    ev('r');
}

static void ev_eof(stp_conn_t *c, const char *err)
{
    (void)c, (void)err;
    ev('e');
}

static void ev_connect(stp_conn_t *c, const char *err)
{
    (void)c;
    ev(err ? 'x' : 'c');
}

static const stp_conn_cb_t ev_cb = {
    .on_read = ev_read, .on_eof = ev_eof, .on_connect = ev_connect, .on_close = c_close};

/* The loop is woken every 50 ms, so that a missing event fails the test
 * after 3 s instead of blocking it. */
static uv_timer_t tick;
static uint64_t deadline;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static int got_events(int n)
{
    return nevents >= (size_t)n || uv_now(&loop) > deadline;
}

static void tick_start(void)
{
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 50, 50);
    deadline = uv_now(&loop) + 3000;
}

static void tick_stop(void)
{
    uv_close((uv_handle_t *)&tick, NULL);
}

/* A conn with the event-recording callbacks, connecting to `ss`. */
static void ev_conn_connect(const struct sockaddr_storage *ss)
{
    closed = 0;
    nevents = 0;
    tick_start();
    CHECK_EQ_INT(stp_conn_init(&loop, &conns[0], &ev_cb, NULL), 0);
    CHECK_EQ_INT(stp_conn_connect(&conns[0], (const struct sockaddr *)ss), 0);
}

static void test_reading_starts_with_the_connect(void)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &sl);
    memset(peers, 0, sizeof(peers));
    accepted = 0;
    greet = 1;
    ev_conn_connect(&ss);
    run_until(got_events, 2);
    tick_stop();
    greet = 0;
    CHECK_MEM(events, nevents, "cr", 2);
    stp_conn_close(&conns[0]);
    run_until(all_closed, 1);
    free_peers(1);
}

static void test_refused_connect_reports_once(void)
{
    /* a port nobody listens on: bound, then closed */
    uv_tcp_t t;
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    uv_tcp_init(&loop, &t);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    CHECK_EQ_INT(uv_tcp_bind(&t, (struct sockaddr *)&sa, 0), 0);
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &sl);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    ev_conn_connect(&ss);
    run_until(got_events, 1);
    for (int i = 0; i < 3; i++) {
        uv_run(&loop, UV_RUN_ONCE); /* a read or an EOF would show here (ticks: 150 ms) */
    }
    tick_stop();
    CHECK_MEM(events, nevents, "x", 1);
    stp_conn_close(&conns[0]);
    run_until(all_closed, 1);
    CHECK_MEM(events, nevents, "x", 1);
}

/* Lingering: the peer sends 32 KB that the conn has not read when it
 * writes its last bytes, and more after its end of file; the conn drops all
 * of it and closes when the peer does. */
static size_t dropped;

static void linger_count(stp_conn_t *c, size_t n)
{
    (void)c;
    dropped += n;
}

static const stp_conn_cb_t linger_cb = {.on_read = c_read,
                                        .on_eof = c_eof,
                                        .on_connect = c_connect,
                                        .on_close = c_close,
                                        .on_linger = linger_count};

static int peer_eof_or_closed(int n)
{
    (void)n;
    return peers[0].eof || closed;
}

static int dropped_all(int n)
{
    return dropped >= (size_t)n || closed;
}

static void peer_send(size_t n)
{
    static char junk[32 * 1024];
    memset(junk, 'x', sizeof(junk));
    uv_buf_t b = uv_buf_init(junk, (unsigned)n);
    CHECK_EQ_INT(uv_try_write((uv_stream_t *)&peers[0].tcp, &b, 1), (int)n);
}

static void test_linger_drops_what_comes_until_the_peer_closes(void)
{
    open_conns(1);
    conns[0].cb = &linger_cb;
    dropped = 0;
    stp_conn_read_stop(&conns[0]);
    peer_send(32 * 1024); /* left unread: without the linger, a reset */
    tick_start();
    deadline = uv_now(&loop) + 3000;
    CHECK_EQ_INT(stp_conn_write(&conns[0], "421 4.4.2 bye\r\n", 15), 0);
    stp_conn_linger(&conns[0]);
    run_until(peer_eof_or_closed, 1);
    CHECK(peers[0].eof);
    CHECK_EQ_INT(peers[0].err, UV_EOF); /* an end of file, not a reset */
    CHECK_EQ_INT(closed, 0);            /* still reading */
    CHECK_MEM(peers[0].buf, peers[0].len, "421 4.4.2 bye\r\n", 15);
    peer_send(1000); /* after the end of file: dropped too */
    run_until(dropped_all, 32 * 1024 + 1000);
    CHECK_EQ_INT(closed, 0);
    CHECK_EQ_INT(dropped, 32 * 1024 + 1000);
    CHECK_EQ_INT(conns[0].bytes_in, 32 * 1024 + 1000);
    peers_closed = 0;
    uv_close((uv_handle_t *)&peers[0].tcp, on_peer_closed); /* the peer closes: so does the conn */
    run_until(all_closed, 1);
    tick_stop();
    CHECK_EQ_INT(closed, 1);
    free(peers[0].buf);
}

int main(void)
{
    struct sockaddr_in sa;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &server);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    if (uv_tcp_bind(&server, (struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&server, 16, on_connection) != 0) {
        fprintf(stderr, "conn_test: cannot listen on 127.0.0.1\n");
        return 1;
    }
    STP_RUN(test_staged_and_oversized_writes_keep_their_order);
    STP_RUN(test_three_corked_conns_each_get_their_own_bytes);
    STP_RUN(test_close_drops_what_was_staged);
    STP_RUN(test_close_after_write_sends_what_was_staged);
    STP_RUN(test_reading_starts_with_the_connect);
    STP_RUN(test_refused_connect_reports_once);
    STP_RUN(test_linger_drops_what_comes_until_the_peer_closes);
    uv_close((uv_handle_t *)&server, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return STP_CHECK_DONE();
}
