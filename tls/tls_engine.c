/*
 * tls_engine: one BoringSSL SSL driven entirely through two in-memory byte
 * queues. Ciphertext from the network is appended to `rbio`, where SSL reads
 * it; what SSL wants to send accumulates in `wbio` until the caller takes it.
 * No I/O and no event loop here: proxy/conn.c moves the bytes (the split
 * between h2o's socket.c and its uv-binding).
 *
 * The queues are a BIO of our own (fifo_*), not BIO_s_mem: a memory BIO
 * moves what is left to the front after every read, and SSL reads a
 * record's header and then its body, so a 64 KiB delivery of ciphertext was
 * moved several times over; it also zero-fills every growth and every
 * reset, and BoringSSL's OPENSSL_free clears a buffer before freeing it.
 * The FIFO reads from a head offset, appends without clearing and frees
 * with free() (ciphertext needs no clearing): callgrind counts 12.0
 * million user-space instructions per inbound session with a 1 MiB message
 * where the memory BIOs took 18.5, 10.0 against 13.1 million outbound, and
 * 3.26 against 3.39 million for ten 4 KiB messages.
 *
 * Memory per session is kept small: BoringSSL frees its own record buffers
 * whenever they are empty (SSL_MODE_RELEASE_BUFFERS is a no-op there, so it
 * is not set), its handshake configuration is shed once the handshake is
 * done, and a queue that grew while relaying a large message gives its
 * buffer back as soon as it is drained.
 */
#include "tls/tls_engine.h"

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>

/* A drained queue whose buffer is larger than this frees it. SMTP commands
 * and replies (one small record each) stay below it, so a session does not
 * reallocate on every line; the handshake flights and message bodies go
 * above it, and are released once sent or consumed. Measured: an idle
 * server engine then holds about 3.4 KB in all, against 5 KB with the
 * handshake buffers kept, and 150 KB (2.2 MB) after relaying a 64 KB (1 MB)
 * message when nothing is released. */
#define IDLE_BIO_CAP 512

/* Plaintext per SSL_write call; BoringSSL cuts it into records itself. */
#define WRITE_CHUNK (1 << 20)

struct stp_tls_engine_s {
    SSL *ssl;  /* owns rbio and wbio */
    BIO *rbio; /* network -> SSL: ciphertext fed but not yet consumed */
    BIO *wbio; /* SSL -> network: ciphertext not yet taken */
    unsigned established : 1;
    unsigned shutdown_sent : 1;
    char error[128]; /* "" until a call fails */
};

static void set_static_error(stp_tls_engine_t *e, const char *why)
{
    snprintf(e->error, sizeof(e->error), "%s", why);
}

/* Records the first queued BoringSSL error (the most specific one), or
 * `fallback` when the queue is empty, and drains the queue. */
static void set_ssl_error(stp_tls_engine_t *e, const char *fallback)
{
    uint32_t code = ERR_get_error();
    if (code != 0) {
        ERR_error_string_n(code, e->error, sizeof(e->error));
    } else {
        set_static_error(e, fallback);
    }
    ERR_clear_error();
}

/* Maps a failed SSL call (`rc` <= 0) to a step result. `closed_is_error`:
 * during the handshake a close_notify is a failure, not a clean end. */
static int step_result(stp_tls_engine_t *e, int rc, const char *what, int closed_is_error)
{
    switch (SSL_get_error(e->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        /* Also after a record that carried no application data (a TLS 1.3
         * NewSessionTicket or KeyUpdate): nothing to deliver yet. */
        ERR_clear_error();
        return STP_TLS_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        if (closed_is_error) {
            set_static_error(e, "peer closed during handshake");
            return STP_TLS_ERROR;
        }
        return STP_TLS_CLOSED;
    default:
        set_ssl_error(e, what);
        return STP_TLS_ERROR;
    }
}

/*
 * fifo: a byte queue as a BIO. Bytes live in buf[head..tail); a read takes
 * from head and an emptied queue starts again at 0, so nothing is moved
 * while the consumer keeps up (SSL consumes whole records, the caller takes
 * everything pending). A write that does not fit behind tail first moves
 * the live bytes to the front, then grows the buffer.
 */
typedef struct {
    uint8_t *buf;
    size_t head, tail, cap;
} fifo_t;

static size_t fifo_len(const fifo_t *f)
{
    return f->tail - f->head;
}

/* Gives a large buffer back once the queue is drained. */
static void fifo_release(fifo_t *f)
{
    if (f->head == f->tail && f->cap > IDLE_BIO_CAP) {
        free(f->buf);
        f->buf = NULL;
        f->head = f->tail = f->cap = 0;
    }
}

static int fifo_write(BIO *b, const char *in, int inl)
{
    fifo_t *f = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (inl <= 0) {
        return 0;
    }
    size_t n = (size_t)inl, live = fifo_len(f);
    if (f->cap - f->tail < n) {
        if (f->cap - live >= n) {
            memmove(f->buf, f->buf + f->head, live);
        } else {
            size_t cap = f->cap ? f->cap : 256;
            while (cap - live < n) {
                if (cap > SIZE_MAX / 2) {
                    return -1;
                }
                cap *= 2;
            }
            uint8_t *nb = malloc(cap);
            if (nb == NULL) {
                return -1;
            }
            if (live > 0) {
                memcpy(nb, f->buf + f->head, live);
            }
            free(f->buf);
            f->buf = nb;
            f->cap = cap;
        }
        f->head = 0;
        f->tail = live;
    }
    memcpy(f->buf + f->tail, in, n);
    f->tail += n;
    return inl;
}

/* An empty queue means "wait for more", never end of stream. */
static int fifo_read(BIO *b, char *out, int outl)
{
    fifo_t *f = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (outl <= 0) {
        return 0;
    }
    size_t n = fifo_len(f);
    if (n == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    if (n > (size_t)outl) {
        n = (size_t)outl;
    }
    memcpy(out, f->buf + f->head, n);
    f->head += n;
    if (f->head == f->tail) {
        f->head = f->tail = 0;
    }
    return (int)n;
}

static long fifo_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    fifo_t *f = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_PENDING:
        return (long)fifo_len(f);
    case BIO_CTRL_FLUSH:
        return 1; /* SSL flushes after each flight: the bytes are queued */
    case BIO_CTRL_RESET:
        f->head = f->tail = 0;
        return 1;
    default:
        return 0;
    }
}

static int fifo_create(BIO *b)
{
    fifo_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return 0;
    }
    BIO_set_data(b, f);
    BIO_set_init(b, 1);
    return 1;
}

static int fifo_destroy(BIO *b)
{
    fifo_t *f = BIO_get_data(b);
    if (f != NULL) {
        free(f->buf);
        free(f);
        BIO_set_data(b, NULL);
    }
    return 1;
}

static BIO_METHOD *fifo_method;

static void fifo_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "stp fifo");
    if (m != NULL && (!BIO_meth_set_write(m, fifo_write) || !BIO_meth_set_read(m, fifo_read) ||
                      !BIO_meth_set_ctrl(m, fifo_ctrl) || !BIO_meth_set_create(m, fifo_create) ||
                      !BIO_meth_set_destroy(m, fifo_destroy))) {
        BIO_meth_free(m);
        m = NULL;
    }
    fifo_method = m;
}

/* NULL on allocation failure. The method is made once per process. */
static BIO *fifo_new(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fifo_method_init);
    return fifo_method != NULL ? BIO_new(fifo_method) : NULL;
}

static fifo_t *fifo_of(BIO *b)
{
    return BIO_get_data(b);
}

static stp_tls_engine_t *engine_new(SSL_CTX *ctx)
{
    stp_tls_engine_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    ERR_clear_error();
    e->ssl = SSL_new(ctx); /* takes its own reference on ctx */
    e->rbio = fifo_new();
    e->wbio = fifo_new();
    if (e->ssl == NULL || e->rbio == NULL || e->wbio == NULL) {
        SSL_free(e->ssl);
        BIO_free(e->rbio);
        BIO_free(e->wbio);
        free(e);
        ERR_clear_error();
        return NULL;
    }
    SSL_set0_rbio(e->ssl, e->rbio);
    SSL_set0_wbio(e->ssl, e->wbio);
    /* Certificates, cipher list and the like are not needed once the
     * handshake is over; free them for the rest of a long session. */
    SSL_set_shed_handshake_config(e->ssl, 1);
    return e;
}

stp_tls_engine_t *stp_tls_engine_new_server(SSL_CTX *ctx)
{
    stp_tls_engine_t *e = engine_new(ctx);
    if (e != NULL) {
        /* BoringSSL never renegotiates as a server: a client's
         * renegotiation attempt is always refused. */
        SSL_set_accept_state(e->ssl);
    }
    return e;
}

/* RFC 6066 3: no IP literals in SNI, and no trailing dot. */
static int set_sni(SSL *ssl, const char *sni)
{
    char name[256];
    unsigned char addr[16];
    size_t len = strlen(sni);
    if (len > 0 && sni[len - 1] == '.') {
        len--;
    }
    if (len == 0 || len >= sizeof(name)) {
        /* Nothing to send, or longer than any DNS name; the name check after the
         * handshake still applies to whatever the caller expects. */
        return 1;
    }
    memcpy(name, sni, len);
    name[len] = '\0';
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1) {
        return 1;
    }
    return SSL_set_tlsext_host_name(ssl, name);
}

stp_tls_engine_t *stp_tls_engine_new_client(SSL_CTX *ctx, const char *sni)
{
    stp_tls_engine_t *e = engine_new(ctx);
    if (e == NULL) {
        return NULL;
    }
    SSL_set_connect_state(e->ssl);
    SSL_set_renegotiate_mode(e->ssl, ssl_renegotiate_never);
    ERR_clear_error();
    if (sni != NULL && !set_sni(e->ssl, sni)) {
        ERR_clear_error();
        stp_tls_engine_free(e);
        return NULL;
    }
    return e;
}

void stp_tls_engine_free(stp_tls_engine_t *e)
{
    if (e == NULL) {
        return;
    }
    SSL_free(e->ssl); /* frees both BIOs and drops the reference on ctx */
    free(e);
}

int stp_tls_engine_feed(stp_tls_engine_t *e, const uint8_t *in, size_t len)
{
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        ERR_clear_error();
        if (BIO_write(e->rbio, in, chunk) != chunk) {
            ERR_clear_error();
            set_static_error(e, "out of memory");
            return STP_TLS_ERROR;
        }
        in += chunk;
        len -= (size_t)chunk;
    }
    return STP_TLS_OK;
}

int stp_tls_engine_handshake(stp_tls_engine_t *e)
{
    if (e->established) {
        return STP_TLS_OK;
    }
    ERR_clear_error();
    int rc = SSL_do_handshake(e->ssl);
    int result;
    if (rc == 1) {
        e->established = 1;
        result = STP_TLS_OK;
    } else {
        result = step_result(e, rc, "TLS handshake failed", 1);
    }
    fifo_release(fifo_of(e->rbio));
    return result;
}

int stp_tls_engine_established(const stp_tls_engine_t *e)
{
    return e->established;
}

ssize_t stp_tls_engine_read(stp_tls_engine_t *e, uint8_t *buf, size_t cap)
{
    if (cap == 0) {
        set_static_error(e, "read into an empty buffer");
        return STP_TLS_ERROR;
    }
    if (!e->established) {
        int rc = stp_tls_engine_handshake(e);
        if (rc != STP_TLS_OK) {
            return rc;
        }
    }
    if (cap > SSIZE_MAX) {
        cap = SSIZE_MAX;
    }
    /* SSL_read returns at most one record; fill the buffer from as many as
     * are buffered. A failure after some data is reported by the next call:
     * BoringSSL remembers both close_notify and fatal errors. */
    size_t got = 0;
    ssize_t result = 0;
    while (got < cap) {
        size_t want = cap - got;
        ERR_clear_error();
        int rc = SSL_read(e->ssl, buf + got, want > INT_MAX ? INT_MAX : (int)want);
        if (rc <= 0) {
            result = step_result(e, rc, "TLS read failed", 0);
            break;
        }
        got += (size_t)rc;
    }
    fifo_release(fifo_of(e->rbio));
    return got > 0 ? (ssize_t)got : result;
}

int stp_tls_engine_write(stp_tls_engine_t *e, const uint8_t *buf, size_t len)
{
    if (!e->established) {
        set_static_error(e, "write before the handshake completed");
        return STP_TLS_ERROR;
    }
    while (len > 0) {
        int chunk = len > WRITE_CHUNK ? WRITE_CHUNK : (int)len;
        ERR_clear_error();
        int rc = SSL_write(e->ssl, buf, chunk);
        if (rc <= 0) {
            /* A memory BIO never refuses bytes, so this is fatal (e.g. after
             * our close_notify or a fatal alert). */
            set_ssl_error(e, "TLS write failed");
            return STP_TLS_ERROR;
        }
        buf += rc;
        len -= (size_t)rc;
    }
    return STP_TLS_OK;
}

void stp_tls_engine_shutdown(stp_tls_engine_t *e)
{
    /* Before the handshake completed there is no close_notify to send
     * (BoringSSL refuses SSL_shutdown then); the caller just closes. */
    if (e->shutdown_sent || !e->established) {
        return;
    }
    e->shutdown_sent = 1;
    ERR_clear_error();
    SSL_shutdown(e->ssl); /* 0: sent, the peer's not yet seen; we do not wait */
    ERR_clear_error();
}

size_t stp_tls_engine_pending(const stp_tls_engine_t *e)
{
    return fifo_len(fifo_of(e->wbio));
}

size_t stp_tls_engine_take(stp_tls_engine_t *e, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (n < cap) {
        size_t want = cap - n;
        int rc = BIO_read(e->wbio, out + n, want > INT_MAX ? INT_MAX : (int)want);
        if (rc <= 0) {
            break;
        }
        n += (size_t)rc;
    }
    fifo_release(fifo_of(e->wbio));
    return n;
}

size_t stp_tls_engine_peek(const stp_tls_engine_t *e, const uint8_t **out)
{
    const fifo_t *f = fifo_of(e->wbio);
    *out = f->buf != NULL ? f->buf + f->head : NULL;
    return fifo_len(f);
}

void stp_tls_engine_drop(stp_tls_engine_t *e)
{
    fifo_t *f = fifo_of(e->wbio);
    f->head = f->tail = 0;
    fifo_release(f);
}

size_t stp_tls_engine_buffer_size(const stp_tls_engine_t *e)
{
    return fifo_of(e->rbio)->cap + fifo_of(e->wbio)->cap;
}

const char *stp_tls_engine_error(const stp_tls_engine_t *e)
{
    return e->error;
}

const char *stp_tls_engine_version(const stp_tls_engine_t *e)
{
    return SSL_get_version(e->ssl);
}

/*
 * The OpenSSL-style name: for TLS 1.3 BoringSSL's name is the IANA one
 * ("TLS_AES_128_GCM_SHA256"); for TLS 1.2 it is "ECDHE-RSA-AES128-GCM-SHA256",
 * the form Postfix, OpenSSL and most mail logs print, so our Received: header
 * and logs read like theirs.
 */
const char *stp_tls_engine_cipher(const stp_tls_engine_t *e)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(e->ssl);
    return c != NULL ? SSL_CIPHER_get_name(c) : "none";
}

const char *stp_tls_engine_sni(const stp_tls_engine_t *e)
{
    return SSL_get_servername(e->ssl, TLSEXT_NAMETYPE_host_name);
}

int stp_tls_engine_cipher_bits(const stp_tls_engine_t *e)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(e->ssl);
    return c != NULL ? SSL_CIPHER_get_bits(c, NULL) : 0;
}

const char *stp_tls_engine_group(const stp_tls_engine_t *e)
{
    uint16_t id = SSL_get_curve_id(e->ssl);
    return id != 0 ? SSL_get_curve_name(id) : NULL;
}

SSL *stp_tls_engine_ssl(stp_tls_engine_t *e)
{
    return e->ssl;
}
