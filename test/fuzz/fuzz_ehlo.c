/* fuzz_ehlo: any parsed reply rewrites without overrun; the rewritten reply
 * parses again as one 250 reply and never holds STARTTLS when told to drop
 * it, nor twice. */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "proxy/ehlo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static stp_reply_parser_t p, q;
    static char out[STP_REPLY_MAX_BYTES + 64];
    size_t used, len;
    if (size < 1) {
        return 0;
    }
    stp_reply_parser_init(&p);
    if (stp_reply_feed(&p, (const char *)data + 1, size - 1, &used) != STP_REPLY_DONE) {
        return 0;
    }
    stp_ehlo_opts_t o = {.drop = data[0] & 1 ? STP_EHLO_STARTTLS : 0,
                         .drop_unknown = data[0] & 2,
                         .add_starttls = data[0] & 4};
    if (stp_ehlo_rewrite(&p.reply, &o, out, sizeof(out), &len, NULL) != 0) {
        return 0;
    }
    stp_reply_parser_init(&q);
    if (stp_reply_feed(&q, out, len, &used) != STP_REPLY_DONE || used != len ||
        q.reply.code != 250) {
        __builtin_trap();
    }
    int starttls = 0;
    for (size_t i = 1; i < q.reply.nlines; i++) {
        size_t tl;
        const char *t = stp_reply_text(&q.reply, i, &tl);
        starttls += tl == 8 && strncasecmp(t, "STARTTLS", 8) == 0;
    }
    if (starttls > 1 || ((data[0] & 1) && !(data[0] & 4) && starttls)) {
        __builtin_trap();
    }
    (void)stp_ehlo_caps(&p.reply);
    (void)stp_ehlo_size(&p.reply);
    return 0;
}
