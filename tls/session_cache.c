/*
 * session_cache: see session_cache.h. BoringSSL hands every new client
 * session (in TLS 1.3, each NewSessionTicket) to the context's new-session
 * callback; the callback files it under the key the SSL was tagged with.
 * The internal session cache stays off: it would key sessions by session
 * ID, which a client cannot look up by.
 */
#include "tls/session_cache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;
    SSL_SESSION *session;
} slot_t;

typedef struct {
    pthread_mutex_t lock;
    size_t count;
    slot_t slots[STP_TLS_SESSION_CACHE_SLOTS];
} cache_t;

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static int ctx_index = -1; /* SSL_CTX -> cache_t */
static int ssl_index = -1; /* SSL -> its key (char *) */

static void free_cache(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                       void *argp)
{
    (void)parent, (void)ad, (void)index, (void)argl, (void)argp;
    cache_t *c = ptr;
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < STP_TLS_SESSION_CACHE_SLOTS; i++) {
        free(c->slots[i].key);
        SSL_SESSION_free(c->slots[i].session);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void free_key(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl, void *argp)
{
    (void)parent, (void)ad, (void)index, (void)argl, (void)argp;
    free(ptr);
}

static void make_indexes(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_cache);
    ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_key);
}

/* FNV-1a: the slot of a key. */
static size_t slot_of(const char *key)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h = (h ^ *p) * 16777619u;
    }
    return h % STP_TLS_SESSION_CACHE_SLOTS;
}

static cache_t *cache_of(const SSL_CTX *ctx)
{
    return ctx_index < 0 ? NULL : SSL_CTX_get_ex_data(ctx, ctx_index);
}

/* A new session for `ssl`: keep it under the SSL's key (taking the reference). */
static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    cache_t *c = cache_of(SSL_get_SSL_CTX(ssl));
    const char *key = SSL_get_ex_data(ssl, ssl_index);
    if (c == NULL || key == NULL || !SSL_SESSION_is_resumable(session)) {
        return 0; /* not ours: BoringSSL drops its reference */
    }
    char *copy = strdup(key);
    if (copy == NULL) {
        return 0;
    }
    slot_t *s = &c->slots[slot_of(key)];
    pthread_mutex_lock(&c->lock);
    char *old_key = s->key;
    SSL_SESSION *old = s->session;
    c->count += old == NULL;
    s->key = copy;
    s->session = session;
    pthread_mutex_unlock(&c->lock);
    free(old_key);
    SSL_SESSION_free(old);
    return 1;
}

int stp_tls_session_cache_attach(SSL_CTX *ctx)
{
    pthread_once(&index_once, make_indexes);
    if (ctx_index < 0 || ssl_index < 0) {
        return -1;
    }
    cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -1;
    }
    pthread_mutex_init(&c->lock, NULL);
    if (!SSL_CTX_set_ex_data(ctx, ctx_index, c)) {
        free_cache(NULL, c, NULL, 0, 0, NULL);
        return -1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return 0;
}

int stp_tls_session_cache_prepare(SSL *ssl, const char *key)
{
    cache_t *c = cache_of(SSL_get_SSL_CTX(ssl));
    if (c == NULL) {
        return 0; /* no cache on this context: nothing to do */
    }
    char *copy = strdup(key);
    if (copy == NULL || !SSL_set_ex_data(ssl, ssl_index, copy)) {
        free(copy);
        return -1;
    }
    slot_t *s = &c->slots[slot_of(key)];
    SSL_SESSION *found = NULL;
    pthread_mutex_lock(&c->lock);
    if (s->session != NULL && strcmp(s->key, key) == 0) {
        found = s->session;
        SSL_SESSION_up_ref(found);
    }
    pthread_mutex_unlock(&c->lock);
    if (found != NULL) {
        SSL_set_session(ssl, found); /* takes its own reference */
        SSL_SESSION_free(found);
    }
    return 0;
}

size_t stp_tls_session_cache_count(SSL_CTX *ctx)
{
    cache_t *c = cache_of(ctx);
    if (c == NULL) {
        return 0;
    }
    pthread_mutex_lock(&c->lock);
    size_t n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}
