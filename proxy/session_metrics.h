/*
 * session_metrics: the session's facts turned into metrics series (see
 * metrics.h for the families). One call per fact, made next to the log line
 * that reports the same fact, so the log and the metrics agree. Every label
 * value is either the listener's name (escaped here) or one of the fixed
 * words documented in the README's "Metrics" section.
 */
#ifndef STP_SESSION_METRICS_H
#define STP_SESSION_METRICS_H

#include <stdint.h>

/* A connection accepted (+1 active) / its session freed (-1 active, and
 * counted in stp_sessions_total unless `refused`). tls: "TLSv1.3"... or "none". */
void stp_sm_session_open(const char *listener);
void stp_sm_session_close(const char *listener, const char *tls, int refused);
/* reason: max_connections|max_connections_per_ip|not_allowed|draining|proxy_protocol */
void stp_sm_refused(const char *listener, const char *reason);
/* result: offered|accepted|failed; reason (failed only): handshake|timeout|closed */
void stp_sm_starttls(const char *listener, const char *result, const char *reason);
/* side: server (toward clients) | client (toward next hops); ok: 1/0;
 * seconds: from the start of the handshake to its outcome */
void stp_sm_handshake(const char *listener, const char *side, const char *version, int ok,
                      double seconds);
/* reason: not_offered|starttls_refused|handshake|certificate|injection */
void stp_sm_downgrade(const char *listener, const char *level, const char *reason);
/* source: config; decision: tls_verified|tls_encrypted|plaintext|refused|would_refuse */
void stp_sm_policy(const char *listener, const char *source, const char *decision);
/* event: parked|reused|reuse_failed (connection_cache_time) */
void stp_sm_conn_cache(const char *listener, const char *event);
/* the final reply to a message (2xx accepted, 4xx tempfail, 5xx rejected;
 * code 0: refused by the proxy = rejected) and its size */
void stp_sm_message(const char *listener, int code, uint64_t bytes);

#endif
