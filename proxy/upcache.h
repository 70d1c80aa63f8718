/*
 * upcache: TLS connections to a next hop kept open between legacy sessions
 * (outbound `connection_cache_time`; Postfix's scache plays this part for
 * its SMTP client).
 *
 * When the legacy MTA says QUIT, a session whose connection to the next hop
 * is clean (between transactions; nothing but envelopes and messages sent on
 * it, no AUTH, no EHLO or HELO of the legacy MTA's own; TLS as policy asked)
 * parks the connection here instead of saying QUIT to the next hop. The next
 * session of the same listener copy (one per worker) toward the same next hop
 * takes it over, sends RSET and, on 250, greets the legacy MTA: no connect,
 * greeting, EHLO, STARTTLS or handshake. A parked connection on which the next
 * hop says anything (a 421 at its idle timeout) or which it closes is closed;
 * one parked for the configured time gets QUIT.
 *
 * Ownership: a parked connection belongs to the cache (its conn's callbacks
 * and owner are the cache's); take hands it to the caller, who sets them.
 * Single-threaded, like the loop it runs on.
 */
#ifndef STP_UPCACHE_H
#define STP_UPCACHE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "proxy/conn.h"

#define STP_UPCACHE_MAX 64 /* parked connections per cache */

typedef struct stp_upcache_s stp_upcache_t;

/* A connection to a backend or next hop that can outlive its session. */
typedef struct stp_upconn_s {
    stp_conn_t conn;                  /* first: the conn's close callback frees the whole */
    stp_upcache_t *home;              /* the cache that owns it (parked, or saying QUIT) */
    struct stp_upconn_s *prev, *next; /* in home's list while parked */
    int parked;
    uint64_t born_ms;   /* when the session that connected it began */
    uint64_t expire_ms; /* parked: QUIT then */
    unsigned uses;      /* legacy sessions that ended on it */
    char key[280];      /* the next hop, as sessions name it */
    /* What a session taking it over needs to know: the TLS it has... */
    char version[16];
    char cipher[64];
    const char *verify; /* static: "ok", "failed" */
    /* ...and the next hop's reply to the proxy's EHLO, as the legacy MTA sees it. */
    char *ehlo;
    size_t ehlo_len;
    unsigned pipelining : 1;
    unsigned size_added : 1;
} stp_upconn_t;

/* A zeroed connection object (calloc), or NULL. */
stp_upconn_t *stp_upconn_new(void);
/* Frees u (after its conn's close callback, or if its conn never started). */
void stp_upconn_free(stp_upconn_t *u);

/* A cache on `loop`; on_closed(arg) runs once stp_upcache_close() is done
 * (nothing of the cache is open any more; the cache frees itself right after). */
stp_upcache_t *stp_upcache_new(uv_loop_t *loop, void (*on_closed)(void *arg), void *arg);

/* Parks u for ttl_ms (reading, to notice a next hop that speaks or closes).
 * Returns 0, or -1 when the cache is full or closing: u stays the caller's. */
int stp_upcache_put(stp_upcache_t *c, stp_upconn_t *u, uint64_t ttl_ms);

/* Takes the most recently parked live connection for `key`, or NULL. The
 * caller sets the conn's callbacks and owner at once. */
stp_upconn_t *stp_upcache_take(stp_upcache_t *c, const char *key);

/* Says QUIT on every parked connection (a reload: they were made under the
 * previous configuration). */
void stp_upcache_flush(stp_upcache_t *c);

/* Flushes and stops; on_closed runs once the last connection is closed. */
void stp_upcache_close(stp_upcache_t *c);

/* Parked connections (for tests). */
unsigned stp_upcache_count(const stp_upcache_t *c);

#endif
