/*
 * Heap-backed per-thread buffers for sanitizer builds (see thread_buf.h).
 * Each thread keeps the slots it filled; a thread-specific key's destructor
 * frees them when the thread exits, so LeakSanitizer sees no leak from a
 * worker that ended before the process did.
 */
#include "proxy/thread_buf.h"

#ifdef STP_THREAD_BUF_ON_HEAP

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_SLOTS 8

typedef struct {
    char **slot[MAX_SLOTS];
    unsigned n;
} owned_t;

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void release(void *arg)
{
    owned_t *o = arg;
    for (unsigned i = 0; i < o->n; i++) {
        free(*o->slot[i]);
        *o->slot[i] = NULL;
    }
    free(o);
}

static void make_key(void)
{
    if (pthread_key_create(&key, release) != 0) {
        abort();
    }
}

char *stp_thread_buf(char **slot, size_t size)
{
    pthread_once(&key_once, make_key);
    owned_t *o = pthread_getspecific(key);
    if (o == NULL) {
        o = calloc(1, sizeof(*o));
        if (o == NULL || pthread_setspecific(key, o) != 0) {
            abort();
        }
    }
    if (o->n == MAX_SLOTS || (*slot = malloc(size)) == NULL) {
        fprintf(stderr, "stp_thread_buf: cannot allocate %zu bytes\n", size);
        abort();
    }
    o->slot[o->n++] = slot;
    return *slot;
}

#else

/* ISO C wants a translation unit to declare something. */
typedef int stp_thread_buf_unused_t;

#endif
