/*
 * crash: see crash.h. Everything the handler does is async-signal-safe in
 * practice: backtrace() is called once at install time so that its lazy
 * loading of libgcc (which allocates) is done before any crash, and the
 * report is formatted by hand into a stack buffer (no stdio, no malloc, no
 * localtime: a crash inside malloc, with its locks held, still reports).
 * That buffer and the signal frame are on the thread's alternate signal
 * stack (SA_ONSTACK), so a thread that overflowed its own stack, where no
 * handler could run, still reports.
 */
#include "proxy/crash.h"

#include <errno.h>
#include <execinfo.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAMES 48

/* The alternate stack: the report (4 KiB buffer), backtrace() with libgcc's
 * unwinder, backtrace_symbols_fd() and the kernel's signal frame (several
 * KiB with AVX-512 state) fit in it many times over. */
#define ALT_STACK_MIN (64 * 1024)

/* The executable's own code, for frame offsets (GNU ld defines both). */
extern char __executable_start[];
extern char etext[];

static stp_log_format_t format;
/* A thread that never called stp_crash_thread_start (libuv's thread pool,
 * which saves the state file) is reported as such. */
static _Thread_local const char *thread_name = "other";
static _Thread_local void *alt_map; /* the thread's alternate stack mapping, with its guard page */
static _Thread_local size_t alt_map_len;
static atomic_int reporting;

static const struct {
    int sig;
    const char *name;
} fatal[] = {
    {SIGSEGV, "SEGV"}, {SIGBUS, "BUS"}, {SIGILL, "ILL"}, {SIGFPE, "FPE"}, {SIGABRT, "ABRT"},
};

typedef struct {
    char buf[4096];
    size_t len;
} out_t;

static void put(out_t *o, const char *s)
{
    size_t n = strlen(s);
    if (n > sizeof(o->buf) - o->len) {
        n = sizeof(o->buf) - o->len;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void put_uint(out_t *o, uint64_t v, unsigned base, unsigned width)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    tmp[--i] = '\0';
    do {
        tmp[--i] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0 && i > 0);
    while (sizeof(tmp) - 1 - i < width && i > 0) {
        tmp[--i] = '0';
    }
    put(o, tmp + i);
}

/* UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" from the clock, by arithmetic alone
 * (days to a civil date: the proleptic Gregorian calendar). */
static void put_time(out_t *o)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t secs = ts.tv_sec, days = secs / 86400, rem = secs % 86400;
    int64_t z = days + 719468, era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    put_uint(o, (uint64_t)y, 10, 4);
    put(o, "-");
    put_uint(o, (uint64_t)m, 10, 2);
    put(o, "-");
    put_uint(o, (uint64_t)d, 10, 2);
    put(o, "T");
    put_uint(o, (uint64_t)(rem / 3600), 10, 2);
    put(o, ":");
    put_uint(o, (uint64_t)(rem / 60 % 60), 10, 2);
    put(o, ":");
    put_uint(o, (uint64_t)(rem % 60), 10, 2);
    put(o, ".");
    put_uint(o, (uint64_t)(ts.tv_nsec / 1000000), 10, 3);
    put(o, "Z");
}

/* A frame: "smtp-tls-proxy+0xOFFSET" inside the executable, else its address. */
static void put_frame(out_t *o, void *pc)
{
    uintptr_t a = (uintptr_t)pc;
    if (a >= (uintptr_t)__executable_start && a < (uintptr_t)etext) {
        put(o, "smtp-tls-proxy+0x");
        put_uint(o, a - (uintptr_t)__executable_start, 16, 0);
    } else {
        put(o, "0x");
        put_uint(o, a, 16, 0);
    }
}

static void on_fatal(int sig)
{
    const char *name = "?";
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        if (fatal[i].sig == sig) {
            name = fatal[i].name;
        }
    }
    /* One report: a second thread crashing meanwhile just dies. */
    if (atomic_exchange(&reporting, 1) == 0) {
        void *frames[MAX_FRAMES];
        int n = backtrace(frames, MAX_FRAMES);
        out_t o;
        o.len = 0;
        if (format == STP_LOG_JSON) {
            put(&o, "{\"ts\":\"");
            put_time(&o);
            put(&o, "\",\"level\":\"error\",\"event\":\"crash\",\"signal\":\"");
            put(&o, name);
            put(&o, "\",\"thread\":\"");
            put(&o, thread_name);
            put(&o, "\",\"frames\":[");
            for (int i = 0; i < n; i++) {
                put(&o, i ? ",\"" : "\"");
                put_frame(&o, frames[i]);
                put(&o, "\"");
            }
            put(&o, "]}\n");
        } else {
            put_time(&o);
            put(&o, " error crash signal=");
            put(&o, name);
            put(&o, " thread=");
            put(&o, thread_name);
            put(&o, " frames=");
            for (int i = 0; i < n; i++) {
                put(&o, i ? "," : "");
                put_frame(&o, frames[i]);
            }
            put(&o, "\n");
        }
        ssize_t w = write(STDERR_FILENO, o.buf, o.len);
        if (format != STP_LOG_JSON) {
            /* the same frames with the names the dynamic symbols give */
            backtrace_symbols_fd(frames, n, STDERR_FILENO);
        }
        (void)w;
    }
    /* SA_RESETHAND restored the default action: the signal again ends the
     * process as it would have (a core file where they are kept). */
    raise(sig);
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER 1
#else
#define SANITIZER 0
#endif

/* mmap rather than malloc: page-aligned, and a PROT_NONE page below it, so
 * that a handler overflowing the alternate stack faults (and the process
 * ends by the signal) instead of writing over whatever lies beneath. */
static int alt_stack_start(void)
{
    if (alt_map != NULL) {
        return 0;
    }
    long page = sysconf(_SC_PAGESIZE);
    size_t size = ALT_STACK_MIN;
#ifdef _SC_MINSIGSTKSZ
    long min = sysconf(_SC_MINSIGSTKSZ); /* the kernel's signal frame (glibc 2.34) */
#else
    long min = MINSIGSTKSZ;
#endif
    if (page <= 0) {
        page = 4096;
    }
    if (min > 0 && (size_t)min * 4 > size) {
        size = ((size_t)min * 4 + (size_t)page - 1) / (size_t)page * (size_t)page;
    }
    void *m = mmap(NULL, size + (size_t)page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
        return -1;
    }
    stack_t ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_sp = (char *)m + page;
    ss.ss_size = size;
    if (mprotect(m, (size_t)page, PROT_NONE) < 0 || sigaltstack(&ss, NULL) < 0) {
        int e = errno;
        munmap(m, size + (size_t)page);
        errno = e;
        return -1;
    }
    alt_map = m;
    alt_map_len = size + (size_t)page;
    return 0;
}

void stp_crash_install(stp_log_format_t f)
{
#if SANITIZER
    (void)f;
    (void)on_fatal; /* compiled (and warned about) alike, never installed */
#else
    void *warm[1];
    format = f;
    (void)backtrace(warm, 1); /* loads libgcc now, not inside a crash */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal;
    sa.sa_flags = SA_RESETHAND | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        sigaction(fatal[i].sig, &sa, NULL);
    }
#endif
}

int stp_crash_thread_start(const char *name)
{
    thread_name = name;
#if SANITIZER
    (void)alt_stack_start;
    return 0;
#else
    return alt_stack_start();
#endif
}

void stp_crash_thread_end(void)
{
    if (alt_map == NULL) {
        return;
    }
    /* Disabled only if it is still this one (never called from a handler,
     * so it is not in use: sigaltstack(2) would refuse). */
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) &&
        (char *)cur.ss_sp > (char *)alt_map && (char *)cur.ss_sp < (char *)alt_map + alt_map_len) {
        stack_t off;
        memset(&off, 0, sizeof(off));
        off.ss_flags = SS_DISABLE;
        if (sigaltstack(&off, NULL) < 0) {
            return; /* still the signal stack: kept mapped */
        }
    }
    munmap(alt_map, alt_map_len);
    alt_map = NULL;
    alt_map_len = 0;
}
