/*
 * domain_policy: the per-destination-domain TLS policy table of the
 * configuration ([policy:DOMAIN] sections) and its lookup. Pure.
 *
 * A section name is an exact domain ("example.com": that domain only), a
 * suffix (".example.com": every name below example.com, not example.com
 * itself, as in Postfix's tls_policy_maps), or "default" (every domain no
 * other section matches). Lookup takes the recipient domain (any case,
 * trailing dot allowed): an exact match wins, then the longest matching
 * suffix, then the default; a name that is not a domain gets no policy. With no [policy:default]
 * the built-in default is tls = dane (DANE where the domain's TLSA records validate, otherwise
 * MTA-STS where it publishes a policy, otherwise opportunistic TLS).
 *
 * Levels (what route = mx applies to a domain):
 *   none       never TLS
 *   may        STARTTLS when offered, not verified; plaintext otherwise
 *   encrypt    TLS required, not verified
 *   verify     TLS required, chain verified, name = servername or the MX host
 *   secure     TLS required, chain verified, name = servername or the domain
 *              (or a name below it)
 *   dane       DANE (RFC 7672) when TLSA records are DNSSEC-validated; else
 *              as mta-sts; a DANE failure never falls back (RFC 8461 2)
 *   dane-only  DANE required: no validated TLSA records means deferral
 *   mta-sts    MTA-STS (RFC 8461) when the domain publishes a policy; else may
 */
#ifndef STP_DOMAIN_POLICY_H
#define STP_DOMAIN_POLICY_H

#include <stddef.h>

typedef enum {
    STP_POLICY_TLS_NONE = 0,
    STP_POLICY_TLS_MAY,
    STP_POLICY_TLS_ENCRYPT,
    STP_POLICY_TLS_VERIFY,
    STP_POLICY_TLS_SECURE,
    STP_POLICY_TLS_DANE,
    STP_POLICY_TLS_DANE_ONLY,
    STP_POLICY_TLS_MTA_STS,
} stp_policy_tls_t;

typedef struct {
    char name[256]; /* "example.com", ".example.com" or "default"; lower case */
    int line;       /* of the section header; 0 for the built-in default */
    stp_policy_tls_t tls;
    char servername[256]; /* verify, secure: the certificate name; "" = see above */
    char ca_file[1024];   /* trust store for verification; "" = [tls] ca_file */
} stp_domain_policy_t;

typedef struct {
    stp_domain_policy_t *entries; /* [policy:NAME] sections other than default, in file order */
    size_t n;
    stp_domain_policy_t deflt; /* [policy:default], or the built-in one */
} stp_policy_table_t;

/* "none", "may", ..., "dane-only", "mta-sts". */
const char *stp_policy_tls_name(stp_policy_tls_t t);

/* The level named `s` into *out: 0, or -1 if there is no such level. */
int stp_policy_tls_parse(const char *s, stp_policy_tls_t *out);

/*
 * A section name as the table stores it: lower case, without a trailing
 * dot, a UTF-8 domain by its A-labels (stp_domain_name_ascii); "default",
 * a domain, or "." and a domain. Returns 0, or -1 if `in`
 * is none of these (wildcards, blanks, empty labels...).
 */
int stp_policy_name_normalize(const char *in, char out[256]);

/* The policy for `domain` (see the matching rules above), borrowed from the
 * table; NULL when `domain` (trailing dot and case aside) is not a domain
 * name by policy/domain_name.h. NULL is never "the default": whether a
 * [policy:.suffix] covers such a name cannot be said, so the caller refuses
 * the name (the proxy's envelope, which uses the same check, never passes
 * one). */
const stp_domain_policy_t *stp_policy_lookup(const stp_policy_table_t *t, const char *domain);

#endif
