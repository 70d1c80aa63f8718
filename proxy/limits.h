/*
 * limits: connection counting per listener, in total and per client IP, so
 * one address cannot take every slot. Counts are taken at accept and given
 * back when the session is freed.
 *
 * One table per listener, shared by every worker thread that runs a copy of
 * that listener, so the caps hold for the process as a whole. A mutex
 * guards it: it is taken once per connect and once per disconnect, never
 * per byte.
 */
#ifndef STP_LIMITS_H
#define STP_LIMITS_H

#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct stp_ip_count_s stp_ip_count_t;

typedef struct {
    pthread_mutex_t lock;
    unsigned max_total;
    unsigned max_per_ip;
    unsigned total;
    stp_ip_count_t **buckets; /* chained hash on the address bytes */
    size_t nbuckets;
} stp_limits_t;

typedef enum { STP_LIMIT_OK = 0, STP_LIMIT_TOTAL, STP_LIMIT_PER_IP } stp_limit_result_t;

int stp_limits_init(stp_limits_t *l, unsigned max_total, unsigned max_per_ip);
void stp_limits_free(stp_limits_t *l);

/* Changes the caps (reload); slots already taken are kept. */
void stp_limits_set(stp_limits_t *l, unsigned max_total, unsigned max_per_ip);

/* Slots currently taken. */
unsigned stp_limits_total(stp_limits_t *l);

/* Takes a slot for `sa` unless a cap is reached (then nothing is taken). */
stp_limit_result_t stp_limits_acquire(stp_limits_t *l, const struct sockaddr *sa);

/* Gives back a slot taken by stp_limits_acquire for the same address. */
void stp_limits_release(stp_limits_t *l, const struct sockaddr *sa);

#endif
