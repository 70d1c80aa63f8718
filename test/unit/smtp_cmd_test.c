/*
 * smtp_cmd_test: verbs, arguments and malformed commands, as a table. Each
 * line is parsed directly and also as the session sees it: followed by CRLF,
 * fed through the line splitter whole, cut at every byte and one byte at a
 * time, then parsed; every path must classify it the same way.
 */
#include <string.h>

#include "proxy/smtp_cmd.h"
#include "proxy/smtp_line.h"
#include "test/unit/check.h"

#define S(x) x, sizeof(x) - 1

typedef struct {
    const char *label;
    const char *line;
    size_t len;
    stp_cmd_verb_t verb;
    const char *arg; /* NULL: not checked */
    int malformed;
} cmd_case_t;

static const cmd_case_t cases[] = {
    {"ehlo", S("EHLO client.example"), STP_CMD_EHLO, "client.example", 0},
    {"lower case verb", S("ehlo x"), STP_CMD_EHLO, "x", 0},
    {"mixed case verb", S("eHlO x"), STP_CMD_EHLO, "x", 0},
    {"ehlo without argument", S("EHLO"), STP_CMD_EHLO, "", 0},
    {"helo", S("HELO x"), STP_CMD_HELO, "x", 0},
    {"spaces around argument", S("HELO   x  "), STP_CMD_HELO, "x", 0},

    {"mail", S("MAIL FROM:<a@b> SIZE=10"), STP_CMD_MAIL, "<a@b> SIZE=10", 0},
    {"mail null path", S("MAIL FROM:<>"), STP_CMD_MAIL, "<>", 0},
    {"mail one space after colon", S("MAIL FROM: <a@b>"), STP_CMD_MAIL, "<a@b>", 0},
    {"mail two spaces after colon", S("MAIL FROM:  <a@b>"), STP_CMD_MAIL, NULL, 1},
    {"mail spaces before keyword", S("MAIL  FROM:<a@b>"), STP_CMD_MAIL, "<a@b>", 0},
    {"mail lower case", S("mail from:<a@b>"), STP_CMD_MAIL, "<a@b>", 0},
    {"mail unbracketed path", S("MAIL FROM:a@b"), STP_CMD_MAIL, "a@b", 0},
    {"mail utf-8 path", S("MAIL FROM:<\xc3\xbc@b> SMTPUTF8"), STP_CMD_MAIL, "<\xc3\xbc@b> SMTPUTF8",
     0},
    {"mail trailing spaces", S("MAIL FROM:<a@b>   "), STP_CMD_MAIL, "<a@b>", 0},
    {"mail wrong keyword", S("MAIL TO:<a@b>"), STP_CMD_MAIL, NULL, 1},
    {"mail keyword without colon", S("MAIL FROM <a@b>"), STP_CMD_MAIL, NULL, 1},
    {"mail empty path", S("MAIL FROM:"), STP_CMD_MAIL, NULL, 1},
    {"mail only a space after colon", S("MAIL FROM: "), STP_CMD_MAIL, NULL, 1},
    {"mail nothing", S("MAIL"), STP_CMD_MAIL, NULL, 1},
    {"mail truncated keyword", S("MAIL FRO"), STP_CMD_MAIL, NULL, 1},

    {"rcpt", S("RCPT TO:<a@b>"), STP_CMD_RCPT, "<a@b>", 0},
    {"rcpt one space after colon", S("rcpt to: <a@b> NOTIFY=NEVER"), STP_CMD_RCPT,
     "<a@b> NOTIFY=NEVER", 0},
    {"rcpt trailing spaces", S("RCPT TO:<a@b>   "), STP_CMD_RCPT, "<a@b>", 0},
    {"rcpt wrong keyword", S("RCPT FROM:<a@b>"), STP_CMD_RCPT, NULL, 1},
    {"rcpt empty path", S("RCPT TO:"), STP_CMD_RCPT, NULL, 1},
    {"rcpt two spaces after colon", S("RCPT TO:  <a@b>"), STP_CMD_RCPT, NULL, 1},

    {"data", S("DATA"), STP_CMD_DATA, "", 0},
    {"bdat", S("BDAT 100 LAST"), STP_CMD_BDAT, "100 LAST", 0},
    {"rset", S("RSET"), STP_CMD_RSET, "", 0},
    {"noop with argument", S("NOOP hello"), STP_CMD_NOOP, "hello", 0},
    {"quit", S("QUIT"), STP_CMD_QUIT, "", 0},
    {"vrfy", S("VRFY postmaster"), STP_CMD_VRFY, "postmaster", 0},
    {"expn", S("EXPN list"), STP_CMD_EXPN, "list", 0},
    {"help", S("HELP"), STP_CMD_HELP, "", 0},
    {"starttls", S("STARTTLS"), STP_CMD_STARTTLS, "", 0},
    {"starttls trailing space", S("STARTTLS "), STP_CMD_STARTTLS, "", 0},
    {"starttls argument", S("STARTTLS x"), STP_CMD_STARTTLS, "x", 0},
    {"auth", S("AUTH PLAIN AGEAYg=="), STP_CMD_AUTH, "PLAIN AGEAYg==", 0},
    {"xclient", S("XCLIENT ADDR=1.2.3.4"), STP_CMD_XCLIENT, "ADDR=1.2.3.4", 0},
    {"xforward", S("XFORWARD NAME=x"), STP_CMD_XFORWARD, "NAME=x", 0},
    {"etrn", S("ETRN example.com"), STP_CMD_ETRN, "example.com", 0},
    {"turn", S("TURN"), STP_CMD_TURN, "", 0},
    {"atrn", S("ATRN example.com"), STP_CMD_TURN, "example.com", 0},

    {"verb glued to keyword", S("MAILFROM:<a@b>"), STP_CMD_UNKNOWN, NULL, 0},
    {"verb prefix", S("STARTTLSX"), STP_CMD_UNKNOWN, NULL, 0},
    {"unknown verb", S("XEXCH50 1 2"), STP_CMD_UNKNOWN, "1 2", 0},
    {"empty line", S(""), STP_CMD_UNKNOWN, "", 0},
    {"only spaces", S("   "), STP_CMD_UNKNOWN, "", 0},
    {"leading space", S(" NOOP"), STP_CMD_UNKNOWN, NULL, 0},

    {"cr inside", S("NOOP\rRSET"), STP_CMD_UNKNOWN, NULL, 1},
    {"cr at end", S("MAIL FROM:<a@b>\r"), STP_CMD_MAIL, NULL, 1},
    {"cr in argument", S("RCPT TO:<a@b>\rDATA"), STP_CMD_RCPT, NULL, 1},
    {"nul in argument", S("NOOP \0x"), STP_CMD_NOOP, NULL, 1},
    {"nul after verb", S("QUIT\0"), STP_CMD_UNKNOWN, NULL, 1},
    {"nul in path", S("MAIL FROM:<a\0@b>"), STP_CMD_MAIL, NULL, 1},
    {"tab after verb", S("NOOP\tx"), STP_CMD_UNKNOWN, NULL, 1},
    {"8-bit verb", S("N\xc3\x96OP"), STP_CMD_UNKNOWN, NULL, 1},
    {"8-bit byte that folds nowhere", S("\xe9HLO x"), STP_CMD_UNKNOWN, NULL, 1},
};

static int check_one(const cmd_case_t *c, const char *line, size_t len, const char *how)
{
    stp_cmd_t out;
    int before = stp_check_failures;

    stp_cmd_parse(line, len, &out);
    CHECK_EQ_INT(out.verb, c->verb);
    CHECK_EQ_INT(out.malformed, c->malformed);
    /* the argument always lies inside the line, without outer spaces */
    CHECK(out.arg >= line && out.arg + out.arg_len <= line + len);
    CHECK(out.arg_len == 0 || (out.arg[0] != ' ' && out.arg[out.arg_len - 1] != ' '));
    if (c->arg != NULL) {
        CHECK_MEM(out.arg, out.arg_len, c->arg, strlen(c->arg));
    }
    if (stp_check_failures != before) {
        fprintf(stderr, "case '%s' (%s)\n", c->label, how);
        return 0;
    }
    return 1;
}

/* The line followed by CRLF, through the splitter: pieces cut at `cut`,
 * or one byte per call. */
static void through_splitter(const cmd_case_t *c, size_t cut, int bytewise)
{
    char in[256], buf[256];
    stp_line_t l;
    size_t n = c->len + 2, pos = 0, lines = 0;

    memcpy(in, c->line, c->len);
    memcpy(in + c->len, "\r\n", 2);
    stp_line_init(&l, buf, sizeof(buf));
    while (pos < n) {
        size_t end = bytewise ? pos + 1 : (pos < cut ? cut : n);
        while (pos < end) {
            size_t used = 0;
            int rc = stp_line_feed(&l, in + pos, end - pos, &used);
            pos += used;
            if (rc == STP_LINE_DONE) {
                lines++;
                check_one(c, l.buf, l.len, bytewise ? "byte by byte" : "split");
            }
        }
    }
    CHECK_EQ_INT(lines, 1);
}

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const cmd_case_t *c = &cases[i];
        if (!check_one(c, c->line, c->len, "direct")) {
            continue;
        }
        for (size_t cut = 0; cut <= c->len + 2; cut++) {
            through_splitter(c, cut, 0);
        }
        through_splitter(c, 0, 1);
    }
}

static void test_names(void)
{
    static const struct {
        stp_cmd_verb_t verb;
        const char *name;
    } names[] = {
        {STP_CMD_UNKNOWN, "UNKNOWN"}, {STP_CMD_HELO, "HELO"},         {STP_CMD_EHLO, "EHLO"},
        {STP_CMD_MAIL, "MAIL"},       {STP_CMD_RCPT, "RCPT"},         {STP_CMD_DATA, "DATA"},
        {STP_CMD_BDAT, "BDAT"},       {STP_CMD_RSET, "RSET"},         {STP_CMD_NOOP, "NOOP"},
        {STP_CMD_QUIT, "QUIT"},       {STP_CMD_VRFY, "VRFY"},         {STP_CMD_EXPN, "EXPN"},
        {STP_CMD_HELP, "HELP"},       {STP_CMD_STARTTLS, "STARTTLS"}, {STP_CMD_AUTH, "AUTH"},
        {STP_CMD_XCLIENT, "XCLIENT"}, {STP_CMD_XFORWARD, "XFORWARD"}, {STP_CMD_ETRN, "ETRN"},
        {STP_CMD_TURN, "TURN"},       {STP_CMD__COUNT, "UNKNOWN"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        CHECK_STR(stp_cmd_name(names[i].verb), names[i].name);
    }
}

/* Every verb's own name parses back to the verb, in any case. */
static void test_names_round_trip(void)
{
    for (int v = STP_CMD_HELO; v < STP_CMD__COUNT; v++) {
        const char *name = stp_cmd_name((stp_cmd_verb_t)v);
        char lower[16];
        size_t n = strlen(name);
        stp_cmd_t out;
        for (size_t i = 0; i <= n; i++) {
            lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
        }
        stp_cmd_parse(lower, n, &out);
        CHECK_EQ_INT(out.verb, v);
    }
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_names);
    STP_RUN(test_names_round_trip);
    return STP_CHECK_DONE();
}
