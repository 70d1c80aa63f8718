/*
 * domain_name: the one syntax check of a domain name that every part of the
 * proxy applies to a name it routes or looks a policy up by (the recipient
 * domain of RCPT TO, [policy:DOMAIN] section names and their lookup, MTA-STS
 * policy domains and mx patterns). Pure.
 *
 * RFC 5321 4.1.2 Domain = sub-domain *("." sub-domain), sub-domain =
 * Let-dig [Ldh-str]: labels of ASCII letters, digits and hyphens, neither
 * starting nor ending with a hyphen (so "xn--" A-labels pass, U-labels and
 * underscores do not); with the DNS limits of RFC 1035: labels of 1 to 63
 * octets, a name of at most 253. Address literals ("[192.0.2.1]") are not
 * domains. A trailing dot is the caller's to strip (each says whether it
 * allows one).
 */
#ifndef STP_DOMAIN_NAME_H
#define STP_DOMAIN_NAME_H

#include <stddef.h>

/* 1 if s[0..n) is a domain name by the rules above, else 0. */
int stp_domain_name_valid(const char *s, size_t n);

#endif
