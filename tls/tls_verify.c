/*
 * tls_verify: chain result and RFC 6125 name matching for outbound TLS.
 */
#include "tls/tls_verify.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

static int label_count(const char *s, size_t n)
{
    int labels = 1;
    for (size_t i = 0; i < n; i++) {
        labels += s[i] == '.';
    }
    return labels;
}

int stp_tls_name_match(const char *pattern, size_t plen, const char *host)
{
    size_t hlen = strlen(host);

    /* a trailing dot on either side is the same name */
    if (plen && pattern[plen - 1] == '.') {
        plen--;
    }
    if (hlen && host[hlen - 1] == '.') {
        hlen--;
    }
    if (plen == 0 || hlen == 0 || memchr(pattern, '\0', plen)) {
        return 0;
    }
    if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.rest": rest needs two labels at least, host exactly one more label */
        const char *rest = pattern + 2;
        size_t rlen = plen - 2;
        if (label_count(rest, rlen) < 2 || memchr(rest, '*', rlen)) {
            return 0;
        }
        const char *dot = memchr(host, '.', hlen);
        if (dot == NULL || dot == host) {
            return 0;
        }
        size_t tail = hlen - (size_t)(dot + 1 - host);
        return tail == rlen && strncasecmp(dot + 1, rest, rlen) == 0;
    }
    if (memchr(pattern, '*', plen)) {
        return 0; /* partial-label wildcards are not honoured */
    }
    return plen == hlen && strncasecmp(pattern, host, hlen) == 0;
}

void stp_tls_verify_prepare(SSL *ssl)
{
    /* VERIFY_NONE still builds and checks the chain and records the result
     * (SSL_get_verify_result); the decision is taken after the handshake. */
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
}

static void append(char *buf, size_t len, const char *s, size_t n)
{
    size_t used = strlen(buf);
    if (used + 1 >= len) {
        return;
    }
    size_t room = len - used - 1;
    if (n > room) {
        n = room;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[used + i] = isprint(c) ? (char)c : '?';
    }
    buf[used + n] = '\0';
}

size_t stp_tls_ip_literal(const char *name, unsigned char out[16])
{
    char buf[INET6_ADDRSTRLEN];
    size_t len = strlen(name);
    if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
        name++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(buf)) {
        return 0;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, out) == 1) {
        return 4;
    }
    return inet_pton(AF_INET6, buf, out) == 1 ? 16 : 0;
}

/* An IP-address SAN against the names that are IP literals (RFC 6125 1.7.2:
 * an IP-ID matches iPAddress SANs only, byte for byte); its text goes to
 * `seen` like a DNS-ID's. */
static int ip_san_match(const ASN1_OCTET_STRING *ip, const char *const *names, size_t n,
                        char *seen, size_t seenlen, int shown)
{
    const unsigned char *b = ASN1_STRING_get0_data(ip);
    int blen = ASN1_STRING_length(ip);
    int matched = 0;
    for (size_t k = 0; k < n && !matched; k++) {
        unsigned char want[16];
        size_t wlen = stp_tls_ip_literal(names[k], want);
        matched = wlen != 0 && (size_t)blen == wlen && memcmp(b, want, wlen) == 0;
    }
    char text[INET6_ADDRSTRLEN];
    if (shown <= 4 && (blen == 4 || blen == 16) &&
        inet_ntop(blen == 4 ? AF_INET : AF_INET6, b, text, sizeof(text)) != NULL) {
        append(seen, seenlen, shown > 1 ? ", " : "", shown > 1 ? 2 : 0);
        append(seen, seenlen, text, strlen(text));
    }
    return matched;
}

int stp_tls_leaf_name_match(X509 *leaf, const char *const *names, size_t n, char *seen,
                            size_t seenlen)
{
    int dns_sans = 0, shown = 0, matched = 0;
    unsigned char ip[16];
    if (seenlen > 0) {
        seen[0] = '\0';
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    for (size_t i = 0; sans && i < sk_GENERAL_NAME_num(sans) && !matched; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_IPADD) {
            matched = ip_san_match(gn->d.iPAddress, names, n, seen, seenlen, ++shown);
            continue;
        }
        if (gn->type != GEN_DNS) {
            continue;
        }
        const char *p = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
        size_t plen = (size_t)ASN1_STRING_length(gn->d.dNSName);
        dns_sans++;
        for (size_t k = 0; k < n && !matched; k++) {
            /* an address is never matched against a DNS-ID */
            matched = !stp_tls_ip_literal(names[k], ip) && stp_tls_name_match(p, plen, names[k]);
        }
        if (++shown <= 4) {
            append(seen, seenlen, shown > 1 ? ", " : "", shown > 1 ? 2 : 0);
            append(seen, seenlen, p, plen);
        }
    }
    GENERAL_NAMES_free(sans);

    if (dns_sans == 0 && !matched) {
        /* RFC 6125 6.4.4: the CN only when there is no DNS-ID at all (and
         * never for an address). */
        X509_NAME *subj = X509_get_subject_name(leaf);
        int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
        if (idx >= 0) {
            ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
            const char *p = (const char *)ASN1_STRING_get0_data(cn);
            size_t plen = (size_t)ASN1_STRING_length(cn);
            for (size_t k = 0; k < n && !matched; k++) {
                matched = !stp_tls_ip_literal(names[k], ip) &&
                          stp_tls_name_match(p, plen, names[k]);
            }
            append(seen, seenlen, shown ? ", " : "", shown ? 2 : 0);
            append(seen, seenlen, p, plen);
        }
    }
    return matched;
}

/* A resumed session carries the verify result of the handshake that made
 * it, when its chain was valid; a ticket can outlive a certificate, so the
 * validity periods of the chain the peer sent are checked again, now. */
static long resumed_validity(SSL *ssl)
{
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    for (size_t i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        X509 *x = sk_X509_value(chain, i);
        if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
            return X509_V_ERR_CERT_HAS_EXPIRED; /* 0: unreadable, taken as expired */
        }
        if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
            return X509_V_ERR_CERT_NOT_YET_VALID;
        }
    }
    return X509_V_OK;
}

stp_verify_result_t stp_tls_verify_peer(SSL *ssl, const char *const *names, size_t n, char *why,
                                        size_t whylen)
{
    X509 *leaf = SSL_get_peer_certificate(ssl);
    if (leaf == NULL) {
        snprintf(why, whylen, "no certificate presented");
        return STP_VERIFY_NO_CERT;
    }
    long vr = SSL_get_verify_result(ssl);
    if (vr == X509_V_OK && SSL_session_reused(ssl)) {
        vr = resumed_validity(ssl);
    }
    if (vr != X509_V_OK) {
        snprintf(why, whylen, "%s", X509_verify_cert_error_string(vr));
        X509_free(leaf);
        return STP_VERIFY_CHAIN;
    }

    char seen[256];
    int matched = stp_tls_leaf_name_match(leaf, names, n, seen, sizeof(seen));
    X509_free(leaf);
    if (matched) {
        why[0] = '\0';
        return STP_VERIFY_OK;
    }
    snprintf(why, whylen, "name mismatch: wanted %s, certificate has %s", n ? names[0] : "?",
             seen[0] ? seen : "no names");
    return STP_VERIFY_NAME;
}
