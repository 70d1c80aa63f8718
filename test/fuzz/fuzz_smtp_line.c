/* fuzz_smtp_line: the line splitter must give the same lines whether the
 * input comes whole or split at a fuzzer-chosen point, and never overrun. */
#include <stdint.h>
#include <string.h>

#include "proxy/smtp_line.h"

static size_t render(const uint8_t *d, size_t n, size_t cut, char *out, size_t cap)
{
    char buf[32];
    stp_line_t l;
    size_t o = 0, pos = 0;
    stp_line_init(&l, buf, sizeof(buf));
    while (pos < n) {
        size_t end = pos < cut ? cut : n, used = 0;
        int rc = stp_line_feed(&l, (const char *)d + pos, end - pos, &used);
        if (used == 0 && rc == STP_LINE_AGAIN) {
            __builtin_trap(); /* no progress */
        }
        pos += used;
        if (rc == STP_LINE_DONE && o + l.len + 2 < cap) {
            if (l.len > sizeof(buf)) {
                __builtin_trap();
            }
            memcpy(out + o, l.buf, l.len);
            o += l.len;
            out[o++] = l.bare_lf ? '~' : '|';
        } else if (rc == STP_LINE_TOOLONG && o + 1 < cap) {
            out[o++] = 'T';
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char a[1 << 16], b[1 << 16];
    if (size < 1 || size > 4096) {
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
