/*
 * Large per-thread scratch buffers (the read buffer, the TLS plaintext
 * buffer, the message data output).
 *
 * A normal build keeps them in static TLS: no allocation and no pointer to
 * follow. A sanitizer build puts them on the heap instead, because
 * AddressSanitizer places no redzones around thread-local variables: an
 * overrun of a TLS array would go unseen there, and land in whatever lies
 * next to it (glibc's own per-thread malloc state among them). A heap
 * block's bounds are checked like any other.
 *
 *     STP_THREAD_BUF(scratch, 4096)      at file scope, once
 *     char *p = scratch();               the buffer, 4096 bytes
 */
#ifndef STP_PROXY_THREAD_BUF_H
#define STP_PROXY_THREAD_BUF_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define STP_THREAD_BUF_ON_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STP_THREAD_BUF_ON_HEAP 1
#endif
#endif

#ifdef STP_THREAD_BUF_ON_HEAP

/* *slot, allocated with `size` bytes on this thread's first call and freed
 * when the thread exits. Aborts when out of memory (a few buffers per
 * thread, taken at its first connection). */
char *stp_thread_buf(char **slot, size_t size);

#define STP_THREAD_BUF(name, size)                                                          \
    static _Thread_local char *name##_heap_;                                                \
    static inline char *name(void)                                                          \
    {                                                                                       \
        return name##_heap_ != NULL ? name##_heap_ : stp_thread_buf(&name##_heap_, (size)); \
    }

#else

#define STP_THREAD_BUF(name, size)         \
    static _Thread_local char name##_tls_[size]; \
    static inline char *name(void)         \
    {                                      \
        return name##_tls_;                \
    }

#endif

#endif
