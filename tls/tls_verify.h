/*
 * tls_verify: peer verification for the outbound side (the proxy as a TLS
 * client). The handshake itself never aborts on a certificate problem; the
 * chain result and the name check are read afterwards, so the caller can
 * decide per policy (refuse, or deliver and record under `testing`), and log
 * exactly why.
 *
 * Name matching follows RFC 6125 / RFC 7817: DNS-ID subjectAltNames only
 * (the subject CN is consulted only when there is no DNS SAN at all), case
 * insensitive, a wildcard only as the whole left-most label ("*.example.com"
 * matches "a.example.com", never "example.com", "a.b.example.com", nor
 * "f*.example.com"-style partial labels), and never a wildcard over a
 * public-suffix-like single label ("*.com").
 */
#ifndef STP_TLS_VERIFY_H
#define STP_TLS_VERIFY_H

#include <stddef.h>

#include <openssl/ssl.h>

typedef enum {
    STP_VERIFY_OK = 0,
    STP_VERIFY_NO_CERT,   /* the peer sent no certificate */
    STP_VERIFY_CHAIN,     /* no valid chain to a trust anchor (self-signed, unknown CA, expired...) */
    STP_VERIFY_NAME,      /* chain fine, but no name matches */
} stp_verify_result_t;

/* 1 if the certificate name `pattern` (a SAN dNSName or CN) matches `host`. Pure. */
int stp_tls_name_match(const char *pattern, size_t plen, const char *host);

/* The bytes of an IP address literal ("192.0.2.1", "2001:db8::1" or
 * "[2001:db8::1]") in out: returns 4 or 16, or 0 for anything else. */
size_t stp_tls_ip_literal(const char *name, unsigned char out[16]);

/*
 * 1 if the certificate's DNS-ID SANs (or, without any, its subject CN) match
 * one of names[0..n) under RFC 6125 rules; a name that is an IP literal (a
 * relay given by address) matches an iPAddress SAN of the same address and
 * nothing else. `seen` receives up to four of the certificate's names,
 * comma-separated, for error messages.
 */
int stp_tls_leaf_name_match(X509 *leaf, const char *const *names, size_t n, char *seen,
                            size_t seenlen);

/*
 * After a client handshake: checks the chain result BoringSSL recorded and
 * whether the leaf matches any of names[0..n). `why` receives a one-line
 * explanation ("certificate has expired", "name mismatch: wanted
 * relay.example, certificate has mx.example.net, *.example.org").
 */
stp_verify_result_t stp_tls_verify_peer(SSL *ssl, const char *const *names, size_t n, char *why,
                                        size_t whylen);

/* Prepares a client SSL so the chain is verified (results recorded, handshake not aborted). */
void stp_tls_verify_prepare(SSL *ssl);

#endif
