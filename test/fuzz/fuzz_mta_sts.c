/*
 * fuzz_mta_sts: libFuzzer target for the MTA-STS policy and TXT parsers.
 *
 * Input: byte 0 picks how the rest is split; the rest is a policy body.
 * Checked: fed whole, cut in two, and in small chunks, the parser gives the
 * same outcome (policy or error text); an accepted policy respects the rules
 * (max_age in range, mx patterns well-formed and within the limits, at least
 * one unless mode none, each plain pattern matching itself and each wildcard
 * matching one label under it and nothing two labels deep). The same bytes
 * are also parsed as a TXT record (an accepted id is 1 to 32 letters and
 * digits) and split into pattern and host for the matcher.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/mta_sts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 70000 };

static void outcome(const uint8_t *d, size_t n, size_t cut, size_t chunk, char *out, size_t cap,
                    stp_mta_sts_policy_t *pol)
{
    stp_mta_sts_parser_t p;
    size_t pos = 0;
    int rc = STP_MTA_STS_AGAIN;

    stp_mta_sts_parser_init(&p, pol);
    while (pos < n && rc != STP_MTA_STS_ERROR) {
        size_t avail = n - pos;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        } else if (chunk > 0 && chunk < avail) {
            avail = chunk;
        }
        rc = stp_mta_sts_parser_feed(&p, (const char *)d + pos, avail);
        if (rc != STP_MTA_STS_AGAIN && rc != STP_MTA_STS_ERROR) {
            abort();
        }
        pos += avail;
    }
    if (rc != STP_MTA_STS_ERROR) {
        rc = stp_mta_sts_parser_finish(&p);
    }
    if (rc == STP_MTA_STS_OK) {
        snprintf(out, cap, "OK %d %u %zu %zu", (int)pol->mode, (unsigned)pol->max_age, pol->nmx,
                 pol->mx_used);
        return;
    }
    if (rc != STP_MTA_STS_ERROR) {
        abort();
    }
    char err[200];
    stp_mta_sts_parser_error(&p, err, sizeof(err));
    if (err[0] == '\0') {
        abort();
    }
    snprintf(out, cap, "ERR %s", err);
}

static void check_policy(const stp_mta_sts_policy_t *pol)
{
    if (pol->max_age > STP_MTA_STS_MAX_AGE_LIMIT || pol->nmx > STP_MTA_STS_MAX_MX ||
        pol->mx_used > sizeof(pol->mx) || (pol->nmx == 0 && pol->mode != STP_MTA_STS_MODE_NONE)) {
        abort();
    }
    size_t used = 0;
    for (size_t i = 0; i < pol->nmx; i++) {
        const char *mx = stp_mta_sts_mx(pol, i);
        size_t n = strlen(mx);
        used += n + 1;
        if (n == 0) {
            abort();
        }
        char host[300];
        if (mx[0] == '*') {
            if (mx[1] != '.' || !stp_mta_sts_domain_valid(mx + 2)) {
                abort();
            }
            snprintf(host, sizeof(host), "x%s", mx + 1);
            if (!stp_mta_sts_mx_match(mx, host) || stp_mta_sts_mx_match(mx, mx + 2)) {
                abort();
            }
            snprintf(host, sizeof(host), "y.x%s", mx + 1);
            if (stp_mta_sts_mx_match(mx, host)) {
                abort();
            }
        } else if (!stp_mta_sts_domain_valid(mx) || !stp_mta_sts_mx_match(mx, mx) ||
                   !stp_mta_sts_policy_match(pol, mx)) {
            abort();
        }
        for (size_t k = 0; k < n; k++) {
            if (mx[k] >= 'A' && mx[k] <= 'Z') {
                abort(); /* stored lower-cased */
            }
        }
    }
    if (used != pol->mx_used) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static stp_mta_sts_policy_t pol, pol2;
    char whole[256], part[256];

    if (size < 1 || size > MAX_INPUT + 1) {
        return 0;
    }
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    size_t cut = n ? (size_t)data[0] * 131 % (n + 1) : 0;
    size_t chunk = (size_t)(data[0] % 7) + 1;

    outcome(d, n, 0, 0, whole, sizeof(whole), &pol);
    if (strncmp(whole, "OK", 2) == 0) {
        check_policy(&pol);
    }
    outcome(d, n, cut, 0, part, sizeof(part), &pol2);
    if (strcmp(whole, part) != 0 || (whole[0] == 'O' && memcmp(&pol, &pol2, sizeof(pol)) != 0)) {
        abort();
    }
    outcome(d, n, cut, chunk, part, sizeof(part), &pol2);
    if (strcmp(whole, part) != 0) {
        abort();
    }

    /* the same bytes as a TXT record */
    char id[STP_MTA_STS_ID_MAX + 1];
    const char *why = NULL;
    if (stp_mta_sts_txt_parse((const char *)d, n, id, &why) == 0) {
        size_t k = strlen(id);
        if (k == 0 || k > STP_MTA_STS_ID_MAX) {
            abort();
        }
    } else if (why == NULL || id[0] != '\0') {
        abort();
    }
    const char *recs[2] = {(const char *)d, (const char *)d};
    size_t lens[2] = {n, n};
    stp_mta_sts_txt_t t = stp_mta_sts_txt_select(recs, lens, 2, id, &why);
    if (t != STP_MTA_STS_TXT_NONE && t != STP_MTA_STS_TXT_MULTIPLE) {
        abort(); /* two identical records are never one */
    }

    /* pattern NUL host */
    static char buf[MAX_INPUT + 2];
    memcpy(buf, d, n);
    buf[n] = '\0';
    buf[n + 1] = '\0';
    const char *host = buf + strlen(buf) + 1;
    if (host <= buf + n) {
        (void)stp_mta_sts_mx_match(buf, host);
    }
    return 0;
}
