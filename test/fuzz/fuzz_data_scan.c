/*
 * fuzz_data_scan: libFuzzer target for the DATA scanner.
 *
 * Input: byte 0 picks the mode (bit 0: NORMALIZE), byte 1 how the rest is
 * split; the rest is message content from the start of DATA.
 * Checked: fed whole, cut in two, and in small chunks, the scanner forwards
 * the same bytes, reports BARE as often and ends at the same offset; the
 * end is where an independent model puts it (the first CRLF "." CRLF, the
 * CRLF after DATA included); REJECT reports BARE exactly when the model
 * finds a bare CR/LF or a NUL and forwards an unchanged prefix of the input; the
 * output never holds a NUL (a hop that deletes NULs sees the same lines); the
 * output never holds a lone "." line except the final one; NORMALIZE
 * output has CRLF line ends only; no call writes more than 2*n + 4 bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/data_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 8192 };

typedef struct {
    char out[2 * MAX_INPUT + 8];
    size_t out_len;
    int bare;
    long done_at;
    uint64_t size;
} result_t;

static int same_state(const stp_data_scan_t *a, const stp_data_scan_t *b)
{
    return a->mode == b->mode && a->bytes == b->bytes && a->saw_bare == b->saw_bare &&
           a->state == b->state && a->stuff_next == b->stuff_next && a->ended == b->ended &&
           a->lead_dots == b->lead_dots;
}

static void render(stp_data_mode_t mode, const uint8_t *d, size_t n, size_t cut, size_t chunk,
                   result_t *r)
{
    static char tmp[2 * MAX_INPUT + 4];
    stp_data_scan_t s;
    size_t pos = 0;

    stp_data_scan_init(&s, mode);
    r->out_len = 0;
    r->bare = 0;
    r->done_at = -1;
    r->size = 0;
    while (pos < n) {
        size_t avail = n - pos, used = 0, produced = 0;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        } else if (chunk > 0 && chunk < avail) {
            avail = chunk;
        }
        stp_data_scan_t twin = s;
        int verbatim = stp_data_scan_verbatim(&s);
        int rc = stp_data_scan(&s, (const char *)d + pos, avail, tmp, &used, &produced);
        if (used > avail || produced > 2 * avail + 4 || r->out_len + produced > sizeof(r->out)) {
            abort();
        }
        /* without an output buffer: the same counts; verbatim: output = input */
        size_t twin_used = 0, twin_produced = 0;
        if (stp_data_scan(&twin, (const char *)d + pos, avail, NULL, &twin_used, &twin_produced) !=
                rc ||
            twin_used != used || twin_produced != produced || !same_state(&twin, &s) ||
            (verbatim && memcmp(tmp, d + pos, produced) != 0)) {
            abort();
        }
        memcpy(r->out + r->out_len, tmp, produced);
        r->out_len += produced;
        pos += used;
        /* RFC 1870's size never goes down and never exceeds what was read */
        if (stp_data_size(&s) < r->size || stp_data_size(&s) > s.bytes) {
            abort();
        }
        r->size = stp_data_size(&s);
        if (rc == STP_DATA_BARE) {
            if (mode != STP_DATA_REJECT || ++r->bare > 1) {
                abort();
            }
        } else if (rc == STP_DATA_DONE) {
            r->done_at = (long)pos;
            break;
        } else if (rc != STP_DATA_AGAIN || used != avail) {
            abort();
        }
    }
    if (s.bytes != pos) {
        abort();
    }
}

static int same(const result_t *a, const result_t *b)
{
    return a->out_len == b->out_len && a->bare == b->bare && a->done_at == b->done_at &&
           a->size == b->size &&
           memcmp(a->out, b->out, a->out_len) == 0;
}

static long model_end(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i + 3 <= n; i++) {
        if (d[i] == '.' && d[i + 1] == '\r' && d[i + 2] == '\n' &&
            (i == 0 || (i >= 2 && d[i - 2] == '\r' && d[i - 1] == '\n'))) {
            return (long)(i + 3);
        }
    }
    return -1;
}

static int model_bare(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((d[i] == '\n' && (i == 0 || d[i - 1] != '\r')) ||
            (d[i] == '\r' && i + 1 < n && d[i + 1] != '\n') || d[i] == '\0') {
            return 1;
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static result_t whole, split;
    if (size < 2 || size > MAX_INPUT + 2) {
        return 0;
    }
    stp_data_mode_t mode = data[0] & 1 ? STP_DATA_NORMALIZE : STP_DATA_REJECT;
    const uint8_t *d = data + 2;
    size_t n = size - 2;

    render(mode, d, n, 0, 0, &whole);
    render(mode, d, n, n ? data[1] % n : 0, 0, &split);
    if (!same(&whole, &split)) {
        abort();
    }
    render(mode, d, n, 0, (size_t)(data[1] % 7) + 1, &split);
    if (!same(&whole, &split)) {
        abort();
    }

    long end = model_end(d, n);
    size_t upto = end < 0 ? n : (size_t)end;
    if (whole.done_at != end) {
        abort();
    }
    const char *o = whole.out;
    size_t ol = whole.out_len;
    /* a lone "." line only as the very end */
    if (ol >= 3 && memcmp(o, ".\r\n", 3) == 0 && !(ol == 3 && end >= 0)) {
        abort();
    }
    for (size_t i = 0; i + 5 <= ol; i++) {
        if (memcmp(o + i, "\r\n.\r\n", 5) == 0 && !(i + 5 == ol && end >= 0)) {
            abort();
        }
    }
    /* no NUL is forwarded, so a hop that deletes NULs sees the same lines */
    if (memchr(o, '\0', ol) != NULL) {
        abort();
    }
    if (mode == STP_DATA_REJECT) {
        if (whole.bare != model_bare(d, upto) || ol > upto || memcmp(o, d, ol) != 0) {
            abort();
        }
        if (!whole.bare && end >= 0 && ol != upto) {
            abort();
        }
    } else {
        if (whole.bare != 0) {
            abort();
        }
        for (size_t i = 0; i < ol; i++) {
            if ((o[i] == '\n' && (i == 0 || o[i - 1] != '\r')) ||
                (o[i] == '\r' && (i + 1 >= ol || o[i + 1] != '\n'))) {
                abort();
            }
        }
        if (end >= 0 && !(ol >= 3 && memcmp(o + ol - 3, ".\r\n", 3) == 0)) {
            abort();
        }
    }
    return 0;
}
