/*
 * tls_ctx: builds the server and client SSL_CTXs with the project's floor:
 * TLS 1.2 or 1.3, and in TLS 1.2 only ECDHE key exchange with AEAD ciphers
 * (TLS 1.3 suites are fixed in BoringSSL and all AEAD).
 *
 * RSA and ECDSA side by side: this BoringSSL (API version 17) keeps exactly
 * one certificate and key per SSL_CTX; loading a second chain replaces the
 * first and drops the key that no longer matches. So each key pair is
 * loaded and checked on its own, kept as a chain of CRYPTO_BUFFERs plus its
 * key, and a select-certificate callback installs the right one on each
 * connection from what the ClientHello says the client can verify. The
 * connection's SSL_CTX is never swapped, so every other setting of the
 * server context (versions, ciphers, ticket keys, callbacks) stays in force.
 */
#include "tls/tls_ctx.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/x509.h>

/* TLS 1.2: ECDHE with AES-GCM or ChaCha20-Poly1305 only; no CBC, no static
 * RSA key exchange, no PSK. Clients choose among them (all are strong). */
static const char cipher_list[] = "ECDHE-ECDSA-AES128-GCM-SHA256:"
                                  "ECDHE-RSA-AES128-GCM-SHA256:"
                                  "ECDHE-ECDSA-AES256-GCM-SHA384:"
                                  "ECDHE-RSA-AES256-GCM-SHA384:"
                                  "ECDHE-ECDSA-CHACHA20-POLY1305:"
                                  "ECDHE-RSA-CHACHA20-POLY1305";

/* Debian's bundle, for when BoringSSL's default file (/etc/ssl/cert.pem)
 * does not exist. */
static const char debian_ca_bundle[] = "/etc/ssl/certs/ca-certificates.crt";

/* A loaded key pair: the chain as DER buffers (leaf first) and its key. */
typedef struct {
    CRYPTO_BUFFER **chain;
    size_t chain_len;
    EVP_PKEY *key;
    int type;              /* EVP_PKEY_EC, EVP_PKEY_RSA, ... */
    uint16_t tls13_sigalg; /* ECDSA: the only TLS 1.3 signature algorithm for its curve */
    uint16_t group;        /* ECDSA: its curve as a TLS group id */
} credential_t;

/* What a server context with an RSA and an ECDSA pair carries (ex_data). */
typedef struct {
    credential_t ecdsa;
    credential_t rsa;
} cert_choice_t;

static void credential_clear(credential_t *c)
{
    for (size_t i = 0; i < c->chain_len; i++) {
        CRYPTO_BUFFER_free(c->chain[i]);
    }
    OPENSSL_free(c->chain);
    EVP_PKEY_free(c->key);
    memset(c, 0, sizeof(*c));
}

static void cert_choice_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                             void *argp)
{
    cert_choice_t *choice = ptr;
    if (choice != NULL) {
        credential_clear(&choice->ecdsa);
        credential_clear(&choice->rsa);
        OPENSSL_free(choice);
    }
}

static int choice_index = -1;
static pthread_once_t choice_index_once = PTHREAD_ONCE_INIT;

static void choice_index_init(void)
{
    choice_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, cert_choice_free);
}

/*
 * Writes "<what> <file>: <reason>" with the first queued error put in words
 * a configuration author understands, and drains the queue.
 */
static void file_error(char *err, size_t err_len, const char *what, const char *file)
{
    uint32_t code = ERR_get_error();
    char detail[160];
    if (code == 0) {
        snprintf(detail, sizeof(detail), "cannot be loaded");
    } else if (ERR_GET_LIB(code) == ERR_LIB_SYS) {
        snprintf(detail, sizeof(detail), "%s", ERR_reason_error_string(code)); /* strerror */
    } else if ((ERR_GET_LIB(code) == ERR_LIB_PEM && ERR_GET_REASON(code) == PEM_R_NO_START_LINE) ||
               (ERR_GET_LIB(code) == ERR_LIB_X509 &&
                ERR_GET_REASON(code) == X509_R_NO_CERTIFICATE_OR_CRL_FOUND)) {
        snprintf(detail, sizeof(detail), "no %s found",
                 strcmp(what, "key") == 0 ? "private key" : "certificate");
    } else {
        ERR_error_string_n(code, detail, sizeof(detail));
    }
    ERR_clear_error();
    snprintf(err, err_len, "%s %s: %s", what, file, detail);
}

static int is_key_mismatch(uint32_t code)
{
    int lib = ERR_GET_LIB(code), reason = ERR_GET_REASON(code);
    return lib == ERR_LIB_X509 &&
           (reason == X509_R_KEY_TYPE_MISMATCH || reason == X509_R_KEY_VALUES_MISMATCH);
}

static SSL_CTX *base_ctx(uint16_t min_version, char *err, size_t err_len)
{
    if (min_version == 0) {
        min_version = TLS1_2_VERSION;
    }
    if (min_version != TLS1_2_VERSION && min_version != TLS1_3_VERSION) {
        snprintf(err, err_len, "minimum TLS version must be 1.2 or 1.3");
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        ERR_clear_error();
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_strict_cipher_list(ctx, cipher_list)) {
        file_error(err, err_len, "TLS", "settings");
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* BoringSSL has no TLS compression and never renegotiates as a server;
     * clients refuse renegotiation per connection (tls_engine). */
    return ctx;
}

static void set_curve_facts(credential_t *c)
{
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(c->key);
    int nid = ec != NULL ? EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) : NID_undef;
    switch (nid) {
    case NID_X9_62_prime256v1:
        c->tls13_sigalg = SSL_SIGN_ECDSA_SECP256R1_SHA256;
        c->group = SSL_CURVE_SECP256R1;
        break;
    case NID_secp384r1:
        c->tls13_sigalg = SSL_SIGN_ECDSA_SECP384R1_SHA384;
        c->group = SSL_CURVE_SECP384R1;
        break;
    case NID_secp521r1:
        c->tls13_sigalg = SSL_SIGN_ECDSA_SECP521R1_SHA512;
        c->group = SSL_CURVE_SECP521R1;
        break;
    default:
        break; /* no TLS use; the handshake will say so */
    }
}

static CRYPTO_BUFFER *x509_to_buffer(X509 *x)
{
    uint8_t *der = NULL;
    int len = i2d_X509(x, &der);
    if (len <= 0) {
        return NULL;
    }
    CRYPTO_BUFFER *b = CRYPTO_BUFFER_new(der, (size_t)len, NULL);
    OPENSSL_free(der);
    return b;
}

/*
 * Loads one pair with BoringSSL's own file readers (chain: leaf then
 * intermediates; key: PEM) in a scratch context, checks that they match,
 * and copies them into `out`. Returns 0, or -1 with `err` naming the file.
 */
static int load_credential(const stp_tls_keypair_t *pair, credential_t *out, char *err,
                           size_t err_len)
{
    const char *cert = pair->cert_file;
    const char *key = pair->key_file != NULL ? pair->key_file : cert;
    memset(out, 0, sizeof(*out));
    if (cert == NULL || cert[0] == '\0') {
        snprintf(err, err_len, "cert: no file given");
        return -1;
    }
    ERR_clear_error();
    SSL_CTX *scratch = SSL_CTX_new(TLS_method());
    if (scratch == NULL) {
        ERR_clear_error();
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc = -1;
    STACK_OF(X509) *extra = NULL;
    if (!SSL_CTX_use_certificate_chain_file(scratch, cert)) {
        file_error(err, err_len, "cert", cert);
        goto done;
    }
    if (!SSL_CTX_use_PrivateKey_file(scratch, key, SSL_FILETYPE_PEM)) {
        /* BoringSSL compares the key with the certificate right here. */
        if (is_key_mismatch(ERR_peek_error())) {
            ERR_clear_error();
            snprintf(err, err_len, "key %s does not match certificate %s", key, cert);
        } else {
            file_error(err, err_len, "key", key);
        }
        goto done;
    }
    if (!SSL_CTX_check_private_key(scratch)) {
        ERR_clear_error();
        snprintf(err, err_len, "key %s does not match certificate %s", key, cert);
        goto done;
    }

    SSL_CTX_get0_chain_certs(scratch, &extra);
    size_t n = 1 + (extra != NULL ? sk_X509_num(extra) : 0);
    out->chain = OPENSSL_malloc(n * sizeof(*out->chain));
    if (out->chain == NULL) {
        snprintf(err, err_len, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        X509 *x = i == 0 ? SSL_CTX_get0_certificate(scratch) : sk_X509_value(extra, i - 1);
        out->chain[i] = x509_to_buffer(x);
        if (out->chain[i] == NULL) {
            snprintf(err, err_len, "cert %s: cannot encode certificate %zu", cert, i + 1);
            goto done;
        }
        out->chain_len++;
    }
    out->key = SSL_CTX_get0_privatekey(scratch);
    EVP_PKEY_up_ref(out->key);
    out->type = EVP_PKEY_id(out->key);
    if (out->type == EVP_PKEY_EC) {
        set_curve_facts(out);
    }
    rc = 0;
done:
    ERR_clear_error();
    SSL_CTX_free(scratch);
    if (rc < 0) {
        credential_clear(out);
    }
    return rc;
}

static int has_u16(CBS list, uint16_t want)
{
    uint16_t v;
    while (CBS_get_u16(&list, &v)) {
        if (v == want) {
            return 1;
        }
    }
    return 0;
}

/* The client offers TLS 1.3 (our maximum, so it is what it will get). */
static int offers_tls13(const SSL_CLIENT_HELLO *hello)
{
    const uint8_t *data;
    size_t len;
    CBS ext, versions;
    if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_supported_versions, &data, &len)) {
        return 0;
    }
    CBS_init(&ext, data, len);
    return CBS_get_u8_length_prefixed(&ext, &versions) && has_u16(versions, TLS1_3_VERSION);
}

/* The u16 list inside extension `type`; 0 if absent or malformed. */
static int get_u16_list_ext(const SSL_CLIENT_HELLO *hello, uint16_t type, CBS *out)
{
    const uint8_t *data;
    size_t len;
    CBS ext;
    if (!SSL_early_callback_ctx_extension_get(hello, type, &data, &len)) {
        return 0;
    }
    CBS_init(&ext, data, len);
    return CBS_get_u16_length_prefixed(&ext, out) && CBS_len(&ext) == 0;
}

/*
 * Whether the client can authenticate our ECDSA pair in the version it will
 * get. TLS 1.3: the signature algorithm of our curve. TLS 1.2: any ECDSA
 * signature algorithm (absent extension: the SHA-1 defaults include ECDSA),
 * an ECDHE-ECDSA suite we allow, and our curve among its groups. Otherwise
 * RSA, which is what every client can use.
 */
static int client_takes_ecdsa(const SSL_CLIENT_HELLO *hello, const credential_t *ec)
{
    static const uint16_t tls12_ecdsa_sigalgs[] = {
        SSL_SIGN_ECDSA_SECP256R1_SHA256, SSL_SIGN_ECDSA_SECP384R1_SHA384,
        SSL_SIGN_ECDSA_SECP521R1_SHA512, SSL_SIGN_ECDSA_SHA1};
    static const uint16_t ecdsa_suites[] = {0xc02b, 0xc02c, 0xcca9}; /* in cipher_list */
    int tls13 = offers_tls13(hello);
    CBS list;

    if (ec->group == 0) {
        return 0;
    }
    if (get_u16_list_ext(hello, TLSEXT_TYPE_signature_algorithms, &list)) {
        int ok = 0;
        if (tls13) {
            ok = has_u16(list, ec->tls13_sigalg);
        } else {
            for (size_t i = 0;
                 i < sizeof(tls12_ecdsa_sigalgs) / sizeof(tls12_ecdsa_sigalgs[0]) && !ok; i++) {
                ok = has_u16(list, tls12_ecdsa_sigalgs[i]);
            }
        }
        if (!ok) {
            return 0;
        }
    } else if (tls13) {
        return 0;
    }
    if (tls13) {
        return 1;
    }
    int suite_ok = 0;
    CBS suites;
    CBS_init(&suites, hello->cipher_suites, hello->cipher_suites_len);
    for (size_t i = 0; i < sizeof(ecdsa_suites) / sizeof(ecdsa_suites[0]) && !suite_ok; i++) {
        suite_ok = has_u16(suites, ecdsa_suites[i]);
    }
    if (!suite_ok) {
        return 0;
    }
    return !get_u16_list_ext(hello, TLSEXT_TYPE_supported_groups, &list) ||
           has_u16(list, ec->group);
}

static enum ssl_select_cert_result_t select_certificate(const SSL_CLIENT_HELLO *hello)
{
    SSL *ssl = hello->ssl;
    const cert_choice_t *choice = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), choice_index);
    if (choice == NULL) {
        return ssl_select_cert_success;
    }
    const credential_t *c =
        client_takes_ecdsa(hello, &choice->ecdsa) ? &choice->ecdsa : &choice->rsa;
    /* References only: the buffers and the key are shared, not copied. */
    if (!SSL_set_chain_and_key(ssl, c->chain, c->chain_len, c->key, NULL)) {
        return ssl_select_cert_error;
    }
    return ssl_select_cert_success;
}

SSL_CTX *stp_tls_ctx_server_new(const stp_tls_keypair_t *pairs, size_t n, uint16_t min_version,
                                char *err, size_t err_len)
{
    if (n == 0 || n > 2) {
        snprintf(err, err_len, "%s",
                 n == 0 ? "no certificate configured"
                        : "at most one RSA and one ECDSA certificate");
        return NULL;
    }
    credential_t creds[2];
    memset(creds, 0, sizeof(creds));
    SSL_CTX *ctx = NULL;

    for (size_t i = 0; i < n; i++) {
        if (load_credential(&pairs[i], &creds[i], err, err_len) < 0) {
            goto fail;
        }
    }
    if (n == 2) {
        int ec0 = creds[0].type == EVP_PKEY_EC, ec1 = creds[1].type == EVP_PKEY_EC;
        int rsa0 = creds[0].type == EVP_PKEY_RSA, rsa1 = creds[1].type == EVP_PKEY_RSA;
        if (!((ec0 && rsa1) || (rsa0 && ec1))) {
            snprintf(err, err_len, "cert %s and cert %s: need one RSA and one ECDSA certificate",
                     pairs[0].cert_file, pairs[1].cert_file);
            goto fail;
        }
    }

    ctx = base_ctx(min_version, err, err_len);
    if (ctx == NULL) {
        goto fail;
    }
    /* The first pair is also the context's own certificate, so that
     * SSL_CTX_get0_certificate and friends see a configured context. */
    ERR_clear_error();
    if (!SSL_CTX_set_chain_and_key(ctx, creds[0].chain, creds[0].chain_len, creds[0].key, NULL)) {
        file_error(err, err_len, "cert", pairs[0].cert_file);
        goto fail;
    }
    /* Stateless resumption only: session tickets (on by default; BoringSSL
     * makes and rotates the keys per context). The session-ID cache is off:
     * it would only serve TLS 1.2 clients without ticket support, at the
     * price of up to 20k cached sessions held by the context. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    if (n == 2) {
        pthread_once(&choice_index_once, choice_index_init);
        cert_choice_t *choice = OPENSSL_malloc(sizeof(*choice));
        if (choice_index < 0 || choice == NULL) {
            snprintf(err, err_len, "out of memory");
            goto fail;
        }
        int first_is_ec = creds[0].type == EVP_PKEY_EC;
        choice->ecdsa = creds[first_is_ec ? 0 : 1];
        choice->rsa = creds[first_is_ec ? 1 : 0];
        memset(creds, 0, sizeof(creds)); /* now owned by `choice` */
        if (!SSL_CTX_set_ex_data(ctx, choice_index, choice)) {
            ERR_clear_error();
            cert_choice_free(NULL, choice, NULL, 0, 0, NULL);
            snprintf(err, err_len, "out of memory");
            goto fail;
        }
        /* from here on `choice` is freed with ctx */
        SSL_CTX_set_select_certificate_cb(ctx, select_certificate);
    }
    credential_clear(&creds[0]);
    credential_clear(&creds[1]);
    return ctx;

fail:
    credential_clear(&creds[0]);
    credential_clear(&creds[1]);
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *stp_tls_ctx_client_new(const char *ca_file, uint16_t min_version, char *err,
                                size_t err_len)
{
    SSL_CTX *ctx = base_ctx(min_version, err, err_len);
    if (ctx == NULL) {
        return NULL;
    }
    ERR_clear_error();
    if (ca_file != NULL && ca_file[0] != '\0') {
        if (!SSL_CTX_load_verify_locations(ctx, ca_file, NULL)) {
            file_error(err, err_len, "ca_file", ca_file);
            SSL_CTX_free(ctx);
            return NULL;
        }
        return ctx;
    }
    /* The system store: $SSL_CERT_FILE / $SSL_CERT_DIR when set, otherwise
     * BoringSSL's defaults, /etc/ssl/cert.pem and the hashed /etc/ssl/certs
     * (looked up lazily, which Debian's ca-certificates provides). Debian
     * has no /etc/ssl/cert.pem, so its bundle is also loaded explicitly:
     * trust must not depend on the hash links alone. */
    if (!SSL_CTX_set_default_verify_paths(ctx)) {
        file_error(err, err_len, "trust store", X509_get_default_cert_dir());
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (getenv(X509_get_default_cert_file_env()) == NULL &&
        access(X509_get_default_cert_file(), R_OK) != 0 && access(debian_ca_bundle, R_OK) == 0 &&
        !SSL_CTX_load_verify_locations(ctx, debian_ca_bundle, NULL)) {
        file_error(err, err_len, "trust store", debian_ca_bundle);
        SSL_CTX_free(ctx);
        return NULL;
    }
    ERR_clear_error();
    return ctx;
}

/* Seconds from now until x's notAfter; `*ok` cleared if it cannot be read. */
static long seconds_left(const X509 *x, int *ok)
{
    int days = 0, secs = 0;
    if (x == NULL || !ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x))) {
        *ok = 0;
        return 0;
    }
    return (long)days * 86400 + secs;
}

/*
 * With an RSA and an ECDSA pair, the one that expires first counts: that is
 * the deadline an operator has to act on.
 */
long stp_tls_ctx_cert_expiry(SSL_CTX *ctx)
{
    int ok = 1;
    pthread_once(&choice_index_once, choice_index_init);
    const cert_choice_t *choice = choice_index >= 0 ? SSL_CTX_get_ex_data(ctx, choice_index) : NULL;
    if (choice == NULL) {
        long left = seconds_left(SSL_CTX_get0_certificate(ctx), &ok);
        ERR_clear_error();
        return ok ? left : 0;
    }
    long soonest = 0;
    int have = 0;
    const credential_t *both[2] = {&choice->ecdsa, &choice->rsa};
    for (int i = 0; i < 2; i++) {
        X509 *leaf = X509_parse_from_buffer(both[i]->chain[0]);
        int one_ok = 1;
        long left = seconds_left(leaf, &one_ok);
        X509_free(leaf);
        if (one_ok && (!have || left < soonest)) {
            soonest = left;
            have = 1;
        }
    }
    ERR_clear_error();
    return soonest;
}
