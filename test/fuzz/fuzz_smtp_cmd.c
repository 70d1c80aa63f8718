/*
 * fuzz_smtp_cmd: libFuzzer target for the command classifier.
 *
 * Input: one command line, without CRLF. Checked: the argument lies inside
 * the line with no outer spaces; NUL, CR or LF always make it malformed;
 * the verb is the first word (case-insensitive) or UNKNOWN when the first
 * word names no verb; a well-formed MAIL/RCPT really has "FROM:"/"TO:".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy/smtp_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int word_is(const char *w, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(w, name, n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    stp_cmd_t c;
    size_t wlen = 0;

    stp_cmd_parse(line, size, &c);
    if ((unsigned)c.verb >= STP_CMD__COUNT || (c.malformed != 0 && c.malformed != 1)) {
        abort();
    }
    if (c.arg < line || c.arg_len > size || c.arg + c.arg_len > line + size) {
        abort();
    }
    if (c.arg_len > 0 && (c.arg[0] == ' ' || c.arg[c.arg_len - 1] == ' ')) {
        abort();
    }
    if ((memchr(line, '\0', size) || memchr(line, '\r', size) || memchr(line, '\n', size)) &&
        !c.malformed) {
        abort();
    }
    while (wlen < size && line[wlen] != ' ') {
        wlen++;
    }
    const char *name = stp_cmd_name(c.verb);
    if (name == NULL) {
        abort();
    }
    if (c.verb == STP_CMD_UNKNOWN) {
        for (int v = STP_CMD_HELO; v < STP_CMD__COUNT; v++) {
            if (word_is(line, wlen, stp_cmd_name((stp_cmd_verb_t)v))) {
                abort(); /* a known verb went unrecognised */
            }
        }
        if (word_is(line, wlen, "ATRN")) {
            abort();
        }
    } else if (!word_is(line, wlen, name) &&
               !(c.verb == STP_CMD_TURN && word_is(line, wlen, "ATRN"))) {
        abort(); /* recognised something that is not the first word */
    }
    if (!c.malformed && (c.verb == STP_CMD_MAIL || c.verb == STP_CMD_RCPT)) {
        const char *kw = c.verb == STP_CMD_MAIL ? "FROM:" : "TO:";
        size_t kl = strlen(kw), p = wlen;
        while (p < size && line[p] == ' ') {
            p++;
        }
        if (size - p < kl || strncasecmp(line + p, kw, kl) != 0 || c.arg_len == 0) {
            abort();
        }
    }
    return 0;
}
