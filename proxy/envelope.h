/*
 * envelope: the parts of MAIL FROM and RCPT TO that route = mx must look
 * into, as pure functions over the argument stp_cmd_parse() found (the text
 * after "FROM:"/"TO:"). The proxy accepts MAIL FROM itself, learns the
 * recipient's domain from the first RCPT, and later replays MAIL FROM to a
 * next hop with only the parameters that next hop offers.
 */
#ifndef STP_ENVELOPE_H
#define STP_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

/*
 * The path at the start of `arg` (spaces allowed before it): "<" ... ">",
 * where a ">" inside a quoted string (with backslash escapes) does not end
 * it. 0 with arg[*start..*end) being the path, brackets included; -1 if
 * there is none.
 */
int stp_env_path(const char *arg, size_t n, size_t *start, size_t *end);

/*
 * The recipient domain of a RCPT TO argument, lower case and without a
 * trailing dot, into out[256]; *params is the offset of what follows the
 * path. Returns NULL, or a static reply line (with CRLF) refusing the
 * address: bad syntax, no domain (the proxy cannot route "<postmaster>"),
 * an address literal (550 5.1.3), a domain that is not a domain name by
 * policy/domain_name.h, the check stp_policy_lookup makes (501 5.1.3). A
 * UTF-8 domain comes out as its A-labels (stp_domain_name_ascii).
 */
const char *stp_env_rcpt_domain(const char *arg, size_t n, size_t *params, char out[256]);

/*
 * The MAIL FROM parameters after the path (p[0..n)): only what the proxy
 * advertises, SIZE=digits (refused above max_size unless max_size is 0),
 * BODY=7BIT or BODY=8BITMIME, SMTPUTF8. NULL, or a static refusal line.
 */
const char *stp_env_mail_params(const char *p, size_t n, uint64_t max_size);

/*
 * The SIZE= value of a whole MAIL FROM argument (path and parameters) as
 * relayed to a backend, whatever else it carries: 1 and *size (saturated at
 * UINT64_MAX), or 0 when there is no well-formed path or no SIZE=digits
 * parameter (the backend judges those).
 */
int stp_env_mail_size(const char *arg, size_t n, uint64_t *size);

/*
 * The MAIL FROM argument without its SIZE= parameters, for a backend that
 * does not offer SIZE while the proxy announced its own limit: everything
 * up to the end of the path as it was, then every other parameter, each
 * after one space. Returns the length written to out (NUL-terminated; at
 * most n + 1, when a parameter followed the path without a space), or -1
 * when there is no well-formed path or out is too small (the caller then
 * relays the argument unchanged).
 */
int stp_env_mail_without_size(const char *arg, size_t n, char *out, size_t cap);

/*
 * The MAIL FROM line for a next hop whose EHLO offered `caps` (STP_EHLO_*
 * bits of proxy/ehlo.h), from an argument accepted by the two functions
 * above: the path, then SIZE only with SIZE, BODY only with 8BITMIME,
 * SMTPUTF8 only with SMTPUTF8. Returns the length written to out (NUL-
 * terminated), or -1 with *refusal set: a static reply when SMTPUTF8 cannot
 * be honoured, NULL when the line does not fit or the argument is invalid.
 */
int stp_env_mail_line(const char *arg, size_t n, unsigned caps, char *out, size_t cap,
                      const char **refusal);

#endif
