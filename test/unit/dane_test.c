/*
 * dane_test: TLSA matching on certificate chains made by test/certs/gen.sh:
 * the usage x selector x matching-type matrix with right and wrong data,
 * DANE-TA anchored at an intermediate, at a root the peer did not send (full
 * certificate in DNS) or did send, the name check of DANE-TA, no expiry
 * check for DANE-EE but one for DANE-TA, PKIX usages and malformed records
 * unusable, no records, no certificate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "test/unit/check.h"
#include "tls/dane.h"

static char dir[512];

static STACK_OF(X509) * load_chain(const char *file)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        sk_X509_push(sk, x);
    }
    fclose(f);
    return sk;
}

static X509 *load_cert(const char *file)
{
    STACK_OF(X509) *sk = load_chain(file);
    X509 *x = sk_X509_shift(sk);
    sk_X509_pop_free(sk, X509_free);
    return x;
}

typedef struct {
    uint8_t buf[8192];
    stp_dane_tlsa_t rec;
} rec_t;

/* A TLSA record for `cert`, with one bit of its data flipped when `wrong`:
 * in the middle (1), in the last byte (2) or in the first (3). */
static void make(rec_t *r, X509 *cert, uint8_t usage, uint8_t sel, uint8_t mt, int wrong)
{
    size_t n = stp_dane_cert_data(cert, sel, mt, r->buf, sizeof(r->buf));
    CHECK(n > 0);
    if (wrong) {
        r->buf[wrong == 1 ? n / 2 : wrong == 2 ? n - 1 : 0] ^= 0x01;
    }
    r->rec = (stp_dane_tlsa_t){usage, sel, mt, r->buf, n};
}

static const char *const MX[] = {"mx.example.test"};

static stp_dane_result_t run(STACK_OF(X509) * chain, const stp_dane_tlsa_t *recs, size_t n,
                             const char *const *names, size_t *matched, const char *label)
{
    char why[512];
    stp_dane_result_t r =
        stp_dane_verify_chain(chain, recs, n, names, names ? 1 : 0, matched, why, sizeof(why));
    CHECK(why[0] != '\0');
    printf("  %-44s -> %d: %s\n", label, (int)r, why);
    return r;
}

static void test_matrix(void)
{
    STACK_OF(X509) *ee_chain = load_chain("ecdsa.pem");      /* leaf + root */
    STACK_OF(X509) *ta_chain = load_chain("dane-chain.pem"); /* leaf + intermediate */
    X509 *ee_leaf = sk_X509_value(ee_chain, 0), *inter = sk_X509_value(ta_chain, 1);
    static rec_t r;

    for (uint8_t usage = 2; usage <= 3; usage++) {
        for (uint8_t sel = 0; sel <= 1; sel++) {
            for (uint8_t mt = 0; mt <= 2; mt++) {
                for (int wrong = 0; wrong <= 3; wrong++) {
                    static const char *const how[] = {"right data", "wrong data", "wrong last byte",
                                                      "wrong first byte"};
                    char label[80];
                    snprintf(label, sizeof(label), "%s %u %u %u %s", usage == 3 ? "EE" : "TA",
                             usage, sel, mt, how[wrong]);
                    if (usage == 2 && sel == 0 && mt == 0 && wrong == 2) {
                        /* the last byte of a full certificate is in its
                         * signature, which is never checked for a trust
                         * anchor: the record still names the same key */
                        continue;
                    }
                    STACK_OF(X509) *chain = usage == 3 ? ee_chain : ta_chain;
                    make(&r, usage == 3 ? ee_leaf : inter, usage, sel, mt, wrong);
                    size_t matched = 99;
                    stp_dane_result_t res = run(chain, &r.rec, 1, MX, &matched, label);
                    CHECK_EQ_INT(res, wrong ? STP_DANE_FAIL : STP_DANE_OK);
                    if (!wrong) {
                        CHECK_EQ_INT(matched, 0);
                    }
                }
            }
        }
    }
    sk_X509_pop_free(ee_chain, X509_free);
    sk_X509_pop_free(ta_chain, X509_free);
}

static void test_ta_anchors_and_names(void)
{
    STACK_OF(X509) *chain = load_chain("dane-chain.pem");
    STACK_OF(X509) *full = load_chain("dane-full.pem");
    X509 *root = load_cert("ca.pem");
    X509 *other = load_cert("otherca.pem");
    static rec_t r, r2;
    static const char *const WRONG[] = {"other.example.test"};
    static const char *const BASE[] = {"example.test"};

    /* the root in DNS as a full certificate, not sent by the peer */
    make(&r, root, 2, 0, 0, 0);
    CHECK_EQ_INT(run(chain, &r.rec, 1, MX, NULL, "TA root from DNS, Cert Full"), STP_DANE_OK);
    /* the root's key hashed, the root sent by the peer */
    make(&r, root, 2, 1, 1, 0);
    CHECK_EQ_INT(run(full, &r.rec, 1, MX, NULL, "TA root sent, SPKI SHA2-256"), STP_DANE_OK);
    /* ... and not sent: a hash alone cannot anchor anything */
    CHECK_EQ_INT(run(chain, &r.rec, 1, MX, NULL, "TA root hash, root not sent"), STP_DANE_FAIL);
    /* an unrelated CA given in full does not anchor the chain */
    make(&r, other, 2, 0, 0, 0);
    CHECK_EQ_INT(run(chain, &r.rec, 1, MX, NULL, "TA unrelated CA from DNS"), STP_DANE_FAIL);
    /* DANE-TA checks names: the MX host, or the TLSA base domain */
    make(&r, sk_X509_value(chain, 1), 2, 1, 1, 0);
    CHECK_EQ_INT(run(chain, &r.rec, 1, WRONG, NULL, "TA, name mismatch"), STP_DANE_FAIL);
    CHECK_EQ_INT(run(chain, &r.rec, 1, BASE, NULL, "TA, base domain not in cert"), STP_DANE_FAIL);
    const char *const both[] = {"example.test", "mx.example.test"};
    char why[256];
    CHECK_EQ_INT(stp_dane_verify_chain(chain, &r.rec, 1, both, 2, NULL, why, sizeof(why)),
                 STP_DANE_OK);
    /* a TA record matching only the leaf is not an anchor */
    make(&r, sk_X509_value(chain, 0), 2, 1, 1, 0);
    CHECK_EQ_INT(run(chain, &r.rec, 1, MX, NULL, "TA matching the leaf only"), STP_DANE_FAIL);
    /* DANE-EE ignores names: any name list, even none */
    make(&r, sk_X509_value(chain, 0), 3, 1, 1, 0);
    CHECK_EQ_INT(run(chain, &r.rec, 1, WRONG, NULL, "EE, other name"), STP_DANE_OK);
    CHECK_EQ_INT(run(chain, &r.rec, 1, NULL, NULL, "EE, no names"), STP_DANE_OK);
    /* the second record matches: its index is reported */
    make(&r2, sk_X509_value(chain, 0), 3, 0, 2, 1);
    stp_dane_tlsa_t two[2] = {r2.rec, r.rec};
    size_t matched = 9;
    CHECK_EQ_INT(run(chain, two, 2, MX, &matched, "wrong EE then right EE"), STP_DANE_OK);
    CHECK_EQ_INT(matched, 1);

    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(full, X509_free);
    X509_free(root);
    X509_free(other);
}

static void test_expiry_and_self_signed(void)
{
    STACK_OF(X509) *expired = load_chain("expired.pem");
    X509 *root = load_cert("ca.pem");
    sk_X509_push(expired, root); /* the chain owns root now */
    STACK_OF(X509) *self = load_chain("selfsigned.pem");
    static rec_t r;

    make(&r, sk_X509_value(expired, 0), 3, 1, 1, 0);
    CHECK_EQ_INT(run(expired, &r.rec, 1, MX, NULL, "EE, expired leaf"), STP_DANE_OK);
    make(&r, root, 2, 1, 1, 0);
    CHECK_EQ_INT(run(expired, &r.rec, 1, MX, NULL, "TA, expired leaf"), STP_DANE_FAIL);
    make(&r, sk_X509_value(self, 0), 3, 0, 0, 0);
    CHECK_EQ_INT(run(self, &r.rec, 1, MX, NULL, "EE, self-signed, Cert Full"), STP_DANE_OK);
    sk_X509_pop_free(expired, X509_free);
    sk_X509_pop_free(self, X509_free);
}

static void test_unusable(void)
{
    STACK_OF(X509) *chain = load_chain("ecdsa.pem");
    X509 *leaf = sk_X509_value(chain, 0);
    static rec_t pkix_ee, pkix_ta, bad_len, bad_sel, bad_mt, wrong;
    char why[256];

    make(&pkix_ee, leaf, 1, 1, 1, 0);
    make(&pkix_ta, sk_X509_value(chain, 1), 0, 1, 1, 0);
    make(&bad_len, leaf, 3, 1, 1, 0);
    bad_len.rec.len = 31;
    make(&bad_sel, leaf, 3, 1, 1, 0);
    bad_sel.rec.selector = 2;
    make(&bad_mt, leaf, 3, 1, 1, 0);
    bad_mt.rec.mtype = 3;
    stp_dane_tlsa_t recs[] = {pkix_ee.rec, pkix_ta.rec, bad_len.rec, bad_sel.rec, bad_mt.rec};
    for (size_t i = 0; i < 5; i++) {
        CHECK(!stp_dane_usable(&recs[i]));
    }
    CHECK_EQ_INT(run(chain, recs, 5, MX, NULL, "only unusable (matching) records"),
                 STP_DANE_NO_USABLE);
    CHECK_EQ_INT(run(chain, recs, 0, MX, NULL, "no records"), STP_DANE_NO_USABLE);
    /* unusable records next to a usable wrong one: a failure, not "no usable" */
    make(&wrong, leaf, 3, 1, 2, 1);
    stp_dane_tlsa_t mixed[] = {pkix_ee.rec, wrong.rec};
    CHECK_EQ_INT(run(chain, mixed, 2, MX, NULL, "PKIX-EE match + wrong DANE-EE"), STP_DANE_FAIL);
    CHECK(!stp_dane_any_usable(recs, 5));
    CHECK(!stp_dane_any_usable(recs, 0));
    CHECK(stp_dane_any_usable(mixed, 2));
    /* no certificate */
    STACK_OF(X509) *empty = sk_X509_new_null();
    CHECK_EQ_INT(stp_dane_verify_chain(empty, &wrong.rec, 1, MX, 1, NULL, why, sizeof(why)),
                 STP_DANE_NO_CERT);
    CHECK_EQ_INT(stp_dane_verify_chain(NULL, &wrong.rec, 1, MX, 1, NULL, why, sizeof(why)),
                 STP_DANE_NO_CERT);
    sk_X509_free(empty);
    /* stp_dane_cert_data refuses unknown parameters and small buffers */
    uint8_t small[16];
    CHECK_EQ_INT(stp_dane_cert_data(leaf, 2, 1, small, sizeof(small)), 0);
    CHECK_EQ_INT(stp_dane_cert_data(leaf, 1, 3, small, sizeof(small)), 0);
    CHECK_EQ_INT(stp_dane_cert_data(leaf, 1, 1, small, sizeof(small)), 0);
    sk_X509_pop_free(chain, X509_free);
}

/* A server and a client SSL over a BIO pair, handshaken; the client checks
 * DANE on what SSL_get_peer_cert_chain gives (leaf first on a client). */
static void test_on_a_handshake(void)
{
    char chain[700], key[700];
    snprintf(chain, sizeof(chain), "%s/dane-chain.pem", dir);
    snprintf(key, sizeof(key), "%s/dane-leaf.key", dir);
    SSL_CTX *sctx = SSL_CTX_new(TLS_method()), *cctx = SSL_CTX_new(TLS_method());
    CHECK(SSL_CTX_use_certificate_chain_file(sctx, chain) == 1);
    CHECK(SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM) == 1);
    SSL *srv = SSL_new(sctx), *cli = SSL_new(cctx);
    BIO *b1, *b2;
    CHECK(BIO_new_bio_pair(&b1, 0, &b2, 0) == 1);
    SSL_set_bio(srv, b1, b1);
    SSL_set_bio(cli, b2, b2);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    SSL_set_tlsext_host_name(cli, "mx.example.test");
    int sdone = 0, cdone = 0;
    for (int i = 0; i < 50 && !(sdone && cdone); i++) {
        if (!cdone) {
            cdone = SSL_do_handshake(cli) == 1;
        }
        if (!sdone) {
            sdone = SSL_do_handshake(srv) == 1;
        }
    }
    CHECK(sdone && cdone);

    STACK_OF(X509) *sent = load_chain("dane-chain.pem");
    static rec_t ta, ee, wrong;
    make(&ta, sk_X509_value(sent, 1), 2, 1, 1, 0);
    make(&ee, sk_X509_value(sent, 0), 3, 1, 2, 0);
    make(&wrong, sk_X509_value(sent, 0), 3, 1, 1, 1);
    char why[256];
    size_t matched = 9;
    CHECK_EQ_INT(stp_dane_verify(cli, &ta.rec, 1, MX, 1, &matched, why, sizeof(why)), STP_DANE_OK);
    printf("  handshake, TA on the intermediate -> %s\n", why);
    CHECK_EQ_INT(stp_dane_verify(cli, &ee.rec, 1, MX, 1, &matched, why, sizeof(why)), STP_DANE_OK);
    CHECK(strstr(why, "matched the leaf") != NULL);
    CHECK_EQ_INT(stp_dane_verify(cli, &wrong.rec, 1, MX, 1, NULL, why, sizeof(why)), STP_DANE_FAIL);
    sk_X509_pop_free(sent, X509_free);
    SSL_free(srv);
    SSL_free(cli);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

int main(void)
{
    const char *tmp = getenv("TEST_TMPDIR");
    char cmd[1200];
    snprintf(dir, sizeof(dir), "%s/certs", tmp ? tmp : "/tmp/stp-dane-test");
    snprintf(cmd, sizeof(cmd), "bash test/certs/gen.sh '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test/certs/gen.sh failed\n");
        return 2;
    }
    STP_RUN(test_matrix);
    STP_RUN(test_ta_anchors_and_names);
    STP_RUN(test_expiry_and_self_signed);
    STP_RUN(test_unusable);
    STP_RUN(test_on_a_handshake);
    return STP_CHECK_DONE();
}
