/* metrics_test: the registry's exposition text, label escaping, truncation
 * reporting, bounded series and concurrent updates from several threads. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/metrics.h"
#include "test/unit/check.h"

static char text[65536];

static const char *render(void)
{
    size_t n = stp_metrics_render(text, sizeof(text));
    CHECK(n < sizeof(text));
    CHECK_EQ_INT(strlen(text), n);
    return text;
}

static void test_empty(void)
{
    stp_metrics_reset();
    CHECK_STR(render(), "");
}

static void test_counter_and_gauge(void)
{
    stp_metrics_reset();
    stp_metrics_count(STP_M_SESSIONS, "listener=\"in\",tls=\"TLSv1.3\"", 2);
    stp_metrics_count(STP_M_SESSIONS, "listener=\"in\",tls=\"none\"", 1);
    stp_metrics_count(STP_M_SESSIONS, "listener=\"in\",tls=\"TLSv1.3\"", 3);
    stp_metrics_gauge_add(STP_M_SESSIONS_ACTIVE, "listener=\"in\"", 4);
    stp_metrics_gauge_add(STP_M_SESSIONS_ACTIVE, "listener=\"in\"", -1);
    stp_metrics_gauge_set(STP_M_CERT_EXPIRY, "cert=\"a.pem\"", 1893456000);
    stp_metrics_count(STP_M_RELOADS, "", 1);
    CHECK_STR(render(),
              "# HELP stp_sessions_total Sessions accepted, by listener and TLS version used.\n"
              "# TYPE stp_sessions_total counter\n"
              "stp_sessions_total{listener=\"in\",tls=\"TLSv1.3\"} 5\n"
              "stp_sessions_total{listener=\"in\",tls=\"none\"} 1\n"
              "# HELP stp_sessions_active Sessions open now.\n"
              "# TYPE stp_sessions_active gauge\n"
              "stp_sessions_active{listener=\"in\"} 3\n"
              "# HELP stp_certificate_expiry_timestamp_seconds Certificate notAfter as a Unix "
              "time.\n"
              "# TYPE stp_certificate_expiry_timestamp_seconds gauge\n"
              "stp_certificate_expiry_timestamp_seconds{cert=\"a.pem\"} 1893456000\n"
              "# HELP stp_config_reloads_total Configuration reloads by result.\n"
              "# TYPE stp_config_reloads_total counter\n"
              "stp_config_reloads_total 1\n");
}

/* A gauge series not retained leaves the output (a certificate no longer
 * configured), comes back when set again; other families are untouched. */
static void test_gauge_retain(void)
{
    stp_metrics_reset();
    stp_metrics_gauge_set(STP_M_CERT_EXPIRY, "cert=\"old.pem\"", 1);
    stp_metrics_gauge_set(STP_M_CERT_EXPIRY, "cert=\"new.pem\"", 2);
    stp_metrics_gauge_add(STP_M_SESSIONS_ACTIVE, "listener=\"in\"", 1);
    const char *keep[] = {"cert=\"new.pem\""};
    stp_metrics_gauge_retain(STP_M_CERT_EXPIRY, keep, 1);
    const char *out = render();
    CHECK(strstr(out, "old.pem") == NULL);
    CHECK(strstr(out, "stp_sessions_active{listener=\"in\"} 1\n") != NULL); /* other family */
    CHECK(strstr(out, "stp_certificate_expiry_timestamp_seconds{cert=\"new.pem\"} 2\n") != NULL);
    stp_metrics_gauge_retain(STP_M_CERT_EXPIRY, NULL, 0);
    out = render();
    CHECK(strstr(out, "stp_certificate_expiry") == NULL); /* no series: no HELP either */
    stp_metrics_gauge_set(STP_M_CERT_EXPIRY, "cert=\"old.pem\"", 3);
    CHECK(strstr(render(), "stp_certificate_expiry_timestamp_seconds{cert=\"old.pem\"} 3\n") !=
          NULL);
}

static void test_histogram(void)
{
    stp_metrics_reset();
    stp_metrics_observe(STP_M_HANDSHAKE_SECONDS, "side=\"server\"", 0.0004);
    stp_metrics_observe(STP_M_HANDSHAKE_SECONDS, "side=\"server\"", 0.003);
    stp_metrics_observe(STP_M_HANDSHAKE_SECONDS, "side=\"server\"", 9);
    const char *t = render();
    CHECK(strstr(t, "# TYPE stp_tls_handshake_seconds histogram\n") != NULL);
    CHECK(strstr(t, "stp_tls_handshake_seconds_bucket{side=\"server\",le=\"0.001\"} 1\n"));
    CHECK(strstr(t, "stp_tls_handshake_seconds_bucket{side=\"server\",le=\"0.0025\"} 1\n"));
    CHECK(strstr(t, "stp_tls_handshake_seconds_bucket{side=\"server\",le=\"0.005\"} 2\n"));
    CHECK(strstr(t, "stp_tls_handshake_seconds_bucket{side=\"server\",le=\"5\"} 2\n"));
    CHECK(strstr(t, "stp_tls_handshake_seconds_bucket{side=\"server\",le=\"+Inf\"} 3\n"));
    CHECK(strstr(t, "stp_tls_handshake_seconds_count{side=\"server\"} 3\n"));
    CHECK(strstr(t, "stp_tls_handshake_seconds_sum{side=\"server\"} 9.0034\n"));
}

static void test_wrong_kind_and_unknown_ignored(void)
{
    stp_metrics_reset();
    stp_metrics_count("stp_no_such_family", "", 1);
    stp_metrics_gauge_set(STP_M_SESSIONS, "", 1); /* a counter */
    stp_metrics_count(STP_M_SESSIONS_ACTIVE, "", 1); /* a gauge */
    stp_metrics_count("stp_metrics_dropped_series_total", "", 5); /* internal */
    CHECK_STR(render(), "");
}

static void test_truncation_reports_size(void)
{
    char small[16];
    stp_metrics_reset();
    stp_metrics_count(STP_M_MESSAGES, "listener=\"in\",result=\"accepted\"", 7);
    size_t need = stp_metrics_render(small, sizeof(small));
    CHECK(need >= sizeof(small));
    CHECK_EQ_INT(strlen(small), sizeof(small) - 1);
    char *big = malloc(need + 1);
    CHECK_EQ_INT(stp_metrics_render(big, need + 1), need);
    CHECK(strstr(big, "stp_messages_total{listener=\"in\",result=\"accepted\"} 7\n") != NULL);
    free(big);
}

static void test_table_full(void)
{
    char labels[64];
    stp_metrics_reset();
    for (int i = 0; i < 2100; i++) {
        snprintf(labels, sizeof(labels), "listener=\"l%d\"", i);
        stp_metrics_count(STP_M_BYTES, labels, 1);
    }
    size_t need = stp_metrics_render(NULL, 0);
    char *big = malloc(need + 1);
    stp_metrics_render(big, need + 1);
    CHECK(strstr(big, "stp_message_bytes_total{listener=\"l2047\"} 1\n") != NULL);
    CHECK(strstr(big, "l2048") == NULL);
    CHECK(strstr(big, "stp_metrics_dropped_series_total 52\n") != NULL);
    free(big);
    /* an over-long label string is dropped too, never truncated into another series */
    stp_metrics_reset();
    char longl[300];
    memset(longl, 'a', sizeof(longl) - 1);
    longl[sizeof(longl) - 1] = '\0';
    stp_metrics_count(STP_M_BYTES, longl, 1);
    CHECK_STR(render(), "# HELP stp_metrics_dropped_series_total Updates dropped because the "
                        "series table was full.\n# TYPE stp_metrics_dropped_series_total "
                        "counter\nstp_metrics_dropped_series_total 1\n");
}

static void test_escape(void)
{
    char out[16];
    CHECK_STR(stp_metrics_label_escape(out, sizeof(out), "a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    CHECK_STR(stp_metrics_label_escape(out, 6, "ab\"\"\""), "ab\\\"");
    CHECK_STR(stp_metrics_label_escape(out, 1, "abc"), "");
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        stp_metrics_count(STP_M_MESSAGES, "listener=\"in\",result=\"accepted\"", 1);
        stp_metrics_gauge_add(STP_M_SESSIONS_ACTIVE, "listener=\"in\"", 1);
        stp_metrics_gauge_add(STP_M_SESSIONS_ACTIVE, "listener=\"in\"", -1);
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[4];
    stp_metrics_reset();
    for (int i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, worker, NULL);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    const char *r = render();
    CHECK(strstr(r, "stp_messages_total{listener=\"in\",result=\"accepted\"} 40000\n") != NULL);
    CHECK(strstr(r, "stp_sessions_active{listener=\"in\"} 0\n") != NULL);
}

int main(void)
{
    STP_RUN(test_empty);
    STP_RUN(test_counter_and_gauge);
    STP_RUN(test_gauge_retain);
    STP_RUN(test_histogram);
    STP_RUN(test_wrong_kind_and_unknown_ignored);
    STP_RUN(test_truncation_reports_size);
    STP_RUN(test_table_full);
    STP_RUN(test_escape);
    STP_RUN(test_threads);
    return STP_CHECK_DONE();
}
