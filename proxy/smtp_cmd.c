/*
 * smtp_cmd: classifies one client command line into a verb and its argument
 * (see smtp_cmd.h). The session decides from the verb whether a command is
 * forwarded, answered by the proxy, or refused, so the classification errs
 * on the side of "malformed": a line the proxy cannot read with certainty is
 * answered locally and never forwarded for the backend to read differently.
 *
 * Decisions where the header leaves room (the safest reading was taken):
 *  - NUL, CR or LF anywhere in the line sets `malformed`, whatever the verb.
 *  - A byte outside printable ASCII in the verb (8-bit, controls, TAB) sets
 *    `malformed` even though such a verb can never be known: a binary
 *    "command" is refused by the proxy instead of being relayed.
 *  - Verbs compare with an ASCII-only case fold; strncasecmp() could follow
 *    the locale, and a command must mean the same thing everywhere.
 *  - MAIL/RCPT: any number of spaces may separate the verb from "FROM:" /
 *    "TO:" (the header's "leading spaces skipped"); after the colon one
 *    space is tolerated, as many clients send "MAIL FROM: <a@b>", but two
 *    spaces or an empty path are malformed. Angle brackets are not required
 *    here: the backend judges the path itself.
 *  - On a malformed MAIL/RCPT, `arg` is the text after the verb, so that a
 *    log line can show what the client sent.
 *  - For UNKNOWN, `arg` is the text after the first word, like any verb.
 */
#include "proxy/smtp_cmd.h"

static const struct {
    const char *name;
    size_t len;
    stp_cmd_verb_t verb;
} verbs[] = {
    {"HELO", 4, STP_CMD_HELO},         {"EHLO", 4, STP_CMD_EHLO}, {"MAIL", 4, STP_CMD_MAIL},
    {"RCPT", 4, STP_CMD_RCPT},         {"DATA", 4, STP_CMD_DATA}, {"BDAT", 4, STP_CMD_BDAT},
    {"RSET", 4, STP_CMD_RSET},         {"NOOP", 4, STP_CMD_NOOP}, {"QUIT", 4, STP_CMD_QUIT},
    {"VRFY", 4, STP_CMD_VRFY},         {"EXPN", 4, STP_CMD_EXPN}, {"HELP", 4, STP_CMD_HELP},
    {"STARTTLS", 8, STP_CMD_STARTTLS}, {"AUTH", 4, STP_CMD_AUTH}, {"XCLIENT", 7, STP_CMD_XCLIENT},
    {"XFORWARD", 8, STP_CMD_XFORWARD}, {"ETRN", 4, STP_CMD_ETRN}, {"TURN", 4, STP_CMD_TURN},
    {"ATRN", 4, STP_CMD_TURN}, /* after TURN, so that the verb's name is "TURN" */
};

#define NVERBS (sizeof(verbs) / sizeof(verbs[0]))

static unsigned char ascii_upper(unsigned char c)
{
    return c >= 'a' && c <= 'z' ? (unsigned char)(c - 'a' + 'A') : c;
}

/* 1 if s[0..n) equals the upper-case ASCII word `w` (of length n) without
 * regard to case. */
static int ascii_caseeq(const char *s, const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_upper((unsigned char)s[i]) != (unsigned char)w[i]) {
            return 0;
        }
    }
    return 1;
}

const char *stp_cmd_name(stp_cmd_verb_t verb)
{
    for (size_t i = 0; i < NVERBS; i++) {
        if (verbs[i].verb == verb) {
            return verbs[i].name;
        }
    }
    return "UNKNOWN";
}

void stp_cmd_parse(const char *line, size_t len, stp_cmd_t *out)
{
    const char *end = line + len;
    const char *a;
    size_t vlen = 0;

    out->verb = STP_CMD_UNKNOWN;
    out->malformed = 0;

    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n') {
            out->malformed = 1;
        }
    }

    /* The verb is everything up to the first space. */
    while (vlen < len && line[vlen] != ' ') {
        unsigned char c = (unsigned char)line[vlen];
        if (c < 0x21 || c > 0x7e) {
            out->malformed = 1;
        }
        vlen++;
    }
    for (size_t i = 0; i < NVERBS; i++) {
        if (verbs[i].len == vlen && ascii_caseeq(line, verbs[i].name, vlen)) {
            out->verb = verbs[i].verb;
            break;
        }
    }

    a = line + vlen;
    while (a < end && *a == ' ') {
        a++;
    }
    while (end > a && end[-1] == ' ') {
        end--;
    }

    if (out->verb == STP_CMD_MAIL || out->verb == STP_CMD_RCPT) {
        const char *kw = out->verb == STP_CMD_MAIL ? "FROM:" : "TO:";
        size_t kl = out->verb == STP_CMD_MAIL ? 5 : 3;
        const char *path = a;

        if ((size_t)(end - path) < kl || !ascii_caseeq(path, kw, kl)) {
            out->malformed = 1;
        } else {
            path += kl;
            if (path < end && *path == ' ') {
                path++;
            }
            if (path >= end || *path == ' ') {
                out->malformed = 1; /* no path, or more than one space */
            } else {
                a = path;
            }
        }
    }

    out->arg = a;
    out->arg_len = (size_t)(end - a);
}
