/*
 * dane: TLSA matching on the peer's chain (see dane.h). EE records are tried
 * first (cheap and independent of the chain); TA records then look for an
 * anchor among the certificates above the leaf, or use a full certificate
 * from DNS, and run the ordinary X509 verifier with that one anchor
 * (partial chains allowed, so an intermediate can be the anchor).
 */
#include "tls/dane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bytestring.h>
#include <openssl/sha.h>

#include "tls/tls_verify.h"

int stp_dane_usable(const stp_dane_tlsa_t *r)
{
    if (r->usage != STP_DANE_USAGE_DANE_TA && r->usage != STP_DANE_USAGE_DANE_EE) {
        return 0;
    }
    if (r->selector != STP_DANE_SEL_CERT && r->selector != STP_DANE_SEL_SPKI) {
        return 0;
    }
    switch (r->mtype) {
    case STP_DANE_MT_FULL:
        return r->len > 0;
    case STP_DANE_MT_SHA256:
        return r->len == SHA256_DIGEST_LENGTH;
    case STP_DANE_MT_SHA512:
        return r->len == SHA512_DIGEST_LENGTH;
    default:
        return 0;
    }
}

int stp_dane_any_usable(const stp_dane_tlsa_t *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (stp_dane_usable(&recs[i])) {
            return 1;
        }
    }
    return 0;
}

/* DER of the whole certificate or of its SubjectPublicKeyInfo; free with OPENSSL_free. */
static int selected_der(X509 *cert, uint8_t selector, uint8_t **der)
{
    *der = NULL;
    if (selector == STP_DANE_SEL_CERT) {
        return i2d_X509(cert, der);
    }
    if (selector == STP_DANE_SEL_SPKI) {
        return i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), der);
    }
    return -1;
}

size_t stp_dane_cert_data(X509 *cert, uint8_t selector, uint8_t mtype, uint8_t *out, size_t cap)
{
    uint8_t *der;
    int dlen = selected_der(cert, selector, &der);
    size_t n = 0;
    if (dlen <= 0) {
        return 0;
    }
    if (mtype == STP_DANE_MT_FULL && (size_t)dlen <= cap) {
        memcpy(out, der, (size_t)dlen);
        n = (size_t)dlen;
    } else if (mtype == STP_DANE_MT_SHA256 && cap >= SHA256_DIGEST_LENGTH) {
        SHA256(der, (size_t)dlen, out);
        n = SHA256_DIGEST_LENGTH;
    } else if (mtype == STP_DANE_MT_SHA512 && cap >= SHA512_DIGEST_LENGTH) {
        SHA512(der, (size_t)dlen, out);
        n = SHA512_DIGEST_LENGTH;
    }
    OPENSSL_free(der);
    return n;
}

static int record_matches(const stp_dane_tlsa_t *r, X509 *cert)
{
    uint8_t buf[16384];
    size_t n = stp_dane_cert_data(cert, r->selector, r->mtype, buf, sizeof(buf));
    return n > 0 && n == r->len && CRYPTO_memcmp(buf, r->data, n) == 0;
}

static const char *usage_name(uint8_t u)
{
    return u == STP_DANE_USAGE_DANE_TA ? "DANE-TA(2)" : "DANE-EE(3)";
}

static const char *sel_name(uint8_t s)
{
    return s == STP_DANE_SEL_CERT ? "Cert" : "SPKI";
}

static const char *mt_name(uint8_t m)
{
    return m == STP_DANE_MT_FULL ? "Full" : m == STP_DANE_MT_SHA256 ? "SHA2-256" : "SHA2-512";
}

/*
 * Verifies that `leaf` chains to `anchor` through the peer's certificates.
 * Returns 1, or 0 with `err` set to the verifier's reason.
 */
static int chains_to(X509 *leaf, STACK_OF(X509) * chain, X509 *anchor, const char **err)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int ok = 0;
    *err = "out of memory";
    if (store != NULL && ctx != NULL && X509_STORE_add_cert(store, anchor) &&
        X509_STORE_CTX_init(ctx, store, leaf, chain)) {
        X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
        X509_STORE_CTX_set_default(ctx, "ssl_server");
        ok = X509_verify_cert(ctx) == 1;
        *err = ok ? NULL : X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return ok;
}

/* A full certificate given in a TA record (selector Cert, type Full), or NULL. */
static X509 *record_cert(const stp_dane_tlsa_t *r)
{
    const uint8_t *p = r->data;
    if (r->selector != STP_DANE_SEL_CERT || r->mtype != STP_DANE_MT_FULL) {
        return NULL;
    }
    X509 *x = d2i_X509(NULL, &p, (long)r->len);
    if (x != NULL && p != r->data + r->len) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

stp_dane_result_t stp_dane_verify_chain(STACK_OF(X509) * chain, const stp_dane_tlsa_t *recs,
                                        size_t n, const char *const *names, size_t nnames,
                                        size_t *matched, char *why, size_t whylen)
{
    size_t usable = 0, ee = 0, ta = 0;
    const char *ta_err = NULL;

    for (size_t i = 0; i < n; i++) {
        if (stp_dane_usable(&recs[i])) {
            usable++;
            ee += recs[i].usage == STP_DANE_USAGE_DANE_EE;
            ta += recs[i].usage == STP_DANE_USAGE_DANE_TA;
        }
    }
    if (usable == 0) {
        snprintf(why, whylen, "no usable TLSA record (%zu unusable)", n);
        return STP_DANE_NO_USABLE;
    }
    if (chain == NULL || sk_X509_num(chain) == 0) {
        snprintf(why, whylen, "no certificate presented");
        return STP_DANE_NO_CERT;
    }
    X509 *leaf = sk_X509_value(chain, 0);

    for (size_t i = 0; i < n; i++) {
        const stp_dane_tlsa_t *r = &recs[i];
        if (stp_dane_usable(r) && r->usage == STP_DANE_USAGE_DANE_EE && record_matches(r, leaf)) {
            snprintf(why, whylen, "DANE-EE(3) %s %s matched the leaf", sel_name(r->selector),
                     mt_name(r->mtype));
            if (matched != NULL) {
                *matched = i;
            }
            return STP_DANE_OK;
        }
    }

    for (size_t i = 0; i < n; i++) {
        const stp_dane_tlsa_t *r = &recs[i];
        if (!stp_dane_usable(r) || r->usage != STP_DANE_USAGE_DANE_TA) {
            continue;
        }
        X509 *anchor = NULL;
        int depth = -1;
        for (size_t d = 1; d < sk_X509_num(chain) && anchor == NULL; d++) {
            if (record_matches(r, sk_X509_value(chain, d))) {
                anchor = sk_X509_value(chain, d);
                X509_up_ref(anchor);
                depth = (int)d;
            }
        }
        if (anchor == NULL) {
            anchor = record_cert(r);
        }
        if (anchor == NULL) {
            continue;
        }
        const char *err;
        int ok = chains_to(leaf, chain, anchor, &err);
        X509_free(anchor);
        if (!ok) {
            ta_err = err;
            continue;
        }
        char seen[256];
        if (!stp_tls_leaf_name_match(leaf, names, nnames, seen, sizeof(seen))) {
            snprintf(why, whylen,
                     "DANE-TA(2) chain verified, but name mismatch: wanted %s, certificate has %s",
                     nnames ? names[0] : "?", seen[0] ? seen : "no names");
            return STP_DANE_FAIL;
        }
        if (depth > 0) {
            snprintf(why, whylen, "%s %s %s matched the chain at depth %d", usage_name(r->usage),
                     sel_name(r->selector), mt_name(r->mtype), depth);
        } else {
            snprintf(why, whylen, "DANE-TA(2) certificate from DNS anchored the chain");
        }
        if (matched != NULL) {
            *matched = i;
        }
        return STP_DANE_OK;
    }
    if (ta_err != NULL) {
        snprintf(why, whylen, "DANE-TA(2) anchor matched, chain does not verify: %s", ta_err);
    } else {
        snprintf(why, whylen, "no TLSA record matched: %zu usable (DANE-EE %zu, DANE-TA %zu)",
                 usable, ee, ta);
    }
    return STP_DANE_FAIL;
}

stp_dane_result_t stp_dane_verify(SSL *ssl, const stp_dane_tlsa_t *recs, size_t n,
                                  const char *const *names, size_t nnames, size_t *matched,
                                  char *why, size_t whylen)
{
    return stp_dane_verify_chain(SSL_get_peer_cert_chain(ssl), recs, n, names, nnames, matched, why,
                                 whylen);
}
