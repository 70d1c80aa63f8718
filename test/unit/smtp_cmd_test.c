/* smtp_cmd_test: verbs, arguments and malformed commands. */
#include <string.h>

#include "proxy/smtp_cmd.h"
#include "test/unit/check.h"

static void test_table(void)
{
    static const struct {
        const char *label, *line;
        stp_cmd_verb_t verb;
        const char *arg;
        int malformed;
    } cases[] = {
        {"ehlo", "EHLO client.example", STP_CMD_EHLO, "client.example", 0},
        {"lower case", "ehlo x", STP_CMD_EHLO, "x", 0},
        {"helo", "HELO x", STP_CMD_HELO, "x", 0},
        {"mail", "MAIL FROM:<a@b> SIZE=10", STP_CMD_MAIL, "<a@b> SIZE=10", 0},
        {"mail space after colon", "MAIL FROM: <a@b>", STP_CMD_MAIL, "<a@b>", 0},
        {"mail mixed case", "mail from:<a@b>", STP_CMD_MAIL, "<a@b>", 0},
        {"mail wrong keyword", "MAIL TO:<a@b>", STP_CMD_MAIL, "", 1},
        {"mail nothing", "MAIL", STP_CMD_MAIL, "", 1},
        {"rcpt", "RCPT TO:<a@b>", STP_CMD_RCPT, "<a@b>", 0},
        {"rcpt trailing spaces", "RCPT TO:<a@b>   ", STP_CMD_RCPT, "<a@b>", 0},
        {"data", "DATA", STP_CMD_DATA, "", 0},
        {"bdat", "BDAT 100 LAST", STP_CMD_BDAT, "100 LAST", 0},
        {"starttls", "STARTTLS", STP_CMD_STARTTLS, "", 0},
        {"starttls arg", "STARTTLS x", STP_CMD_STARTTLS, "x", 0},
        {"auth", "AUTH PLAIN AGEAYg==", STP_CMD_AUTH, "PLAIN AGEAYg==", 0},
        {"xclient", "XCLIENT ADDR=1.2.3.4", STP_CMD_XCLIENT, "ADDR=1.2.3.4", 0},
        {"xforward", "XFORWARD NAME=x", STP_CMD_XFORWARD, "NAME=x", 0},
        {"quit", "QUIT", STP_CMD_QUIT, "", 0},
        {"rset noop vrfy", "VRFY postmaster", STP_CMD_VRFY, "postmaster", 0},
        {"turn", "TURN", STP_CMD_TURN, "", 0},
        {"atrn", "ATRN example.com", STP_CMD_TURN, "example.com", 0},
        {"verb glued", "MAILFROM:<a@b>", STP_CMD_UNKNOWN, "", 0},
        {"unknown", "XEXCH50 1 2", STP_CMD_UNKNOWN, "", 0},
        {"empty", "", STP_CMD_UNKNOWN, "", 0},
        {"cr inside", "NOOP\rRSET", STP_CMD_UNKNOWN, "", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stp_cmd_t c;
        stp_cmd_parse(cases[i].line, strlen(cases[i].line), &c);
        if (c.verb != cases[i].verb || c.malformed != cases[i].malformed) {
            fprintf(stderr, "case '%s'\n", cases[i].label);
        }
        CHECK_EQ_INT(c.verb, cases[i].verb);
        CHECK_EQ_INT(c.malformed, cases[i].malformed);
        if (!cases[i].malformed && cases[i].verb != STP_CMD_UNKNOWN) {
            CHECK_MEM(c.arg, c.arg_len, cases[i].arg, strlen(cases[i].arg));
        }
    }
}

static void test_nul_is_malformed(void)
{
    stp_cmd_t c;
    stp_cmd_parse("NOOP \0x", 7, &c);
    CHECK_EQ_INT(c.verb, STP_CMD_NOOP);
    CHECK_EQ_INT(c.malformed, 1);
}

static void test_names(void)
{
    CHECK_STR(stp_cmd_name(STP_CMD_MAIL), "MAIL");
    CHECK_STR(stp_cmd_name(STP_CMD_STARTTLS), "STARTTLS");
    CHECK_STR(stp_cmd_name(STP_CMD_UNKNOWN), "UNKNOWN");
}

int main(void)
{
    STP_RUN(test_table);
    STP_RUN(test_nul_is_malformed);
    STP_RUN(test_names);
    return STP_CHECK_DONE();
}
