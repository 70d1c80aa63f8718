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

SSL_CTX *stp_tls_ctx_server_new(const stp_tls_keypair_t *pairs, size_t n, uint16_t min_version,
                                char *err, size_t err_len)
{
    SSL_CTX *ctx = base_ctx(min_version, err, err_len);
    if (ctx == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *cert = pairs[i].cert_file;
        const char *key = pairs[i].key_file ? pairs[i].key_file : cert;
        ERR_clear_error();
        if (!SSL_CTX_use_certificate_chain_file(ctx, cert)) {
            ssl_error(err, err_len, "cert", cert);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (!SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM)) {
            ssl_error(err, err_len, "key", key);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (!SSL_CTX_check_private_key(ctx)) {
            ERR_clear_error();
            snprintf(err, err_len, "key %s does not match certificate %s", key, cert);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
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
