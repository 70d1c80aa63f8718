/*
 * tls_engine_test: a client and a server engine joined in memory, no
 * sockets. Handshakes with an ECDSA, an RSA (with an intermediate in its
 * chain) and both certificates, TLS 1.2 and 1.3, and which certificate a
 * client gets from what it can verify; SNI and the info getters; data both
 * ways, 1 MB in pieces and byte by byte; close_notify; what a server must
 * refuse; context errors naming the file; expiry; ticket resumption; and
 * the verification results seen through tls_verify.
 * Keys and certificates are generated here, in a temporary directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/buf.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "test/unit/check.h"
#include "tls/session_cache.h"
#include "tls/tls_ctx.h"
#include "tls/tls_engine.h"
#include "tls/tls_verify.h"

#define HOST "mx.example.test"
#define DAY 86400L

static char dir[64];

/* Files of the fixture, all in `dir`. */
enum {
    F_EC_CERT, /* self-signed P-256, 30 days */
    F_EC_KEY,
    F_RSA_CERT, /* RSA 2048 leaf signed by the CA, 10 days; then the CA */
    F_RSA_KEY,
    F_CA_CERT,   /* the CA alone */
    F_P384_CERT, /* self-signed P-384 */
    F_P384_KEY,
    F_OTHER_EC_KEY, /* a P-256 key matching no certificate */
    F_COMBINED,     /* the EC certificate and its key in one file */
    F_NOT_PEM,      /* text that is no PEM at all */
    F_COUNT
};
static const char *const file_names[F_COUNT] = {
    "ec.pem",   "ec.key",   "rsa.pem",      "rsa.key",      "ca.pem",
    "p384.pem", "p384.key", "other-ec.key", "combined.pem", "not-pem.txt"};
static char path[F_COUNT][128];

static EVP_PKEY *ec_key_new(int nid)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(nid);
    EC_KEY_generate_key(ec);
    EVP_PKEY *p = EVP_PKEY_new();
    EVP_PKEY_assign_EC_KEY(p, ec);
    return p;
}

static EVP_PKEY *rsa_key_new(void)
{
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    BN_set_word(e, RSA_F4);
    RSA_generate_key_ex(rsa, 2048, e, NULL);
    BN_free(e);
    EVP_PKEY *p = EVP_PKEY_new();
    EVP_PKEY_assign_RSA(p, rsa);
    return p;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    CHECK(ext != NULL);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
}

/* A certificate for `key` named `cn`, signed by issuer (NULL: self-signed),
 * valid from an hour ago for `days`. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, EVP_PKEY *issuer_key, X509 *issuer, int is_ca,
                       long days)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), days * DAY);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, key);
    if (is_ca) {
        add_ext(x, issuer ? issuer : x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, issuer ? issuer : x, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        char san[160];
        snprintf(san, sizeof(san), "DNS:%s", cn);
        add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san);
    }
    CHECK(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

/* Writes certs[0..n) then, if given, the key, as PEM. */
static void write_pem(int file, X509 *const *certs, size_t n, EVP_PKEY *key)
{
    FILE *f = fopen(path[file], "w");
    CHECK(f != NULL);
    for (size_t i = 0; i < n; i++) {
        PEM_write_X509(f, certs[i]);
    }
    if (key) {
        PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    }
    fclose(f);
}

static void make_fixture(void)
{
    snprintf(dir, sizeof(dir), "/tmp/stp-tls-test-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    for (int i = 0; i < F_COUNT; i++) {
        snprintf(path[i], sizeof(path[i]), "%s/%s", dir, file_names[i]);
    }

    EVP_PKEY *ec = ec_key_new(NID_X9_62_prime256v1);
    X509 *ec_cert = make_cert(ec, HOST, NULL, NULL, 0, 30);
    write_pem(F_EC_CERT, &ec_cert, 1, NULL);
    write_pem(F_EC_KEY, NULL, 0, ec);
    write_pem(F_COMBINED, &ec_cert, 1, ec);

    EVP_PKEY *ca_key = ec_key_new(NID_X9_62_prime256v1);
    X509 *ca = make_cert(ca_key, "Test CA", NULL, NULL, 1, 365);
    write_pem(F_CA_CERT, &ca, 1, NULL);

    EVP_PKEY *rsa = rsa_key_new();
    X509 *rsa_chain[2] = {make_cert(rsa, HOST, ca_key, ca, 0, 10), ca};
    write_pem(F_RSA_CERT, rsa_chain, 2, NULL);
    write_pem(F_RSA_KEY, NULL, 0, rsa);

    EVP_PKEY *p384 = ec_key_new(NID_secp384r1);
    X509 *p384_cert = make_cert(p384, HOST, NULL, NULL, 0, 30);
    write_pem(F_P384_CERT, &p384_cert, 1, NULL);
    write_pem(F_P384_KEY, NULL, 0, p384);

    EVP_PKEY *other = ec_key_new(NID_X9_62_prime256v1);
    write_pem(F_OTHER_EC_KEY, NULL, 0, other);

    FILE *f = fopen(path[F_NOT_PEM], "w");
    fputs("this is not a certificate\n", f);
    fclose(f);

    X509_free(ec_cert);
    X509_free(ca);
    X509_free(rsa_chain[0]);
    X509_free(p384_cert);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(other);
}

static void remove_fixture(void)
{
    for (int i = 0; i < F_COUNT; i++) {
        unlink(path[i]);
    }
    rmdir(dir);
}

/* Server certificate sets. */
enum { CERTS_EC = 1, CERTS_RSA = 2, CERTS_BOTH = 3, CERTS_P384_RSA = 4 };

static SSL_CTX *server_ctx(int certs, uint16_t min_version)
{
    stp_tls_keypair_t pairs[2];
    size_t n = 0;
    char err[300];
    if (certs == CERTS_P384_RSA) {
        pairs[n++] = (stp_tls_keypair_t){path[F_P384_CERT], path[F_P384_KEY]};
    }
    if (certs & CERTS_EC) {
        pairs[n++] = (stp_tls_keypair_t){path[F_EC_CERT], path[F_EC_KEY]};
    }
    if (certs & CERTS_RSA || certs == CERTS_P384_RSA) {
        pairs[n++] = (stp_tls_keypair_t){path[F_RSA_CERT], path[F_RSA_KEY]};
    }
    SSL_CTX *ctx = stp_tls_ctx_server_new(pairs, n, min_version, err, sizeof(err), NULL);
    if (ctx == NULL) {
        fprintf(stderr, "server ctx: %s\n", err);
    }
    CHECK(ctx != NULL);
    return ctx;
}

/* A plain BoringSSL client context, so tests can make it old or odd. */
static SSL_CTX *client_ctx(uint16_t max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    return ctx;
}

/* Moves pending ciphertext from one engine to the other, `piece` bytes per
 * take/feed. Returns the bytes moved. */
static int shuttle_lends; /* shuttle() lends its pieces instead of feeding them */

/* Lends in[0..n) to `to`, lets `step` consume what it can, keeps the rest
 * and overwrites in[]: whatever the engine still needed must have been
 * copied by the keep. */
static int lend_step(stp_tls_engine_t *to, uint8_t *in, size_t n, int (*step)(stp_tls_engine_t *))
{
    stp_tls_engine_lend(to, in, n);
    int rc = step != NULL ? step(to) : STP_TLS_OK;
    CHECK_EQ_INT(stp_tls_engine_keep(to), STP_TLS_OK);
    memset(in, 0xAA, n);
    return rc;
}

/* Consumes lent handshake bytes before they are kept (the result shows
 * in the next stp_tls_engine_handshake(), which BoringSSL answers alike). */
static int handshake_step(stp_tls_engine_t *e)
{
    return stp_tls_engine_established(e) ? STP_TLS_OK : stp_tls_engine_handshake(e);
}

static size_t shuttle(stp_tls_engine_t *from, stp_tls_engine_t *to, size_t piece)
{
    uint8_t buf[4096];
    size_t moved = 0, n;
    if (piece == 0 || piece > sizeof(buf)) {
        piece = sizeof(buf);
    }
    while ((n = stp_tls_engine_take(from, buf, piece)) > 0) {
        if (shuttle_lends) {
            lend_step(to, buf, n, handshake_step);
        } else {
            CHECK_EQ_INT(stp_tls_engine_feed(to, buf, n), STP_TLS_OK);
        }
        moved += n;
    }
    return moved;
}

/* Runs both handshakes; 0 if both completed, -1 if either failed or they
 * stalled. */
static int handshake(stp_tls_engine_t *c, stp_tls_engine_t *s, size_t piece)
{
    int rc_c = STP_TLS_AGAIN, rc_s = STP_TLS_AGAIN;
    for (int round = 0; round < 100; round++) {
        if (rc_c == STP_TLS_AGAIN) {
            rc_c = stp_tls_engine_handshake(c);
        }
        size_t a = shuttle(c, s, piece);
        if (rc_s == STP_TLS_AGAIN) {
            rc_s = stp_tls_engine_handshake(s);
        }
        size_t b = shuttle(s, c, piece);
        if (rc_c == STP_TLS_ERROR || rc_s == STP_TLS_ERROR) {
            /* deliver the alert, if any, so the other side fails too */
            if (rc_c == STP_TLS_AGAIN) {
                rc_c = stp_tls_engine_handshake(c);
            }
            if (rc_s == STP_TLS_AGAIN) {
                rc_s = stp_tls_engine_handshake(s);
            }
            return -1;
        }
        if (rc_c == STP_TLS_OK && rc_s == STP_TLS_OK) {
            return 0;
        }
        if (a == 0 && b == 0) {
            return -1;
        }
    }
    return -1;
}

typedef struct {
    SSL_CTX *sctx, *cctx;
    stp_tls_engine_t *s, *c;
} link_t;

static void link_open(link_t *l, SSL_CTX *sctx, SSL_CTX *cctx, const char *sni)
{
    l->sctx = sctx;
    l->cctx = cctx;
    l->s = stp_tls_engine_new_server(sctx);
    l->c = stp_tls_engine_new_client(cctx, sni);
    CHECK(l->s != NULL && l->c != NULL);
}

/* Frees the engines and both contexts (the engines hold their own
 * references, so the order does not matter). */
static void link_close(link_t *l)
{
    SSL_CTX_free(l->sctx);
    SSL_CTX_free(l->cctx);
    stp_tls_engine_free(l->c);
    stp_tls_engine_free(l->s);
}

static int peer_key_type(stp_tls_engine_t *c)
{
    X509 *x = SSL_get_peer_certificate(stp_tls_engine_ssl(c));
    EVP_PKEY *k = x ? X509_get_pubkey(x) : NULL;
    int t = k ? EVP_PKEY_id(k) : -1;
    EVP_PKEY_free(k);
    X509_free(x);
    return t;
}

static int one_of(const char *s, const char *const *set)
{
    for (; s && *set; set++) {
        if (strcmp(s, *set) == 0) {
            return 1;
        }
    }
    return 0;
}

static const char *const tls13_ciphers[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                            "TLS_CHACHA20_POLY1305_SHA256", NULL};
static const char *const tls12_ecdsa_ciphers[] = {"ECDHE-ECDSA-AES128-GCM-SHA256",
                                                  "ECDHE-ECDSA-AES256-GCM-SHA384",
                                                  "ECDHE-ECDSA-CHACHA20-POLY1305", NULL};
static const char *const tls12_rsa_ciphers[] = {"ECDHE-RSA-AES128-GCM-SHA256",
                                                "ECDHE-RSA-AES256-GCM-SHA384",
                                                "ECDHE-RSA-CHACHA20-POLY1305", NULL};

static const uint16_t sig_rsa_pss[] = {SSL_SIGN_RSA_PSS_RSAE_SHA256};
static const uint16_t sig_rsa_pkcs1[] = {SSL_SIGN_RSA_PKCS1_SHA256};
static const uint16_t sig_ecdsa_p256[] = {SSL_SIGN_ECDSA_SECP256R1_SHA256};
static const uint16_t sig_p256_and_rsa[] = {SSL_SIGN_ECDSA_SECP256R1_SHA256,
                                            SSL_SIGN_RSA_PSS_RSAE_SHA256};

static void test_handshakes_and_certificate_choice(void)
{
    static const struct {
        const char *label;
        int certs;
        uint16_t max;
        const uint16_t *sigalgs; /* what the client can verify; NULL: defaults */
        size_t nsig;
        const char *ciphers; /* TLS 1.2 suites the client offers; NULL: defaults */
        const char *groups;  /* NULL: defaults */
        int want_key;
        size_t want_chain; /* certificates the server sent */
    } cases[] = {
        {"ECDSA, TLS 1.3", CERTS_EC, TLS1_3_VERSION, NULL, 0, NULL, NULL, EVP_PKEY_EC, 1},
        {"ECDSA, TLS 1.2", CERTS_EC, TLS1_2_VERSION, NULL, 0, NULL, NULL, EVP_PKEY_EC, 1},
        {"RSA with intermediate, TLS 1.3", CERTS_RSA, TLS1_3_VERSION, NULL, 0, NULL, NULL,
         EVP_PKEY_RSA, 2},
        {"RSA with intermediate, TLS 1.2", CERTS_RSA, TLS1_2_VERSION, NULL, 0, NULL, NULL,
         EVP_PKEY_RSA, 2},
        {"both, default 1.3 client gets ECDSA", CERTS_BOTH, TLS1_3_VERSION, NULL, 0, NULL, NULL,
         EVP_PKEY_EC, 1},
        {"both, default 1.2 client gets ECDSA", CERTS_BOTH, TLS1_2_VERSION, NULL, 0, NULL, NULL,
         EVP_PKEY_EC, 1},
        {"both, 1.3 client verifying RSA only", CERTS_BOTH, TLS1_3_VERSION, sig_rsa_pss, 1, NULL,
         NULL, EVP_PKEY_RSA, 2},
        {"both, 1.2 client verifying RSA only", CERTS_BOTH, TLS1_2_VERSION, sig_rsa_pkcs1, 1, NULL,
         NULL, EVP_PKEY_RSA, 2},
        {"both, 1.3 client verifying ECDSA only", CERTS_BOTH, TLS1_3_VERSION, sig_ecdsa_p256, 1,
         NULL, NULL, EVP_PKEY_EC, 1},
        {"both, 1.2 client verifying ECDSA only", CERTS_BOTH, TLS1_2_VERSION, sig_ecdsa_p256, 1,
         NULL, NULL, EVP_PKEY_EC, 1},
        {"both, 1.2 client offering ECDHE-RSA suites only", CERTS_BOTH, TLS1_2_VERSION, NULL, 0,
         "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305", NULL, EVP_PKEY_RSA, 2},
        {"both, 1.2 client offering ECDHE-ECDSA suites only", CERTS_BOTH, TLS1_2_VERSION, NULL, 0,
         "ECDHE-ECDSA-AES256-GCM-SHA384", NULL, EVP_PKEY_EC, 1},
        {"both, 1.2 client without P-256 among its groups", CERTS_BOTH, TLS1_2_VERSION, NULL, 0,
         NULL, "X25519:P-384", EVP_PKEY_RSA, 2},
        {"P-384 and RSA, default 1.3 client gets ECDSA", CERTS_P384_RSA, TLS1_3_VERSION, NULL, 0,
         NULL, NULL, EVP_PKEY_EC, 1},
        {"P-384 and RSA, 1.3 client verifying P-256 ECDSA only gets RSA", CERTS_P384_RSA,
         TLS1_3_VERSION, sig_p256_and_rsa, 2, NULL, NULL, EVP_PKEY_RSA, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        SSL_CTX *cctx = client_ctx(cases[i].max);
        if (cases[i].nsig) {
            CHECK(SSL_CTX_set_verify_algorithm_prefs(cctx, cases[i].sigalgs, cases[i].nsig));
        }
        if (cases[i].ciphers) {
            CHECK(SSL_CTX_set_strict_cipher_list(cctx, cases[i].ciphers));
        }
        if (cases[i].groups) {
            CHECK(SSL_CTX_set1_curves_list(cctx, cases[i].groups));
        }
        link_t l;
        link_open(&l, server_ctx(cases[i].certs, TLS1_2_VERSION), cctx, HOST);
        int ok = handshake(l.c, l.s, 0) == 0;
        if (!ok) {
            fprintf(stderr, "case '%s': client: %s; server: %s\n", cases[i].label,
                    stp_tls_engine_error(l.c), stp_tls_engine_error(l.s));
        }
        CHECK(ok);
        if (ok) {
            int tls13 = cases[i].max == TLS1_3_VERSION;
            const char *cipher = stp_tls_engine_cipher(l.s);
            if (peer_key_type(l.c) != cases[i].want_key) {
                fprintf(stderr, "case '%s': wrong certificate\n", cases[i].label);
            }
            CHECK_EQ_INT(peer_key_type(l.c), cases[i].want_key);
            CHECK_EQ_INT(sk_X509_num(SSL_get_peer_cert_chain(stp_tls_engine_ssl(l.c))),
                         cases[i].want_chain);
            CHECK(stp_tls_engine_established(l.s) && stp_tls_engine_established(l.c));
            CHECK_STR(stp_tls_engine_version(l.s), tls13 ? "TLSv1.3" : "TLSv1.2");
            CHECK_STR(stp_tls_engine_version(l.c), stp_tls_engine_version(l.s));
            CHECK_STR(stp_tls_engine_cipher(l.c), cipher);
            const char *const *allowed = tls13                              ? tls13_ciphers
                                         : cases[i].want_key == EVP_PKEY_EC ? tls12_ecdsa_ciphers
                                                                            : tls12_rsa_ciphers;
            CHECK(one_of(cipher, allowed));
            int bits = stp_tls_engine_cipher_bits(l.s);
            CHECK(bits == 128 || bits == 256);
            const char *group = stp_tls_engine_group(l.s);
            CHECK(group != NULL);
            CHECK_STR(group ? group : "", "X25519");
            CHECK(stp_tls_engine_sni(l.s) != NULL);
            CHECK_STR(stp_tls_engine_sni(l.s) ? stp_tls_engine_sni(l.s) : "", HOST);
        }
        link_close(&l);
    }
}

static void test_sni(void)
{
    static const struct {
        const char *client_sends;
        const char *server_sees; /* NULL: no SNI */
    } cases[] = {
        {HOST, HOST},
        {"MX.Example.Test.", "MX.Example.Test"}, /* a trailing dot is not sent */
        {NULL, NULL},
        {"", NULL},
        {"192.0.2.25", NULL}, /* RFC 6066: no IP literals */
        {"2001:db8::25", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        link_t l;
        link_open(&l, server_ctx(CERTS_EC, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION),
                  cases[i].client_sends);
        CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
        const char *seen = stp_tls_engine_sni(l.s);
        if (cases[i].server_sees == NULL) {
            CHECK(seen == NULL);
        } else {
            CHECK(seen != NULL);
            CHECK_STR(seen ? seen : "", cases[i].server_sees);
        }
        link_close(&l);
    }
}

/* Writes `len` bytes on `from` and reads them on `to`, delivering the
 * ciphertext `piece` bytes at a time and reading into a `rcap`-byte window
 * after every piece, as a network and a small buffer would. */
static void transfer(stp_tls_engine_t *from, stp_tls_engine_t *to, const uint8_t *data, size_t len,
                     size_t piece, size_t rcap)
{
    uint8_t *got = malloc(len + 1);
    uint8_t cipher[4096];
    size_t have = 0, n;
    CHECK_EQ_INT(stp_tls_engine_write(from, data, len), STP_TLS_OK);
    while ((n = stp_tls_engine_take(from, cipher, piece)) > 0) {
        CHECK_EQ_INT(stp_tls_engine_feed(to, cipher, n), STP_TLS_OK);
        for (;;) {
            size_t room = len + 1 - have;
            ssize_t r = stp_tls_engine_read(to, got + have, room < rcap ? room : rcap);
            if (r <= 0) {
                CHECK_EQ_INT(r, STP_TLS_AGAIN);
                break;
            }
            have += (size_t)r;
        }
    }
    CHECK_EQ_INT(have, len);
    CHECK(have == len && memcmp(got, data, len) == 0);
    CHECK_EQ_INT(stp_tls_engine_pending(to), 0);
    free(got);
}

static void test_data_both_ways(void)
{
    link_t l;
    link_open(&l, server_ctx(CERTS_BOTH, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION), HOST);
    CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);

    /* A TLS 1.3 server sends its session tickets ahead of its first
     * application data. Delivered alone they carry no data: the client's
     * read consumes them and says AGAIN, with nothing to send back. */
    uint8_t small[64], wire[2048];
    CHECK_EQ_INT(stp_tls_engine_read(l.s, small, sizeof(small)), STP_TLS_AGAIN);
    CHECK_EQ_INT(stp_tls_engine_write(l.s, (const uint8_t *)"220 hi\r\n", 8), STP_TLS_OK);
    size_t all = stp_tls_engine_take(l.s, wire, sizeof(wire));
    size_t data_record = 5 + 8 + 1 + 16; /* header, data, content type, AEAD tag */
    CHECK(all > data_record && all < sizeof(wire));
    CHECK_EQ_INT(stp_tls_engine_feed(l.c, wire, all - data_record), STP_TLS_OK);
    CHECK_EQ_INT(stp_tls_engine_read(l.c, small, sizeof(small)), STP_TLS_AGAIN);
    CHECK_EQ_INT(stp_tls_engine_pending(l.c), 0);
    CHECK_EQ_INT(stp_tls_engine_feed(l.c, wire + all - data_record, data_record), STP_TLS_OK);
    ssize_t n = stp_tls_engine_read(l.c, small, sizeof(small));
    CHECK_MEM(small, n > 0 ? (size_t)n : 0, "220 hi\r\n", 8);

    size_t big = 1 << 20;
    uint8_t *payload = malloc(big);
    for (size_t i = 0; i < big; i++) {
        payload[i] = (uint8_t)(i * 7 + (i >> 12));
    }
    transfer(l.c, l.s, payload, big, 1000, 3000);    /* client -> server */
    transfer(l.s, l.c, payload, big, 4096, 1 << 16); /* server -> client */
    transfer(l.c, l.s, (const uint8_t *)"QUIT\r\n", 6, 4096, sizeof(small));
    transfer(l.s, l.c, (const uint8_t *)"221 bye\r\n", 9, 4096, sizeof(small));
    CHECK_EQ_INT(stp_tls_engine_write(l.c, payload, 0), STP_TLS_OK);
    CHECK_EQ_INT(stp_tls_engine_pending(l.c), 0);

    /* Once drained, no engine keeps a megabyte-sized buffer around. */
    stp_tls_engine_t *both[2] = {l.c, l.s};
    for (int i = 0; i < 2; i++) {
        CHECK(stp_tls_engine_buffer_size(both[i]) <= 2 * 512);
    }
    free(payload);
    link_close(&l);
}

static void test_byte_at_a_time(void)
{
    static const uint16_t versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    for (size_t v = 0; v < 2; v++) {
        link_t l;
        link_open(&l, server_ctx(CERTS_BOTH, TLS1_2_VERSION), client_ctx(versions[v]), HOST);
        CHECK_EQ_INT(handshake(l.c, l.s, 1), 0);
        static const char line[] = "EHLO client.example\r\n";
        transfer(l.c, l.s, (const uint8_t *)line, sizeof(line) - 1, 1, 5);
        static const char reply[] = "250-mx.example.test\r\n250 STARTTLS\r\n";
        transfer(l.s, l.c, (const uint8_t *)reply, sizeof(reply) - 1, 1, 7);
        link_close(&l);
    }
}

static void test_close_notify(void)
{
    link_t l;
    link_open(&l, server_ctx(CERTS_EC, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION), HOST);
    uint8_t buf[64];
    /* before the handshake: nothing to close, nothing queued */
    stp_tls_engine_shutdown(l.c);
    CHECK_EQ_INT(stp_tls_engine_pending(l.c), 0);
    CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);

    /* data and close_notify in one delivery: the data first, then CLOSED */
    CHECK_EQ_INT(stp_tls_engine_write(l.c, (const uint8_t *)"QUIT\r\n", 6), STP_TLS_OK);
    stp_tls_engine_shutdown(l.c);
    size_t once = stp_tls_engine_pending(l.c);
    stp_tls_engine_shutdown(l.c); /* idempotent */
    CHECK_EQ_INT(stp_tls_engine_pending(l.c), once);
    shuttle(l.c, l.s, 0);
    ssize_t n = stp_tls_engine_read(l.s, buf, sizeof(buf));
    CHECK_MEM(buf, n > 0 ? (size_t)n : 0, "QUIT\r\n", 6);
    CHECK_EQ_INT(stp_tls_engine_read(l.s, buf, sizeof(buf)), STP_TLS_CLOSED);
    CHECK_EQ_INT(stp_tls_engine_read(l.s, buf, sizeof(buf)), STP_TLS_CLOSED);
    CHECK_STR(stp_tls_engine_error(l.s), "");

    /* the closing side cannot write any more */
    CHECK_EQ_INT(stp_tls_engine_write(l.c, (const uint8_t *)"x", 1), STP_TLS_ERROR);
    CHECK(stp_tls_engine_error(l.c)[0] != '\0');
    link_close(&l);
}

/* Feeds raw bytes to a fresh server engine: the handshake must fail. */
static void check_server_refuses_bytes(const char *label, const void *bytes, size_t len)
{
    SSL_CTX *sctx = server_ctx(CERTS_BOTH, TLS1_2_VERSION);
    stp_tls_engine_t *s = stp_tls_engine_new_server(sctx);
    CHECK_EQ_INT(stp_tls_engine_feed(s, bytes, len), STP_TLS_OK);
    int rc = stp_tls_engine_handshake(s);
    if (rc != STP_TLS_ERROR) {
        fprintf(stderr, "'%s' was not refused\n", label);
    }
    CHECK_EQ_INT(rc, STP_TLS_ERROR);
    CHECK(stp_tls_engine_error(s)[0] != '\0');
    CHECK_EQ_INT(stp_tls_engine_established(s), 0);
    stp_tls_engine_free(s);
    SSL_CTX_free(sctx);
}

/* A client the server must refuse; the error names the reason. */
static void check_server_refuses_client(const char *label, SSL_CTX *sctx, SSL_CTX *cctx,
                                        const char *reason)
{
    link_t l;
    link_open(&l, sctx, cctx, HOST);
    CHECK_EQ_INT(handshake(l.c, l.s, 0), -1);
    const char *why = stp_tls_engine_error(l.s);
    if (strstr(why, reason) == NULL) {
        fprintf(stderr, "'%s': server error '%s', wanted '%s'\n", label, why, reason);
    }
    CHECK(strstr(why, reason) != NULL);
    CHECK(stp_tls_engine_error(l.c)[0] != '\0'); /* the client got an alert */
    CHECK_EQ_INT(stp_tls_engine_established(l.s), 0);
    link_close(&l);
}

static void test_refusals(void)
{
    check_server_refuses_bytes("plaintext SMTP", "EHLO x\r\n", 8);
    check_server_refuses_bytes("a long SMTP line", "EHLO attacker.example\r\n", 23);
    /* a handshake record holding a ServerHello instead of a ClientHello */
    check_server_refuses_bytes("not a ClientHello", "\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9);
    uint8_t garbage[512];
    RAND_bytes(garbage, sizeof(garbage));
    garbage[0] = 0x17; /* an application-data record before any handshake */
    check_server_refuses_bytes("random bytes", garbage, sizeof(garbage));

    check_server_refuses_client("TLS 1.1 at most", server_ctx(CERTS_BOTH, TLS1_2_VERSION),
                                client_ctx(TLS1_1_VERSION), "PROTOCOL");
    SSL_CTX *cbc = client_ctx(TLS1_2_VERSION);
    CHECK(SSL_CTX_set_strict_cipher_list(cbc, "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA"));
    check_server_refuses_client("TLS 1.2 with CBC only", server_ctx(CERTS_BOTH, TLS1_2_VERSION),
                                cbc, "NO_SHARED_CIPHER");
    SSL_CTX *rsa_kx = client_ctx(TLS1_2_VERSION);
    CHECK(SSL_CTX_set_strict_cipher_list(rsa_kx, "AES128-GCM-SHA256:AES256-GCM-SHA384"));
    check_server_refuses_client("TLS 1.2 with RSA key exchange only",
                                server_ctx(CERTS_BOTH, TLS1_2_VERSION), rsa_kx, "NO_SHARED_CIPHER");
    check_server_refuses_client("TLS 1.2 client, server minimum 1.3",
                                server_ctx(CERTS_BOTH, TLS1_3_VERSION), client_ctx(TLS1_2_VERSION),
                                "PROTOCOL");
}

/* Steps taken out of order fail cleanly instead of misbehaving. */
static void test_misuse(void)
{
    link_t l;
    link_open(&l, server_ctx(CERTS_EC, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION), HOST);
    uint8_t buf[16];
    CHECK_EQ_INT(stp_tls_engine_write(l.c, (const uint8_t *)"x", 1), STP_TLS_ERROR);
    CHECK(stp_tls_engine_error(l.c)[0] != '\0');
    CHECK_EQ_INT(stp_tls_engine_read(l.s, buf, sizeof(buf)), STP_TLS_AGAIN); /* no input yet */
    CHECK_EQ_INT(stp_tls_engine_read(l.s, buf, 0), STP_TLS_ERROR);
    CHECK_EQ_INT(stp_tls_engine_feed(l.s, buf, 0), STP_TLS_OK);
    CHECK_EQ_INT(stp_tls_engine_take(l.s, buf, 0), 0);
    /* reading drives an unfinished handshake */
    CHECK_EQ_INT(stp_tls_engine_handshake(l.c), STP_TLS_AGAIN);
    shuttle(l.c, l.s, 0);
    CHECK_EQ_INT(stp_tls_engine_read(l.s, buf, sizeof(buf)), STP_TLS_AGAIN);
    CHECK(stp_tls_engine_pending(l.s) > 0); /* the server's flight */
    CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
    stp_tls_engine_free(NULL);
    link_close(&l);
}

static void test_ctx_errors(void)
{
    static const struct {
        const char *label;
        int cert, key; /* fixture files; -1: the nonexistent one; -2: NULL key */
        const char *want1, *want2;
    } cases[] = {
        {"missing certificate", -1, F_EC_KEY, "cert /nonexistent/stp.pem",
         "No such file or directory"},
        {"certificate file without a certificate", F_EC_KEY, F_EC_KEY, "cert ",
         "no certificate found"},
        {"text as a certificate", F_NOT_PEM, F_EC_KEY, "not-pem.txt", "no certificate found"},
        {"missing key", F_EC_CERT, -1, "key /nonexistent/stp.pem", "No such file or directory"},
        {"key file without a key", F_EC_CERT, F_EC_CERT, "key ", "no private key found"},
        {"key in the certificate file, but none there", F_EC_CERT, -2, "ec.pem",
         "no private key found"},
        {"RSA key for an ECDSA certificate", F_EC_CERT, F_RSA_KEY, "rsa.key",
         "does not match certificate"},
        {"another ECDSA key", F_EC_CERT, F_OTHER_EC_KEY, "other-ec.key",
         "does not match certificate"},
    };
    char err[300];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stp_tls_keypair_t pair = {cases[i].cert < 0 ? "/nonexistent/stp.pem" : path[cases[i].cert],
                                  cases[i].key == -2 ? NULL
                                  : cases[i].key < 0 ? "/nonexistent/stp.pem"
                                                     : path[cases[i].key]};
        err[0] = '\0';
        SSL_CTX *ctx = stp_tls_ctx_server_new(&pair, 1, TLS1_2_VERSION, err, sizeof(err), NULL);
        CHECK(ctx == NULL);
        if (!strstr(err, cases[i].want1) || !strstr(err, cases[i].want2)) {
            fprintf(stderr, "case '%s': got '%s'\n", cases[i].label, err);
        }
        CHECK(strstr(err, cases[i].want1) != NULL);
        CHECK(strstr(err, cases[i].want2) != NULL);
        SSL_CTX_free(ctx);
    }

    /* key and certificate in one file, key_file NULL */
    stp_tls_keypair_t combined = {path[F_COMBINED], NULL};
    SSL_CTX *ctx = stp_tls_ctx_server_new(&combined, 1, TLS1_2_VERSION, err, sizeof(err), NULL);
    CHECK(ctx != NULL);
    SSL_CTX_free(ctx);

    /* pair combinations and versions */
    stp_tls_keypair_t two_ec[2] = {{path[F_EC_CERT], path[F_EC_KEY]},
                                   {path[F_P384_CERT], path[F_P384_KEY]}};
    size_t bad = 99;
    CHECK(stp_tls_ctx_server_new(two_ec, 2, TLS1_2_VERSION, err, sizeof(err), &bad) == NULL);
    CHECK(strstr(err, "one RSA and one ECDSA") != NULL);
    CHECK_EQ_INT((int)bad, 1); /* the second of the two: the config error's line */
    CHECK(stp_tls_ctx_server_new(two_ec, 0, TLS1_2_VERSION, err, sizeof(err), NULL) == NULL);
    stp_tls_keypair_t nine[9];
    for (int i = 0; i < 9; i++) {
        nine[i] = two_ec[0];
    }
    CHECK(stp_tls_ctx_server_new(nine, 9, TLS1_2_VERSION, err, sizeof(err), NULL) == NULL);
    CHECK(strstr(err, "at most 8") != NULL);
    CHECK(stp_tls_ctx_server_new(two_ec, 1, TLS1_1_VERSION, err, sizeof(err), NULL) == NULL);
    CHECK(strstr(err, "1.2 or 1.3") != NULL);
    stp_tls_keypair_t bad_second[2] = {{path[F_EC_CERT], path[F_EC_KEY]},
                                       {path[F_RSA_CERT], path[F_OTHER_EC_KEY]}};
    CHECK(stp_tls_ctx_server_new(bad_second, 2, TLS1_2_VERSION, err, sizeof(err), &bad) == NULL);
    CHECK(strstr(err, "other-ec.key does not match certificate") != NULL);
    CHECK_EQ_INT((int)bad, 1);
    CHECK(stp_tls_ctx_server_new(two_ec, 1, TLS1_1_VERSION, err, sizeof(err), &bad) == NULL);
    CHECK_EQ_INT((int)bad, 1); /* about no pair: n */

    /* client contexts */
    CHECK(stp_tls_ctx_client_new("/nonexistent/ca.pem", TLS1_2_VERSION, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "ca_file /nonexistent/ca.pem") != NULL);
    CHECK(stp_tls_ctx_client_new(path[F_NOT_PEM], TLS1_2_VERSION, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "ca_file") && strstr(err, "not-pem.txt: no certificate found"));
    ctx = stp_tls_ctx_client_new(NULL, TLS1_3_VERSION, err, sizeof(err)); /* system store */
    CHECK(ctx != NULL);
    CHECK_EQ_INT(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
    SSL_CTX_free(ctx);
    CHECK(stp_tls_ctx_client_new(NULL, TLS1_VERSION, err, sizeof(err)) == NULL);
}

static void test_cert_expiry(void)
{
    /* EC: 30 days; RSA: 10 days; with both, the sooner one counts */
    static const struct {
        int certs;
        long days;
    } cases[] = {{CERTS_EC, 30}, {CERTS_RSA, 10}, {CERTS_BOTH, 10}};
    for (size_t i = 0; i < 3; i++) {
        SSL_CTX *ctx = server_ctx(cases[i].certs, TLS1_2_VERSION);
        long left = stp_tls_ctx_cert_expiry(ctx);
        CHECK(left > cases[i].days * DAY - 600 && left <= cases[i].days * DAY);
        SSL_CTX_free(ctx);
    }
}

static SSL_SESSION *saved_session;

static int keep_session(SSL *ssl, SSL_SESSION *session)
{
    SSL_SESSION_free(saved_session);
    saved_session = session; /* we take the reference */
    return 1;
}

/* Session tickets: a second connection resumes, with either certificate
 * set, in both versions, and without a server-side cache. */
static void test_ticket_resumption(void)
{
    static const uint16_t versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    static const int certs[] = {CERTS_EC, CERTS_BOTH};
    for (size_t v = 0; v < 2; v++) {
        for (size_t k = 0; k < 2; k++) {
            SSL_CTX *sctx = server_ctx(certs[k], TLS1_2_VERSION);
            SSL_CTX *cctx = client_ctx(versions[v]);
            SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT);
            SSL_CTX_sess_set_new_cb(cctx, keep_session);
            for (int round = 0; round < 2; round++) {
                link_t l;
                SSL_CTX_up_ref(sctx);
                SSL_CTX_up_ref(cctx);
                link_open(&l, sctx, cctx, HOST);
                if (round == 1) {
                    CHECK(saved_session != NULL);
                    SSL_set_session(stp_tls_engine_ssl(l.c), saved_session);
                }
                CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
                /* A TLS 1.3 server sends its tickets with its first write. */
                transfer(l.c, l.s, (const uint8_t *)"EHLO c\r\n", 8, 4096, 64);
                transfer(l.s, l.c, (const uint8_t *)"250 ok\r\n", 8, 4096, 64);
                CHECK_EQ_INT(SSL_session_reused(stp_tls_engine_ssl(l.s)), round);
                CHECK_EQ_INT(SSL_session_reused(stp_tls_engine_ssl(l.c)), round);
                link_close(&l);
            }
            CHECK_EQ_INT(SSL_CTX_sess_number(sctx), 0);
            SSL_SESSION_free(saved_session);
            saved_session = NULL;
            SSL_CTX_free(sctx);
            SSL_CTX_free(cctx);
        }
    }
}

/* The client session cache (session_cache.h) on stp_tls_ctx_client_new's
 * context: a ticket is kept under the key its SSL was tagged with and
 * offered again only under the same key; the peer's chain comes back with
 * a resumed session, so it is verified as after a full handshake. */
static void test_session_cache(void)
{
    static const uint16_t versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
    static const struct {
        const char *key;
        int reused;
    } rounds[] = {
        {"127.0.0.1:25|mx.example.test|verify", 0},
        {"127.0.0.1:25|mx.example.test|verify", 1},
        {"127.0.0.1:25|mx.example.test|encrypt", 0}, /* another policy: full */
        {"127.0.0.1:26|mx.example.test|verify", 0},  /* another next hop: full */
        {"127.0.0.1:25|mx.example.test|verify", 1},
    };
    for (size_t v = 0; v < 2; v++) {
        char err[256];
        SSL_CTX *sctx = server_ctx(CERTS_EC, TLS1_2_VERSION);
        SSL_CTX *cctx = stp_tls_ctx_client_new(path[F_EC_CERT], versions[v], err, sizeof(err));
        CHECK(cctx != NULL);
        SSL_CTX_set_max_proto_version(cctx, versions[v]);
        CHECK_EQ_INT(stp_tls_session_cache_count(cctx), 0);
        for (size_t i = 0; i < sizeof(rounds) / sizeof(rounds[0]); i++) {
            link_t l;
            SSL_CTX_up_ref(sctx);
            SSL_CTX_up_ref(cctx);
            link_open(&l, sctx, cctx, HOST);
            stp_tls_verify_prepare(stp_tls_engine_ssl(l.c));
            CHECK_EQ_INT(stp_tls_session_cache_prepare(stp_tls_engine_ssl(l.c), rounds[i].key), 0);
            CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
            transfer(l.c, l.s, (const uint8_t *)"EHLO c\r\n", 8, 4096, 64);
            transfer(l.s, l.c, (const uint8_t *)"250 ok\r\n", 8, 4096, 64);
            CHECK_EQ_INT(SSL_session_reused(stp_tls_engine_ssl(l.c)), rounds[i].reused);
            const char *name = HOST;
            char why[300];
            CHECK_EQ_INT(stp_tls_verify_peer(stp_tls_engine_ssl(l.c), &name, 1, why, sizeof(why)),
                         STP_VERIFY_OK);
            link_close(&l);
        }
        CHECK_EQ_INT(stp_tls_session_cache_count(cctx), 3);
        SSL_CTX_free(sctx);
        SSL_CTX_free(cctx);
    }
}

/* A ticket outlives the certificate it was made under: resumed after the
 * certificate expired, the session is not verified (SSL_get_verify_result
 * still says what the first handshake found: it said verify=ok). */
static void test_resumed_after_expiry(void)
{
    char file[2][300], err[300], why[300];
    snprintf(file[0], sizeof(file[0]), "%s/short.pem", dir);
    snprintf(file[1], sizeof(file[1]), "%s/short.key", dir);
    EVP_PKEY *key = ec_key_new(NID_X9_62_prime256v1);
    X509 *x = make_cert(key, HOST, NULL, NULL, 0, 1);
    X509_gmtime_adj(X509_getm_notAfter(x), 2); /* two seconds from now */
    CHECK(X509_sign(x, key, EVP_sha256()) > 0);
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(file[i], "w");
        CHECK(f != NULL);
        CHECK(i == 0 ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL,
                                                                      NULL));
        fclose(f);
    }
    stp_tls_keypair_t pair = {file[0], file[1]};
    SSL_CTX *sctx = stp_tls_ctx_server_new(&pair, 1, TLS1_2_VERSION, err, sizeof(err), NULL);
    SSL_CTX *cctx = stp_tls_ctx_client_new(file[0], TLS1_3_VERSION, err, sizeof(err));
    CHECK(sctx != NULL && cctx != NULL);
    const char *name = HOST;
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            sleep(3);
        }
        link_t l;
        SSL_CTX_up_ref(sctx);
        SSL_CTX_up_ref(cctx);
        link_open(&l, sctx, cctx, HOST);
        stp_tls_verify_prepare(stp_tls_engine_ssl(l.c));
        CHECK_EQ_INT(stp_tls_session_cache_prepare(stp_tls_engine_ssl(l.c), "k"), 0);
        CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
        transfer(l.c, l.s, (const uint8_t *)"EHLO c\r\n", 8, 4096, 64);
        transfer(l.s, l.c, (const uint8_t *)"250 ok\r\n", 8, 4096, 64);
        CHECK_EQ_INT(SSL_session_reused(stp_tls_engine_ssl(l.c)), round);
        stp_verify_result_t got =
            stp_tls_verify_peer(stp_tls_engine_ssl(l.c), &name, 1, why, sizeof(why));
        CHECK_EQ_INT(got, (round == 0 ? STP_VERIFY_OK : STP_VERIFY_CHAIN));
        CHECK(round == 0 || strstr(why, "expired") != NULL);
        link_close(&l);
    }
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* A client engine on stp_tls_ctx_client_new: the handshake never aborts on
 * the certificate; the chain and name results are read afterwards. */
static void test_verify_reports(void)
{
    static const struct {
        const char *label;
        int trust; /* ca_file */
        int certs;
        const char *name;
        stp_verify_result_t want;
    } cases[] = {
        {"self-signed, trusted itself", F_EC_CERT, CERTS_EC, HOST, STP_VERIFY_OK},
        {"self-signed, other name", F_EC_CERT, CERTS_EC, "other.example.test", STP_VERIFY_NAME},
        {"chain to the CA", F_CA_CERT, CERTS_RSA, HOST, STP_VERIFY_OK},
        {"untrusted chain", F_EC_CERT, CERTS_RSA, HOST, STP_VERIFY_CHAIN},
        {"untrusted self-signed", F_CA_CERT, CERTS_EC, HOST, STP_VERIFY_CHAIN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[300], why[300];
        SSL_CTX *cctx =
            stp_tls_ctx_client_new(path[cases[i].trust], TLS1_2_VERSION, err, sizeof(err));
        CHECK(cctx != NULL);
        link_t l;
        link_open(&l, server_ctx(cases[i].certs, TLS1_2_VERSION), cctx, cases[i].name);
        stp_tls_verify_prepare(stp_tls_engine_ssl(l.c));
        CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
        const char *names[] = {cases[i].name};
        stp_verify_result_t got =
            stp_tls_verify_peer(stp_tls_engine_ssl(l.c), names, 1, why, sizeof(why));
        if (got != cases[i].want) {
            fprintf(stderr, "case '%s': %d (%s)\n", cases[i].label, (int)got, why);
        }
        CHECK_EQ_INT(got, cases[i].want);
        CHECK(cases[i].want == STP_VERIFY_OK ? why[0] == '\0' : why[0] != '\0');
        link_close(&l);
    }
}

/* peek/drop hand out the pending ciphertext in place (what proxy/conn.c
 * writes to the socket without a copy): the same bytes take() would give,
 * all of it; after drop nothing is pending and a grown buffer is gone. */
static void test_peek_and_drop(void)
{
    link_t l;
    link_open(&l, server_ctx(CERTS_EC, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION), HOST);
    CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
    const uint8_t *p = NULL;
    CHECK_EQ_INT(stp_tls_engine_peek(l.s, &p), 0);

    static const size_t sizes[] = {8, 100000, 8};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *data = malloc(sizes[i]), *got = malloc(sizes[i]);
        memset(data, 'a' + (int)i, sizes[i]);
        CHECK_EQ_INT(stp_tls_engine_write(l.s, data, sizes[i]), STP_TLS_OK);
        size_t n = stp_tls_engine_peek(l.s, &p);
        CHECK(n > sizes[i] && p != NULL);
        CHECK_EQ_INT(n, stp_tls_engine_pending(l.s));
        CHECK_EQ_INT(stp_tls_engine_feed(l.c, p, n), STP_TLS_OK);
        stp_tls_engine_drop(l.s);
        CHECK_EQ_INT(stp_tls_engine_pending(l.s), 0);
        CHECK_EQ_INT(stp_tls_engine_peek(l.s, &p), 0);
        CHECK(stp_tls_engine_buffer_size(l.s) <= 2 * 512);
        size_t have = 0;
        ssize_t r;
        while (have < sizes[i] && (r = stp_tls_engine_read(l.c, got + have, sizes[i] - have)) > 0) {
            have += (size_t)r;
        }
        CHECK(have == sizes[i] && memcmp(got, data, have) == 0);
        free(data);
        free(got);
    }
    link_close(&l);
}

/* The engine's queues keep bytes in order however writes and takes
 * interleave: a take that leaves bytes behind, then a write that must move
 * them to the front or grow the buffer around them. Random sizes, fixed
 * seed; the ciphertext then reaches the client in random pieces, read
 * through random windows. */
static void test_queues_interleaved(void)
{
    link_t l;
    link_open(&l, server_ctx(CERTS_EC, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION), HOST);
    CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
    enum { ROUNDS = 400, MAXW = 40000 };
    uint8_t *plain = malloc((size_t)ROUNDS * MAXW), *cipher = malloc((size_t)ROUNDS * MAXW * 2);
    size_t plen = 0, clen = 0;
    uint32_t x = 12345;
#define RND(n) ((x = x * 1103515245u + 12345u), (size_t)((x >> 8) % (n)))
    for (int r = 0; r < ROUNDS; r++) {
        size_t w = RND(4) == 0 ? RND(MAXW) + 1 : RND(300) + 1;
        for (size_t i = 0; i < w; i++) {
            plain[plen + i] = (uint8_t)RND(256);
        }
        CHECK_EQ_INT(stp_tls_engine_write(l.s, plain + plen, w), STP_TLS_OK);
        plen += w;
        size_t pending = stp_tls_engine_pending(l.s);
        size_t t = RND(pending + 1); /* often leaves some behind */
        CHECK_EQ_INT(stp_tls_engine_take(l.s, cipher + clen, t), t);
        clen += t;
        CHECK_EQ_INT(stp_tls_engine_pending(l.s), pending - t);
    }
    clen += stp_tls_engine_take(l.s, cipher + clen, (size_t)ROUNDS * MAXW * 2 - clen);
    CHECK_EQ_INT(stp_tls_engine_pending(l.s), 0);
    CHECK(stp_tls_engine_buffer_size(l.s) <= 2 * 512);

    uint8_t *got = malloc(plen);
    size_t have = 0, fed = 0;
    while (fed < clen) {
        size_t piece = RND(5000) + 1;
        if (piece > clen - fed) {
            piece = clen - fed;
        }
        CHECK_EQ_INT(stp_tls_engine_feed(l.c, cipher + fed, piece), STP_TLS_OK);
        fed += piece;
        ssize_t n;
        while (have < plen &&
               (n = stp_tls_engine_read(l.c, got + have,
                                        RND(3) == 0 ? 1 + RND(plen - have) : plen - have)) > 0) {
            have += (size_t)n;
        }
    }
#undef RND
    CHECK_EQ_INT(have, plen);
    CHECK(have == plen && memcmp(got, plain, plen) == 0);
    CHECK(stp_tls_engine_buffer_size(l.c) <= 2 * 512);
    free(plain);
    free(cipher);
    free(got);
    link_close(&l);
}

/*
 * Lent ciphertext (what conn.c does with every read) gives the same bytes
 * as fed ciphertext: handshakes lent a byte at a time and in pieces, then
 * data in random pieces, each lent, read in part or in full through random
 * windows, kept, and overwritten at once; now and then a piece is fed
 * instead, and must queue behind what was kept.
 */
static void test_lend_and_keep(void)
{
    static const size_t pieces[] = {1, 7, 0};
    for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
        link_t l;
        link_open(&l, server_ctx(CERTS_EC, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION), HOST);
        shuttle_lends = 1;
        CHECK_EQ_INT(handshake(l.c, l.s, pieces[k]), 0);
        shuttle_lends = 0;
        transfer(l.c, l.s, (const uint8_t *)"EHLO x\r\n", 8, 4096, 64);
        link_close(&l);
    }

    link_t l;
    link_open(&l, server_ctx(CERTS_EC, TLS1_2_VERSION), client_ctx(TLS1_3_VERSION), HOST);
    CHECK_EQ_INT(handshake(l.c, l.s, 0), 0);
    enum { PLEN = 300000 };
    uint8_t *plain = malloc(PLEN), *got = malloc(PLEN), *cipher = malloc(2 * PLEN);
    uint32_t x = 4242;
#define RND(n) ((x = x * 1103515245u + 12345u), (size_t)((x >> 8) % (n)))
    for (size_t i = 0; i < PLEN; i++) {
        plain[i] = (uint8_t)RND(256);
    }
    for (size_t off = 0; off < PLEN;) {
        size_t w = RND(20000) + 1;
        w = w > PLEN - off ? PLEN - off : w;
        CHECK_EQ_INT(stp_tls_engine_write(l.s, plain + off, w), STP_TLS_OK);
        off += w;
    }
    size_t clen = stp_tls_engine_take(l.s, cipher, 2 * PLEN);
    CHECK_EQ_INT(stp_tls_engine_pending(l.s), 0);

    uint8_t *scratch = malloc(70000);
    size_t have = 0, fed = 0;
    while (fed < clen) {
        size_t piece = RND(4) == 0 ? RND(40) + 1 : RND(70000) + 1;
        piece = piece > clen - fed ? clen - fed : piece;
        if (RND(5) == 0) {
            CHECK_EQ_INT(stp_tls_engine_feed(l.c, cipher + fed, piece), STP_TLS_OK);
        } else {
            memcpy(scratch, cipher + fed, piece);
            stp_tls_engine_lend(l.c, scratch, piece);
        }
        fed += piece;
        ssize_t n;
        int reads = (int)RND(3); /* 0: leave every record for later */
        while (reads-- > 0 && have < PLEN &&
               (n = stp_tls_engine_read(l.c, got + have, 1 + RND(PLEN - have))) > 0) {
            have += (size_t)n;
        }
        CHECK_EQ_INT(stp_tls_engine_keep(l.c), STP_TLS_OK);
        memset(scratch, 0xAA, piece);
    }
    ssize_t n;
    while (have < PLEN && (n = stp_tls_engine_read(l.c, got + have, PLEN - have)) > 0) {
        have += (size_t)n;
    }
#undef RND
    CHECK_EQ_INT(have, PLEN);
    CHECK(have == PLEN && memcmp(got, plain, PLEN) == 0);
    CHECK_EQ_INT(stp_tls_engine_read(l.c, got, 1), STP_TLS_AGAIN);
    CHECK(stp_tls_engine_buffer_size(l.c) <= 2 * 512);
    free(scratch);
    free(plain);
    free(cipher);
    free(got);
    link_close(&l);
}

int main(void)
{
    make_fixture();
    STP_RUN(test_handshakes_and_certificate_choice);
    STP_RUN(test_sni);
    STP_RUN(test_data_both_ways);
    STP_RUN(test_peek_and_drop);
    STP_RUN(test_queues_interleaved);
    STP_RUN(test_lend_and_keep);
    STP_RUN(test_byte_at_a_time);
    STP_RUN(test_close_notify);
    STP_RUN(test_refusals);
    STP_RUN(test_misuse);
    STP_RUN(test_ctx_errors);
    STP_RUN(test_cert_expiry);
    STP_RUN(test_ticket_resumption);
    STP_RUN(test_resumed_after_expiry);
    STP_RUN(test_session_cache);
    STP_RUN(test_verify_reports);
    remove_fixture();
    return STP_CHECK_DONE();
}
