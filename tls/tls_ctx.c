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

#include "tls/session_cache.h"

#include <ctype.h>
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
#include <openssl/x509v3.h>

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

#define MAX_PAIRS 8
#define MAX_NAMES 32

/* A pair and the DNS names its leaf certificate is for (lower case). */
typedef struct {
    credential_t cred;
    char *names[MAX_NAMES];
    size_t nnames;
} entry_t;

/* What a server context with several pairs carries (ex_data). */
typedef struct {
    entry_t e[MAX_PAIRS];
    size_t n;
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
        for (size_t i = 0; i < choice->n; i++) {
            credential_clear(&choice->e[i].cred);
            for (size_t j = 0; j < choice->e[i].nnames; j++) {
                OPENSSL_free(choice->e[i].names[j]);
            }
        }
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

static void add_name(entry_t *e, const unsigned char *p, size_t n)
{
    if (e->nnames == MAX_NAMES || n == 0 || memchr(p, '\0', n) != NULL) {
        return;
    }
    char *name = OPENSSL_malloc(n + 1);
    if (name == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        name[i] = (char)tolower(p[i]);
    }
    name[n] = '\0';
    e->names[e->nnames++] = name;
}

/* The DNS names of the leaf: its subjectAltName entries, else its CN. */
static void read_names(entry_t *e)
{
    X509 *leaf = X509_parse_from_buffer(e->cred.chain[0]);
    if (leaf == NULL) {
        ERR_clear_error();
        return;
    }
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS) {
            add_name(e, ASN1_STRING_get0_data(g->d.dNSName),
                     (size_t)ASN1_STRING_length(g->d.dNSName));
        }
    }
    GENERAL_NAMES_free(gens);
    if (e->nnames == 0) {
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn,
                                          sizeof(cn));
        if (n > 0) {
            add_name(e, (const unsigned char *)cn, (size_t)n);
        }
    }
    X509_free(leaf);
    ERR_clear_error();
}

/* `host` (lower case) against a certificate name: equal, or "*.rest" for
 * exactly one non-empty label in front of "rest". */
static int name_matches(const char *name, const char *host)
{
    if (strcmp(name, host) == 0) {
        return 1;
    }
    if (name[0] != '*' || name[1] != '.') {
        return 0;
    }
    const char *dot = strchr(host, '.');
    return dot != NULL && dot != host && strcmp(dot + 1, name + 2) == 0;
}

static int entry_matches(const entry_t *e, const char *host)
{
    for (size_t i = 0; i < e->nnames; i++) {
        if (name_matches(e->names[i], host)) {
            return 1;
        }
    }
    return 0;
}

/* The host_name of the server_name extension, lower case; 0 if none. */
static int client_sni(const SSL_CLIENT_HELLO *hello, char *out, size_t cap)
{
    const uint8_t *data;
    size_t len;
    CBS ext, list, name;
    uint8_t type;
    if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_server_name, &data, &len)) {
        return 0;
    }
    CBS_init(&ext, data, len);
    if (!CBS_get_u16_length_prefixed(&ext, &list)) {
        return 0;
    }
    while (CBS_get_u8(&list, &type) && CBS_get_u16_length_prefixed(&list, &name)) {
        if (type != TLSEXT_NAMETYPE_host_name || CBS_len(&name) == 0 ||
            CBS_len(&name) >= cap || CBS_contains_zero_byte(&name)) {
            continue;
        }
        for (size_t i = 0; i < CBS_len(&name); i++) {
            out[i] = (char)tolower(CBS_data(&name)[i]);
        }
        out[CBS_len(&name)] = '\0';
        if (CBS_len(&name) > 1 && out[CBS_len(&name) - 1] == '.') {
            out[CBS_len(&name) - 1] = '\0'; /* an absolute name */
        }
        return 1;
    }
    return 0;
}

/*
 * The pairs whose names match the client's server_name are the candidates;
 * when none does (or no name was sent), the pairs for the first pair's
 * first name (the default). Among the candidates, ECDSA when the client can
 * take it, else RSA, else the first.
 */
static enum ssl_select_cert_result_t select_certificate(const SSL_CLIENT_HELLO *hello)
{
    SSL *ssl = hello->ssl;
    const cert_choice_t *choice = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), choice_index);
    if (choice == NULL) {
        return ssl_select_cert_success;
    }
    char host[256];
    int cand[MAX_PAIRS] = {0}, any = 0;
    if (client_sni(hello, host, sizeof(host))) {
        for (size_t i = 0; i < choice->n; i++) {
            any |= cand[i] = entry_matches(&choice->e[i], host);
        }
    }
    if (!any) {
        for (size_t i = 0; i < choice->n; i++) {
            cand[i] = i == 0 || (choice->e[0].nnames > 0 &&
                                 entry_matches(&choice->e[i], choice->e[0].names[0]));
        }
    }
    const credential_t *c = NULL, *rsa = NULL, *first = NULL;
    for (size_t i = 0; i < choice->n; i++) {
        const credential_t *x = &choice->e[i].cred;
        if (!cand[i]) {
            continue;
        }
        if (first == NULL) {
            first = x;
        }
        if (c == NULL && x->type == EVP_PKEY_EC && client_takes_ecdsa(hello, x)) {
            c = x;
        }
        if (rsa == NULL && x->type == EVP_PKEY_RSA) {
            rsa = x;
        }
    }
    c = c ? c : rsa ? rsa : first;
    /* References only: the buffers and the key are shared, not copied. */
    if (!SSL_set_chain_and_key(ssl, c->chain, c->chain_len, c->key, NULL)) {
        return ssl_select_cert_error;
    }
    return ssl_select_cert_success;
}

static int share_a_name(const entry_t *a, const entry_t *b)
{
    for (size_t i = 0; i < a->nnames; i++) {
        for (size_t j = 0; j < b->nnames; j++) {
            if (strcmp(a->names[i], b->names[j]) == 0) {
                return 1;
            }
        }
    }
    return a->nnames == 0 && b->nnames == 0;
}

int stp_tls_keypair_check(const stp_tls_keypair_t *pair, char *err, size_t err_len)
{
    credential_t c;
    if (load_credential(pair, &c, err, err_len) < 0) {
        return -1;
    }
    credential_clear(&c);
    return 0;
}

SSL_CTX *stp_tls_ctx_server_new(const stp_tls_keypair_t *pairs, size_t n, uint16_t min_version,
                                char *err, size_t err_len, size_t *bad)
{
    size_t culprit = n;
    if (bad != NULL) {
        *bad = n;
    }
    if (n == 0 || n > MAX_PAIRS) {
        snprintf(err, err_len, "%s",
                 n == 0 ? "no certificate configured" : "at most 8 certificates");
        return NULL;
    }
    pthread_once(&choice_index_once, choice_index_init);
    cert_choice_t *choice = OPENSSL_malloc(sizeof(*choice));
    SSL_CTX *ctx = NULL;
    if (choice != NULL) {
        memset(choice, 0, sizeof(*choice));
    }
    if (choice == NULL || choice_index < 0) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        if (load_credential(&pairs[i], &choice->e[i].cred, err, err_len) < 0) {
            culprit = i;
            goto fail;
        }
        choice->n++;
        read_names(&choice->e[i]);
    }
    /* Per name, one pair of each key type: a second one could never be chosen. */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (choice->e[i].cred.type == choice->e[j].cred.type &&
                share_a_name(&choice->e[i], &choice->e[j])) {
                snprintf(err, err_len,
                         "cert %s and cert %s: same name and key type (per name: one RSA and "
                         "one ECDSA certificate)",
                         pairs[i].cert_file, pairs[j].cert_file);
                culprit = j;
                goto fail;
            }
        }
    }

    ctx = base_ctx(min_version, err, err_len);
    if (ctx == NULL) {
        goto fail;
    }
    /* The first pair is also the context's own certificate, so that
     * SSL_CTX_get0_certificate and friends see a configured context. */
    ERR_clear_error();
    const credential_t *c0 = &choice->e[0].cred;
    if (!SSL_CTX_set_chain_and_key(ctx, c0->chain, c0->chain_len, c0->key, NULL)) {
        file_error(err, err_len, "cert", pairs[0].cert_file);
        goto fail;
    }
    /* Stateless resumption only: session tickets (on by default; BoringSSL
     * makes and rotates the keys per context). The session-ID cache is off:
     * it would only serve TLS 1.2 clients without ticket support, at the
     * price of up to 20k cached sessions held by the context. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* One TLS 1.3 ticket per handshake, not BoringSSL's two: an MTA keeps
     * one session per next hop (Postfix's tlsmgr, OpenSSL's client cache),
     * our tickets may be used more than once (no 0-RTT, nothing to replay),
     * and each ticket costs the server about 50,000 instructions (the
     * session serialised, encrypted and MACed) on every handshake, full or
     * resumed. */
    SSL_CTX_set_num_tickets(ctx, 1);

    if (n > 1) {
        if (!SSL_CTX_set_ex_data(ctx, choice_index, choice)) {
            ERR_clear_error();
            snprintf(err, err_len, "out of memory");
            goto fail;
        }
        choice = NULL; /* from here on freed with ctx */
        SSL_CTX_set_select_certificate_cb(ctx, select_certificate);
    }
    cert_choice_free(NULL, choice, NULL, 0, 0, NULL);
    return ctx;

fail:
    if (bad != NULL) {
        *bad = culprit;
    }
    cert_choice_free(NULL, choice, NULL, 0, 0, NULL);
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
    /* Resumption toward next hops (session_cache.h). Out of memory here
     * only means full handshakes: not a reason to fail. */
    (void)stp_tls_session_cache_attach(ctx);
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
 * With several pairs, the one that expires first counts: that is
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
    for (size_t i = 0; i < choice->n; i++) {
        X509 *leaf = X509_parse_from_buffer(choice->e[i].cred.chain[0]);
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
