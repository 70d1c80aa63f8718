/*
 * fifo_bio: a byte queue as a BoringSSL BIO (see fifo_bio.c for why it
 * replaces BIO_s_mem). Writes append; reads take from the front; an empty
 * queue makes a read ask to be retried (never end of stream). Pending
 * bytes can be looked at in place and dropped once sent, and a drained
 * queue gives back a buffer larger than STP_FIFO_BIO_IDLE_CAP, so an idle
 * connection keeps at most that much.
 *
 * All functions but stp_fifo_bio_new() take a BIO it made.
 */
#ifndef STP_TLS_FIFO_BIO_H
#define STP_TLS_FIFO_BIO_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bio.h>

/* A drained queue whose buffer is larger than this frees it. SMTP commands
 * and replies (one small record each) stay below it, so a session does not
 * reallocate on every line; the handshake flights and message bodies go
 * above it, and are released once sent or consumed. Measured: an idle
 * server engine then holds about 3.4 KB in all, against 5 KB with the
 * handshake buffers kept, and 150 KB (2.2 MB) after relaying a 64 KB (1 MB)
 * message when nothing is released. */
#define STP_FIFO_BIO_IDLE_CAP 512

/* A new empty queue (owned by the caller, or by the SSL it is given to);
 * NULL on allocation failure. */
BIO *stp_fifo_bio_new(void);

/*
 * Queues in[0..len) without copying it: reads take these bytes where they
 * lie, after the queue's own. stp_fifo_bio_keep() must be called before
 * in[] changes or goes away; it copies what was not read yet (returns 0,
 * or -1 when out of memory: the unread bytes are then lost). One loan
 * at a time (a second before the first was kept aborts); a write keeps
 * the loan first, so the bytes stay in order.
 */
void stp_fifo_bio_lend(BIO *b, const uint8_t *in, size_t len);
int stp_fifo_bio_keep(BIO *b);

/* Bytes queued. */
size_t stp_fifo_bio_pending(BIO *b);

/* Points *out at all queued bytes (borrowed: valid until the next write
 * or drop) and returns their number. */
size_t stp_fifo_bio_peek(BIO *b, const uint8_t **out);

/* Discards everything queued, and a large buffer with it. */
void stp_fifo_bio_drop(BIO *b);

/* Gives a large buffer back if the queue is empty. */
void stp_fifo_bio_release(BIO *b);

/* The buffer's size (what the queue holds in memory). */
size_t stp_fifo_bio_capacity(BIO *b);

#endif
