/* log_test: escaping and truncation of peer bytes before they reach a log,
 * and the JSON form of a line. */
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

/* The JSON members of one event: what follows "level":"...", without the
 * closing brace and newline. */
static const char *json_members(const char *fmt_msg)
{
    static stp_capture_t cap;
    static char body[4096];
    stp_capture_begin(&cap);
    stp_log_init(STP_LOG_JSON, STP_LOG_INFO);
    stp_log(STP_LOG_WARN, "%s", fmt_msg);
    const char *out = stp_capture_end(&cap);
    const char *b = strstr(out, "\"level\":\"warn\",");
    if (b == NULL) {
        return out;
    }
    b += strlen("\"level\":\"warn\",");
    size_t n = strlen(b);
    CHECK(n >= 2 && strcmp(b + n - 2, "}\n") == 0);
    snprintf(body, sizeof(body), "%.*s", (int)(n >= 2 ? n - 2 : 0), b);
    return body;
}

/* Text that is not key=value (the start-up warnings' sentences) goes whole
 * into "msg", never into a made-up key or nowhere; quoted values keep their
 * spaces and '='. */
static void test_json_free_text(void)
{
    static const struct {
        const char *label;
        const char *in;
        const char *want;
    } cases[] = {
        {"privileges warning",
         "privileges WARNING: still running as root after start-up; set the [proxy] keys user",
         "\"event\":\"privileges\",\"msg\":\"WARNING: still running as root after start-up; set "
         "the [proxy] keys user\""},
        {"dnssec warning",
         "dnssec WARNING: DANE is configured (tls = dane or dane-only) but the resolver "
         "127.0.0.1:53 does not validate DNSSEC: no AD bit",
         "\"event\":\"dnssec\",\"msg\":\"WARNING: DANE is configured (tls = dane or dane-only) "
         "but the resolver 127.0.0.1:53 does not validate DNSSEC: no AD bit\""},
        {"keys then text", "stop worker=1 grace period over",
         "\"event\":\"stop\",\"worker\":\"1 grace period over\""},
        {"text between keys", "cert file=a.pem not readable result=failed",
         "\"event\":\"cert\",\"file\":\"a.pem not readable\",\"result\":\"failed\""},
        {"quoted with equals", "backend id=1 error=\"a b=c \\\"d\" code=4",
         "\"event\":\"backend\",\"id\":\"1\",\"error\":\"a b=c \\\\\\\"d\",\"code\":\"4\""},
        {"empty value", "x a= b=2", "\"event\":\"x\",\"a\":\"\",\"b\":\"2\""},
        {"quoted last", "x reason=\"421 4.3.2 bye\"",
         "\"event\":\"x\",\"reason\":\"421 4.3.2 bye\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = json_members(cases[i].in);
        if (strcmp(got, cases[i].want) != 0) {
            fprintf(stderr, "case %s\n", cases[i].label);
        }
        CHECK_STR(got, cases[i].want);
    }
}

/* The longest event, all of it characters JSON escapes, is still one
 * whole JSON object: never cut inside a string. */
static void test_json_worst_case_is_whole(void)
{
    static char worst[2100];
    static stp_capture_t cap;
    memcpy(worst, "x a=", 4);
    for (size_t i = 4; i < sizeof(worst) - 1; i++) {
        worst[i] = i % 2 ? '\\' : '"';
    }
    worst[sizeof(worst) - 1] = '\0';
    stp_capture_begin(&cap);
    stp_log_init(STP_LOG_JSON, STP_LOG_INFO);
    stp_log(STP_LOG_WARN, "%s", worst);
    const char *out = stp_capture_end(&cap);
    size_t n = strlen(out);
    CHECK(n > 4000);
    CHECK(n >= 3 && strcmp(out + n - 3, "\"}\n") == 0);
    /* every '"' inside the value is escaped: count unescaped quotes */
    size_t quotes = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i] == '\\') {
            i++;
        } else if (out[i] == '"') {
            quotes++;
        }
    }
    CHECK(quotes % 2 == 0);
}

static void test_ratelimit(void)
{
    stp_log_ratelimit_t r = {0};
    unsigned quiet = 99;
    CHECK(stp_log_allow(&r, 0, &quiet)); /* the first, even at time 0 */
    CHECK_EQ_INT(quiet, 0);
    for (uint64_t t = 1; t < 1000; t += 10) {
        CHECK(!stp_log_allow(&r, t, &quiet));
    }
    CHECK(stp_log_allow(&r, 1000, &quiet)); /* a second later, with the count */
    CHECK_EQ_INT(quiet, 100);
    CHECK(!stp_log_allow(&r, 1999, &quiet));
    CHECK(stp_log_allow(&r, 5000, &quiet));
    CHECK_EQ_INT(quiet, 1);
}

int main(void)
{
    STP_RUN(test_ratelimit);
    STP_RUN(test_json_worst_case_is_whole);
    STP_RUN(test_escape);
    STP_RUN(test_one_event_one_line);
    STP_RUN(test_json_free_text);
    return STP_CHECK_DONE();
}
