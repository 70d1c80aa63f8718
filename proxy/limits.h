/*
 * limits: connection counting per listener, in total and per client IP, so
 * one address cannot take every slot. Counts are taken at accept and given
 * back when the session is freed.
 *
 * XXX single-threaded for now: one table per listener and worker. With
 * several workers the per-IP cap must be shared (atomic table); see the
 * workers issue.
 */
#ifndef STP_LIMITS_H
#define STP_LIMITS_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct stp_ip_count_s stp_ip_count_t;

typedef struct {
    unsigned max_total;
    unsigned max_per_ip;
    unsigned total;
    stp_ip_count_t **buckets; /* chained hash on the address bytes */
    size_t nbuckets;
} stp_limits_t;

typedef enum { STP_LIMIT_OK = 0, STP_LIMIT_TOTAL, STP_LIMIT_PER_IP } stp_limit_result_t;

int stp_limits_init(stp_limits_t *l, unsigned max_total, unsigned max_per_ip);
void stp_limits_free(stp_limits_t *l);

/* Takes a slot for `sa` unless a cap is reached (then nothing is taken). */
stp_limit_result_t stp_limits_acquire(stp_limits_t *l, const struct sockaddr *sa);

/* Gives back a slot taken by stp_limits_acquire for the same address. */
void stp_limits_release(stp_limits_t *l, const struct sockaddr *sa);

#endif
