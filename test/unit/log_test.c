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

int main(void)
{
    STP_RUN(test_escape);
    return STP_CHECK_DONE();
}
