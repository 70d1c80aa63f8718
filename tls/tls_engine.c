/*
 * tls_engine: a BoringSSL SSL driven through two memory BIOs. Ciphertext
 * from the network goes into `rbio`; what SSL wants to send accumulates in
 * `wbio` until the caller takes it. No I/O happens here.
 */
#include "tls/tls_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>

struct stp_tls_engine_s {
    SSL *ssl;
    BIO *rbio; /* network -> SSL (owned by ssl) */
    BIO *wbio; /* SSL -> network (owned by ssl) */
    int established;
    int shutdown_sent;
    char error[160];
};

static void set_error(stp_tls_engine_t *e, const char *fallback)
{
    uint32_t code = ERR_get_error();
    if (code) {
        ERR_error_string_n(code, e->error, sizeof(e->error));
    } else {
        snprintf(e->error, sizeof(e->error), "%s", fallback);
    }
    ERR_clear_error();
}

static stp_tls_engine_t *engine_new(SSL_CTX *ctx)
{
    stp_tls_engine_t *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    e->ssl = SSL_new(ctx);
    e->rbio = BIO_new(BIO_s_mem());
    e->wbio = BIO_new(BIO_s_mem());
    if (e->ssl == NULL || e->rbio == NULL || e->wbio == NULL) {
        SSL_free(e->ssl);
        BIO_free(e->rbio);
        BIO_free(e->wbio);
        free(e);
        return NULL;
    }
    /* An empty read BIO means "wait", not end of stream. */
    BIO_set_mem_eof_return(e->rbio, -1);
    SSL_set_bio(e->ssl, e->rbio, e->wbio);
    SSL_set_mode(e->ssl, SSL_MODE_RELEASE_BUFFERS);
    return e;
}

stp_tls_engine_t *stp_tls_engine_new_server(SSL_CTX *ctx)
{
    stp_tls_engine_t *e = engine_new(ctx);
    if (e) {
        SSL_set_accept_state(e->ssl);
    }
    return e;
}

stp_tls_engine_t *stp_tls_engine_new_client(SSL_CTX *ctx, const char *sni)
{
    stp_tls_engine_t *e = engine_new(ctx);
    if (e == NULL) {
        return NULL;
    }
    SSL_set_connect_state(e->ssl);
    SSL_set_renegotiate_mode(e->ssl, ssl_renegotiate_never);
    if (sni && *sni && !SSL_set_tlsext_host_name(e->ssl, sni)) {
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
    SSL_free(e->ssl); /* frees both BIOs */
    free(e);
}

int stp_tls_engine_feed(stp_tls_engine_t *e, const uint8_t *in, size_t len)
{
    if (len == 0) {
        return STP_TLS_OK;
    }
    if (BIO_write(e->rbio, in, (int)len) != (int)len) {
        snprintf(e->error, sizeof(e->error), "out of memory");
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
    if (rc == 1) {
        e->established = 1;
        return STP_TLS_OK;
    }
    int err = SSL_get_error(e->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        return STP_TLS_AGAIN;
    }
    set_error(e, err == SSL_ERROR_ZERO_RETURN ? "peer closed during handshake"
                                              : "TLS handshake failed");
    return STP_TLS_ERROR;
}

int stp_tls_engine_established(const stp_tls_engine_t *e)
{
    return e->established;
}

ssize_t stp_tls_engine_read(stp_tls_engine_t *e, uint8_t *buf, size_t cap)
{
    ERR_clear_error();
    int rc = SSL_read(e->ssl, buf, cap > 0x7fffffff ? 0x7fffffff : (int)cap);
    if (rc > 0) {
        return rc;
    }
    int err = SSL_get_error(e->ssl, rc);
    switch (err) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return STP_TLS_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return STP_TLS_CLOSED;
    default:
        set_error(e, "TLS read failed");
        return STP_TLS_ERROR;
    }
}

int stp_tls_engine_write(stp_tls_engine_t *e, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        int chunk = len > 16384 ? 16384 : (int)len;
        ERR_clear_error();
        int rc = SSL_write(e->ssl, buf, chunk);
        if (rc <= 0) {
            set_error(e, "TLS write failed");
            return STP_TLS_ERROR;
        }
        buf += rc;
        len -= (size_t)rc;
    }
    return STP_TLS_OK;
}

void stp_tls_engine_shutdown(stp_tls_engine_t *e)
{
    if (e->shutdown_sent || !e->established) {
        return;
    }
    e->shutdown_sent = 1;
    ERR_clear_error();
    SSL_shutdown(e->ssl);
    ERR_clear_error();
}

size_t stp_tls_engine_pending(const stp_tls_engine_t *e)
{
    return BIO_ctrl_pending(e->wbio);
}

size_t stp_tls_engine_take(stp_tls_engine_t *e, uint8_t *out, size_t cap)
{
    int n = BIO_read(e->wbio, out, cap > 0x7fffffff ? 0x7fffffff : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

const char *stp_tls_engine_error(const stp_tls_engine_t *e)
{
    return e->error;
}

const char *stp_tls_engine_version(const stp_tls_engine_t *e)
{
    return SSL_get_version(e->ssl);
}

const char *stp_tls_engine_cipher(const stp_tls_engine_t *e)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(e->ssl);
    return c ? SSL_CIPHER_standard_name(c) : "none";
}

const char *stp_tls_engine_sni(const stp_tls_engine_t *e)
{
    return SSL_get_servername(e->ssl, TLSEXT_NAMETYPE_host_name);
}

int stp_tls_engine_cipher_bits(const stp_tls_engine_t *e)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(e->ssl);
    return c ? SSL_CIPHER_get_bits(c, NULL) : 0;
}

const char *stp_tls_engine_group(const stp_tls_engine_t *e)
{
    uint16_t id = SSL_get_curve_id(e->ssl);
    return id ? SSL_get_curve_name(id) : NULL;
}

SSL *stp_tls_engine_ssl(stp_tls_engine_t *e)
{
    return e->ssl;
}
