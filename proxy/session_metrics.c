/*
 * session_metrics: label strings for the session's metrics (see
 * session_metrics.h). Labels are built on the stack; the listener name is
 * escaped because it comes from the configuration file.
 */
#include "proxy/session_metrics.h"

#include <stdio.h>

#include "proxy/metrics.h"

#define LABELS_MAX 256

static const char *esc(char *buf, size_t cap, const char *listener)
{
    return stp_metrics_label_escape(buf, cap, listener ? listener : "");
}

void stp_sm_session_open(const char *listener)
{
    char l[80], lab[LABELS_MAX];
    snprintf(lab, sizeof(lab), "listener=\"%s\"", esc(l, sizeof(l), listener));
    stp_metrics_gauge_add(STP_M_SESSIONS_ACTIVE, lab, 1);
}

void stp_sm_session_close(const char *listener, const char *tls, int refused)
{
    char l[80], lab[LABELS_MAX];
    esc(l, sizeof(l), listener);
    snprintf(lab, sizeof(lab), "listener=\"%s\"", l);
    stp_metrics_gauge_add(STP_M_SESSIONS_ACTIVE, lab, -1);
    if (!refused) {
        snprintf(lab, sizeof(lab), "listener=\"%s\",tls=\"%s\"", l, tls && tls[0] ? tls : "none");
        stp_metrics_count(STP_M_SESSIONS, lab, 1);
    }
}

void stp_sm_refused(const char *listener, const char *reason)
{
    char l[80], lab[LABELS_MAX];
    snprintf(lab, sizeof(lab), "listener=\"%s\",reason=\"%s\"", esc(l, sizeof(l), listener),
             reason);
    stp_metrics_count(STP_M_CONN_REFUSED, lab, 1);
}

void stp_sm_starttls(const char *listener, const char *result, const char *reason)
{
    char l[80], lab[LABELS_MAX];
    snprintf(lab, sizeof(lab), "listener=\"%s\",result=\"%s\",reason=\"%s\"",
             esc(l, sizeof(l), listener), result, reason ? reason : "");
    stp_metrics_count(STP_M_STARTTLS, lab, 1);
}

void stp_sm_handshake(const char *listener, const char *side, const char *version, int ok,
                      double seconds)
{
    char l[80], lab[LABELS_MAX];
    esc(l, sizeof(l), listener);
    snprintf(lab, sizeof(lab), "listener=\"%s\",side=\"%s\",version=\"%s\",result=\"%s\"", l, side,
             ok && version && version[0] ? version : "none", ok ? "ok" : "failed");
    stp_metrics_count(STP_M_HANDSHAKES, lab, 1);
    snprintf(lab, sizeof(lab), "listener=\"%s\",side=\"%s\"", l, side);
    stp_metrics_observe(STP_M_HANDSHAKE_SECONDS, lab, seconds);
}

void stp_sm_downgrade(const char *listener, const char *level, const char *reason)
{
    char l[80], lab[LABELS_MAX];
    snprintf(lab, sizeof(lab), "listener=\"%s\",level=\"%s\",reason=\"%s\"",
             esc(l, sizeof(l), listener), level, reason);
    stp_metrics_count(STP_M_DOWNGRADE_REFUSED, lab, 1);
}

void stp_sm_policy(const char *listener, const char *source, const char *decision)
{
    char l[80], lab[LABELS_MAX];
    snprintf(lab, sizeof(lab), "listener=\"%s\",source=\"%s\",decision=\"%s\"",
             esc(l, sizeof(l), listener), source, decision);
    stp_metrics_count(STP_M_POLICY, lab, 1);
}

void stp_sm_conn_cache(const char *listener, const char *event)
{
    char l[80], lab[LABELS_MAX];
    snprintf(lab, sizeof(lab), "listener=\"%s\",event=\"%s\"", esc(l, sizeof(l), listener),
             event);
    stp_metrics_count(STP_M_CONN_CACHE, lab, 1);
}

void stp_sm_message(const char *listener, int code, uint64_t bytes)
{
    char l[80], lab[LABELS_MAX];
    esc(l, sizeof(l), listener);
    const char *result = code / 100 == 2 ? "accepted" : code / 100 == 4 ? "tempfail" : "rejected";
    snprintf(lab, sizeof(lab), "listener=\"%s\",result=\"%s\"", l, result);
    stp_metrics_count(STP_M_MESSAGES, lab, 1);
    if (code / 100 == 2) {
        snprintf(lab, sizeof(lab), "listener=\"%s\"", l);
        stp_metrics_count(STP_M_BYTES, lab, bytes);
    }
}
