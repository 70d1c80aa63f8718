/*
 * fuzz_smtp_reply: libFuzzer target for the reply parser.
 *
 * Input: byte 0 picks how the rest is split; the rest is what a server
 * sends. Checked: fed whole, cut in two, and in small chunks, the parser
 * gives the same replies and the same error; every reply respects the
 * limits, its raw bytes are exactly the bytes consumed for it, each line
 * starts with the reply's code and a separator, and the line texts lie
 * inside raw.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_INPUT = 20000 };

typedef struct {
    char text[4 * MAX_INPUT + 256];
    size_t len;
} events_t;

static void put(events_t *e, const char *s, size_t n)
{
    if (e->len + n > sizeof(e->text)) {
        abort();
    }
    memcpy(e->text + e->len, s, n);
    e->len += n;
}

static void check_reply(const stp_reply_t *r, const char *fed, size_t fed_len)
{
    char code[4];
    size_t lines = 0, start = 0;
    int bare = 0;

    if (r->code < 100 || r->code > 599 || r->nlines < 1 || r->nlines > STP_REPLY_MAX_LINES ||
        r->raw_len > STP_REPLY_MAX_BYTES || r->raw_len != fed_len ||
        memcmp(r->raw, fed, fed_len) != 0) {
        abort();
    }
    snprintf(code, sizeof(code), "%d", r->code);
    for (size_t i = 0; i < r->raw_len; i++) {
        if (r->raw[i] != '\n') {
            continue;
        }
        size_t len = i + 1 - start; /* with its line end */
        if (len > STP_REPLY_MAX_LINE || memcmp(r->raw + start, code, 3) != 0) {
            abort();
        }
        bare |= !(i > start && r->raw[i - 1] == '\r');
        if (r->text_off[lines] < start || r->text_off[lines] + r->text_len[lines] > i) {
            abort();
        }
        lines++;
        start = i + 1;
    }
    if (lines != r->nlines || start != r->raw_len || bare != r->bare_lf) {
        abort();
    }
}

static void render(const uint8_t *d, size_t n, size_t cut, size_t chunk, events_t *e)
{
    static stp_reply_parser_t p;
    size_t pos = 0, reply_start = 0;

    stp_reply_parser_init(&p);
    e->len = 0;
    while (pos < n) {
        size_t avail = n - pos, used = 0;
        if (pos == 0 && cut > 0 && cut < avail) {
            avail = cut;
        } else if (chunk > 0 && chunk < avail) {
            avail = chunk;
        }
        int rc = stp_reply_feed(&p, (const char *)d + pos, avail, &used);
        if (used > avail) {
            abort();
        }
        pos += used;
        if (rc == STP_REPLY_ERROR) {
            if (p.error == NULL) {
                abort();
            }
            put(e, "E", 1);
            put(e, p.error, strlen(p.error));
            return;
        }
        if (rc == STP_REPLY_AGAIN) {
            if (used != avail) {
                abort();
            }
            continue;
        }
        if (rc != STP_REPLY_DONE) {
            abort();
        }
        check_reply(&p.reply, (const char *)d + reply_start, pos - reply_start);
        char line[64];
        int k = snprintf(line, sizeof(line), "R%d/%zu/%zu;", p.reply.code, p.reply.nlines,
                         p.reply.raw_len);
        put(e, line, (size_t)k);
        reply_start = pos;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static events_t whole, split;
    if (size < 1 || size > MAX_INPUT + 1) {
        return 0;
    }
    const uint8_t *d = data + 1;
    size_t n = size - 1;

    render(d, n, 0, 0, &whole);
    render(d, n, n ? data[0] % n : 0, 0, &split);
    if (split.len != whole.len || memcmp(split.text, whole.text, whole.len) != 0) {
        abort();
    }
    render(d, n, 0, (size_t)(data[0] % 7) + 1, &split);
    if (split.len != whole.len || memcmp(split.text, whole.text, whole.len) != 0) {
        abort();
    }
    return 0;
}
