/*
 * tls_ctx: server and client SSL_CTX construction with the project's floor:
 * TLS 1.2 or newer, AEAD ciphers with forward secrecy only.
 */
#include "tls/tls_ctx.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/x509.h>

/* TLS 1.2 suites: ECDHE + AEAD only. TLS 1.3 suites are fixed in BoringSSL
 * and all AEAD. */
static const char cipher_list[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static void ssl_error(char *err, size_t len, const char *what, const char *file)
{
    char buf[200] = "";
    uint32_t code = ERR_get_error();
    if (code) {
        ERR_error_string_n(code, buf, sizeof(buf));
    }
    ERR_clear_error();
    snprintf(err, len, "%s %s: %s", what, file, buf[0] ? buf : "failed");
}

static SSL_CTX *base_ctx(uint16_t min_version, char *err, size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, min_version ? min_version : TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_strict_cipher_list(ctx, cipher_list)) {
        ssl_error(err, err_len, "TLS", "settings");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

/* Loads one certificate chain and its key into `ctx`, checking they match. */
static int load_pair(SSL_CTX *ctx, const stp_tls_keypair_t *pair, char *err, size_t err_len)
{
    const char *cert = pair->cert_file;
    const char *key = pair->key_file ? pair->key_file : cert;
    ERR_clear_error();
    if (!SSL_CTX_use_certificate_chain_file(ctx, cert)) {
        ssl_error(err, err_len, "cert", cert);
        return -1;
    }
    if (!SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM)) {
        ssl_error(err, err_len, "key", key);
        return -1;
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        ERR_clear_error();
        snprintf(err, err_len, "key %s does not match certificate %s", key, cert);
        return -1;
    }
    return 0;
}

/*
 * RSA + ECDSA for one name. An SSL_CTX holds one certificate here, so each
 * pair lives in a context of its own and the ClientHello decides which one
 * a connection uses (SSL_set_SSL_CTX swaps only the certificate settings;
 * versions, ciphers and session tickets stay those of the main context).
 */
typedef struct {
    SSL_CTX *ecdsa;
    SSL_CTX *rsa;
} dual_t;

static int dual_index = -1;

static void dual_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                      void *argp)
{
    dual_t *d = ptr;
    (void)parent, (void)ad, (void)index, (void)argl, (void)argp;
    if (d) {
        SSL_CTX_free(d->ecdsa);
        SSL_CTX_free(d->rsa);
        OPENSSL_free(d);
    }
}

static int has_u16(const uint8_t *p, size_t len, const uint16_t *want, size_t nwant)
{
    for (size_t i = 0; i + 1 < len; i += 2) {
        uint16_t v = (uint16_t)(p[i] << 8 | p[i + 1]);
        for (size_t k = 0; k < nwant; k++) {
            if (v == want[k]) {
                return 1;
            }
        }
    }
    return 0;
}

/* ECDSA if the client can verify an ECDSA signature in the version it will
 * get: TLS 1.3 needs an ECDSA signature algorithm; TLS 1.2 also an
 * ECDHE-ECDSA suite. Otherwise RSA, which every client supports. */
static int client_takes_ecdsa(const SSL_CLIENT_HELLO *hello)
{
    static const uint16_t ecdsa_sigalgs[] = {0x0403, 0x0503, 0x0603};
    static const uint16_t tls13[] = {0x0304};
    static const uint16_t ecdsa_suites[] = {0xc02b, 0xc02c, 0xcca9};
    const uint8_t *ext;
    size_t len;
    int sig_ok = 1; /* no signature_algorithms: TLS 1.2 defaults allow ECDSA (SHA-1) */

    if (SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_signature_algorithms, &ext, &len)) {
        sig_ok = len > 2 && has_u16(ext + 2, len - 2, ecdsa_sigalgs, 3);
    }
    if (SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_supported_versions, &ext, &len) &&
        len > 1 && has_u16(ext + 1, len - 1, tls13, 1)) {
        return sig_ok;
    }
    return sig_ok && has_u16(hello->cipher_suites, hello->cipher_suites_len, ecdsa_suites, 3);
}

static enum ssl_select_cert_result_t select_cert(const SSL_CLIENT_HELLO *hello)
{
    SSL *ssl = hello->ssl;
    dual_t *d = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), dual_index);
    if (d && !SSL_set_SSL_CTX(ssl, client_takes_ecdsa(hello) ? d->ecdsa : d->rsa)) {
        return ssl_select_cert_error;
    }
    return ssl_select_cert_success;
}

SSL_CTX *stp_tls_ctx_server_new(const stp_tls_keypair_t *pairs, size_t n, uint16_t min_version,
                                char *err, size_t err_len)
{
    SSL_CTX *ctx = base_ctx(min_version, err, err_len);
    if (ctx == NULL) {
        return NULL;
    }
    if (n == 0 || n > 2) {
        snprintf(err, err_len, "%s", n ? "at most one RSA and one ECDSA certificate"
                                       : "no certificate");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (load_pair(ctx, &pairs[0], err, err_len) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (n == 1) {
        return ctx;
    }

    dual_t *d = OPENSSL_malloc(sizeof(*d));
    if (d == NULL) {
        snprintf(err, err_len, "out of memory");
        SSL_CTX_free(ctx);
        return NULL;
    }
    d->ecdsa = d->rsa = NULL;
    if (dual_index < 0) {
        dual_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, dual_free);
    }
    SSL_CTX_set_ex_data(ctx, dual_index, d); /* freed with ctx from here on */
    for (size_t i = 0; i < n; i++) {
        SSL_CTX *one = base_ctx(min_version, err, err_len);
        if (one == NULL || load_pair(one, &pairs[i], err, err_len) < 0) {
            SSL_CTX_free(one);
            SSL_CTX_free(ctx);
            return NULL;
        }
        int type = EVP_PKEY_id(SSL_CTX_get0_privatekey(one));
        SSL_CTX **slot = type == EVP_PKEY_EC ? &d->ecdsa : type == EVP_PKEY_RSA ? &d->rsa : NULL;
        if (slot == NULL || *slot != NULL) {
            snprintf(err, err_len, "cert %s: need one RSA and one ECDSA certificate",
                     pairs[i].cert_file);
            SSL_CTX_free(one);
            SSL_CTX_free(ctx);
            return NULL;
        }
        *slot = one;
    }
    SSL_CTX_set_select_certificate_cb(ctx, select_cert);
    return ctx;
}

SSL_CTX *stp_tls_ctx_client_new(const char *ca_file, uint16_t min_version, char *err,
                                size_t err_len)
{
    SSL_CTX *ctx = base_ctx(min_version, err, err_len);
    if (ctx == NULL) {
        return NULL;
    }
    const char *file = ca_file && *ca_file ? ca_file : "/etc/ssl/certs/ca-certificates.crt";
    ERR_clear_error();
    if (!SSL_CTX_load_verify_locations(ctx, file, NULL)) {
        ssl_error(err, err_len, "ca_file", file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

long stp_tls_ctx_cert_expiry(SSL_CTX *ctx)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (x == NULL) {
        return 0;
    }
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x))) {
        return 0;
    }
    return (long)days * 86400 + secs;
}
