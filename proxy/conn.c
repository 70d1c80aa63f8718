/*
 * conn: libuv binding for plaintext and TLS connections.
 *
 * Reading: libuv's alloc callback hands out a per-thread buffer; for TLS the
 * bytes are ciphertext lent to the engine (decrypted where they lie, into a
 * second per-thread buffer, chunk by chunk, each chunk passed to on_read).
 * Only a record cut off at the end of a read is kept per connection, so an
 * idle connection costs no buffer.
 *
 * Writing: while nothing is queued, bytes go straight to the socket with
 * uv_try_write (one writev, no allocation, no copy; and no epoll_ctl, which a
 * completed uv_write costs when libuv stops watching for POLLOUT). Whatever
 * the socket did not take is copied into one heap block (request and bytes
 * together) for uv_write, freed in the write callback; later writes queue
 * behind it, so order is kept. For TLS the plaintext is encrypted first and
 * the engine's ciphertext is written from where it lies.
 *
 * Closing: at once (what is queued is dropped), after the last write, or
 * lingering (stp_conn_linger(): the sending side shut down after the last
 * write, reading on and dropping until the peer closes, so that a peer still
 * sending gets no reset; see conn.h).
 *
 * Callbacks into the owner may close the conn; every path checks `closing`
 * after calling out.
 */
#include "proxy/conn.h"
#include "proxy/thread_buf.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define READ_BUF_SIZE (64 * 1024)

STP_THREAD_BUF(read_buf, READ_BUF_SIZE)
STP_THREAD_BUF(plain_buf, READ_BUF_SIZE)
static _Thread_local int read_buf_busy;

/*
 * What corked conns wrote, written at stp_conn_uncork() in one piece (see
 * conn.h). Two stages per thread: a session corks its client and its backend
 * while it works through one read. A write to a third corked conn, or one
 * that does not fit, is written at once (behind what its conn staged): the
 * cork only ever saves system calls and records, it never holds bytes past
 * the callback that wrote them.
 */
#define STAGES 2
#define STAGE_SIZE (16 * 1024)
STP_THREAD_BUF(stage_mem, STAGES * STAGE_SIZE)
static _Thread_local stp_conn_t *stage_conn[STAGES];
static _Thread_local size_t stage_len[STAGES];
static void stage_drop(const stp_conn_t *c);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Connections alive on this thread, and when memory was last given back. */
static _Thread_local unsigned live_conns;
static _Thread_local uint64_t last_trim_ms;

/* Minimum time between two trims of one thread (a trim walks every arena). */
#define TRIM_INTERVAL_MS 500

/*
 * The last connection of this thread closed: hand the heap's free pages back
 * to the kernel. glibc keeps what thousands of sessions freed (their arena
 * is fragmented by the few long-lived blocks between them), so without this
 * the peak of a burst of connections stays resident for good. Rate-limited,
 * since a lightly loaded worker reaches zero after nearly every session.
 */
static void conn_gone(uv_loop_t *loop)
{
    if (--live_conns > 0) {
        return;
    }
    uint64_t now = uv_now(loop);
    if (last_trim_ms != 0 && now - last_trim_ms < TRIM_INTERVAL_MS) {
        return;
    }
    last_trim_ms = now;
    malloc_trim(0);
}

typedef struct {
    uv_write_t req;
    stp_conn_t *conn;
    size_t len;
    char data[];
} write_req_t;

static void on_close_cb(uv_handle_t *h)
{
    stp_conn_t *c = h->data;
    uv_loop_t *loop = h->loop;
    c->closed = 1;
    stp_tls_engine_free(c->tls);
    c->tls = NULL;
    if (c->cb->on_close) {
        c->cb->on_close(c); /* may free c (and h) */
    }
    conn_gone(loop); /* after the owner freed what it could */
}

int stp_conn_init(uv_loop_t *loop, stp_conn_t *c, const stp_conn_cb_t *cb, void *owner)
{
    memset(c, 0, sizeof(*c));
    c->cb = cb;
    c->owner = owner;
    int rc = uv_tcp_init(loop, &c->tcp);
    if (rc < 0) {
        return rc;
    }
    c->tcp.data = c;
    c->initialized = 1;
    live_conns++;
    return 0;
}

void stp_conn_tune(stp_conn_t *c)
{
    /* Replies are written whole; Nagle would only delay them. */
    uv_tcp_nodelay(&c->tcp, 1);
}

void stp_conn_close(stp_conn_t *c)
{
    if (!c->initialized || c->closing) {
        return;
    }
    c->closing = 1;
    c->reading = 0;
    stage_drop(c); /* dropped like queued writes */
    uv_close((uv_handle_t *)&c->tcp, on_close_cb);
}

/* A lingering conn has written everything: the peer gets its end of file
 * (the fd's own shutdown: nothing is queued in libuv, and no write follows). */
static void shut_write(stp_conn_t *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0 || shutdown(fd, SHUT_WR) != 0) {
        stp_conn_close(c);
    }
}

static void on_write_cb(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    stp_conn_t *c = w->conn;

    c->wq_bytes -= w->len;
    free(w);
    if (c->closing) {
        return;
    }
    if (status < 0) {
        c->cb->on_eof(c, uv_strerror(status));
        return;
    }
    if (c->close_after_write && c->wq_bytes == 0) {
        if (c->lingering) {
            shut_write(c);
        } else {
            stp_conn_close(c);
        }
        return;
    }
    if (c->over_high && c->wq_bytes < STP_CONN_WQ_LOW) {
        c->over_high = 0;
        if (c->cb->on_drain) {
            c->cb->on_drain(c);
        }
    }
}

/* Hands a filled request to libuv (it is freed in on_write_cb, or here). */
static int submit(stp_conn_t *c, write_req_t *w)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write_cb) < 0) {
        free(w);
        return -1;
    }
    c->wq_bytes += w->len;
    if (c->wq_bytes > STP_CONN_WQ_HIGH) {
        c->over_high = 1;
    }
    return 0;
}

static size_t bufs_len(const uv_buf_t *bufs, unsigned n)
{
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        len += bufs[i].len;
    }
    return len;
}

/* Copies bufs[] minus its first `skip` bytes to dst. */
static void gather(char *dst, const uv_buf_t *bufs, unsigned n, size_t skip)
{
    for (unsigned i = 0; i < n; i++) {
        size_t from = skip < bufs[i].len ? skip : bufs[i].len;
        skip -= from;
        memcpy(dst, bufs[i].base + from, bufs[i].len - from);
        dst += bufs[i].len - from;
    }
}

/* Queues bufs[] minus its first `skip` bytes as one heap block for uv_write. */
static int queue_copy(stp_conn_t *c, const uv_buf_t *bufs, unsigned n, size_t skip)
{
    size_t len = bufs_len(bufs, n) - skip;
    if (len == 0) {
        return 0;
    }
    write_req_t *w = malloc(sizeof(*w) + len);
    if (w == NULL) {
        return -1;
    }
    w->conn = c;
    w->len = len;
    gather(w->data, bufs, n, skip);
    return submit(c, w);
}

/* Writes bufs[] now as far as the socket takes it, and queues the rest. */
static int send_bufs(stp_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    size_t done = 0;
    if (c->wq_bytes == 0) {
        int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        /* UV_EAGAIN: nothing written. Other errors: left to uv_write, which
         * reports them through the write callback like any failed write. */
        done = rc > 0 ? (size_t)rc : 0;
    }
    return queue_copy(c, bufs, n, done);
}

/* Sends whatever ciphertext the engine has produced. */
static int flush_tls(stp_conn_t *c)
{
    const uint8_t *p;
    size_t n = stp_tls_engine_peek(c->tls, &p);
    if (n == 0) {
        return 0;
    }
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = send_bufs(c, &b, 1);
    stp_tls_engine_drop(c->tls);
    return rc;
}

/* Small pieces written together share one record: each engine write is a
 * record of its own, with its 22 bytes of header and tag and its own seal. */
#define SMALL_JOIN 2048

/* Hands bufs[] to the TLS engine (sealed, not yet sent). */
static int seal(stp_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    size_t len = bufs_len(bufs, n);
    if (n > 1 && len <= SMALL_JOIN) {
        char joined[SMALL_JOIN];
        gather(joined, bufs, n, 0);
        return stp_tls_engine_write(c->tls, (const uint8_t *)joined, len) == STP_TLS_OK ? 0 : -1;
    }
    for (unsigned i = 0; i < n; i++) {
        if (stp_tls_engine_write(c->tls, (const uint8_t *)bufs[i].base, bufs[i].len) !=
            STP_TLS_OK) {
            return -1;
        }
    }
    return 0;
}

/* Writes bufs[] now: plaintext to the socket; TLS sealed, and sent unless corked. */
static int put(stp_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->tls == NULL) {
        return send_bufs(c, bufs, n);
    }
    if (seal(c, bufs, n) < 0) {
        return -1;
    }
    return c->corked ? 0 : flush_tls(c);
}

static int stage_of(const stp_conn_t *c)
{
    for (int i = 0; i < STAGES; i++) {
        if (stage_conn[i] == c) {
            return i;
        }
    }
    return -1;
}

/* Forgets what `c` staged (it is closing, or it was just written). */
static void stage_drop(const stp_conn_t *c)
{
    int i = stage_of(c);
    if (i >= 0) {
        stage_conn[i] = NULL;
        stage_len[i] = 0;
    }
}

/* Writes what `c` staged while corked, followed by bufs[] (n may be 0). */
static int stage_flush(stp_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    int i = stage_of(c);
    if (i < 0) {
        return n ? put(c, bufs, n) : 0;
    }
    uv_buf_t all[4];
    all[0] = uv_buf_init(stage_mem() + (size_t)i * STAGE_SIZE, (unsigned)stage_len[i]);
    int rc;
    if (n < sizeof(all) / sizeof(all[0])) {
        for (unsigned k = 0; k < n; k++) {
            all[k + 1] = bufs[k];
        }
        rc = put(c, all, n + 1); /* copies or seals all of it */
    } else {
        rc = put(c, all, 1);
        rc = rc < 0 ? rc : put(c, bufs, n);
    }
    stage_drop(c);
    return rc;
}

/* A write of `len` bytes to a corked conn: staged when it fits, else written now. */
static int stage_write(stp_conn_t *c, const uv_buf_t *bufs, unsigned n, size_t len)
{
    int i = stage_of(c);
    if (i < 0) {
        i = stage_of(NULL);
    }
    if (i < 0 || stage_len[i] + len > STAGE_SIZE) {
        return stage_flush(c, bufs, n);
    }
    gather(stage_mem() + (size_t)i * STAGE_SIZE + stage_len[i], bufs, n, 0);
    stage_conn[i] = c;
    stage_len[i] += len;
    return 0;
}

int stp_conn_writev(stp_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    /* Not refused after the peer's end of file: that closes its direction
     * only, and what it is owed (a reply to a final dot sent just before a
     * shutdown(SHUT_WR)) still goes out; a broken TLS engine refuses to seal. */
    if (c->closing || c->close_after_write) {
        return -1;
    }
    if (c->tls && c->handshaking) {
        return -1; /* the session never writes plaintext before the handshake */
    }
    size_t len = bufs_len(bufs, n);
    c->bytes_out += len;
    return c->corked ? stage_write(c, bufs, n, len) : put(c, bufs, n);
}

void stp_conn_cork(stp_conn_t *c)
{
    c->corked = 1;
}

int stp_conn_uncork(stp_conn_t *c)
{
    c->corked = 0;
    if (c->closing || (c->tls && c->handshaking)) {
        return 0;
    }
    int rc = stage_flush(c, NULL, 0);
    return c->tls == NULL || rc < 0 ? rc : flush_tls(c);
}

int stp_conn_write(stp_conn_t *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return stp_conn_writev(c, &b, 1);
}

/* Sends what is staged (TLS: sealed, with the close_notify behind it);
 * nothing is written after it. */
static void write_last(stp_conn_t *c)
{
    if (c->tls && !c->handshaking && !c->close_after_write) {
        /* What is staged is sealed, and leaves with the close_notify. */
        c->corked = 1;
        stage_flush(c, NULL, 0);
        stp_tls_engine_shutdown(c->tls);
        flush_tls(c);
    } else if (c->tls == NULL) {
        stage_flush(c, NULL, 0);
    }
    c->corked = 0;
    c->close_after_write = 1;
}

void stp_conn_close_after_write(stp_conn_t *c)
{
    if (c->closing) {
        return;
    }
    write_last(c);
    c->lingering = 0;
    stp_conn_read_stop(c);
    if (c->wq_bytes == 0) {
        stp_conn_close(c);
    }
}

void stp_conn_linger(stp_conn_t *c)
{
    if (c->closing || c->lingering) {
        return;
    }
    if (c->eof) {
        stp_conn_close_after_write(c); /* nothing more can come */
        return;
    }
    write_last(c);
    c->lingering = 1;
    if (!c->reading) {
        c->reading = 1;
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
    if (c->wq_bytes == 0) {
        shut_write(c);
    }
}

/* A read on a lingering conn: dropped; the peer's end of file (or a reset)
 * ends it, once what is queued for the peer has been written. */
static void linger_read(stp_conn_t *c, ssize_t nread)
{
    if (nread < 0) {
        c->eof = 1;
        c->lingering = 0;
        stp_conn_read_stop(c);
        if (nread != UV_EOF || c->wq_bytes == 0) {
            stp_conn_close(c);
        } /* else on_write_cb closes it: a half-closed peer still reads */
        return;
    }
    if (c->tls == NULL) {
        c->bytes_in += (uint64_t)nread;
    }
    if (c->cb->on_linger) {
        c->cb->on_linger(c, (size_t)nread);
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    /* A read callback never triggers another read synchronously, so one
     * buffer per thread suffices; the flag guards that assumption. */
    if (read_buf_busy) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = read_buf();
    buf->len = READ_BUF_SIZE;
}

static void deliver_tls(stp_conn_t *c)
{
    if (c->handshaking) {
        int rc = stp_tls_engine_handshake(c->tls);
        /* The last flight of a completed handshake (a client's Finished)
         * waits for on_handshake: what the owner writes first (a client's
         * EHLO) leaves with it, in one write and one segment. */
        if (rc != STP_TLS_OK && flush_tls(c) < 0) {
            c->cb->on_eof(c, "out of memory");
            return;
        }
        if (rc == STP_TLS_AGAIN) {
            return;
        }
        c->handshaking = 0;
        if (rc != STP_TLS_OK) {
            const char *err = stp_tls_engine_error(c->tls);
            c->cb->on_handshake(c, err && *err ? err : "TLS handshake failed");
            return;
        }
        c->cb->on_handshake(c, NULL);
        if (c->closing) {
            return;
        }
        if (!c->corked && flush_tls(c) < 0) { /* the owner wrote nothing */
            c->cb->on_eof(c, "out of memory");
            return;
        }
    }
    /* Decrypt everything that arrived, even if the owner stopped reading in
     * the middle: it holds what it cannot use yet. Leaving plaintext inside
     * the engine would stall, since nothing wakes us up for it later. */
    while (!c->closing && !c->eof && !c->lingering) { /* lingering: nothing more is read */
        ssize_t n = stp_tls_engine_read(c->tls, (uint8_t *)plain_buf(), READ_BUF_SIZE);
        flush_tls(c); /* e.g. a key update or alert */
        if (n > 0) {
            c->bytes_in += (uint64_t)n;
            c->cb->on_read(c, plain_buf(), (size_t)n);
            continue;
        }
        if (n == STP_TLS_AGAIN) {
            return;
        }
        c->eof = 1;
        stp_conn_read_stop(c);
        c->cb->on_eof(c, n == STP_TLS_CLOSED ? NULL : stp_tls_engine_error(c->tls));
        return;
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    stp_conn_t *c = s->data;

    if (nread == 0 || c->closing) {
        return;
    }
    if (c->lingering) {
        linger_read(c, nread);
        return;
    }
    if (nread < 0) {
        c->eof = 1;
        stp_conn_read_stop(c);
        c->cb->on_eof(c, nread == UV_EOF ? NULL : uv_strerror((int)nread));
        return;
    }
    read_buf_busy = 1;
    if (c->tls == NULL) {
        c->bytes_in += (uint64_t)nread;
        c->cb->on_read(c, buf->base, (size_t)nread);
    } else {
        /* Decrypted where it lies; only a record cut off at the end of
         * the read is copied, to wait for the rest. */
        stp_tls_engine_lend(c->tls, (const uint8_t *)buf->base, (size_t)nread);
        deliver_tls(c);
        if (stp_tls_engine_keep(c->tls) != STP_TLS_OK && !c->closing && !c->eof) {
            c->eof = 1;
            stp_conn_read_stop(c);
            c->cb->on_eof(c, "out of memory");
        }
    }
    read_buf_busy = 0;
}

void stp_conn_read_start(stp_conn_t *c)
{
    if (c->closing || c->reading || c->eof || c->close_after_write) {
        return;
    }
    c->reading = 1;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

void stp_conn_read_stop(stp_conn_t *c)
{
    if (!c->reading || c->lingering) { /* a lingering conn reads until it closes */
        return;
    }
    c->reading = 0;
    if (!c->closing) {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

void stp_conn_start_tls(stp_conn_t *c, stp_tls_engine_t *e)
{
    stage_flush(c, NULL, 0); /* the last plaintext (220) precedes the handshake */
    c->tls = e;
    c->handshaking = 1;
    /* A client speaks first; a server waits for the ClientHello. */
    if (stp_tls_engine_pending(e) == 0) {
        int rc = stp_tls_engine_handshake(e);
        (void)rc; /* AGAIN expected; errors surface on the next read */
    }
    flush_tls(c);
}

void stp_conn_feed_tls(stp_conn_t *c, const char *data, size_t len)
{
    if (len == 0 || c->tls == NULL || c->closing) {
        return;
    }
    if (stp_tls_engine_feed(c->tls, (const uint8_t *)data, len) != STP_TLS_OK) {
        c->cb->on_eof(c, "out of memory");
        return;
    }
    deliver_tls(c);
}

static void on_connect_cb(uv_connect_t *req, int status)
{
    stp_conn_t *c = req->data;
    if (c->closing) {
        return;
    }
    if (status == 0) {
        stp_conn_tune(c);
    } else {
        stp_conn_read_stop(c); /* nothing will come */
    }
    c->cb->on_connect(c, status < 0 ? uv_strerror(status) : NULL);
}

int stp_conn_connect(stp_conn_t *c, const struct sockaddr *sa)
{
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, sa, on_connect_cb);
    if (rc == 0) {
        /* Reading is asked for with the connect, so that libuv registers the
         * socket once for both (and then drops POLLOUT): asked for in
         * on_connect, it costs an epoll_ctl that fails with EEXIST and a
         * third one. Nothing is read before on_connect has run. */
        stp_conn_read_start(c);
    }
    return rc;
}

const char *stp_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len, int with_port)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        if (with_port) {
            snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
        } else {
            snprintf(buf, len, "%s", ip);
        }
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        if (with_port) {
            snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
        } else {
            snprintf(buf, len, "%s", ip);
        }
    } else {
        snprintf(buf, len, "unknown");
    }
    return buf;
}

const char *stp_conn_peer(const stp_conn_t *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(buf, len, "unknown");
        return buf;
    }
    return stp_sockaddr_str((struct sockaddr *)&ss, buf, len, 1);
}
