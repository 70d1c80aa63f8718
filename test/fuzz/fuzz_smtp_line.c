/*
 * fuzz_smtp_line: libFuzzer target for the line splitter.
 *
 * Input: byte 0 picks the limit (0..39, small so that over-long lines are
 * common), byte 1 picks how the rest is split; the rest is the stream.
 * Checked: the stream fed whole, cut in two, and in small chunks gives the
 * same events; the events match an independent model of the rules; the
 * splitter never writes past its limit and always makes progress.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 4096, GUARD = 16 };

typedef struct {
    char text[8 * MAX_INPUT + 64];
    size_t len;
} events_t;

static void put(events_t *e, const char *s, size_t n)
{
    if (e->len + n > sizeof(e->text)) {
        abort(); /* sized for the worst case: cannot happen */
    }
    memcpy(e->text + e->len, s, n);
    e->len += n;
}

static void put_line(events_t *e, const char *s, size_t n, int bare)
{
    char hdr[3] = {'L', (char)(n & 0xff), (char)(n >> 8)};
    put(e, hdr, 3);
    put(e, s, n);
    put(e, bare ? "~" : "|", 1);
}

/* Feeds d[0..n): cut == 0 whole, else in pieces of at most `chunk` bytes
 * with the first piece cut at `cut`. */
static void render(const uint8_t *d, size_t n, size_t max, size_t cut, size_t chunk, events_t *e)
{
    static char buf[64 + GUARD];
    stp_line_t l;
    size_t pos = 0;

    memset(buf, 0xa5, sizeof(buf));
    stp_line_init(&l, buf, max);
    e->len = 0;
    while (pos < n) {
        size_t avail = n - pos;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        } else if (chunk > 0 && chunk < avail) {
            avail = chunk;
        }
        size_t used = 0;
        int rc = stp_line_feed(&l, (const char *)d + pos, avail, &used);
        if (used == 0 || used > avail || (rc == STP_LINE_AGAIN && used != avail)) {
            abort();
        }
        pos += used;
        if (rc == STP_LINE_DONE) {
            if (l.len > max) {
                abort();
            }
            put_line(e, l.buf, l.len, l.bare_lf);
        } else if (rc == STP_LINE_TOOLONG) {
            put(e, "T", 1);
        } else if (rc != STP_LINE_AGAIN) {
            abort();
        }
    }
    for (size_t i = max; i < max + GUARD; i++) {
        if ((unsigned char)buf[i] != 0xa5) {
            abort(); /* wrote past the limit */
        }
    }
}

/* Lines end at LF; a CR right before it is the line end; a line longer than
 * max is TOOLONG; a last line without LF produces nothing. */
static void model(const uint8_t *d, size_t n, size_t max, events_t *e)
{
    size_t start = 0;
    e->len = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] != '\n') {
            continue;
        }
        size_t len = i - start;
        int bare = !(len > 0 && d[i - 1] == '\r');
        if (!bare) {
            len--;
        }
        if (len > max) {
            put(e, "T", 1);
        } else {
            put_line(e, (const char *)d + start, len, bare);
        }
        start = i + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static events_t whole, split, want;
    if (size < 2 || size > MAX_INPUT + 2) {
        return 0;
    }
    size_t max = data[0] % 40;
    const uint8_t *d = data + 2;
    size_t n = size - 2;

    render(d, n, max, 0, 0, &whole);
    model(d, n, max, &want);
    if (whole.len != want.len || memcmp(whole.text, want.text, want.len) != 0) {
        abort();
    }
    render(d, n, max, n ? data[1] % n : 0, 0, &split);
    if (split.len != whole.len || memcmp(split.text, whole.text, whole.len) != 0) {
        abort();
    }
    render(d, n, max, 0, (size_t)(data[1] % 7) + 1, &split);
    if (split.len != whole.len || memcmp(split.text, whole.text, whole.len) != 0) {
        abort();
    }
    return 0;
}
