/*
 * conn: one TCP connection with an optional TLS engine, bound to libuv.
 * This is the seam between the event loop and the memory-only TLS engine
 * (tls/tls_engine.h): reads go socket -> engine -> plaintext callback, writes
 * go plaintext -> engine -> socket. Sessions see only plaintext.
 *
 * Ownership: a conn is embedded in its owner (a session). stp_conn_close()
 * is idempotent; the owner may free its memory only after cb->on_close ran.
 * Read buffers are per thread and reused: on_read must consume (or copy) the
 * bytes it is given before it returns.
 */
#ifndef STP_CONN_H
#define STP_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "tls/tls_engine.h"

#define STP_CONN_WQ_HIGH (256 * 1024) /* stop reading the other side above this */
#define STP_CONN_WQ_LOW (64 * 1024)   /* resume below this */

typedef struct stp_conn_s stp_conn_t;

typedef struct {
    void (*on_read)(stp_conn_t *c, const char *data, size_t len);
    /* Peer closed (err == NULL) or the connection failed (static string). */
    void (*on_eof)(stp_conn_t *c, const char *err);
    void (*on_connect)(stp_conn_t *c, const char *err);
    void (*on_handshake)(stp_conn_t *c, const char *err);
    /* The write queue fell below STP_CONN_WQ_LOW after being over STP_CONN_WQ_HIGH. */
    void (*on_drain)(stp_conn_t *c);
    void (*on_close)(stp_conn_t *c);
    /* stp_conn_linger(): n more bytes arrived and were dropped. */
    void (*on_linger)(stp_conn_t *c, size_t n);
} stp_conn_cb_t;

struct stp_conn_s {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    stp_tls_engine_t *tls;
    const stp_conn_cb_t *cb;
    void *owner;
    size_t wq_bytes;   /* bytes handed to uv_write and not yet completed */
    uint64_t bytes_in; /* plaintext bytes delivered / accepted for sending */
    uint64_t bytes_out;
    unsigned initialized : 1;
    unsigned reading : 1;
    unsigned closing : 1;
    unsigned closed : 1;
    unsigned handshaking : 1;
    unsigned over_high : 1;
    unsigned close_after_write : 1;
    unsigned eof : 1;
    unsigned corked : 1;
    unsigned lingering : 1; /* stp_conn_linger(): reading and dropping until the peer closes */
};

/* Initialises the handle on `loop`. Returns 0 or a negative libuv error. */
int stp_conn_init(uv_loop_t *loop, stp_conn_t *c, const stp_conn_cb_t *cb, void *owner);

/* Starts an outgoing connection; cb->on_connect reports the result. Reading
 * starts with it (nothing arrives before on_connect; a failure stops it). */
int stp_conn_connect(stp_conn_t *c, const struct sockaddr *sa);

/* Sets TCP_NODELAY etc. on an accepted or connected socket. */
void stp_conn_tune(stp_conn_t *c);

void stp_conn_read_start(stp_conn_t *c);
void stp_conn_read_stop(stp_conn_t *c);

/*
 * Switches the connection to TLS with engine `e` (ownership passes to the
 * conn). A client engine sends its ClientHello at once. cb->on_handshake
 * reports the end of the handshake; plaintext flows after it.
 */
void stp_conn_start_tls(stp_conn_t *c, stp_tls_engine_t *e);

/* Hands `data` to the TLS engine started on `c` as if it had just been read:
 * bytes read before TLS began, in the same read (a ClientHello behind a PROXY
 * header). The callbacks may run, on_eof and on_handshake included. */
void stp_conn_feed_tls(stp_conn_t *c, const char *data, size_t len);

/* Queues bytes (copied). Returns 0, or -1 if the conn is closing or broken. */
int stp_conn_write(stp_conn_t *c, const char *data, size_t len);
int stp_conn_writev(stp_conn_t *c, const uv_buf_t *bufs, unsigned n);

/*
 * While a conn is corked, what is written gathers in a per-thread staging
 * buffer and goes out at stp_conn_uncork() in one write (and, on a TLS conn,
 * one record): pipelined commands or replies relayed in one go cost one
 * system call and one seal, not one each. What does not fit is written at
 * once, behind what was staged (a TLS conn keeps its records until the
 * uncork). Closing drops it like any queued data; closing after write sends
 * it first (TLS: with the close_notify), and so does starting TLS on a
 * plaintext conn. Cork only within one callback: staged bytes must leave
 * before the loop runs again.
 */
void stp_conn_cork(stp_conn_t *c);
/* Sends what gathered while corked. Returns 0, or -1 like stp_conn_write. */
int stp_conn_uncork(stp_conn_t *c);

/* 1 while the write queue is over the high-water mark. */
static inline int stp_conn_congested(const stp_conn_t *c)
{
    return c->wq_bytes > STP_CONN_WQ_HIGH;
}

/* Closes now (pending writes are dropped). Idempotent. */
void stp_conn_close(stp_conn_t *c);

/* Closes once everything queued so far has been written (TLS: after close_notify). */
void stp_conn_close_after_write(stp_conn_t *c);

/*
 * A lingering close, for a peer that may still be sending (in the middle of
 * a message): closing with its bytes unread, or with more of them on the
 * way, makes the kernel answer with a reset, and a peer may then lose what
 * it has not read yet (Windows drops it), the last reply included. So, as
 * stp_conn_close_after_write() but: reading goes on and whatever arrives is
 * dropped (TLS: never decrypted; the close_notify went out with the last
 * bytes) and counted to cb->on_linger; once everything queued is written,
 * the sending side is shut down (the peer reads its end of file); the conn
 * closes itself when the peer closes or a read fails. The owner bounds the
 * wait (its timer, stp_conn_close()). A peer that has closed its side
 * already gets stp_conn_close_after_write().
 */
void stp_conn_linger(stp_conn_t *c);

/* Formats the peer address as "1.2.3.4:25" / "[::1]:25" into buf. */
const char *stp_conn_peer(const stp_conn_t *c, char *buf, size_t len);

/* Formats any sockaddr the same way. */
const char *stp_sockaddr_str(const struct sockaddr *sa, char *buf, size_t len, int with_port);

#endif
