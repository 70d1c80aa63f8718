/*
 * metrics: one process-wide registry of counters, gauges and histograms,
 * rendered in the Prometheus text exposition format (version 0.0.4).
 * Thread-safe: every worker updates the same registry (one mutex; updates
 * happen a few times per session, never per byte or per line).
 *
 * A series is a family name plus a label string written by the caller in
 * Prometheus syntax, without braces:
 *
 *     stp_metrics_count(STP_M_SESSIONS, "listener=\"in\",tls=\"TLSv1.3\"", 1);
 *
 * Label values must come from a bounded set (listener names, TLS versions,
 * reasons chosen by the proxy): never peer-controlled text such as a HELO
 * name, or the number of series grows without bound. Values that may contain
 * '"' or '\\' go through stp_metrics_label_escape(). When the series table is
 * full, further new series are dropped and counted in
 * stp_metrics_dropped_series_total.
 *
 * Family names are the STP_M_* macros below; every family is declared with
 * its type and help text in metrics.c (families[]): an update of an unknown
 * family is ignored. The names are a stable interface (dashboards use them):
 * see the "Metrics" section of the README.
 */
#ifndef STP_METRICS_H
#define STP_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Sessions accepted, by listener and TLS version at the end ("none" when
 * the session never used TLS). Labels: listener, tls. */
#define STP_M_SESSIONS "stp_sessions_total"
/* Sessions open now. Labels: listener. */
#define STP_M_SESSIONS_ACTIVE "stp_sessions_active"
/* Connections refused before a session started (limits, allow list).
 * Labels: listener, reason (max_connections|max_connections_per_ip|not_allowed). */
#define STP_M_CONN_REFUSED "stp_connections_refused_total"
/* STARTTLS on the client side of inbound listeners. Labels: listener,
 * result (offered|accepted|failed), reason (for failed: handshake|timeout|
 * protocol|closed). */
#define STP_M_STARTTLS "stp_starttls_total"
/* TLS handshakes, both directions. Labels: listener, side (server|client),
 * version, result (ok|failed). */
#define STP_M_HANDSHAKES "stp_tls_handshakes_total"
/* Handshake latency in seconds (histogram). Labels: listener, side. */
#define STP_M_HANDSHAKE_SECONDS "stp_tls_handshake_seconds"
/* Outbound: TLS toward the next hop refused, so no plaintext was sent.
 * Labels: listener, level, reason (not_offered|starttls_refused|
 * handshake|protocol_version|certificate|injection). */
#define STP_M_DOWNGRADE_REFUSED "stp_downgrades_refused_total"
/* Policy decisions toward a next hop. Labels: listener, source
 * (config|mta-sts|dane|remembered), decision (tls_verified|tls_encrypted|
 * plaintext|refused|would_refuse). */
#define STP_M_POLICY "stp_policy_decisions_total"
/* Outbound connection_cache_time: next hop connections parked after a
 * session, taken over by a later one (reused: RSET answered 250), or found
 * dead when taken (reuse_failed: the session connected anew). Labels:
 * listener, event (parked|reused|reuse_failed). */
#define STP_M_CONN_CACHE "stp_connection_cache_total"
/* Messages whose final reply was relayed. Labels: listener, result
 * (accepted|rejected|tempfail). */
#define STP_M_MESSAGES "stp_messages_total"
/* Message bytes relayed after DATA. Labels: listener. */
#define STP_M_BYTES "stp_message_bytes_total"
/* Certificate expiry as a Unix time. Labels: cert (file name). */
#define STP_M_CERT_EXPIRY "stp_certificate_expiry_timestamp_seconds"
/* Configuration reloads. Labels: result (ok|failed). */
#define STP_M_RELOADS "stp_config_reloads_total"

/* counter += n */
void stp_metrics_count(const char *family, const char *labels, uint64_t n);
/* gauge += delta */
void stp_metrics_gauge_add(const char *family, const char *labels, int64_t delta);
/* gauge = value */
void stp_metrics_gauge_set(const char *family, const char *labels, double value);
/* The series of a gauge family whose labels are not among `labels` leave
 * the output until set again (a certificate no longer configured has no
 * expiry to watch). The others are left as they are. */
void stp_metrics_gauge_retain(const char *family, const char *const *labels, size_t n);
/* histogram: one observation */
void stp_metrics_observe(const char *family, const char *labels, double value);

/*
 * Renders every family that has at least one series (HELP, TYPE, then its
 * series in creation order) into buf. Returns the length the whole text
 * needs (like snprintf): when it is >= cap the output was truncated and the
 * caller retries with a larger buffer.
 */
size_t stp_metrics_render(char *buf, size_t cap);

/* Writes `in` into out with '\\', '"' and newline escaped; truncates to fit
 * (always NUL-terminated when cap > 0). Returns out. */
char *stp_metrics_label_escape(char *out, size_t cap, const char *in);

/* Forgets every series (tests). */
void stp_metrics_reset(void);

#endif
