/*
 * smtp_cmd: command verb table and argument extraction (see header).
 */
#include "proxy/smtp_cmd.h"

#include <strings.h>

static const struct {
    const char *name;
    size_t len;
    stp_cmd_verb_t verb;
} verbs[] = {
    {"HELO", 4, STP_CMD_HELO},       {"EHLO", 4, STP_CMD_EHLO},
    {"MAIL", 4, STP_CMD_MAIL},       {"RCPT", 4, STP_CMD_RCPT},
    {"DATA", 4, STP_CMD_DATA},       {"BDAT", 4, STP_CMD_BDAT},
    {"RSET", 4, STP_CMD_RSET},       {"NOOP", 4, STP_CMD_NOOP},
    {"QUIT", 4, STP_CMD_QUIT},       {"VRFY", 4, STP_CMD_VRFY},
    {"EXPN", 4, STP_CMD_EXPN},       {"HELP", 4, STP_CMD_HELP},
    {"STARTTLS", 8, STP_CMD_STARTTLS}, {"AUTH", 4, STP_CMD_AUTH},
    {"XCLIENT", 7, STP_CMD_XCLIENT}, {"XFORWARD", 8, STP_CMD_XFORWARD},
    {"ETRN", 4, STP_CMD_ETRN},       {"TURN", 4, STP_CMD_TURN},
    {"ATRN", 4, STP_CMD_TURN},
};

const char *stp_cmd_name(stp_cmd_verb_t verb)
{
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (verbs[i].verb == verb) {
            return verbs[i].name;
        }
    }
    return "UNKNOWN";
}

void stp_cmd_parse(const char *line, size_t len, stp_cmd_t *out)
{
    size_t i, vlen = 0;

    out->verb = STP_CMD_UNKNOWN;
    out->arg = line + len;
    out->arg_len = 0;
    out->malformed = 0;

    for (i = 0; i < len; i++) {
        if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n') {
            out->malformed = 1;
        }
    }
    while (vlen < len && line[vlen] != ' ') {
        vlen++;
    }
    for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (verbs[i].len == vlen && strncasecmp(line, verbs[i].name, vlen) == 0) {
            out->verb = verbs[i].verb;
            break;
        }
    }
    if (out->verb == STP_CMD_UNKNOWN) {
        return;
    }
    const char *a = line + vlen;
    const char *end = line + len;
    while (a < end && *a == ' ') {
        a++;
    }
    if (out->verb == STP_CMD_MAIL || out->verb == STP_CMD_RCPT) {
        const char *kw = out->verb == STP_CMD_MAIL ? "FROM:" : "TO:";
        size_t kl = out->verb == STP_CMD_MAIL ? 5 : 3;
        if ((size_t)(end - a) < kl || strncasecmp(a, kw, kl) != 0) {
            out->malformed = 1;
        } else {
            a += kl;
            if (a < end && *a == ' ') {
                a++; /* "MAIL FROM: <x>" is common enough to accept */
            }
            if (a >= end || *a == ' ') {
                out->malformed = 1;
            }
        }
    }
    while (end > a && end[-1] == ' ') {
        end--;
    }
    out->arg = a;
    out->arg_len = (size_t)(end - a);
}
