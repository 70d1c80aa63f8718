/* log_test: escaping and truncation of peer bytes before they reach a log. */
#include <string.h>

#include "proxy/log.h"
#include "test/unit/check.h"

static void test_escape(void)
{
    static const struct {
        const char *label;
        const char *in;
        size_t len;
        size_t cap;
        const char *want;
    } cases[] = {
        {"plain", "hello", 5, 64, "hello"},
        {"crlf", "a\r\nb", 4, 64, "a\\x0d\\x0ab"},
        {"quote and equals", "k=\"v\"", 5, 64, "k\\x3d\\x22v\\x22"},
        {"nul and high", "\0\xff", 2, 64, "\\x00\\xff"},
        {"truncated", "abcdefghijklmnopqrstuvwxyz", 26, 12, "abcdefgh..."},
        {"truncated mid escape", "\r\r\r\r\r\r", 6, 12, "\\x0d\\x0d..."},
        {"empty", "", 0, 8, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        stp_log_escape(out, cases[i].cap, cases[i].in, cases[i].len);
        if (strcmp(out, cases[i].want) != 0) {
            fprintf(stderr, "case %s\n", cases[i].label);
        }
        CHECK_STR(out, cases[i].want);
        CHECK(strlen(out) < cases[i].cap);
    }
}

/* What stp_log writes to stderr for one event. */
static const char *logged(stp_log_format_t format, const char *reason)
{
    static stp_capture_t cap;
    stp_capture_begin(&cap);
    stp_log_init(format, STP_LOG_INFO);
    stp_log(STP_LOG_INFO, "message id=1 result=refused reason=\"%s\"", reason);
    return stp_capture_end(&cap);
}

/* Control bytes that reach stp_log unescaped (a reply's CRLF) never split
 * the event's line, in text or JSON. */
static void test_one_event_one_line(void)
{
    const char *reason = "552 5.3.4 too big\r\n\x1b[31m\t";
    for (int json = 0; json < 2; json++) {
        const char *out = logged(json ? STP_LOG_JSON : STP_LOG_TEXT, reason);
        size_t len = strlen(out);
        CHECK(len > 0 && out[len - 1] == '\n');
        CHECK(strchr(out, '\n') == out + len - 1);
        for (size_t i = 0; i + 1 < len; i++) {
            CHECK((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
        }
        CHECK(strstr(out, json ? "\"reason\":\"552 5.3.4 too big??" : "reason=\"552 5.3.4 too big??") !=
              NULL);
    }
}

int main(void)
{
    STP_RUN(test_escape);
    STP_RUN(test_one_event_one_line);
    return STP_CHECK_DONE();
}
