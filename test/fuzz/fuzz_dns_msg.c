/*
 * fuzz_dns_msg: libFuzzer target for the DNS response parser.
 *
 * Input: a DNS message. Checked: an accepted message has every name
 * terminated and within the presentation limit, every TLSA/TXT datum inside
 * the pool, at most STP_DNS_MAX_RR records; a proper prefix of an accepted
 * message is always refused (strictness: nothing is read past the end); a
 * refusal leaves no records and names its error; an escape-free question
 * name survives the query builder and a second parse unchanged.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/dns_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(const char *s)
{
    if (strnlen(s, STP_DNS_NAME_TEXT_MAX) >= STP_DNS_NAME_TEXT_MAX) {
        abort();
    }
    for (; *s; s++) {
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7E) {
            abort(); /* control bytes and spaces are always escaped */
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static stp_dns_msg_t m, again;
    static uint8_t q[600];

    if (stp_dns_msg_parse(&m, data, size) != 0) {
        if (m.error == NULL || m.nrr != 0) {
            abort();
        }
        return 0;
    }
    if (m.nrr > STP_DNS_MAX_RR || m.pool_len > size) {
        abort();
    }
    check_name(m.qname);
    for (size_t i = 0; i < m.nrr; i++) {
        const stp_dns_rr_t *rr = &m.rr[i];
        check_name(rr->name);
        check_name(rr->target);
        if (rr->data != NULL &&
            (rr->data < m.pool || rr->data + rr->data_len > m.pool + m.pool_len)) {
            abort();
        }
    }
    (void)stp_dns_msg_final_name(&m);
    if (size > 0 && (stp_dns_msg_parse(&again, data, size - 1) == 0 ||
                     stp_dns_msg_parse(&again, data, size / 2) == 0)) {
        abort();
    }
    if (strchr(m.qname, '\\') == NULL) {
        size_t n = stp_dns_query_build(q, sizeof(q), m.id, m.qname, m.qtype);
        if (n == 0) {
            abort(); /* a parsed, escape-free name is always buildable */
        }
        q[2] |= 0x80;
        if (stp_dns_msg_parse(&again, q, n) != 0 || !stp_dns_name_eq(again.qname, m.qname) ||
            again.qtype != m.qtype) {
            abort();
        }
    }
    return 0;
}
