/* fuzz_data_scan: whole vs split input give the same output and end; the
 * output (in both modes) never contains "\r\n.\r\n" before its very end, and
 * in NORMALIZE mode has no bare CR or LF. */
#include <stdint.h>
#include <string.h>

#include "proxy/data_scan.h"

static size_t render(stp_data_mode_t mode, const uint8_t *d, size_t n, size_t cut, char *out,
                     long *done_at)
{
    static char tmp[6 * 8192 + 4];
    stp_data_scan_t s;
    size_t o = 0, pos = 0;
    stp_data_scan_init(&s, mode);
    *done_at = -1;
    while (pos < n) {
        size_t end = pos < cut ? cut : n, used = 0, produced = 0;
        int rc = stp_data_scan(&s, (const char *)d + pos, end - pos, tmp, &used, &produced);
        memcpy(out + o, tmp, produced);
        o += produced;
        pos += used;
        if (rc == STP_DATA_DONE) {
            *done_at = (long)pos;
            break;
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char a[6 * 8192 + 8], b[6 * 8192 + 8];
    long da, db;
    if (size < 2 || size > 8000) {
        return 0;
    }
    stp_data_mode_t mode = data[0] & 1 ? STP_DATA_NORMALIZE : STP_DATA_REJECT;
    size_t cut = data[1] % (size - 1);
    size_t la = render(mode, data + 2, size - 2, size - 2, a, &da);
    size_t lb = render(mode, data + 2, size - 2, cut, b, &db);
    if (la != lb || da != db || memcmp(a, b, la) != 0) {
        __builtin_trap();
    }
    /* "\r\n.\r\n" may appear only as the final terminator (or at the start as ".\r\n") */
    for (size_t i = 0; i + 5 <= la; i++) {
        if (memcmp(a + i, "\r\n.\r\n", 5) == 0 && !(i + 5 == la && da >= 0)) {
            __builtin_trap();
        }
    }
    if (la >= 3 && memcmp(a, ".\r\n", 3) == 0 && !(la == 3 && da >= 0)) {
        __builtin_trap();
    }
    if (mode == STP_DATA_NORMALIZE) {
        for (size_t i = 0; i < la; i++) {
            if ((a[i] == '\n' && (i == 0 || a[i - 1] != '\r')) ||
                (a[i] == '\r' && (i + 1 >= la || a[i + 1] != '\n'))) {
                __builtin_trap();
            }
        }
    }
    return 0;
}
