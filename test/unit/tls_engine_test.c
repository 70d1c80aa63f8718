/*
 * tls_engine_test: two engines (client and server) joined in memory, no
 * sockets: handshakes with ECDSA, RSA and both; TLS 1.2 and 1.3; data both
 * ways, a 1 MB payload and byte-by-byte delivery; close_notify; garbage,
 * plaintext, old versions and CBC-only clients refused; name verification.
 * Keys and certificates are made here, in a temporary directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "test/unit/check.h"
#include "tls/tls_ctx.h"
#include "tls/tls_engine.h"
#include "tls/tls_verify.h"

static char dir[64];
static char ec_cert[128], ec_key[128], rsa_cert[128], rsa_key[128];

static void write_pair(EVP_PKEY *pkey, const char *cn, const char *cert_path,
                       const char *key_path)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, pkey);
    char san[160];
    snprintf(san, sizeof(san), "DNS:%s", cn);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, san);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(x, pkey, EVP_sha256());
    FILE *f = fopen(cert_path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
}

static void make_keys(void)
{
    snprintf(dir, sizeof(dir), "/tmp/stp-tls-test-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(ec_cert, sizeof(ec_cert), "%s/ec.pem", dir);
    snprintf(ec_key, sizeof(ec_key), "%s/ec.key", dir);
    snprintf(rsa_cert, sizeof(rsa_cert), "%s/rsa.pem", dir);
    snprintf(rsa_key, sizeof(rsa_key), "%s/rsa.key", dir);

    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EC_KEY_generate_key(ec);
    EVP_PKEY *p = EVP_PKEY_new();
    EVP_PKEY_assign_EC_KEY(p, ec);
    write_pair(p, "mx.example.test", ec_cert, ec_key);
    EVP_PKEY_free(p);

    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    BN_set_word(e, RSA_F4);
    RSA_generate_key_ex(rsa, 2048, e, NULL);
    BN_free(e);
    p = EVP_PKEY_new();
    EVP_PKEY_assign_RSA(p, rsa);
    write_pair(p, "mx.example.test", rsa_cert, rsa_key);
    EVP_PKEY_free(p);
}

/* Moves pending ciphertext from one engine to the other (optionally one
 * byte per call). Returns bytes moved. */
static size_t shuttle(stp_tls_engine_t *from, stp_tls_engine_t *to, int bytewise)
{
    uint8_t buf[4096];
    size_t moved = 0, n;
    while ((n = stp_tls_engine_take(from, buf, bytewise ? 1 : sizeof(buf))) > 0) {
        CHECK_EQ_INT(stp_tls_engine_feed(to, buf, n), STP_TLS_OK);
        moved += n;
    }
    return moved;
}

/* Runs both handshakes to the end; returns 0 if both completed. */
static int handshake(stp_tls_engine_t *c, stp_tls_engine_t *s, int bytewise)
{
    int rc_c = STP_TLS_AGAIN, rc_s = STP_TLS_AGAIN;
    for (int round = 0; round < 10000; round++) {
        if (rc_c != STP_TLS_OK) {
            rc_c = stp_tls_engine_handshake(c);
        }
        size_t a = shuttle(c, s, bytewise);
        if (rc_s != STP_TLS_OK) {
            rc_s = stp_tls_engine_handshake(s);
        }
        size_t b = shuttle(s, c, bytewise);
        if (rc_c == STP_TLS_ERROR || rc_s == STP_TLS_ERROR) {
            return -1;
        }
        if (rc_c == STP_TLS_OK && rc_s == STP_TLS_OK) {
            return 0;
        }
        if (a == 0 && b == 0 && round > 2 && !bytewise) {
            return -1;
        }
    }
    return -1;
}

static SSL_CTX *server_ctx(int ec, int rsa)
{
    stp_tls_keypair_t pairs[2];
    size_t n = 0;
    char err[256];
    if (ec) {
        pairs[n++] = (stp_tls_keypair_t){ec_cert, ec_key};
    }
    if (rsa) {
        pairs[n++] = (stp_tls_keypair_t){rsa_cert, rsa_key};
    }
    SSL_CTX *ctx = stp_tls_ctx_server_new(pairs, n, TLS1_2_VERSION, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "server ctx: %s\n", err);
    }
    return ctx;
}

static SSL_CTX *client_ctx(uint16_t max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    return ctx;
}

static int peer_key_type(stp_tls_engine_t *c)
{
    X509 *x = SSL_get_peer_certificate(stp_tls_engine_ssl(c));
    EVP_PKEY *k = X509_get_pubkey(x);
    int t = EVP_PKEY_id(k);
    EVP_PKEY_free(k);
    X509_free(x);
    return t;
}

static const uint16_t rsa_pss[] = {SSL_SIGN_RSA_PSS_RSAE_SHA256};
static const uint16_t rsa_pkcs1[] = {SSL_SIGN_RSA_PKCS1_SHA256};

static void test_handshakes_and_certificate_choice(void)
{
    static const struct {
        const char *label;
        int ec, rsa;
        uint16_t max;
        const uint16_t *sigalgs;
        size_t nsig;
        int want_key;
        const char *version;
    } cases[] = {
        {"ecdsa 1.3", 1, 0, TLS1_3_VERSION, NULL, 0, EVP_PKEY_EC, "TLSv1.3"},
        {"rsa 1.3", 0, 1, TLS1_3_VERSION, NULL, 0, EVP_PKEY_RSA, "TLSv1.3"},
        {"ecdsa 1.2", 1, 0, TLS1_2_VERSION, NULL, 0, EVP_PKEY_EC, "TLSv1.2"},
        {"both, default client", 1, 1, TLS1_3_VERSION, NULL, 0, EVP_PKEY_EC, "TLSv1.3"},
        {"both, client verifies rsa only", 1, 1, TLS1_3_VERSION,
         rsa_pss, 1, EVP_PKEY_RSA, "TLSv1.3"},
        {"both, 1.2 client verifies rsa only", 1, 1, TLS1_2_VERSION,
         rsa_pkcs1, 1, EVP_PKEY_RSA, "TLSv1.2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL_CTX *sctx = server_ctx(cases[i].ec, cases[i].rsa);
        SSL_CTX *cctx = client_ctx(cases[i].max);
        if (cases[i].nsig) {
            SSL_CTX_set_verify_algorithm_prefs(cctx, cases[i].sigalgs, cases[i].nsig);
        }
        stp_tls_engine_t *s = stp_tls_engine_new_server(sctx);
        stp_tls_engine_t *c = stp_tls_engine_new_client(cctx, "mx.example.test");
        int ok = handshake(c, s, 0) == 0;
        if (!ok) {
            fprintf(stderr, "case '%s': %s / %s\n", cases[i].label, stp_tls_engine_error(c),
                    stp_tls_engine_error(s));
        }
        CHECK(ok);
        if (ok) {
            CHECK_EQ_INT(peer_key_type(c), cases[i].want_key);
            CHECK_STR(stp_tls_engine_version(s), cases[i].version);
            CHECK_STR(stp_tls_engine_sni(s), "mx.example.test");
            CHECK(stp_tls_engine_cipher_bits(s) >= 128);
            CHECK(strstr(stp_tls_engine_cipher(s), "GCM") || strstr(stp_tls_engine_cipher(s), "CHACHA"));
        }
        stp_tls_engine_free(c);
        stp_tls_engine_free(s);
        SSL_CTX_free(cctx);
        SSL_CTX_free(sctx);
    }
}

static void test_data_both_ways_and_close(void)
{
    SSL_CTX *sctx = server_ctx(1, 0), *cctx = client_ctx(TLS1_3_VERSION);
    stp_tls_engine_t *s = stp_tls_engine_new_server(sctx);
    stp_tls_engine_t *c = stp_tls_engine_new_client(cctx, NULL);
    CHECK_EQ_INT(handshake(c, s, 1), 0); /* ciphertext delivered byte by byte */

    size_t big = 1 << 20;
    uint8_t *payload = malloc(big), *got = malloc(big);
    for (size_t i = 0; i < big; i++) {
        payload[i] = (uint8_t)(i * 7);
    }
    CHECK_EQ_INT(stp_tls_engine_write(c, payload, big), STP_TLS_OK);
    shuttle(c, s, 0);
    size_t have = 0;
    for (;;) {
        ssize_t n = stp_tls_engine_read(s, got + have, big - have);
        if (n <= 0) {
            CHECK_EQ_INT(n, STP_TLS_AGAIN);
            break;
        }
        have += (size_t)n;
    }
    CHECK_EQ_INT(have, big);
    CHECK(memcmp(payload, got, big) == 0);

    CHECK_EQ_INT(stp_tls_engine_write(s, (const uint8_t *)"250 ok\r\n", 8), STP_TLS_OK);
    shuttle(s, c, 1);
    uint8_t small[64];
    ssize_t n = stp_tls_engine_read(c, small, sizeof(small));
    CHECK_MEM(small, n > 0 ? (size_t)n : 0, "250 ok\r\n", 8);

    stp_tls_engine_shutdown(c);
    shuttle(c, s, 0);
    CHECK_EQ_INT(stp_tls_engine_read(s, small, sizeof(small)), STP_TLS_CLOSED);
    free(payload);
    free(got);
    stp_tls_engine_free(c);
    stp_tls_engine_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

/* The server engine refuses what is not a modern TLS client. */
static void test_refusals(void)
{
    SSL_CTX *sctx = server_ctx(1, 1);
    /* plaintext SMTP instead of a ClientHello; a handshake record holding
     * a message that is not a ClientHello */
    static const struct {
        const char *bytes;
        size_t len;
    } raw[] = {{"EHLO attacker.example\r\n", 23}, {"\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9}};
    for (size_t i = 0; i < 2; i++) {
        stp_tls_engine_t *s = stp_tls_engine_new_server(sctx);
        CHECK_EQ_INT(stp_tls_engine_feed(s, (const uint8_t *)raw[i].bytes, raw[i].len), STP_TLS_OK);
        CHECK_EQ_INT(stp_tls_engine_handshake(s), STP_TLS_ERROR);
        CHECK(stp_tls_engine_error(s)[0] != '\0');
        stp_tls_engine_free(s);
    }
    /* TLS 1.1 at most */
    SSL_CTX *old = client_ctx(TLS1_1_VERSION);
    stp_tls_engine_t *s = stp_tls_engine_new_server(sctx), *c = stp_tls_engine_new_client(old, NULL);
    CHECK_EQ_INT(handshake(c, s, 0), -1);
    stp_tls_engine_free(c);
    stp_tls_engine_free(s);
    SSL_CTX_free(old);
    /* TLS 1.2 with CBC suites only */
    SSL_CTX *cbc = client_ctx(TLS1_2_VERSION);
    CHECK(SSL_CTX_set_strict_cipher_list(cbc, "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA"));
    s = stp_tls_engine_new_server(sctx);
    c = stp_tls_engine_new_client(cbc, NULL);
    CHECK_EQ_INT(handshake(c, s, 0), -1);
    stp_tls_engine_free(c);
    stp_tls_engine_free(s);
    SSL_CTX_free(cbc);
    SSL_CTX_free(sctx);
}

static void test_ctx_errors_and_expiry(void)
{
    char err[256];
    stp_tls_keypair_t missing = {"/nonexistent/cert.pem", "/nonexistent/key.pem"};
    CHECK(stp_tls_ctx_server_new(&missing, 1, TLS1_2_VERSION, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "/nonexistent/cert.pem") != NULL);
    stp_tls_keypair_t mismatch = {ec_cert, rsa_key};
    CHECK(stp_tls_ctx_server_new(&mismatch, 1, TLS1_2_VERSION, err, sizeof(err)) == NULL);
    CHECK(strstr(err, rsa_key) != NULL);
    stp_tls_keypair_t two_ec[2] = {{ec_cert, ec_key}, {ec_cert, ec_key}};
    CHECK(stp_tls_ctx_server_new(two_ec, 2, TLS1_2_VERSION, err, sizeof(err)) == NULL);
    SSL_CTX *ok = server_ctx(1, 0);
    long left = stp_tls_ctx_cert_expiry(ok);
    CHECK(left > 80000 && left <= 86400);
    SSL_CTX_free(ok);
}

/* A client engine sees a self-signed peer: the chain fails, the name can be
 * checked, and the result is reported rather than aborting the handshake. */
static void test_verify_reports(void)
{
    char err[256], why[300];
    SSL_CTX *sctx = server_ctx(1, 0);
    SSL_CTX *cctx = stp_tls_ctx_client_new(ec_cert, TLS1_2_VERSION, err, sizeof(err));
    CHECK(cctx != NULL);
    /* trusting the certificate itself: chain ok, then names decide */
    static const struct {
        const char *name;
        stp_verify_result_t want;
    } cases[] = {{"mx.example.test", STP_VERIFY_OK}, {"other.example.test", STP_VERIFY_NAME}};
    for (size_t i = 0; i < 2; i++) {
        stp_tls_engine_t *s = stp_tls_engine_new_server(sctx);
        stp_tls_engine_t *c = stp_tls_engine_new_client(cctx, cases[i].name);
        stp_tls_verify_prepare(stp_tls_engine_ssl(c));
        CHECK_EQ_INT(handshake(c, s, 0), 0);
        const char *names[] = {cases[i].name};
        CHECK_EQ_INT(stp_tls_verify_peer(stp_tls_engine_ssl(c), names, 1, why, sizeof(why)),
                     cases[i].want);
        stp_tls_engine_free(c);
        stp_tls_engine_free(s);
    }
    SSL_CTX_free(cctx);
    /* an empty trust store: the chain result says so, the handshake completes */
    cctx = stp_tls_ctx_client_new(rsa_cert, TLS1_2_VERSION, err, sizeof(err));
    stp_tls_engine_t *s = stp_tls_engine_new_server(sctx);
    stp_tls_engine_t *c = stp_tls_engine_new_client(cctx, "mx.example.test");
    stp_tls_verify_prepare(stp_tls_engine_ssl(c));
    CHECK_EQ_INT(handshake(c, s, 0), 0);
    const char *names[] = {"mx.example.test"};
    CHECK_EQ_INT(stp_tls_verify_peer(stp_tls_engine_ssl(c), names, 1, why, sizeof(why)),
                 STP_VERIFY_CHAIN);
    CHECK(why[0] != '\0');
    stp_tls_engine_free(c);
    stp_tls_engine_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

int main(void)
{
    make_keys();
    STP_RUN(test_handshakes_and_certificate_choice);
    STP_RUN(test_data_both_ways_and_close);
    STP_RUN(test_refusals);
    STP_RUN(test_ctx_errors_and_expiry);
    STP_RUN(test_verify_reports);
    const char *files[] = {ec_cert, ec_key, rsa_cert, rsa_key};
    for (int i = 0; i < 4; i++) {
        unlink(files[i]);
    }
    rmdir(dir);
    return STP_CHECK_DONE();
}
