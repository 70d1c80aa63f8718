/*
 * tls_engine: one BoringSSL SSL driven entirely through two in-memory byte
 * queues. Ciphertext from the network is appended to `rbio`, where SSL reads
 * it; what SSL wants to send accumulates in `wbio` until the caller takes it.
 * No I/O and no event loop here: proxy/conn.c moves the bytes (the split
 * between h2o's socket.c and its uv-binding).
 *
 * The queues are FIFO BIOs (tls/fifo_bio.c), not BIO_s_mem: see there
 * for why.
 *
 * Memory per session is kept small: BoringSSL frees its own record buffers
 * whenever they are empty (SSL_MODE_RELEASE_BUFFERS is a no-op there, so it
 * is not set), its handshake configuration is shed once the handshake is
 * done, and a queue that grew while relaying a large message gives its
 * buffer back as soon as it is drained.
 */
#include "tls/tls_engine.h"

#include "tls/fifo_bio.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>

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

static stp_tls_engine_t *engine_new(SSL_CTX *ctx)
{
    stp_tls_engine_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    ERR_clear_error();
    e->ssl = SSL_new(ctx); /* takes its own reference on ctx */
    e->rbio = stp_fifo_bio_new();
    e->wbio = stp_fifo_bio_new();
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

void stp_tls_engine_lend(stp_tls_engine_t *e, const uint8_t *in, size_t len)
{
    stp_fifo_bio_lend(e->rbio, in, len);
}

int stp_tls_engine_keep(stp_tls_engine_t *e)
{
    if (stp_fifo_bio_keep(e->rbio) < 0) {
        set_static_error(e, "out of memory");
        return STP_TLS_ERROR;
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
    stp_fifo_bio_release(e->rbio);
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
    stp_fifo_bio_release(e->rbio);
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
    return stp_fifo_bio_pending(e->wbio);
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
    stp_fifo_bio_release(e->wbio);
    return n;
}

size_t stp_tls_engine_peek(const stp_tls_engine_t *e, const uint8_t **out)
{
    return stp_fifo_bio_peek(e->wbio, out);
}

void stp_tls_engine_drop(stp_tls_engine_t *e)
{
    stp_fifo_bio_drop(e->wbio);
}

size_t stp_tls_engine_buffer_size(const stp_tls_engine_t *e)
{
    return stp_fifo_bio_capacity(e->rbio) + stp_fifo_bio_capacity(e->wbio);
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
