/*
 * fuzz_envelope: libFuzzer target for the route = mx envelope helpers.
 *
 * Input: a MAIL/RCPT argument; its first byte picks the next hop's
 * capabilities. Checked: a path lies inside the input, starts with '<' and
 * ends with '>'; a recipient domain is non-empty, lower case, at most 253
 * bytes of letters, digits, '-' and '.', and a domain name by the check
 * the policy lookup makes (policy/domain_name.h); a replayed MAIL FROM line is
 * exactly as long as reported, starts with "MAIL FROM:<" and never carries a
 * parameter the next hop did not offer; an argument stripped of SIZE= is at
 * most one byte longer, keeps the path and declares no size any more.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/domain_name.h"
#include "proxy/ehlo.h"
#include "proxy/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    unsigned caps = (data[0] & 1 ? STP_EHLO_SIZE : 0) | (data[0] & 2 ? STP_EHLO_8BITMIME : 0) |
                    (data[0] & 4 ? STP_EHLO_SMTPUTF8 : 0);
    const char *arg = (const char *)data + 1;
    size_t n = size - 1;

    size_t s = 0, e = 0;
    if (stp_env_path(arg, n, &s, &e) == 0) {
        if (!(s < e && e <= n && arg[s] == '<' && arg[e - 1] == '>')) {
            abort();
        }
    }
    char dom[256];
    size_t params = 0;
    if (stp_env_rcpt_domain(arg, n, &params, dom) == NULL) {
        size_t dl = strlen(dom);
        if (dl == 0 || dl > 253 || params > n) {
            abort();
        }
        for (size_t i = 0; i < dl; i++) {
            char c = dom[i];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) {
                abort();
            }
        }
        /* what the envelope accepts, the policy lookup can judge */
        if (!stp_domain_name_valid(dom, dl)) {
            abort();
        }
    }
    (void)stp_env_mail_params(arg, n, data[0] & 8 ? 1000 : 0);

    /* a declared size is found only behind a well-formed path */
    uint64_t declared = 0;
    if (stp_env_mail_size(arg, n, &declared) && stp_env_path(arg, n, &s, &e) < 0) {
        abort();
    }

    char out[600];
    const char *refusal = NULL;
    int len = stp_env_mail_line(arg, n, caps, out, sizeof(out), &refusal);
    if (len >= 0) {
        if ((size_t)len != strlen(out) || (size_t)len >= sizeof(out) ||
            strncmp(out, "MAIL FROM:<", 11) != 0 || refusal != NULL) {
            abort();
        }
        /* parameters after the path (a quoted path may hold any text) */
        const char *after = out + 10 + (e - s);
        if (!(caps & STP_EHLO_SIZE) && strstr(after, " SIZE=")) {
            abort();
        }
    }

    char *bare = malloc(n + 2);
    if (bare == NULL) {
        return 0;
    }
    int bl = stp_env_mail_without_size(arg, n, bare, n + 2);
    if (bl >= 0) {
        size_t bs = 0, be = 0;
        if ((size_t)bl > n + 1 || bare[bl] != '\0' || stp_env_path(arg, n, &s, &e) < 0 ||
            memcmp(bare, arg, e) != 0 || stp_env_path(bare, (size_t)bl, &bs, &be) < 0 ||
            be != e || stp_env_mail_size(bare, (size_t)bl, &declared)) {
            abort();
        }
    }
    free(bare);
    return 0;
}
