/*
 * log: one line per event on stderr, text ("key=value") or JSON. Peer bytes
 * are never printed raw: stp_log_escape() escapes and truncates them first.
 */
#ifndef STP_LOG_H
#define STP_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/config.h"

void stp_log_init(stp_log_format_t format, stp_log_level_t level);

/* stderr (default) or syslog (openlog with facility mail); the format
 * applies to both, without the timestamp for syslog. */
void stp_log_set_target(stp_log_target_t target);

/* 1 if messages of `level` are printed. */
int stp_log_enabled(stp_log_level_t level);

/*
 * Logs one event. `fmt` produces the message body as space-separated
 * key=value pairs (text) and is turned into JSON members in JSON mode; the
 * first word without "=" is the event name.
 */
void stp_log(stp_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Copies in[0..len) into out (NUL-terminated, at most cap-1 bytes), escaping
 * anything outside printable ASCII, '"', '\\' and '=' as \xNN and cutting it
 * at `cap` with a trailing "..." so a peer can never forge log fields or
 * flood the log. Returns out.
 */
char *stp_log_escape(char *out, size_t cap, const char *in, size_t len);

/*
 * One line a second at most for an event that can repeat thousands of times
 * a second (accept failing once per waiting connection when out of
 * descriptors). Zero-initialised. stp_log_allow() says whether to log now
 * (at `now_ms`, a monotonic clock) and, when it does, sets *quiet to how
 * many were not logged since the last line.
 */
typedef struct {
    uint64_t last_ms;
    int logged;
    unsigned quiet;
} stp_log_ratelimit_t;

int stp_log_allow(stp_log_ratelimit_t *r, uint64_t now_ms, unsigned *quiet);

#endif
