/*
 * config_test: the INI loader as a specification. Each table row is a file
 * and what the loader must say about it: nothing (it loads) or exactly these
 * "FILE:LINE: message" lines, no more. Then defaults and parsed values,
 * durations and sizes, loading from a file, the example configuration, and
 * the file cut at every byte.
 *
 * The test runs in a fresh temporary directory holding the files the
 * configurations name (cert.pem, key.pem, ca.pem, ...), since relative paths
 * are relative to the working directory.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "proxy/config.h"
#include "test/unit/check.h"

#define MAX_EXPECT 4

typedef struct {
    const char *label;
    const char *ini;
    const char *errors[MAX_EXPECT]; /* none: the file must load */
} config_case_t;

static char errbuf[16384];
static char *example_text; /* deploy/smtp-tls-proxy.example.ini, if found */

/* Lines 1-4: the smallest valid inbound listener. */
#define MX "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n"
/* Lines 1-4: the smallest valid outbound listener. */
#define OUT                                                                                        \
    "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\nroute = relay:192.0.2.1:587\n"
/* Three lines: one certificate pair. */
#define TLS "[tls]\ncert = cert.pem\nkey = key.pem\n"

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

static void run_cases(const config_case_t *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const config_case_t *c = &cases[i];
        size_t nexp = 0;
        while (nexp < MAX_EXPECT && c->errors[nexp]) {
            nexp++;
        }
        stp_config_t *cf = stp_config_load_string(c->ini, "t.ini", errbuf, sizeof(errbuf));
        int ok;
        if (nexp == 0) {
            ok = cf != NULL && errbuf[0] == '\0';
        } else {
            ok = cf == NULL && count_lines(errbuf) == nexp;
            for (size_t k = 0; k < nexp; k++) {
                if (strstr(errbuf, c->errors[k]) == NULL) {
                    fprintf(stderr, "  missing: %s\n", c->errors[k]);
                    ok = 0;
                }
            }
        }
        if (!ok) {
            fprintf(stderr, "case \"%s\": expected %zu error(s), got:\n%s", c->label, nexp,
                    errbuf[0] ? errbuf : "(nothing)\n");
        }
        CHECK(ok);
        stp_config_free(cf);
    }
}

#define RUN_CASES(t) run_cases((t), sizeof(t) / sizeof((t)[0]))

/* Loads text that must be valid; NULL (and a failed check) otherwise. */
static stp_config_t *load_ok(const char *ini)
{
    stp_config_t *cf = stp_config_load_string(ini, "t.ini", errbuf, sizeof(errbuf));
    if (cf == NULL) {
        fprintf(stderr, "unexpected errors:\n%s", errbuf);
    }
    CHECK(cf != NULL);
    return cf;
}

/* ---- syntax, sections, keys ---- */

static void test_syntax(void)
{
    static const config_case_t cases[] = {
        {"minimal inbound", MX, {NULL}},
        {"minimal outbound", OUT, {NULL}},
        {"comments, blank lines, indentation",
         "; comment\n# comment\n\n  [listener:mx]   ; trailing comment\n\tmode = inbound ; why\n"
         "   listen=127.0.0.1:2525\nbackend   =   127.0.0.1:2526   \n",
         {NULL}},
        {"colon as separator",
         "[listener:mx]\nmode: inbound\nlisten: 127.0.0.1:2525\n"
         "backend: 127.0.0.1:2526\n",
         {NULL}},
        {"CRLF line ends",
         "[listener:mx]\r\nmode = inbound\r\nlisten = 127.0.0.1:2525\r\nbackend = "
         "127.0.0.1:2526\r\n",
         {NULL}},
        {"byte order mark", "\xef\xbb\xbf" MX, {NULL}},
        {"no newline at the end",
         "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526",
         {NULL}},
        {"spaces inside the brackets",
         "[ listener:mx ]\nmode = inbound\n"
         "listen = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n",
         {NULL}},
        {"an indented line is a key, not a continuation",
         MX "  starttls = offer\n  trace_header = no\n",
         {NULL}},
        {"key outside of any section",
         "workers = 2\n" MX,
         {"t.ini:1: key 'workers' outside of any section"}},
        {"line without '='",
         MX "garbage\n",
         {"t.ini:5: expected 'key = value', '[section]' or a comment, not 'garbage'"}},
        {"continuation line",
         MX "allow = 10.0.0.0/8,\n  192.168.0.0/16\n",
         {"t.ini:5: key 'allow' is only valid for mode = outbound",
          "t.ini:5: bad value '10.0.0.0/8,' for 'allow' in [listener:mx]: expected a "
          "comma-separated list such as 127.0.0.1/32, ::1/128",
          "t.ini:6: expected 'key = value', '[section]' or a comment, not '192.168.0.0/16'"}},
        {"inline comment hides the '='",
         MX "starttls ; = offer\n",
         {"t.ini:5: expected 'key = value', '[section]' or a comment, not 'starttls ; = offer'"}},
        {"missing key name", MX "= inbound\n", {"t.ini:5: missing key name before '='"}},
        {"missing ']' skips the section",
         MX "[proxy\nworkers = 0\n",
         {"t.ini:5: missing ']' in section header '[proxy'"}},
        {"text after ']'",
         MX "[proxy] workers = 2\n",
         {"t.ini:5: unexpected text after ']' in section header '[proxy] workers = 2'"}},
        {"line too long",
         MX "[proxy]\nhostname = "
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
         {"t.ini:6: line too long (at most "}},
        {"control characters are escaped",
         MX "[proxy]\nlog_format = te\x01xt\\\n",
         {"t.ini:6: bad value 'te\\x01xt\\x5c' for 'log_format' in [proxy]: expected text or "
          "json"}},
        {"long values are cut in messages",
         MX
         "[proxy]\nlog_format = "
         "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
         "89\n",
         {"t.ini:6: bad value '01234567890123456789012345678901234567890123456789012345678901234567"
          "890123456789...' for 'log_format'"}},
    };
    RUN_CASES(cases);
}

static void test_sections(void)
{
    static const config_case_t cases[] = {
        {"unknown section and its keys",
         MX "[policies]\ntls = secure\n",
         {"t.ini:5: unknown section [policies] (expected [proxy], [tls], [listener:NAME] or "
          "[policy:DOMAIN])"}},
        {"section names are case-sensitive", MX "[Proxy]\n", {"t.ini:5: unknown section [Proxy]"}},
        {"duplicate section",
         MX "[proxy]\nworkers = 2\n[proxy]\nlog_level = warn\n",
         {"t.ini:7: duplicate section [proxy] (first at line 5)"}},
        {"duplicate key across a repeated section",
         MX "[tls]\nmin_version = 1.2\n[tls]\n"
            "min_version = 1.3\n",
         {"t.ini:7: duplicate section [tls] (first at line 5)",
          "t.ini:8: duplicate key 'min_version' in [tls] (first at line 6)"}},
        {"unknown key in [proxy]",
         MX "[proxy]\nmetric = 127.0.0.1:9925\n",
         {"t.ini:6: unknown key 'metric' in [proxy]"}},
        {"unknown key in [tls]",
         MX "[tls]\ncertificate = cert.pem\n",
         {"t.ini:6: unknown key 'certificate' in [tls]"}},
        {"unknown key in a listener",
         MX "colour = blue\n",
         {"t.ini:5: unknown key 'colour' in [listener:mx]"}},
        {"keys are case-sensitive",
         MX "StartTLS = offer\n",
         {"t.ini:5: unknown key 'StartTLS' in [listener:mx]"}},
        {"duplicate key",
         MX "mode = inbound\n",
         {"t.ini:5: duplicate key 'mode' in [listener:mx] (first at line 2)"}},
        {"duplicate listener name",
         MX "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1:2527\n"
            "backend = 127.0.0.1:2526\n",
         {"t.ini:5: duplicate listener name 'mx' (first at line 1)"}},
        {"listener names",
         "[listener:A-z_0.9]\nmode = inbound\nlisten = 127.0.0.1:2525\n"
         "backend = 127.0.0.1:2526\n",
         {NULL}},
        {"bad listener name",
         "[listener:a b]\nmode = inbound\nlisten = 127.0.0.1:2525\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:1: bad listener name 'a b': expected up to 63 letters, digits, '_', '.' or '-'"}},
        {"empty listener name",
         "[listener:]\nmode = inbound\nlisten = 127.0.0.1:2525\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:1: bad listener name '': expected"}},
        {"listener name of 64 characters",
         "[listener:0123456789012345678901234567890123456789012345678901234567890123]\n"
         "mode = inbound\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\n",
         {"t.ini:1: bad listener name '0123456789012345678901234567890123456789012345678901234567"
          "890123'"}},
        {"no listener",
         "[proxy]\nworkers = 2\n",
         {"t.ini: no [listener:NAME] section: nothing to do"}},
        {"empty file", "", {"t.ini: no [listener:NAME] section: nothing to do"}},
        {"only comments",
         "; nothing\n\n# here\n",
         {"t.ini: no [listener:NAME] section: nothing to do"}},
    };
    RUN_CASES(cases);
}

/* ---- required and mode-specific keys ---- */

static void test_required_and_modes(void)
{
    static const config_case_t cases[] = {
        {"empty listener section",
         "[listener:mx]\n" OUT,
         {"t.ini:1: missing required key 'mode' in [listener:mx]",
          "t.ini:1: missing required key 'listen' in [listener:mx]"}},
        {"missing mode",
         "[listener:mx]\nlisten = 127.0.0.1:2525\n",
         {"t.ini:1: missing required key 'mode' in [listener:mx]"}},
        {"missing listen",
         "[listener:mx]\nmode = inbound\nbackend = 127.0.0.1:2526\n",
         {"t.ini:1: missing required key 'listen' in [listener:mx]"}},
        {"missing backend",
         "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1:2525\n",
         {"t.ini:1: missing required key 'backend' in [listener:mx]"}},
        {"missing route",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n",
         {"t.ini:1: missing required key 'route' in [listener:out]"}},
        {"missing keys reported at each header",
         MX "[listener:b]\nmode = outbound\n",
         {"t.ini:5: missing required key 'listen' in [listener:b]",
          "t.ini:5: missing required key 'route' in [listener:b]"}},
        {"mode after the other keys",
         "[listener:mx]\nbackend = 127.0.0.1:2526\n"
         "listen = 127.0.0.1:2525\nstarttls = offer\nmode = inbound\n",
         {NULL}},
        {"outbound keys in an inbound listener",
         MX "route = mx\nallow = 10.0.0.0/8\ntls = may\n"
            "servername = a.example\n",
         {"t.ini:5: key 'route' is only valid for mode = outbound",
          "t.ini:6: key 'allow' is only valid for mode = outbound",
          "t.ini:7: key 'tls' is only valid for mode = outbound",
          "t.ini:8: key 'servername' is only valid for mode = outbound"}},
        {"more outbound keys in an inbound listener",
         MX "ca_file = ca.pem\ntesting = no\n"
            "on_failure = defer\n",
         {"t.ini:5: key 'ca_file' is only valid for mode = outbound",
          "t.ini:6: key 'testing' is only valid for mode = outbound",
          "t.ini:7: key 'on_failure' is only valid for mode = outbound"}},
        {"inbound keys in an outbound listener",
         OUT "backend = 127.0.0.1:2526\nstarttls = offer\nhide_auth_before_tls = yes\n"
             "bare_newlines = reject\n",
         {"t.ini:5: key 'backend' is only valid for mode = inbound",
          "t.ini:6: key 'starttls' is only valid for mode = inbound",
          "t.ini:7: key 'hide_auth_before_tls' is only valid for mode = inbound",
          "t.ini:8: key 'bare_newlines' is only valid for mode = inbound"}},
        {"trace_header is inbound",
         OUT "trace_header = yes\n",
         {"t.ini:5: key 'trace_header' is only valid for mode = inbound"}},
        {"proxy_protocol with proxy_from",
         MX "proxy_protocol = yes\nproxy_from = 10.0.0.0/8, ::1\nproxy_from = 192.0.2.7\n", {NULL}},
        {"proxy_from without proxy_protocol",
         MX "proxy_from = 10.0.0.0/8\n",
         {"t.ini:5: proxy_from without proxy_protocol = yes does nothing"}},
        {"proxy_protocol needs proxy_from",
         MX "proxy_protocol = yes\n",
         {"t.ini:5: proxy_protocol = yes needs 'proxy_from'"}},
        {"proxy_from bad cidr",
         MX "proxy_protocol = yes\nproxy_from = 10.0.0.1/8\n",
         {"t.ini:5: proxy_protocol = yes needs 'proxy_from'",
          "t.ini:6: bad value '10.0.0.1/8' for 'proxy_from'"}},
        {"xclient yes",
         MX "xclient = yes\n", {NULL}},
        {"xclient bad value",
         MX "xclient = maybe\n",
         {"t.ini:5: bad value 'maybe' for 'xclient'"}},
        {"xclient is inbound",
         OUT "xclient = yes\n",
         {"t.ini:5: key 'xclient' is only valid for mode = inbound"}},
        {"proxy_protocol is inbound",
         OUT "proxy_protocol = no\n",
         {"t.ini:5: key 'proxy_protocol' is only valid for mode = inbound"}},
        {"mode decided late still checks earlier keys",
         "[listener:mx]\nbackend = 127.0.0.1:2526\nlisten = 127.0.0.1:2525\nroute = mx\n"
         "mode = outbound\n",
         {"t.ini:2: key 'backend' is only valid for mode = inbound"}},
        {"bad mode: no mode-specific checks",
         "[listener:mx]\nmode = sideways\n"
         "listen = 127.0.0.1:2525\nroute = mx\n",
         {"t.ini:2: bad value 'sideways' for 'mode' in [listener:mx]: expected inbound or "
          "outbound"}},
        {"limits are valid in both modes",
         OUT "max_line_length = 1k\nidle_timeout = 1m\n[listener:mx]\nmode = inbound\n"
             "listen = 127.0.0.1:2525\nbackend = 127.0.0.1:2526\nmax_connections = 5\n",
         {NULL}},
    };
    RUN_CASES(cases);
}

/* ---- every key, good and bad values ---- */

static void test_proxy_keys(void)
{
    static const config_case_t cases[] = {
        {"proxy keys",
         MX "[proxy]\nhostname = mx.example.com\nworkers = 8\nlog_format = json\n"
            "log_level = debug\n",
         {NULL}},
        {"workers auto", MX "[proxy]\nworkers = auto\n", {NULL}},
        {"user and group that exist", MX "[proxy]\nuser = root\ngroup = root\n", {NULL}},
        /* passed --check before, then failed at start without a line */
        {"unknown user and group",
         MX "[proxy]\nuser = no-such-user-stp\ngroup = no-such-group-stp\n",
         {"t.ini:6: unknown user 'no-such-user-stp'",
          "t.ini:7: unknown group 'no-such-group-stp'"}},
        {"metrics and syslog",
         MX "[proxy]\nmetrics = 127.0.0.1:9925\nlog_target = syslog\n", {NULL}},
        {"metrics ipv6", MX "[proxy]\nmetrics = [::1]:9925\n", {NULL}},
        {"metrics on a listener's address",
         MX "[proxy]\nmetrics = 127.0.0.1:2525\n",
         {"t.ini:6: metrics address overlaps the listen address of [listener:mx] (line 3)"}},
        {"metrics on a wildcard listener's port",
         "[listener:mx]\nmode = inbound\nlisten = 0.0.0.0:2525\nbackend = 127.0.0.1:2526\n"
         "[proxy]\nmetrics = 127.0.0.1:2525\n",
         {"t.ini:6: metrics address overlaps the listen address of [listener:mx] (line 3)"}},
        {"metrics on another port", MX "[proxy]\nmetrics = 127.0.0.1:2526\n", {NULL}},
        {"metrics without port",
         MX "[proxy]\nmetrics = 127.0.0.1\n",
         {"t.ini:6: bad value '127.0.0.1' for 'metrics' in [proxy]"}},
        {"log_target unknown",
         MX "[proxy]\nlog_target = file\n",
         {"t.ini:6: bad value 'file' for 'log_target' in [proxy]: expected stderr or syslog"}},
        {"workers bounds", MX "[proxy]\nworkers = 256\n", {NULL}},
        {"workers 0",
         MX "[proxy]\nworkers = 0\n",
         {"t.ini:6: bad value '0' for 'workers' in [proxy]: expected auto or a number from 1 to "
          "256"}},
        {"workers too many",
         MX "[proxy]\nworkers = 257\n",
         {"t.ini:6: bad value '257' for 'workers' in [proxy]: expected auto or a number"}},
        {"workers words",
         MX "[proxy]\nworkers = many\n",
         {"t.ini:6: bad value 'many' for 'workers' in [proxy]"}},
        {"workers negative",
         MX "[proxy]\nworkers = -1\n",
         {"t.ini:6: bad value '-1' for 'workers' in [proxy]"}},
        {"hostname with a space",
         MX "[proxy]\nhostname = mx example\n",
         {"t.ini:6: bad value 'mx example' for 'hostname' in [proxy]: expected a host name "
          "(letters, digits, '-', '_' and '.', no trailing dot)"}},
        {"hostname with a trailing dot",
         MX "[proxy]\nhostname = mx.example.com.\n",
         {"t.ini:6: bad value 'mx.example.com.' for 'hostname' in [proxy]: expected a host name"}},
        {"hostname label ending in '-'",
         MX "[proxy]\nhostname = mx-.example.com\n",
         {"t.ini:6: bad value 'mx-.example.com' for 'hostname'"}},
        {"hostname label beginning with '-'",
         MX "[proxy]\nhostname = mx.-example.com\n",
         {"t.ini:6: bad value 'mx.-example.com' for 'hostname'"}},
        {"servername with a trailing dot",
         OUT "servername = relay.example.com.\n",
         {"t.ini:5: bad value 'relay.example.com.' for 'servername' in [listener:out]"}},
        {"relay host with a trailing dot",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = relay:relay.example.com.:587\n",
         {"t.ini:4: bad value"}},
        {"hostname empty",
         MX "[proxy]\nhostname =\n",
         {"t.ini:6: bad value '' for 'hostname' in [proxy]"}},
        {"hostname label of 64",
         MX "[proxy]\nhostname = mx." "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" ".example\n",
         {"t.ini:6: bad value 'mx.aaaa"}},
        {"hostname label of 63",
         MX "[proxy]\nhostname = mx." "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" ".example\n",
         {NULL}},
        {"hostname empty label",
         MX "[proxy]\nhostname = mx..example\n",
         {"t.ini:6: bad value 'mx..example' for 'hostname'"}},
        {"log_format",
         MX "[proxy]\nlog_format = xml\n",
         {"t.ini:6: bad value 'xml' for 'log_format' in [proxy]: expected text or json"}},
        {"log_format is case-sensitive",
         MX "[proxy]\nlog_format = JSON\n",
         {"t.ini:6: bad value 'JSON' for 'log_format'"}},
        {"log_level",
         MX "[proxy]\nlog_level = trace\n",
         {"t.ini:6: bad value 'trace' for 'log_level' in [proxy]: expected error, warn, info or "
          "debug"}},
        {"log levels", MX "[proxy]\nlog_level = error\n", {NULL}},
    };
    RUN_CASES(cases);
}

static void test_dns_keys(void)
{
    static const config_case_t cases[] = {
        {"dns keys",
         MX "[proxy]\nresolver = 127.0.0.1:5353\ndns_timeout = 3s\ndnssec_probe = example.test\n",
         {NULL}},
        {"resolver ipv6", MX "[proxy]\nresolver = [::1]:53\n", {NULL}},
        {"resolver by name",
         MX "[proxy]\nresolver = localhost:53\n",
         {"t.ini:6: bad value 'localhost:53' for 'resolver' in [proxy]: expected an IP address "
          "and port, as in 127.0.0.1:53 or [::1]:53 (not a host name)"}},
        {"resolver without port",
         MX "[proxy]\nresolver = 127.0.0.1\n",
         {"t.ini:6: bad value '127.0.0.1' for 'resolver' in [proxy]: expected HOST:PORT"}},
        {"resolver port 0",
         MX "[proxy]\nresolver = 127.0.0.1:0\n",
         {"t.ini:6: bad value '127.0.0.1:0' for 'resolver' in [proxy]: expected a port"}},
        {"dns_timeout 0",
         MX "[proxy]\ndns_timeout = 0\n",
         {"t.ini:6: bad value '0' for 'dns_timeout' in [proxy]"}},
        {"dnssec_probe not a name",
         MX "[proxy]\ndnssec_probe = a b\n",
         {"t.ini:6: bad value 'a b' for 'dnssec_probe' in [proxy]: expected a host name"}},
    };
    RUN_CASES(cases);
    stp_config_t *cf = load_ok(MX "[proxy]\nresolver = [::1]:5353\ndns_timeout = 2500ms\n");
    if (cf != NULL) {
        CHECK_STR(cf->resolver, "[::1]:5353");
        CHECK_EQ_INT(cf->dns_timeout, 2500);
        CHECK_STR(cf->dnssec_probe, "");
        stp_config_free(cf);
    }
    cf = load_ok(MX);
    if (cf != NULL) {
        CHECK_STR(cf->resolver, "");
        CHECK_EQ_INT(cf->dns_timeout, 10000);
        stp_config_free(cf);
    }
}

static void test_tls_keys(void)
{
    static const config_case_t cases[] = {
        {"one pair", MX TLS, {NULL}},
        {"two pairs",
         MX "[tls]\ncert = cert.pem\nkey = key.pem\ncert = cert2.pem\nkey = key2.pem\n",
         {NULL}},
        {"cert with the key inside",
         MX "[tls]\ncert = cert.pem\ncert = cert2.pem\nkey = key2.pem\n",
         {NULL}},
        {"min_version 1.3 and ca_file", MX TLS "min_version = 1.3\nca_file = ca.pem\n", {NULL}},
        {"empty ca_file is the system store", MX "[tls]\nca_file =\n", {NULL}},
        {"min_version",
         MX "[tls]\nmin_version = 1.1\n",
         {"t.ini:6: bad value '1.1' for 'min_version' in [tls]: expected 1.2 or 1.3"}},
        {"min_version TLSv1.3",
         MX "[tls]\nmin_version = TLSv1.3\n",
         {"t.ini:6: bad value 'TLSv1.3' for 'min_version'"}},
        {"missing cert file",
         MX "[tls]\ncert = nope.pem\nkey = key.pem\n",
         {"t.ini:6: cannot read cert 'nope.pem': No such file or directory"}},
        {"missing key file",
         MX "[tls]\ncert = cert.pem\nkey = nope.key\n",
         {"t.ini:7: cannot read key 'nope.key': No such file or directory"}},
        {"cert is a directory",
         MX "[tls]\ncert = adir\n",
         {"t.ini:6: cannot read cert 'adir': Is a directory"}},
        {"missing ca_file",
         MX "[tls]\nca_file = /nonexistent/ca.pem\n",
         {"t.ini:6: cannot read ca_file '/nonexistent/ca.pem': No such file or directory"}},
        {"key without cert",
         MX "[tls]\nkey = key.pem\n",
         {"t.ini:6: 'key' without a 'cert' before it in [tls]"}},
        {"second key for one cert",
         MX "[tls]\ncert = cert.pem\nkey = key.pem\nkey = key2.pem\n",
         {"t.ini:8: 'key' without a 'cert' before it in [tls] (each key follows its own cert)"}},
        {"empty cert",
         MX "[tls]\ncert =\nkey = key.pem\n",
         {"t.ini:6: bad value '' for 'cert' in [tls]: expected the path of a PEM certificate "
          "chain"}},
        {"empty key",
         MX "[tls]\ncert = cert.pem\nkey =\n",
         {"t.ini:7: bad value '' for 'key' in [tls]: expected the path of a PEM private key"}},
        {"eight pairs",
         MX "[tls]\ncert = cert.pem\ncert = cert.pem\ncert = cert.pem\n"
            "cert = cert.pem\ncert = cert.pem\ncert = cert.pem\ncert = cert.pem\n"
            "cert = cert.pem\n",
         {NULL}},
        {"nine pairs",
         MX "[tls]\ncert = cert.pem\ncert = cert.pem\ncert = cert.pem\n"
            "cert = cert.pem\ncert = cert.pem\ncert = cert.pem\ncert = cert.pem\n"
            "cert = cert.pem\ncert = cert.pem\nkey = key.pem\n",
         {"t.ini:14: too many 'cert' entries in [tls] (at most 8)",
          "t.ini:15: 'key' without a 'cert' before it in [tls]"}},
    };
    RUN_CASES(cases);
}

static void test_inbound_keys(void)
{
    static const config_case_t cases[] = {
        {"every inbound key",
         MX "starttls = require\nhide_auth_before_tls = yes\n"
            "bare_newlines = normalize\ntrace_header = no\n" TLS,
         {NULL}},
        {"hide_auth_before_tls = no on an implicit listener (never before TLS)",
         MX "hide_auth_before_tls = no\nstarttls = implicit\n" TLS,
         {NULL}},
        {"hide_auth_before_tls = no",
         MX "hide_auth_before_tls = no\n",
         {"t.ini:5: hide_auth_before_tls = no would advertise AUTH where it is refused: before "
          "TLS every AUTH gets 530 5.7.0 (no password crosses in plaintext)"}},
        {"starttls implicit", MX "starttls = implicit\n" TLS, {NULL}},
        {"starttls offer without a cert", MX "starttls = offer\n", {NULL}},
        {"[tls] may come after the listener", MX "starttls = require\n" TLS, {NULL}},
        {"starttls require needs a cert",
         MX "starttls = require\n",
         {"t.ini:5: starttls = require needs a certificate: add 'cert' and 'key' to [tls]"}},
        {"starttls implicit needs a cert",
         MX "starttls = implicit\n",
         {"t.ini:5: starttls = implicit needs a certificate: add 'cert' and 'key' to [tls]"}},
        {"starttls",
         MX "starttls = maybe\n",
         {"t.ini:5: bad value 'maybe' for 'starttls' in [listener:mx]: expected offer, require "
          "or implicit"}},
        {"normalise", MX "bare_newlines = normalise\n", {NULL}},
        {"bare_newlines",
         MX "bare_newlines = keep\n",
         {"t.ini:5: bad value 'keep' for 'bare_newlines' in [listener:mx]: expected reject or "
          "normalize"}},
        {"booleans", MX "hide_auth_before_tls = true\ntrace_header = off\n", {NULL}},
        {"boolean 1 and 0", MX "hide_auth_before_tls = 1\ntrace_header = 0\n", {NULL}},
        {"boolean on and false", MX "hide_auth_before_tls = on\ntrace_header = false\n", {NULL}},
        {"hide_auth_before_tls",
         MX "hide_auth_before_tls = sometimes\n",
         {"t.ini:5: bad value 'sometimes' for 'hide_auth_before_tls' in [listener:mx]: expected "
          "yes or no"}},
        {"trace_header",
         MX "trace_header = 2\n",
         {"t.ini:5: bad value '2' for 'trace_header' in [listener:mx]: expected yes or no"}},
        {"backend",
         MX "[listener:b]\nmode = inbound\nlisten = 127.0.0.1:2527\nbackend = nowhere\n",
         {"t.ini:8: bad value 'nowhere' for 'backend' in [listener:b]: expected HOST:PORT or "
          "[IPv6]:PORT"}},
        {"backend is the listener itself",
         "[listener:mx]\nmode = inbound\n"
         "listen = 127.0.0.1:2525\nbackend = 127.0.0.1:2525\n",
         {"t.ini:4: backend is the listener's own address: connections would loop"}},
        {"backend on loopback behind a wildcard listen",
         "[listener:mx]\nmode = inbound\n"
         "listen = 0.0.0.0:2525\nbackend = 127.0.0.1:2525\n",
         {"t.ini:4: backend is the listener's own address (a wildcard listen address accepts "
          "loopback connections on its port): connections would loop"}},
        {"backend on another loopback address behind a wildcard listen",
         "[listener:mx]\nmode = inbound\n"
         "listen = 0.0.0.0:2525\nbackend = 127.0.0.2:2525\n",
         {"t.ini:4: backend is the listener's own address (a wildcard"}},
        {"backend ::1 behind [::]",
         "[listener:mx]\nmode = inbound\nlisten = [::]:2525\nbackend = [::1]:2525\n",
         {"t.ini:4: backend is the listener's own address (a wildcard"}},
        {"backend 0.0.0.0 is 127.0.0.1",
         "[listener:mx]\nmode = inbound\n"
         "listen = 127.0.0.1:2525\nbackend = 0.0.0.0:2525\n",
         {"t.ini:4: backend is the listener's own address (a connection to the wildcard address "
          "reaches loopback): connections would loop"}},
        {"wildcard listen, loopback backend on another port",
         "[listener:mx]\nmode = inbound\n"
         "listen = 0.0.0.0:2525\nbackend = 127.0.0.1:2526\n",
         {NULL}},
        {"wildcard listen, other host's backend on the same port",
         "[listener:mx]\nmode = inbound\n"
         "listen = 0.0.0.0:25\nbackend = 10.0.0.5:25\n",
         {NULL}},
        {"families do not meet (IPv6 sockets are v6only)",
         "[listener:mx]\nmode = inbound\nlisten = [::]:2525\nbackend = 127.0.0.1:2525\n",
         {NULL}},
    };
    RUN_CASES(cases);
}

static void test_outbound_keys(void)
{
    static const config_case_t cases[] = {
        {"every outbound key",
         OUT "allow = 10.0.0.0/8, 192.168.0.0/16,fd00::/8\ntls = secure\n"
             "servername = smtp.example\nca_file = ca.pem\ntesting = yes\n"
             "on_failure = reject\n",
         {NULL}},
        {"route original-dst",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = original-dst\nservername = mx.example.test\n",
         {NULL}},
        {"route original-dst with tls = encrypt needs no name",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = original-dst\ntls = encrypt\n",
         {NULL}},
        {"route original-dst, tls = verify by default, no servername",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = original-dst\n",
         {"t.ini:4: route = original-dst with tls = verify needs 'servername' (an intercepted "
          "connection carries no name to verify)"}},
        {"route original-dst, tls = secure, no servername",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "tls = secure\nroute = original-dst\n",
         {"t.ini:4: route = original-dst with tls = secure needs 'servername'"}},
        {"route relay is the listener itself",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = relay:127.0.0.1:10025\n",
         {"t.ini:4: route is the listener's own address: connections would loop"}},
        {"route relay on loopback behind a wildcard listen",
         "[listener:out]\nmode = outbound\nlisten = 0.0.0.0:10025\n"
         "route = relay:127.0.0.1:10025\n",
         {"t.ini:4: route is the listener's own address (a wildcard listen address accepts "
          "loopback connections on its port): connections would loop"}},
        {"route relay IPv6 is the listener itself",
         "[listener:out]\nmode = outbound\nlisten = [::1]:10025\n"
         "route = relay:[::1]:10025\n",
         {"t.ini:4: route is the listener's own address: connections would loop"}},
        {"route relay on the listener's address, another port",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = relay:127.0.0.1:10026\n",
         {NULL}},
        {"route relay with verify: the relay host is the name",
         OUT "tls = verify\n",
         {NULL}},
        {"route mx",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\nroute = mx\n",
         {NULL}},
        {"route relay by name",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = relay:smtp.provider.example:587\n",
         {NULL}},
        {"route relay IPv6",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = relay:[2001:db8::25]:25\n",
         {NULL}},
        {"route",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\nroute = smarthost\n",
         {"t.ini:4: bad value 'smarthost' for 'route' in [listener:out]: expected "
          "relay:HOST:PORT, original-dst or mx"}},
        {"route relay without port",
         "[listener:out]\nmode = outbound\n"
         "listen = 127.0.0.1:10025\nroute = relay:smtp.example\n",
         {"t.ini:4: bad value 'relay:smtp.example' for 'route' in [listener:out]: expected "
          "relay:HOST:PORT with HOST:PORT or [IPv6]:PORT"}},
        {"route relay bad port",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\n"
         "route = relay:smtp.example:99999\n",
         {"t.ini:4: bad value 'relay:smtp.example:99999' for 'route' in [listener:out]: "
          "expected relay:HOST:PORT with a port from 1 to 65535 after the last ':'"}},
        {"route relay IPv6 without brackets",
         "[listener:out]\nmode = outbound\n"
         "listen = 127.0.0.1:10025\nroute = relay:::1:25\n",
         {"t.ini:4: bad value 'relay:::1:25' for 'route' in [listener:out]: expected "
          "relay:HOST:PORT with an IPv6 address in brackets, as in [::1]:25"}},
        {"tls levels", OUT "tls = none\n", {NULL}},
        {"tls",
         OUT "tls = dane\n",
         {"t.ini:5: bad value 'dane' for 'tls' in [listener:out]: expected none, may, encrypt, "
          "verify or secure"}},
        {"servername",
         OUT "servername = smtp provider\n",
         {"t.ini:5: bad value 'smtp provider' for 'servername' in [listener:out]: expected a "
          "host name"}},
        {"ca_file",
         OUT "ca_file = nope.pem\n",
         {"t.ini:5: cannot read ca_file 'nope.pem': No such file or directory"}},
        {"testing",
         OUT "testing = maybe\n",
         {"t.ini:5: bad value 'maybe' for 'testing' in [listener:out]: expected yes or no"}},
        {"on_failure",
         OUT "on_failure = bounce\n",
         {"t.ini:5: bad value 'bounce' for 'on_failure' in [listener:out]: expected defer or "
          "reject"}},
        {"connection_cache_time",
         OUT "connection_cache_time = 2s\n",
         {NULL}},
        {"connection_cache_time off",
         OUT "connection_cache_time = 0\n",
         {NULL}},
        {"connection_cache_time too long",
         OUT "connection_cache_time = 301s\n",
         {"t.ini:5: bad value '301s' for 'connection_cache_time' in [listener:out]: expected a "
          "duration from 0 (off) to 300s"}},
        {"connection_cache_time with route mx",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\nroute = mx\n"
         "connection_cache_time = 2s\n",
         {"t.ini:5: connection_cache_time works with route = relay or original-dst; route = mx "
          "keeps a next hop connection for one session"}},
        {"tls and servername with route mx",
         "[listener:out]\nmode = outbound\nlisten = 127.0.0.1:10025\nroute = mx\n"
         "tls = secure\nservername = mx.example\n",
         {"t.ini:5: tls has no effect with route = mx: each recipient domain's TLS comes from "
          "its [policy:DOMAIN] section (for every domain: [policy:default])",
          "t.ini:6: servername has no effect with route = mx: each recipient domain's TLS comes "
          "from its [policy:DOMAIN] section (for every domain: [policy:default])"}},
        {"connection_reuse_time and count",
         OUT "connection_cache_time = 2s\nconnection_reuse_time = 60s\nconnection_reuse_count = 100\n",
         {NULL}},
        {"connection_reuse_time too short",
         OUT "connection_cache_time = 2s\nconnection_reuse_time = 500ms\n",
         {"t.ini:6: bad value '500ms' for 'connection_reuse_time' in [listener:out]: expected a "
          "duration from 1s to 1h"}},
        {"connection_reuse_count not a number",
         OUT "connection_cache_time = 2s\nconnection_reuse_count = many\n",
         {"t.ini:6: bad value 'many' for 'connection_reuse_count' in [listener:out]"}},
        {"connection_reuse_time without the cache (no effect)",
         OUT "connection_reuse_time = 60s\n",
         {NULL}},
        {"connection_cache_time inbound",
         MX "connection_cache_time = 2s\n",
         {"t.ini:5: key 'connection_cache_time' is only valid for mode = outbound"}},
        {"allow prefix too long",
         OUT "allow = 10.0.0.0/33\n",
         {"t.ini:5: bad value '10.0.0.0/33' for 'allow' in [listener:out]: expected ADDRESS or "
          "ADDRESS/PREFIX, such as 10.0.0.0/8 or ::1/128"}},
        {"allow host bits",
         OUT "allow = 127.0.0.1/32, 10.0.0.1/8\n",
         {"t.ini:5: bad value '10.0.0.1/8' for 'allow' in [listener:out]: expected no bits set "
          "after the prefix, as in 10.0.0.0/8"}},
        {"allow names",
         OUT "allow = localhost\n",
         {"t.ini:5: bad value 'localhost' for 'allow' in [listener:out]: expected ADDRESS"}},
        {"allow empty item",
         OUT "allow = 10.0.0.0/8,,::1\n",
         {"t.ini:5: bad value '10.0.0.0/8,,::1' for 'allow' in [listener:out]: expected a "
          "comma-separated list such as 127.0.0.1/32, ::1/128"}},
        {"allow empty",
         OUT "allow =\n",
         {"t.ini:5: bad value '' for 'allow' in [listener:out]: expected a comma-separated list"}},
        {"allow two bad items",
         OUT "allow = 10.0.0.0/99, ::1/200\n",
         {"t.ini:5: bad value '10.0.0.0/99' for 'allow'",
          "t.ini:5: bad value '::1/200' for 'allow'"}},
    };
    RUN_CASES(cases);
}

static void test_addresses(void)
{
    static const config_case_t cases[] = {
        {"IPv6 listen",
         "[listener:mx]\nmode = inbound\nlisten = [::1]:2525\n"
         "backend = [::1]:2526\n",
         {NULL}},
        {"listen by name",
         "[listener:mx]\nmode = inbound\nlisten = localhost:2525\n"
         "backend = 127.0.0.1:2526\n",
         {NULL}},
        {"listen without port",
         "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value '127.0.0.1' for 'listen' in [listener:mx]: expected HOST:PORT or "
          "[IPv6]:PORT"}},
        {"listen port 0",
         "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1:0\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value '127.0.0.1:0' for 'listen' in [listener:mx]: expected a port from "
          "1 to 65535 after the last ':'"}},
        {"listen port 65536",
         "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1:65536\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value '127.0.0.1:65536' for 'listen'"}},
        {"listen port not a number",
         "[listener:mx]\nmode = inbound\nlisten = 127.0.0.1:smtp\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value '127.0.0.1:smtp' for 'listen'"}},
        {"listen IPv6 without brackets",
         "[listener:mx]\nmode = inbound\nlisten = ::1:2525\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value '::1:2525' for 'listen' in [listener:mx]: expected an IPv6 "
          "address in brackets, as in [::1]:25"}},
        {"listen bracket without port",
         "[listener:mx]\nmode = inbound\nlisten = [::1]2525\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value '[::1]2525' for 'listen' in [listener:mx]: expected [IPv6]:PORT"}},
        {"listen brackets around IPv4",
         "[listener:mx]\nmode = inbound\nlisten = [127.0.0.1]:25\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value '[127.0.0.1]:25' for 'listen' in [listener:mx]: expected an IPv6 "
          "address inside [ ]"}},
        {"listen without host",
         "[listener:mx]\nmode = inbound\nlisten = :25\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value ':25' for 'listen'"}},
        {"listen bad host name",
         "[listener:mx]\nmode = inbound\nlisten = mail host:25\n"
         "backend = 127.0.0.1:2526\n",
         {"t.ini:3: bad value 'mail host:25' for 'listen' in [listener:mx]: expected HOST:PORT "
          "with a host name or IPv4 address, or [IPv6]:PORT"}},
        {"listen unresolvable",
         "[listener:mx]\nmode = inbound\n"
         "listen = no-such-host.invalid:25\nbackend = 127.0.0.1:2526\n",
         {"t.ini:3: cannot resolve 'no-such-host.invalid' for 'listen' in [listener:mx]: "}},
        {"same listen address",
         MX "[listener:b]\nmode = inbound\nlisten = 127.0.0.1:2525\n"
            "backend = 127.0.0.1:2527\n",
         {"t.ini:7: listen address of [listener:b] overlaps [listener:mx] (line 3)"}},
        {"wildcard overlaps",
         MX "[listener:b]\nmode = inbound\nlisten = 0.0.0.0:2525\n"
            "backend = 127.0.0.1:2527\n",
         {"t.ini:7: listen address of [listener:b] overlaps [listener:mx] (line 3)"}},
        {"same IPv6 address",
         "[listener:a]\nmode = inbound\nlisten = [::1]:25\n"
         "backend = 127.0.0.1:2526\n[listener:b]\nmode = inbound\n"
         "listen = [0:0::1]:25\nbackend = 127.0.0.1:2526\n",
         {"t.ini:7: listen address of [listener:b] overlaps [listener:a] (line 3)"}},
        {"other port, other family",
         MX "[listener:b]\nmode = inbound\nlisten = 127.0.0.1:2526\n"
            "backend = 127.0.0.1:2527\n[listener:c]\nmode = inbound\n"
            "listen = [::]:2525\nbackend = 127.0.0.1:2527\n",
         {NULL}},
        {"other address, same port",
         MX "[listener:b]\nmode = inbound\n"
            "listen = 127.0.0.2:2525\nbackend = 127.0.0.1:2527\n",
         {NULL}},
    };
    RUN_CASES(cases);
}

static void test_limits_and_timers(void)
{
    static const config_case_t cases[] = {
        {"every limit and timer",
         MX "max_line_length = 4k\nmax_connections = 0\n"
            "max_connections_per_ip = 5\nmax_message_size = 50M\n"
            "connect_timeout = 250ms\ngreeting_timeout = 5m\n"
            "command_timeout = 1h\nidle_timeout = 30\n"
            "handshake_timeout = 24h\ndata_timeout = 1s\n"
            "session_timeout = 90m\n",
         {NULL}},
        {"line length bounds",
         MX "max_line_length = 512\n[listener:b]\nmode = inbound\n"
            "listen = 127.0.0.1:2527\nbackend = 127.0.0.1:2526\n"
            "max_line_length = 64k\n",
         {NULL}},
        {"line length too small",
         MX "max_line_length = 511\n",
         {"t.ini:5: bad value '511' for 'max_line_length' in [listener:mx]: expected a size from "
          "512 to 65536 bytes"}},
        {"line length too big",
         MX "max_line_length = 65537\n",
         {"t.ini:5: bad value '65537' for 'max_line_length'"}},
        {"line length syntax",
         MX "max_line_length = 2 k\n",
         {"t.ini:5: bad value '2 k' for 'max_line_length' in [listener:mx]: expected a size such "
          "as 2048, 10k or 50M"}},
        {"max_connections",
         MX "max_connections = ten\n",
         {"t.ini:5: bad value 'ten' for 'max_connections' in [listener:mx]: expected a whole "
          "number"}},
        {"max_connections too big",
         MX "max_connections = 1000001\n",
         {"t.ini:5: bad value '1000001' for 'max_connections' in [listener:mx]: expected a number "
          "from 0 (no limit) to 1000000"}},
        {"max_connections_per_ip",
         MX "max_connections_per_ip = -1\n",
         {"t.ini:5: bad value '-1' for 'max_connections_per_ip'"}},
        {"backlog bounds",
         MX "backlog = 1\n[listener:b]\nmode = inbound\nlisten = 127.0.0.1:2527\n"
            "backend = 127.0.0.1:2526\nbacklog = 65535\n",
         {NULL}},
        {"backlog too big",
         MX "backlog = 65536\n",
         {"t.ini:5: bad value '65536' for 'backlog' in [listener:mx]: expected a number from 0 "
          "(the kernel's somaxconn) to 65535"}},
        {"max_message_size",
         MX "max_message_size = 5G\n",
         {"t.ini:5: bad value '5G' for 'max_message_size' in [listener:mx]: expected a size up to "
          "4G (0: the backend's SIZE decides)"}},
        {"max_message_size fraction",
         MX "max_message_size = 1.5M\n",
         {"t.ini:5: bad value '1.5M' for 'max_message_size' in [listener:mx]: expected a size"}},
        {"timeout 0",
         MX "connect_timeout = 0\n",
         {"t.ini:5: bad value '0' for 'connect_timeout' in [listener:mx]: expected a duration "
          "from 1ms to 24h"}},
        {"timeout over a day",
         MX "session_timeout = 25h\n",
         {"t.ini:5: bad value '25h' for 'session_timeout'"}},
        {"timeout with a space",
         MX "greeting_timeout = 10 s\n",
         {"t.ini:5: bad value '10 s' for 'greeting_timeout' in [listener:mx]: expected a duration "
          "such as 250ms, 30s, 5m, 1h or 7d (no unit: seconds)"}},
        {"timeout of one day", MX "command_timeout = 1d\n", {NULL}},
        {"timeout over a day",
         MX "command_timeout = 2d\n",
         {"t.ini:5: bad value '2d' for 'command_timeout' in [listener:mx]: expected a duration "
          "from 1ms to 24h"}},
        {"timeout empty", MX "idle_timeout =\n", {"t.ini:5: bad value '' for 'idle_timeout'"}},
        {"timeout overflow",
         MX "handshake_timeout = 99999999999999999999\n",
         {"t.ini:5: bad value '99999999999999999999' for 'handshake_timeout'"}},
        {"timeout negative",
         MX "data_timeout = -5s\n",
         {"t.ini:5: bad value '-5s' for 'data_timeout'"}},
    };
    RUN_CASES(cases);
}

/* One file, many mistakes: every one reported, in line order, nothing else. */
static void test_all_errors_together(void)
{
    static const char ini[] = "[listener:out]\n"           /* 1 */
                              "route = mx\n"               /* 2 */
                              "backend = 127.0.0.1:25\n"   /* 3 */
                              "listen = 127.0.0.1:10025\n" /* 4 */
                              "mode = outbound\n"          /* 5 */
                              "[proxy]\n"                  /* 6 */
                              "log_level = loud\n"         /* 7 */
                              "[listener:mx]\n"            /* 8 */
                              "mode = inbound\n"           /* 9 */
                              "listen = 127.0.0.1:10025\n" /* 10 */
                              "starttls = implicit\n"      /* 11 */
                              "[tls]\n"                    /* 12 */
                              "cert = missing.pem\n"       /* 13 */
                              "[metrics]\n"                /* 14 */
                              "junk\n";                    /* 15 */
    static const char want[] =
        "t.ini:3: key 'backend' is only valid for mode = inbound\n"
        "t.ini:7: bad value 'loud' for 'log_level' in [proxy]: expected error, warn, info or "
        "debug\n"
        "t.ini:8: missing required key 'backend' in [listener:mx]\n"
        "t.ini:10: listen address of [listener:mx] overlaps [listener:out] (line 4)\n"
        "t.ini:13: cannot read cert 'missing.pem': No such file or directory\n"
        "t.ini:14: unknown section [metrics] (expected [proxy], [tls], [listener:NAME] or "
        "[policy:DOMAIN])\n"
        "t.ini:15: expected 'key = value', '[section]' or a comment, not 'junk'\n";
    stp_config_t *cf = stp_config_load_string(ini, "t.ini", errbuf, sizeof(errbuf));
    CHECK(cf == NULL);
    CHECK_STR(errbuf, want);
}

/* ---- [policy:DOMAIN] and the [proxy] keys of route = mx ---- */

static void test_policy_sections(void)
{
    static const config_case_t cases[] = {
        {"every level",
         MX "[policy:a.example]\ntls = none\n[policy:b.example]\ntls = may\n"
            "[policy:c.example]\ntls = encrypt\n[policy:d.example]\ntls = verify\n"
            "[policy:e.example]\ntls = secure\n[policy:f.example]\ntls = dane\n"
            "[policy:g.example]\ntls = dane-only\n[policy:h.example]\ntls = mta-sts\n"
            "[policy:default]\ntls = may\n",
         {NULL}},
        {"suffix and exact side by side",
         MX "[policy:.example.com]\ntls = verify\n[policy:example.com]\ntls = secure\n",
         {NULL}},
        {"servername and ca_file with verify and secure",
         MX "[policy:bank.example]\ntls = secure\nservername = mx.bank.example\nca_file = ca.pem\n"
            "[policy:.corp.example]\ntls = verify\nca_file = ca.pem\n",
         {NULL}},
        {"ca_file with dane and mta-sts",
         MX "[policy:a.example]\ntls = dane\nca_file = ca.pem\n[policy:b.example]\n"
            "tls = mta-sts\nca_file = ca.pem\n",
         {NULL}},
        {"unknown level",
         MX "[policy:a.example]\ntls = strict\n",
         {"t.ini:6: bad value 'strict' for 'tls' in [policy:a.example]: expected none, may, "
          "encrypt, verify, secure, dane, dane-only or mta-sts"}},
        {"levels are case-sensitive",
         MX "[policy:a.example]\ntls = DANE\n",
         {"t.ini:6: bad value 'DANE' for 'tls' in [policy:a.example]"}},
        {"missing tls",
         MX "[policy:a.example]\nservername = x.example\n",
         {"t.ini:5: missing required key 'tls' in [policy:a.example]"}},
        {"missing tls in default",
         MX "[policy:default]\n",
         {"t.ini:5: missing required key 'tls' in [policy:default]"}},
        {"servername needs verify or secure",
         MX "[policy:a.example]\ntls = dane\nservername = mx.a.example\n",
         {"t.ini:7: key 'servername' in [policy:a.example] needs tls = verify or secure"}},
        {"ca_file makes no sense without a chain",
         MX "[policy:a.example]\ntls = may\nca_file = ca.pem\n[policy:b.example]\n"
            "tls = dane-only\nca_file = ca.pem\n",
         {"t.ini:7: key 'ca_file' in [policy:a.example] needs tls = verify, secure, dane or "
          "mta-sts (tls = may verifies no certificate chain)",
          "t.ini:10: key 'ca_file' in [policy:b.example] needs tls = verify, secure, dane or "
          "mta-sts (tls = dane-only"}},
        {"missing ca_file",
         MX "[policy:a.example]\ntls = verify\nca_file = nothere.pem\n",
         {"t.ini:7: cannot read ca_file 'nothere.pem': No such file or directory"}},
        {"unknown key",
         MX "[policy:a.example]\ntls = may\nroute = mx\n",
         {"t.ini:7: unknown key 'route' in [policy:a.example]"}},
        {"duplicate key",
         MX "[policy:a.example]\ntls = may\ntls = secure\n",
         {"t.ini:7: duplicate key 'tls' in [policy:a.example] (first at line 6)"}},
        {"duplicate section, any case, trailing dot",
         MX "[policy:a.example]\ntls = may\n[policy:A.Example.]\ntls = secure\n",
         {"t.ini:7: duplicate section [policy:a.example] (first at line 5)"}},
        {"duplicate default",
         MX "[policy:default]\ntls = may\n[policy:default]\ntls = none\n",
         {"t.ini:7: duplicate section [policy:default] (first at line 5)"}},
        {"bad names",
         MX "[policy:*.example.com]\ntls = may\n[policy:]\n[policy:a..b]\n[policy:a b]\n",
         {"t.ini:5: bad policy name '*.example.com': expected a domain, .domain (names below it) "
          "or default",
          "t.ini:7: bad policy name ''", "t.ini:8: bad policy name 'a..b'",
          "t.ini:9: bad policy name 'a b'"}},
    };
    RUN_CASES(cases);
}

static void test_policy_lookup_from_file(void)
{
    stp_config_t *cf = load_ok(MX "[policy:.example.com]\ntls = verify\n"           /* 5 */
                                  "[policy:example.com]\ntls = secure\n"            /* 7 */
                                  "servername = mx.example.com\nca_file = ca.pem\n" /* 9 */
                                  "[policy:.mail.example.com]\ntls = dane-only\n"   /* 11 */
                                  "[policy:Legacy.Example.NET.]\ntls = none\n"      /* 13 */
                                  "[policy:default]\ntls = mta-sts\n");             /* 15 */
    if (cf == NULL) {
        return;
    }
    CHECK_EQ_INT(cf->policies.n, 4);
    const stp_domain_policy_t *p = stp_policy_lookup(&cf->policies, "Example.com.");
    CHECK_STR(p->name, "example.com");
    CHECK_EQ_INT(p->line, 7);
    CHECK_EQ_INT(p->tls, STP_POLICY_TLS_SECURE);
    CHECK_STR(p->servername, "mx.example.com");
    CHECK_STR(p->ca_file, "ca.pem");
    p = stp_policy_lookup(&cf->policies, "a.example.com");
    CHECK_STR(p->name, ".example.com");
    CHECK_EQ_INT(p->tls, STP_POLICY_TLS_VERIFY);
    CHECK_STR(p->servername, "");
    CHECK_STR(p->ca_file, "");
    CHECK_STR(stp_policy_lookup(&cf->policies, "b.a.mail.example.com")->name, ".mail.example.com");
    CHECK_STR(stp_policy_lookup(&cf->policies, "mail.example.com")->name, ".example.com");
    CHECK_STR(stp_policy_lookup(&cf->policies, "legacy.example.net")->name, "legacy.example.net");
    p = stp_policy_lookup(&cf->policies, "example.org");
    CHECK_STR(p->name, "default");
    CHECK_EQ_INT(p->line, 15);
    CHECK_EQ_INT(p->tls, STP_POLICY_TLS_MTA_STS);
    stp_config_free(cf);

    /* without [policy:default]: dane, the built-in default */
    cf = load_ok(MX);
    if (cf) {
        CHECK_EQ_INT(cf->policies.n, 0);
        p = stp_policy_lookup(&cf->policies, "example.org");
        CHECK_STR(p->name, "default");
        CHECK_EQ_INT(p->line, 0);
        CHECK_EQ_INT(p->tls, STP_POLICY_TLS_DANE);
    }
    stp_config_free(cf);

    /* many sections (the table grows) */
    char *ini = malloc(200000);
    size_t used = (size_t)snprintf(ini, 200000, MX);
    for (int i = 0; i < 500; i++) {
        used += (size_t)snprintf(ini + used, 200000 - used, "[policy:d%d.example]\ntls = %s\n", i,
                                 i % 2 ? "secure" : "may");
    }
    cf = load_ok(ini);
    if (cf) {
        CHECK_EQ_INT(cf->policies.n, 500);
        CHECK_EQ_INT(stp_policy_lookup(&cf->policies, "d499.example")->tls, STP_POLICY_TLS_SECURE);
        CHECK_EQ_INT(stp_policy_lookup(&cf->policies, "d0.example")->line, 5);
    }
    stp_config_free(cf);
    free(ini);
}

static void test_delivery_keys(void)
{
    static const config_case_t cases[] = {
        {"all of them",
         MX "[proxy]\nstate_dir = adir\nremember_tls = 30d\nmta_sts_port = 8443\n"
            "mta_sts_timeout = 10s\nmta_sts_ca_file = ca.pem\n",
         {NULL}},
        {"remember_tls off", MX "[proxy]\nremember_tls = 0\n", {NULL}},
        {"state_dir empty", MX "[proxy]\nstate_dir =\n", {NULL}},
        {"state_dir missing",
         MX "[proxy]\nstate_dir = nothere\n",
         {"t.ini:6: cannot use state_dir 'nothere': No such file or directory"}},
        {"state_dir is a file",
         MX "[proxy]\nstate_dir = ca.pem\n",
         {"t.ini:6: cannot use state_dir 'ca.pem': Not a directory"}},
        {"remember_tls too long",
         MX "[proxy]\nremember_tls = 3651d\n",
         {"t.ini:6: bad value '3651d' for 'remember_tls' in [proxy]: expected a duration up to "
          "3650d (0: off)"}},
        {"remember_tls words",
         MX "[proxy]\nremember_tls = forever\n",
         {"t.ini:6: bad value 'forever' for 'remember_tls' in [proxy]: expected a duration"}},
        {"mta_sts_port 0",
         MX "[proxy]\nmta_sts_port = 0\n",
         {"t.ini:6: bad value '0' for 'mta_sts_port' in [proxy]: expected a port from 1 to "
          "65535"}},
        {"mta_sts_port too big",
         MX "[proxy]\nmta_sts_port = 65536\n",
         {"t.ini:6: bad value '65536' for 'mta_sts_port' in [proxy]: expected a port"}},
        {"mta_sts_timeout 0",
         MX "[proxy]\nmta_sts_timeout = 0\n",
         {"t.ini:6: bad value '0' for 'mta_sts_timeout' in [proxy]: expected a duration from 1ms "
          "to 24h"}},
        {"mta_sts_ca_file missing",
         MX "[proxy]\nmta_sts_ca_file = nothere.pem\n",
         {"t.ini:6: cannot read mta_sts_ca_file 'nothere.pem'"}},
    };
    RUN_CASES(cases);

    stp_config_t *cf = load_ok(MX "[tls]\nca_file = ca.pem\n");
    if (cf) {
        CHECK_STR(cf->state_dir, "");
        CHECK_EQ_INT(cf->remember_tls, 0);
        CHECK_EQ_INT(cf->mta_sts_port, 443);
        CHECK_EQ_INT(cf->mta_sts_timeout, 30000);
        CHECK_STR(cf->mta_sts_ca_file, "ca.pem"); /* follows [tls] ca_file */
    }
    stp_config_free(cf);
    cf = load_ok(MX "[proxy]\nstate_dir = adir\nremember_tls = 30d\nmta_sts_port = 8443\n"
                    "mta_sts_timeout = 10s\nmta_sts_ca_file = cert.pem\n[tls]\nca_file = ca.pem\n");
    if (cf) {
        CHECK_STR(cf->state_dir, "adir");
        CHECK_EQ_INT(cf->remember_tls, 30LL * 86400 * 1000);
        CHECK_EQ_INT(cf->mta_sts_port, 8443);
        CHECK_EQ_INT(cf->mta_sts_timeout, 10000);
        CHECK_STR(cf->mta_sts_ca_file, "cert.pem");
    }
    stp_config_free(cf);
}

/* ---- values ---- */

static void test_defaults(void)
{
    stp_config_t *cf = load_ok(MX OUT);
    char host[257] = {0};
    if (cf == NULL) {
        return;
    }
    CHECK_EQ_INT(gethostname(host, sizeof(host) - 1), 0);
    CHECK_STR(cf->hostname, host);
    CHECK_STR(cf->path, "t.ini");
    CHECK_EQ_INT(cf->workers, 0);
    CHECK_EQ_INT(cf->log_format, STP_LOG_TEXT);
    CHECK_EQ_INT(cf->log_level, STP_LOG_INFO);
    CHECK_EQ_INT(cf->ncerts, 0);
    CHECK_EQ_INT(cf->min_version, TLS1_2_VERSION);
    CHECK_STR(cf->ca_file, "");
    CHECK_EQ_INT(cf->nlisteners, 2);

    const stp_listener_conf_t *in = &cf->listeners[0];
    CHECK_STR(in->name, "mx");
    CHECK_EQ_INT(in->line, 1);
    CHECK_EQ_INT(in->mode, STP_MODE_INBOUND);
    CHECK_EQ_INT(in->starttls, STP_STARTTLS_OFFER);
    CHECK_EQ_INT(in->hide_auth_before_tls, 1);
    CHECK_EQ_INT(in->bare_newlines, STP_BARE_REJECT);
    CHECK_EQ_INT(in->trace_header, 1);
    for (size_t i = 0; i < 2; i++) {
        const stp_listener_conf_t *l = &cf->listeners[i];
        CHECK_EQ_INT(l->max_line_length, 2048);
        CHECK_EQ_INT(l->max_connections, 1000);
        CHECK_EQ_INT(l->max_connections_per_ip, 20);
        CHECK_EQ_INT(l->backlog, 0);
        CHECK_EQ_INT(l->max_message_size, 0);
        CHECK_EQ_INT(l->connect_timeout, 10000);
        CHECK_EQ_INT(l->greeting_timeout, 60000);
        CHECK_EQ_INT(l->command_timeout, 300000);
        CHECK_EQ_INT(l->idle_timeout, 300000);
        CHECK_EQ_INT(l->handshake_timeout, 30000);
        CHECK_EQ_INT(l->data_timeout, 180000);
        CHECK_EQ_INT(l->session_timeout, 3600000);
    }

    const stp_listener_conf_t *out = &cf->listeners[1];
    CHECK_STR(out->name, "out");
    CHECK_EQ_INT(out->line, 5);
    CHECK_EQ_INT(out->mode, STP_MODE_OUTBOUND);
    CHECK_EQ_INT(out->nallow, 2);
    CHECK_EQ_INT(out->allow[0].family, AF_INET);
    CHECK_EQ_INT(out->allow[0].prefix, 32);
    CHECK_EQ_INT(out->allow[1].family, AF_INET6);
    CHECK_EQ_INT(out->allow[1].prefix, 128);
    CHECK_EQ_INT(out->route, STP_ROUTE_RELAY);
    CHECK_STR(out->relay.host, "192.0.2.1");
    CHECK_EQ_INT(out->relay.port, 587);
    CHECK_EQ_INT(out->relay.addr.ss_family, AF_INET);
    CHECK_EQ_INT(out->tls, STP_TLS_LEVEL_VERIFY);
    CHECK_STR(out->servername, "192.0.2.1");
    CHECK_STR(out->ca_file, "");
    CHECK_EQ_INT(out->testing, 0);
    CHECK_EQ_INT(out->on_failure, STP_ON_FAILURE_DEFER);
    CHECK_EQ_INT(out->connection_cache_time, 0);
    CHECK_EQ_INT(out->connection_reuse_time, 300000);
    CHECK_EQ_INT(out->connection_reuse_count, 0);
    stp_config_free(cf);
}

static void test_values(void)
{
    stp_config_t *cf = load_ok("[proxy]\nhostname = mx.example.com\nworkers = 8\n"
                               "log_format = json\nlog_level = debug\n"
                               "[tls]\ncert = cert.pem\nkey = key.pem\ncert = cert2.pem\n"
                               "min_version = 1.3\nca_file = ca.pem\n" MX
                               "starttls = implicit\nhide_auth_before_tls = yes\n"
                               "bare_newlines = normalise\ntrace_header = off\n"
                               "max_line_length = 4k\nmax_connections = 0\n"
                               "max_connections_per_ip = 3\nmax_message_size = 50M\n"
                               "backlog = 64\n"
                               "connect_timeout = 250ms\ngreeting_timeout = 5m\n"
                               "command_timeout = 1h\nidle_timeout = 30\n"
                               "handshake_timeout = 24h\ndata_timeout = 1s\n"
                               "session_timeout = 90m\n" OUT
                               "allow = 10.0.0.0/8, fd00::/8\nallow = 192.0.2.7\ntls = may\n"
                               "servername = smtp.example\ntesting = yes\non_failure = reject\n");
    if (cf == NULL) {
        return;
    }
    CHECK_STR(cf->hostname, "mx.example.com");
    CHECK_EQ_INT(cf->workers, 8);
    CHECK_EQ_INT(cf->log_format, STP_LOG_JSON);
    CHECK_EQ_INT(cf->log_level, STP_LOG_DEBUG);
    CHECK_EQ_INT(cf->ncerts, 2);
    CHECK_STR(cf->certs[0].cert, "cert.pem");
    CHECK_STR(cf->certs[0].key, "key.pem");
    CHECK_STR(cf->certs[1].cert, "cert2.pem");
    CHECK_STR(cf->certs[1].key, "");
    CHECK_EQ_INT(cf->min_version, TLS1_3_VERSION);
    CHECK_STR(cf->ca_file, "ca.pem");

    const stp_listener_conf_t *in = &cf->listeners[0];
    CHECK_EQ_INT(in->line, 12);
    CHECK_STR(in->listen.host, "127.0.0.1");
    CHECK_EQ_INT(in->listen.port, 2525);
    CHECK_EQ_INT(in->listen.addr.ss_family, AF_INET);
    CHECK_EQ_INT(in->listen.addr_len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&in->listen.addr;
    CHECK_EQ_INT(ntohs(sin->sin_port), 2525);
    CHECK_EQ_INT(ntohl(sin->sin_addr.s_addr), 0x7f000001);
    CHECK_STR(in->backend.host, "127.0.0.1");
    CHECK_EQ_INT(in->backend.port, 2526);
    CHECK_EQ_INT(in->starttls, STP_STARTTLS_IMPLICIT);
    CHECK_EQ_INT(in->hide_auth_before_tls, 1);
    CHECK_EQ_INT(in->bare_newlines, STP_BARE_NORMALIZE);
    CHECK_EQ_INT(in->trace_header, 0);
    CHECK_EQ_INT(in->max_line_length, 4096);
    CHECK_EQ_INT(in->max_connections, 0);
    CHECK_EQ_INT(in->max_connections_per_ip, 3);
    CHECK_EQ_INT(in->backlog, 64);
    CHECK_EQ_INT(in->max_message_size, 50 * 1024 * 1024);
    CHECK_EQ_INT(in->connect_timeout, 250);
    CHECK_EQ_INT(in->greeting_timeout, 300000);
    CHECK_EQ_INT(in->command_timeout, 3600000);
    CHECK_EQ_INT(in->idle_timeout, 30000);
    CHECK_EQ_INT(in->handshake_timeout, 86400000);
    CHECK_EQ_INT(in->data_timeout, 1000);
    CHECK_EQ_INT(in->session_timeout, 5400000);

    const stp_listener_conf_t *out = &cf->listeners[1];
    CHECK_EQ_INT(out->nallow, 3); /* the first allow line replaced the default */
    CHECK_EQ_INT(out->allow[0].family, AF_INET);
    CHECK_EQ_INT(out->allow[0].prefix, 8);
    CHECK_EQ_INT(out->allow[1].family, AF_INET6);
    CHECK_EQ_INT(out->allow[1].prefix, 8);
    CHECK_EQ_INT(out->allow[2].prefix, 32);
    CHECK_EQ_INT(out->tls, STP_TLS_LEVEL_MAY);
    CHECK_STR(out->servername, "smtp.example");
    CHECK_STR(out->ca_file, "ca.pem"); /* inherited from [tls] */
    CHECK_EQ_INT(out->testing, 1);
    CHECK_EQ_INT(out->on_failure, STP_ON_FAILURE_REJECT);
    stp_config_free(cf);
}

static void test_ipv6_and_names(void)
{
    stp_config_t *cf = load_ok("[listener:mx]\nmode = inbound\nlisten = [::1]:2525\n"
                               "backend = localhost:2526\n"
                               "[listener:out]\nmode = outbound\nlisten = [2001:db8::1]:10025\n"
                               "route = relay:smtp.provider.example:587\n"
                               "[listener:v6]\nmode = outbound\nlisten = 127.0.0.1:10026\n"
                               "route = relay:[2001:db8::25]:25\nca_file = ca.pem\n");
    if (cf == NULL) {
        return;
    }
    const stp_listener_conf_t *mx = &cf->listeners[0];
    CHECK_STR(mx->listen.host, "::1");
    CHECK_EQ_INT(mx->listen.port, 2525);
    CHECK_EQ_INT(mx->listen.addr.ss_family, AF_INET6);
    CHECK_EQ_INT(mx->listen.addr_len, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&mx->listen.addr;
    CHECK_EQ_INT(ntohs(sin6->sin6_port), 2525);
    CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
    /* a name is resolved at load time */
    CHECK_STR(mx->backend.host, "localhost");
    CHECK(mx->backend.addr_len > 0);
    CHECK(mx->backend.addr.ss_family == AF_INET || mx->backend.addr.ss_family == AF_INET6);

    /* a relay given by name is looked up per connection, not now */
    const stp_listener_conf_t *out = &cf->listeners[1];
    CHECK_STR(out->relay.host, "smtp.provider.example");
    CHECK_EQ_INT(out->relay.port, 587);
    CHECK_EQ_INT(out->relay.addr_len, 0);
    CHECK_STR(out->servername, "smtp.provider.example");

    const stp_listener_conf_t *v6 = &cf->listeners[2];
    CHECK_STR(v6->relay.host, "2001:db8::25");
    CHECK_EQ_INT(v6->relay.addr.ss_family, AF_INET6);
    CHECK_EQ_INT(ntohs(((const struct sockaddr_in6 *)&v6->relay.addr)->sin6_port), 25);
    CHECK_STR(v6->servername, "2001:db8::25");
    CHECK_STR(v6->ca_file, "ca.pem");
    stp_config_free(cf);
}

static void test_duration_parse(void)
{
    static const struct {
        const char *text;
        int64_t ms;
    } cases[] = {
        {"250ms", 250},
        {"30s", 30000},
        {"5m", 300000},
        {"1h", 3600000},
        {"10", 10000},
        {"0", 0},
        {"0ms", 0},
        {"007s", 7000},
        {"", -1},
        {"s", -1},
        {"10 s", -1},
        {" 10s", -1},
        {"10S", -1},
        {"1.5s", -1},
        {"-1s", -1},
        {"+1s", -1},
        {"1d", 86400000},
        {"7d", 604800000},
        {"1D", -1},
        {"1w", -1},
        {"10sec", -1},
        {"1hm", -1},
        {"10ms ", -1},
        {"9223372036854775807ms", INT64_MAX},
        {"9223372036854775808ms", -1},
        {"9223372036854775807", -1}, /* seconds: overflows in milliseconds */
        {"2562047788016h", -1},      /* just over INT64_MAX milliseconds */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = stp_duration_parse(cases[i].text);
        if (got != cases[i].ms) {
            fprintf(stderr, "  duration \"%s\"\n", cases[i].text);
        }
        CHECK_EQ_INT(got, cases[i].ms);
    }
}

static void test_size_parse(void)
{
    static const struct {
        const char *text;
        int64_t bytes;
    } cases[] = {
        {"2048", 2048},
        {"10k", 10240},
        {"10K", 10240},
        {"50M", 52428800},
        {"50m", 52428800},
        {"1G", 1073741824},
        {"0", 0},
        {"", -1},
        {"k", -1},
        {"10kb", -1},
        {"10 k", -1},
        {"1.5M", -1},
        {"-1", -1},
        {"10T", -1},
        {"9223372036854775807", INT64_MAX},
        {"9223372036854775807k", -1},
        {"99999999999999999999", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = stp_size_parse(cases[i].text);
        if (got != cases[i].bytes) {
            fprintf(stderr, "  size \"%s\"\n", cases[i].text);
        }
        CHECK_EQ_INT(got, cases[i].bytes);
    }
}

/* ---- files and buffers ---- */

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(fwrite(data, 1, len, f), len);
        fclose(f);
    }
}

static void test_load_file(void)
{
    static const char good[] = "\xef\xbb\xbf; from a file\r\n" MX TLS;
    static const char bad[] = MX "[proxy]\r\nworkers = lots\r\n";
    static const char nul[] = MX "[proxy]\nwork\0ers = 2\nlog_level = info\n";

    write_file("good.ini", good, sizeof(good) - 1);
    stp_config_t *cf = stp_config_load("good.ini", errbuf, sizeof(errbuf));
    CHECK(cf != NULL);
    if (cf) {
        CHECK_STR(cf->path, "good.ini");
        CHECK_EQ_INT(cf->listeners[0].line, 2);
        CHECK_EQ_INT(cf->ncerts, 1);
        stp_config_free(cf);
    }

    write_file("bad.ini", bad, sizeof(bad) - 1);
    CHECK(stp_config_load("bad.ini", errbuf, sizeof(errbuf)) == NULL);
    CHECK_STR(errbuf, "bad.ini:6: bad value 'lots' for 'workers' in [proxy]: expected auto or a "
                      "number from 1 to 256\n");

    write_file("nul.ini", nul, sizeof(nul) - 1);
    CHECK(stp_config_load("nul.ini", errbuf, sizeof(errbuf)) == NULL);
    CHECK_STR(errbuf, "nul.ini:6: NUL byte in line\n");

    CHECK(stp_config_load("missing.ini", errbuf, sizeof(errbuf)) == NULL);
    CHECK_STR(errbuf, "missing.ini: cannot read configuration: No such file or directory\n");

    CHECK(stp_config_load("adir", errbuf, sizeof(errbuf)) == NULL);
    CHECK_STR(errbuf, "adir: cannot read configuration: Is a directory\n");

    /* A file over 1 MiB is refused before it is parsed. */
    size_t big = 1024 * 1024 + 1;
    char *text = malloc(big);
    CHECK(text != NULL);
    if (text) {
        memset(text, '\n', big);
        write_file("big.ini", text, big);
        free(text);
        CHECK(stp_config_load("big.ini", errbuf, sizeof(errbuf)) == NULL);
        CHECK_STR(errbuf, "big.ini: cannot read configuration: file too large (more than 1 MiB)\n");
    }
}

static void test_unreadable_file(void)
{
    if (geteuid() == 0) {
        fprintf(stderr,
                "test_unreadable_file: running as root, permissions not enforced: skipped\n");
        return;
    }
    write_file("secret.key", "x", 1);
    CHECK_EQ_INT(chmod("secret.key", 0), 0);
    CHECK(stp_config_load_string(MX "[tls]\ncert = cert.pem\nkey = secret.key\n", "t.ini", errbuf,
                                 sizeof(errbuf)) == NULL);
    CHECK_STR(errbuf, "t.ini:7: cannot read key 'secret.key': Permission denied\n");
}

/* Whole lines only; then a count of what did not fit, if that fits. */
static void test_small_errbuf(void)
{
    static const char ini[] = MX "[proxy]\nworkers = a\nlog_level = b\nlog_format = c\n";
    char small[128];
    CHECK(stp_config_load_string(ini, "t.ini", small, sizeof(small)) == NULL);
    CHECK_STR(small, "t.ini:6: bad value 'a' for 'workers' in [proxy]: expected auto or a number "
                     "from 1 to 256\nt.ini: 2 more errors not shown\n");

    char tiny[8];
    CHECK(stp_config_load_string(ini, "t.ini", tiny, sizeof(tiny)) == NULL);
    CHECK_STR(tiny, "");

    CHECK(stp_config_load_string(ini, "t.ini", NULL, 0) == NULL);
    stp_config_t *cf = stp_config_load_string(MX, NULL, NULL, 0);
    CHECK(cf != NULL);
    if (cf) {
        CHECK_STR(cf->path, "(string)");
    }
    stp_config_free(cf);
    stp_config_free(NULL);
}

/* Hundreds of errors: kept bounded, the rest counted. */
static void test_many_errors(void)
{
    size_t cap = 64 * 1024, used = 0;
    char *ini = malloc(cap);
    CHECK(ini != NULL);
    if (ini == NULL) {
        return;
    }
    used += (size_t)snprintf(ini, cap, "%s", MX);
    for (int i = 0; i < 1000; i++) {
        used += (size_t)snprintf(ini + used, cap - used, "bad line %d\n", i);
    }
    CHECK(stp_config_load_string(ini, "t.ini", errbuf, sizeof(errbuf)) == NULL);
    CHECK(strstr(errbuf, "t.ini:5: expected 'key = value'") == errbuf);
    CHECK(strstr(errbuf, "more errors not shown\n") != NULL);
    free(ini);
}

/* Every prefix of a complete file, to be run under ASan: no crash, no leak. */
static void test_truncated_everywhere(void)
{
    static const char ini[] =
        "\xef\xbb\xbf; every section\n[proxy]\nhostname = mx.example.com\nworkers = 4\n"
        "log_format = json\nlog_level = debug\n[tls]\ncert = cert.pem\nkey = key.pem\n"
        "cert = cert2.pem\nkey = key2.pem\nmin_version = 1.3\nca_file = ca.pem\n"
        "[listener:mx]\nmode = inbound\nlisten = [::1]:2525\nbackend = localhost:2526\n"
        "starttls = require\nhide_auth_before_tls = yes\nbare_newlines = normalise\n"
        "trace_header = no\nmax_line_length = 4k\nmax_connections = 10\n"
        "max_connections_per_ip = 2\nmax_message_size = 10M\nconnect_timeout = 250ms\n"
        "greeting_timeout = 1m\ncommand_timeout = 5m\nidle_timeout = 60\n"
        "handshake_timeout = 10s\ndata_timeout = 3m\nsession_timeout = 1h\n"
        "[listener:out]\r\nmode = outbound\r\nlisten = 127.0.0.1:10025\r\n"
        "allow = 127.0.0.0/8, ::1/128\r\nroute = relay:[2001:db8::1]:587\r\ntls = secure\r\n"
        "servername = smtp.example\r\nca_file = ca.pem\r\ntesting = no\r\non_failure = reject\r\n";
    size_t n = sizeof(ini) - 1;
    char *buf = malloc(n + 1);
    size_t loaded = 0;
    CHECK(buf != NULL);
    if (buf == NULL) {
        return;
    }
    for (size_t i = 0; i <= n; i++) {
        memcpy(buf, ini, i);
        buf[i] = '\0';
        stp_config_t *cf = stp_config_load_string(buf, "t.ini", errbuf, sizeof(errbuf));
        loaded += cf != NULL;
        CHECK(cf != NULL || errbuf[0] != '\0');
        stp_config_free(cf);
    }
    CHECK(loaded > 0);
    stp_config_t *cf = stp_config_load_string(ini, "t.ini", errbuf, sizeof(errbuf));
    CHECK(cf != NULL);
    stp_config_free(cf);
    free(buf);
}

/* ---- the example configuration ---- */

/*
 * Rewrites the example line by line: drops the directory of its cert paths
 * (the files exist here), and with `defaults` turns every ";key = value"
 * line into "key = value"; with `outbound` also "#..." lines (the outbound
 * block) into "...". Caller frees.
 */
static char *rewrite_example(int defaults, int outbound)
{
    static const char dir[] = "/etc/smtp-tls-proxy/";
    size_t len = strlen(example_text);
    char *out = malloc(len + 1), *o = out;
    if (out == NULL) {
        return NULL;
    }
    for (const char *p = example_text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        const char *s = p, *e = p + n;
        if (defaults && s[0] == ';' && s[1] >= 'a' && s[1] <= 'z') {
            s++;
        } else if (outbound && s[0] == '#' && s[1] != ' ') {
            s++;
        }
        const char *hit = strstr(s, dir);
        if (hit && hit < e) {
            memcpy(o, s, (size_t)(hit - s));
            o += hit - s;
            s = hit + sizeof(dir) - 1;
        }
        memcpy(o, s, (size_t)(e - s));
        o += e - s;
        p += n;
    }
    *o = '\0';
    return out;
}

static void test_example(void)
{
    if (example_text == NULL) {
        fprintf(stderr, "test_example: deploy/smtp-tls-proxy.example.ini is not in this test's "
                        "runfiles (config_test needs it as data): skipped\n");
        return;
    }
    /* As shipped: only the certificate files are missing here. */
    CHECK(stp_config_load_string(example_text, "example.ini", errbuf, sizeof(errbuf)) == NULL);
    size_t lines = count_lines(errbuf), cert_lines = 0;
    static const char cert_err[] = ": cannot read cert '/etc/smtp-tls-proxy/",
                      key_err[] = ": cannot read key '/etc/smtp-tls-proxy/";
    for (const char *p = errbuf; (p = strstr(p, ": cannot read ")) != NULL; p++) {
        cert_lines += strncmp(p, cert_err, sizeof(cert_err) - 1) == 0 ||
                      strncmp(p, key_err, sizeof(key_err) - 1) == 0;
    }
    if (lines != cert_lines || lines != 4) {
        fprintf(stderr, "example as shipped:\n%s", errbuf);
    }
    CHECK_EQ_INT(lines, 4);
    CHECK_EQ_INT(cert_lines, 4);

    /* With the cert files present it loads. */
    char *text = rewrite_example(0, 0);
    stp_config_t *plain = text ? load_ok(text) : NULL;
    free(text);
    if (plain) {
        CHECK_EQ_INT(plain->ncerts, 2);
        CHECK_EQ_INT(plain->nlisteners, 2);
        CHECK_STR(plain->listeners[0].name, "mx");
        CHECK_EQ_INT(plain->listeners[1].starttls, STP_STARTTLS_IMPLICIT);
    }

    /* Every ";key = value" line states the real default: uncommented, nothing changes. */
    text = rewrite_example(1, 0);
    stp_config_t *spelled = text ? load_ok(text) : NULL;
    free(text);
    if (plain && spelled) {
        char *own = spelled->path;
        spelled->path = plain->path;
        /* the lines of keys (for messages) say where a value was written, not what it is */
        spelled->ca_file_line = plain->ca_file_line;
        for (size_t i = 0; i < plain->nlisteners; i++) {
            spelled->listeners[i].ca_file_line = plain->listeners[i].ca_file_line;
            spelled->listeners[i].route_line = plain->listeners[i].route_line;
        }
        CHECK(memcmp(plain, spelled, sizeof(*plain)) == 0);
        spelled->path = own;
    }
    stp_config_free(spelled);
    stp_config_free(plain);

    /* The commented-out outbound listener is valid too, defaults and all. */
    text = rewrite_example(1, 1);
    stp_config_t *all = text ? load_ok(text) : NULL;
    free(text);
    if (all) {
        CHECK_EQ_INT(all->nlisteners, 3);
        CHECK_EQ_INT(all->listeners[2].mode, STP_MODE_OUTBOUND);
        CHECK_STR(all->listeners[2].servername, "smtp.provider.example");
        /* and so are the commented-out policy sections */
        CHECK_EQ_INT(all->policies.n, 3);
        CHECK_EQ_INT(all->policies.deflt.tls, STP_POLICY_TLS_DANE);
        CHECK_EQ_INT(stp_policy_lookup(&all->policies, "bank.example")->tls, STP_POLICY_TLS_SECURE);
        CHECK_EQ_INT(stp_policy_lookup(&all->policies, "a.corp.example")->tls,
                     STP_POLICY_TLS_VERIFY);
    }
    stp_config_free(all);
}

/* The example from runfiles (bazel test) or the workspace (run by hand). */
static char *read_example(void)
{
    static const char rel[] = "deploy/smtp-tls-proxy.example.ini";
    char path[PATH_MAX];
    const char *srcdir = getenv("TEST_SRCDIR"), *ws = getenv("TEST_WORKSPACE");
    FILE *f = NULL;
    if (srcdir && ws &&
        (size_t)snprintf(path, sizeof(path), "%s/%s/%s", srcdir, ws, rel) < sizeof(path)) {
        f = fopen(path, "rb");
    }
    if (f == NULL) {
        f = fopen(rel, "rb");
    }
    if (f == NULL) {
        return NULL;
    }
    char *text = malloc(256 * 1024);
    size_t n = text ? fread(text, 1, 256 * 1024 - 1, f) : 0;
    fclose(f);
    if (text) {
        text[n] = '\0';
    }
    return text;
}

/* A scratch directory with the files the configurations above name. */
static int enter_scratch_dir(void)
{
    const char *tmp = getenv("TEST_TMPDIR");
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/config_test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL || chdir(dir) != 0) {
        fprintf(stderr, "cannot make a scratch directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    static const char *const files[] = {"cert.pem",  "key.pem",   "cert2.pem", "key2.pem", "ca.pem",
                                        "ecdsa.pem", "ecdsa.key", "rsa.pem",   "rsa.key"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        write_file(files[i], "-----BEGIN NOTHING-----\n", 24);
    }
    return mkdir("adir", 0700);
}

int main(void)
{
    example_text = read_example();
    if (enter_scratch_dir() != 0) {
        return 1;
    }
    STP_RUN(test_syntax);
    STP_RUN(test_sections);
    STP_RUN(test_required_and_modes);
    STP_RUN(test_proxy_keys);
    STP_RUN(test_dns_keys);
    STP_RUN(test_tls_keys);
    STP_RUN(test_inbound_keys);
    STP_RUN(test_outbound_keys);
    STP_RUN(test_addresses);
    STP_RUN(test_limits_and_timers);
    STP_RUN(test_all_errors_together);
    STP_RUN(test_defaults);
    STP_RUN(test_values);
    STP_RUN(test_ipv6_and_names);
    STP_RUN(test_duration_parse);
    STP_RUN(test_size_parse);
    STP_RUN(test_load_file);
    STP_RUN(test_unreadable_file);
    STP_RUN(test_small_errbuf);
    STP_RUN(test_many_errors);
    STP_RUN(test_truncated_everywhere);
    STP_RUN(test_example);
    STP_RUN(test_policy_sections);
    STP_RUN(test_policy_lookup_from_file);
    STP_RUN(test_delivery_keys);
    free(example_text);
    return STP_CHECK_DONE();
}
