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

/*
 * The name as DNS, MTA-STS and the policy table know it, lower case, into
 * out[256]: an ASCII name is copied; a name with a byte above 0x7f is
 * UTF-8 with U-labels (an internationalized domain, RFC 6531's SMTPUTF8
 * addresses), turned into A-labels by libidn2: "Bücher.example" becomes
 * "xn--bcher-kva.example" (IDNA2008, RFC 5891, after UTS #46's
 * non-transitional mapping: case, width, NFC; so "ß" stays "ß", as
 * browsers and registries now have it). Returns the length, or -1 when
 * the input is no such name or the result fails stp_domain_name_valid().
 */
int stp_domain_name_ascii(const char *s, size_t n, char out[256]);

#endif
