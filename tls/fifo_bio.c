/*
 * fifo_bio: a byte queue as a BoringSSL BIO, for an SSL that is driven
 * through memory (tls/tls_engine.c, and test/bench's smtp-bench).
 *
 * Why not BIO_s_mem: a memory BIO moves what is left to the front after
 * every read, and SSL reads a record's header and then its body, so a
 * 64 KiB delivery of ciphertext was moved several times over; it also
 * zero-fills every growth and every reset, and BoringSSL's OPENSSL_free
 * clears a buffer before freeing it. This queue reads from a head offset,
 * appends without clearing and frees with free() (ciphertext needs no
 * clearing). callgrind, user-space instructions per proxy session with a
 * 1 MiB message: 12.0 million where the memory BIOs took 18.5 inbound,
 * 10.0 against 13.1 outbound; 3.26 against 3.39 million for ten 4 KiB
 * messages.
 */
#include "tls/fifo_bio.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * fifo: a byte queue as a BIO. Bytes live in buf[head..tail); a read takes
 * from head and an emptied queue starts again at 0, so nothing is moved
 * while the consumer keeps up (SSL consumes whole records, the caller takes
 * everything pending). A write that does not fit behind tail first moves
 * the live bytes to the front, then grows the buffer.
 */
/* A queue that outgrows one full TLS record (16 KiB of plaintext and its
 * 22 bytes of header and tag) is carrying bulk data, most often the four
 * records of a 64 KiB write to a next hop: it grows at once to hold them
 * all, instead of doubling from 32 to 128 KiB and copying on each step (an
 * allocator's churn that ASan's quarantine turned into megabytes of RSS
 * behind a stalled next hop). It is freed once drained, as any queue over
 * STP_FIFO_BIO_IDLE_CAP. */
#define FULL_RECORD (16384 + 22)
#define BULK_CAP (72 * 1024)

/* Lent bytes (stp_fifo_bio_lend) are the caller's: they follow the queue's
 * own and are read where they lie until stp_fifo_bio_keep() copies what is
 * left of them. */
typedef struct {
    uint8_t *buf;
    size_t head, tail, cap;
    const uint8_t *lent;
    size_t lent_len;
} fifo_t;

static size_t fifo_len(const fifo_t *f)
{
    return f->tail - f->head + f->lent_len;
}

static int fifo_append(fifo_t *f, const uint8_t *in, size_t n);

/* Makes lent bytes the queue's own (a copy), so the lender may reuse them. */
static int fifo_keep(fifo_t *f)
{
    if (f->lent_len == 0) {
        f->lent = NULL;
        return 0;
    }
    const uint8_t *p = f->lent;
    size_t n = f->lent_len;
    f->lent = NULL;
    f->lent_len = 0;
    return fifo_append(f, p, n);
}

/* Gives a large buffer back once the queue is drained. */
static void fifo_release(fifo_t *f)
{
    if (f->head == f->tail && f->cap > STP_FIFO_BIO_IDLE_CAP) {
        free(f->buf);
        f->buf = NULL;
        f->head = f->tail = f->cap = 0;
    }
}

/* Appends in[0..n) to the queue's own bytes. 0, or -1 when out of memory. */
static int fifo_append(fifo_t *f, const uint8_t *in, size_t n)
{
    size_t live = f->tail - f->head;
    if (f->cap - f->tail < n) {
        if (f->cap - live >= n) {
            memmove(f->buf, f->buf + f->head, live);
        } else {
            size_t cap = f->cap ? f->cap : 256;
            if (live + n > FULL_RECORD && cap < BULK_CAP) {
                cap = BULK_CAP; /* one step where doubling took three */
            }
            while (cap - live < n) {
                if (cap > SIZE_MAX / 2) {
                    return -1;
                }
                cap *= 2;
            }
            uint8_t *nb = malloc(cap);
            if (nb == NULL) {
                return -1;
            }
            if (live > 0) {
                memcpy(nb, f->buf + f->head, live);
            }
            free(f->buf);
            f->buf = nb;
            f->cap = cap;
        }
        f->head = 0;
        f->tail = live;
    }
    memcpy(f->buf + f->tail, in, n);
    f->tail += n;
    return 0;
}

static int fifo_write(BIO *b, const char *in, int inl)
{
    fifo_t *f = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (inl <= 0) {
        return 0;
    }
    /* after what was lent, in order */
    if (fifo_keep(f) < 0 || fifo_append(f, (const uint8_t *)in, (size_t)inl) < 0) {
        return -1;
    }
    return inl;
}

/* An empty queue means "wait for more", never end of stream. */
static int fifo_read(BIO *b, char *out, int outl)
{
    fifo_t *f = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (outl <= 0) {
        return 0;
    }
    if (fifo_len(f) == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t want = (size_t)outl, n = f->tail - f->head;
    if (n > want) {
        n = want;
    }
    if (n > 0) {
        memcpy(out, f->buf + f->head, n);
        f->head += n;
        if (f->head == f->tail) {
            f->head = f->tail = 0;
        }
    }
    size_t more = want - n < f->lent_len ? want - n : f->lent_len;
    if (more > 0) {
        memcpy(out + n, f->lent, more);
        f->lent += more;
        f->lent_len -= more;
        n += more;
    }
    return (int)n;
}

static long fifo_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    fifo_t *f = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_PENDING:
        return (long)fifo_len(f);
    case BIO_CTRL_FLUSH:
        return 1; /* SSL flushes after each flight: the bytes are queued */
    case BIO_CTRL_RESET:
        f->head = f->tail = 0;
        f->lent = NULL;
        f->lent_len = 0;
        return 1;
    default:
        return 0;
    }
}

static int fifo_create(BIO *b)
{
    fifo_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return 0;
    }
    BIO_set_data(b, f);
    BIO_set_init(b, 1);
    return 1;
}

static int fifo_destroy(BIO *b)
{
    fifo_t *f = BIO_get_data(b);
    if (f != NULL) {
        free(f->buf);
        free(f);
        BIO_set_data(b, NULL);
    }
    return 1;
}

static BIO_METHOD *fifo_method;

static void fifo_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "stp fifo");
    if (m != NULL && (!BIO_meth_set_write(m, fifo_write) || !BIO_meth_set_read(m, fifo_read) ||
                      !BIO_meth_set_ctrl(m, fifo_ctrl) || !BIO_meth_set_create(m, fifo_create) ||
                      !BIO_meth_set_destroy(m, fifo_destroy))) {
        BIO_meth_free(m);
        m = NULL;
    }
    fifo_method = m;
}

/* The method is made once per process. */
BIO *stp_fifo_bio_new(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fifo_method_init);
    return fifo_method != NULL ? BIO_new(fifo_method) : NULL;
}

size_t stp_fifo_bio_pending(BIO *b)
{
    return fifo_len(BIO_get_data(b));
}

size_t stp_fifo_bio_peek(BIO *b, const uint8_t **out)
{
    fifo_t *f = BIO_get_data(b);
    if (fifo_keep(f) < 0) { /* nothing is lent to a queue that is peeked */
        *out = NULL;
        return 0;
    }
    *out = f->buf != NULL ? f->buf + f->head : NULL;
    return fifo_len(f);
}

void stp_fifo_bio_drop(BIO *b)
{
    fifo_t *f = BIO_get_data(b);
    f->head = f->tail = 0;
    f->lent = NULL;
    f->lent_len = 0;
    fifo_release(f);
}

void stp_fifo_bio_lend(BIO *b, const uint8_t *in, size_t len)
{
    fifo_t *f = BIO_get_data(b);
    if (f->lent_len > 0) {
        abort(); /* the last loan was not kept: its bytes may be gone */
    }
    f->lent = in;
    f->lent_len = len;
}

int stp_fifo_bio_keep(BIO *b)
{
    return fifo_keep(BIO_get_data(b));
}

void stp_fifo_bio_release(BIO *b)
{
    fifo_release(BIO_get_data(b));
}

size_t stp_fifo_bio_capacity(BIO *b)
{
    const fifo_t *f = BIO_get_data(b);
    return f->cap;
}
