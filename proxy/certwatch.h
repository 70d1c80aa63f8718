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

#include <sys/stat.h>

#include <uv.h>

#include "proxy/config.h"

#define STP_CERT_WARN_DAYS 21

/* Logs names and expiry of every [tls] cert of `conf` and sets the metric. */
void stp_certwatch_check(const stp_config_t *conf);

/*
 * The first certificate of `file`: seconds until it expires into `left`
 * (0 or less: expired), its notAfter as "YYYY-MM-DDTHH:MM:SSZ" into `when`.
 * Returns 0, or -1 when the file holds no readable certificate. What
 * `--check` warns about, as stp_certwatch_check logs it.
 */
int stp_certwatch_expiry(const char *file, long *left, char *when, size_t whenlen);

/* The state of the certificate and key files a change is seen against. */
typedef struct {
    const char *path[2 * STP_CONF_MAX_CERTS]; /* borrowed from the configuration */
    struct stat st[2 * STP_CONF_MAX_CERTS];
    unsigned char ok[2 * STP_CONF_MAX_CERTS];
    size_t n;
} stp_certwatch_base_t;

/*
 * Takes the state of the files of `conf` before they are read (call it
 * between loading the configuration and loading the certificates): a file
 * replaced while or after it is read then differs from `base` and is loaded
 * again, where a look taken after loading would miss it.
 */
void stp_certwatch_base(const stp_config_t *conf, stp_certwatch_base_t *base);

/*
 * Starts watching the files of `conf` (borrowed; call again with the new
 * snapshot after a reload), compared first with `base`, which
 * stp_certwatch_base took for the same `conf` (its file names are used).
 * `on_change` runs once the files have been quiet for a moment after a
 * change. `interval_ms`: how often files are looked at.
 */
void stp_certwatch_start(uv_loop_t *loop, const stp_config_t *conf,
                         const stp_certwatch_base_t *base, unsigned interval_ms,
                         void (*on_change)(void));

/* Stops watching and closes the handles (the loop can then end). */
void stp_certwatch_stop(void);

#endif
