/*
 * certwatch: the server certificates as files on disk. Logs each
 * certificate's names and expiry (warning within 21 days, error once
 * expired) and exports it as stp_certificate_expiry_timestamp_seconds, at
 * start, at every reload and once a day; and watches the certificate and
 * key files (stat polling, which sees both a file rewritten in place, as
 * acme.sh does, and a symlink switched to a new file, as certbot does) so a
 * renewed certificate is picked up without a signal.
 *
 * Runs on the main thread's loop only.
 */
#ifndef STP_CERTWATCH_H
#define STP_CERTWATCH_H

#include <uv.h>

#include "proxy/config.h"

#define STP_CERT_WARN_DAYS 21

/* Logs names and expiry of every [tls] cert of `conf` and sets the metric. */
void stp_certwatch_check(const stp_config_t *conf);

/*
 * Starts watching the files of `conf` (borrowed; call again with the new
 * snapshot after a reload). `on_change` runs once the files have been quiet
 * for a moment after a change. `interval_ms`: how often files are looked at.
 */
void stp_certwatch_start(uv_loop_t *loop, const stp_config_t *conf, unsigned interval_ms,
                         void (*on_change)(void));

/* Stops watching and closes the handles (the loop can then end). */
void stp_certwatch_stop(void);

#endif
