/*
 * dane: DANE TLSA matching for SMTP (RFC 7672, RFC 6698, RFC 7671).
 * BoringSSL has no DANE API, so the peer's chain is matched here after the
 * handshake (the handshake never aborts on a certificate problem, see
 * tls_verify.h), against TLSA records the caller obtained from a validating
 * resolver. Trusting records only when DNSSEC validated them is the
 * caller's job (the resolver's `secure` flag).
 *
 * Usable records (RFC 7672 §3.1): usage DANE-TA(2) or DANE-EE(3), selector
 * Cert(0) or SPKI(1), matching type Full(0), SHA2-256(1) or SHA2-512(2) with
 * data of the right length. PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP
 * (§3.1.3) and ignored, as are unknown parameters.
 *
 *  - DANE-EE(3): the leaf certificate (or its key) matches; no name check,
 *    no validity-period check (RFC 7671 §5.1).
 *  - DANE-TA(2): a record matches a certificate of the peer's chain above
 *    the leaf, or is a full certificate (selector 0, type 0) given in DNS;
 *    the leaf must then chain to it (the matched certificate is the trust
 *    anchor, validity periods checked) and its names must match one of
 *    `names` (the MX host, and the TLSA base domain after CNAMEs).
 *    XXX: a bare public key given in full (selector 1, type 0) is only used
 *    when it matches a certificate the peer sent, not as a free-standing
 *    anchor: BoringSSL's verifier needs an anchor certificate.
 */
#ifndef STP_TLS_DANE_H
#define STP_TLS_DANE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

enum {
    STP_DANE_USAGE_PKIX_TA = 0,
    STP_DANE_USAGE_PKIX_EE = 1,
    STP_DANE_USAGE_DANE_TA = 2,
    STP_DANE_USAGE_DANE_EE = 3,
    STP_DANE_SEL_CERT = 0,
    STP_DANE_SEL_SPKI = 1,
    STP_DANE_MT_FULL = 0,
    STP_DANE_MT_SHA256 = 1,
    STP_DANE_MT_SHA512 = 2,
};

/* One TLSA record; `data` is borrowed (e.g. from stp_dns_rr_t). */
typedef struct {
    uint8_t usage, selector, mtype;
    const uint8_t *data;
    size_t len;
} stp_dane_tlsa_t;

typedef enum {
    STP_DANE_OK = 0,    /* authenticated; *matched says which record */
    STP_DANE_NO_USABLE, /* no usable record: RFC 7672 §2.2, TLS still required, unauthenticated */
    STP_DANE_NO_CERT,   /* the peer sent no certificate */
    STP_DANE_FAIL,      /* usable records, none authenticates the peer: never deliver */
} stp_dane_result_t;

/* 1 if the record is usable for SMTP (see above). Pure. */
int stp_dane_usable(const stp_dane_tlsa_t *r);

/* 1 if one of recs[0..n) is usable: records that are all unusable
 * authenticate nothing (RFC 7672 2.2: TLS, unauthenticated). Pure. */
int stp_dane_any_usable(const stp_dane_tlsa_t *recs, size_t n);

/*
 * Matches the peer chain (leaf first, as SSL_get_peer_cert_chain gives it on
 * a client; borrowed) against recs[0..n). names[0..nnames) are the reference
 * identifiers for DANE-TA. On STP_DANE_OK, *matched (if not NULL) is the
 * index of the record that authenticated the peer; `why` gets one line for
 * the log either way ("DANE-EE(3) SPKI SHA2-256 matched the leaf", "no TLSA
 * record matched: 2 usable (DANE-EE 1, DANE-TA 1)").
 */
stp_dane_result_t stp_dane_verify_chain(STACK_OF(X509) * chain, const stp_dane_tlsa_t *recs,
                                        size_t n, const char *const *names, size_t nnames,
                                        size_t *matched, char *why, size_t whylen);

/* The same on a completed client handshake. */
stp_dane_result_t stp_dane_verify(SSL *ssl, const stp_dane_tlsa_t *recs, size_t n,
                                  const char *const *names, size_t nnames, size_t *matched,
                                  char *why, size_t whylen);

/*
 * Computes a record's association data for `cert` (selector, matching type)
 * into out[0..cap); returns its length, or 0 on an unknown parameter or a
 * too small buffer. The test tools and `probe` use it to show what a
 * certificate's TLSA record would be.
 */
size_t stp_dane_cert_data(X509 *cert, uint8_t selector, uint8_t mtype, uint8_t *out, size_t cap);

#endif
