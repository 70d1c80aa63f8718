/* fuzz_smtp_reply: whole vs split input give the same replies; line
 * offsets stay inside the raw reply. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proxy/smtp_reply.h"

static size_t render(const uint8_t *d, size_t n, size_t cut, char *out, size_t cap)
{
    static stp_reply_parser_t p;
    size_t o = 0, pos = 0;
    stp_reply_parser_init(&p);
    while (pos < n) {
        size_t end = pos < cut ? cut : n, used = 0;
        int rc = stp_reply_feed(&p, (const char *)d + pos, end - pos, &used);
        pos += used;
        if (rc == STP_REPLY_ERROR) {
            if (o + 1 < cap) {
                out[o++] = 'E';
            }
            return o;
        }
        if (rc == STP_REPLY_DONE) {
            const stp_reply_t *r = &p.reply;
            for (size_t i = 0; i < r->nlines; i++) {
                if (r->text_off[i] + r->text_len[i] > r->raw_len) {
                    __builtin_trap();
                }
            }
            int k = snprintf(out + o, cap - o, "%d/%zu/%zu;", r->code, r->nlines, r->raw_len);
            if (k > 0 && (size_t)k < cap - o) {
                o += (size_t)k;
            }
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char a[1 << 16], b[1 << 16];
    if (size < 1 || size > 20000) {
        return 0;
    }
    size_t cut = data[0] % size;
    size_t la = render(data + 1, size - 1, size - 1, a, sizeof(a));
    size_t lb = render(data + 1, size - 1, cut, b, sizeof(b));
    if (la != lb || memcmp(a, b, la) != 0) {
        __builtin_trap();
    }
    return 0;
}
