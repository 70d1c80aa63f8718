/*
 * state_store: the policy cache (policy/policy_cache.h) on disk, in
 * `state_dir`, so MTA-STS policies and remembered TLS survive restarts.
 *
 * Saving is crash-safe: the text goes to a temporary file in the same
 * directory, which is fsync'ed and renamed over the old file, then the
 * directory is fsync'ed; a crash at any point leaves either the old file or
 * the new one, never a mix. Loading checks the file whole (see the format in
 * policy_cache.h); a damaged or truncated file is ignored with a warning and
 * moved aside as FILE.bad for inspection, never a reason to stop.
 *
 * Both calls block on the disk: call them at start-up, or from a thread
 * (uv_queue_work), not from a worker loop in the middle of sessions. One
 * saver at a time per file (the temporary file is named after the process).
 */
#ifndef STP_STATE_STORE_H
#define STP_STATE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "policy/policy_cache.h"

/* The file inside state_dir. */
#define STP_STATE_FILE "domains.state"

/* STATE_DIR/domains.state into buf; -1 if it does not fit. */
int stp_state_path(const char *state_dir, char *buf, size_t len);

/*
 * The whole file at `path` in a new buffer (the caller frees it), *len its
 * length; or NULL, with *why NULL when there is no file, else why it could
 * not be read (not a regular file, larger than the state ever is, ...).
 * Reads only: stp_state_load() and `smtp-tls-proxy probe` both use it.
 */
char *stp_state_read(const char *path, size_t *len, const char **why);

/*
 * Replaces the content of `c` with the file at `path`. Returns 1 when it
 * was loaded, 0 when there is no file yet (c left empty), -1 when it could
 * not be read or was damaged (c left empty, a warning logged, a damaged file
 * renamed to PATH.bad).
 */
int stp_state_load(stp_cache_t *c, const char *path, int64_t now);

/* Writes `c` to `path` atomically. 0, or -1 with an error logged. */
int stp_state_save(const stp_cache_t *c, const char *path);

/* The same in two steps, so the cache can be unlocked before the disk is
 * waited for: stp_cache_serialize() (in policy_cache.h), then this, which
 * writes `text` atomically and frees it (NULL: the serialization failed,
 * logged as such). Writers must not overlap. */
int stp_state_write(char *text, size_t len, const char *path);

#endif
