/*
 * crash_test: the crash report of a stack overflow. A thread that used up
 * its stack takes SIGSEGV on the guard page with no room left for a signal
 * frame: without an alternate signal stack the kernel cannot run the
 * handler and the process dies without the crash line. Here a child process
 * installs the handlers and overflows the stack of a thread started like
 * the proxy's workers (and of its main thread); the parent reads the
 * child's stderr and wait status. Also: every thread gets its own alternate
 * stack from stp_crash_thread_start (sigaltstack(NULL, &ss)) and loses it at
 * stp_crash_thread_end. Under ASan, which keeps the crash handler out, the
 * overflow must be ASan's stack-overflow report.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/crash.h"
#include "test/unit/check.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER 1
#else
#define SANITIZER 0
#endif

static volatile int stop_recursing; /* never set: keeps the compiler from calling it endless */

/* Frames of a kilobyte each, used after the call so none is a tail call. */
static int __attribute__((noinline)) recurse(int depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    frame[sizeof(frame) - 1] = (char)depth;
    if (stop_recursing) {
        return frame[0];
    }
    return recurse(depth + 1) + frame[0] + frame[sizeof(frame) - 1];
}

static void overflow_thread(void *arg)
{
    (void)arg;
    stp_crash_thread_start("worker-7");
    (void)recurse(0);
}

/* In the child: handlers, then the overflow on a new thread (with a small
 * stack, as quick to overflow as any) or on the main thread. */
static void child(int in_thread)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* no core file left in the test's directory */
    stp_crash_install(STP_LOG_TEXT);
    stp_crash_thread_start("main");
    if (in_thread) {
        uv_thread_t t;
        uv_thread_options_t opt = {.flags = UV_THREAD_HAS_STACK_SIZE, .stack_size = 256 * 1024};
        if (uv_thread_create_ex(&t, &opt, overflow_thread, NULL) != 0) {
            _exit(3);
        }
        uv_thread_join(&t);
    } else {
        /* a main thread's stack grows up to RLIMIT_STACK: a small one */
        struct rlimit small = {1024 * 1024, 1024 * 1024};
        setrlimit(RLIMIT_STACK, &small);
        (void)recurse(0);
    }
    _exit(4); /* not reached: the overflow ends the process */
}

/* Runs child(in_thread) with stderr into a pipe; returns its wait status
 * and what it wrote (at most cap-1 bytes) in out. */
static int run_child(int in_thread, char *out, size_t cap)
{
    int p[2];
    CHECK_EQ_INT(pipe(p), 0);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        child(in_thread);
    }
    close(p[1]);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(p[0], out + len, cap - 1 - len)) > 0) {
        len += (size_t)n;
    }
    out[len] = '\0';
    close(p[0]);
    int status = 0;
    CHECK_EQ_INT(waitpid(pid, &status, 0), pid);
    return status;
}

static void check_overflow_reported(int in_thread, const char *thread)
{
    static char out[65536];
    int status = run_child(in_thread, out, sizeof(out));
    if (SANITIZER) {
        CHECK(strstr(out, "AddressSanitizer: stack-overflow") != NULL);
        CHECK(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
        return;
    }
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV); /* the default action, after */
    char want[80];
    snprintf(want, sizeof(want), " error crash signal=SEGV thread=%s frames=smtp-tls-proxy+0x",
             thread);
    /* the test binary is named otherwise, but its own frames are shown alike */
    if (strstr(out, want) == NULL) {
        fprintf(stderr, "child's stderr (status 0x%x):\n%.2000s\n", (unsigned)status, out);
    }
    CHECK(strstr(out, want) != NULL);
}

static void test_overflow_in_a_thread_is_reported(void)
{
    check_overflow_reported(1, "worker-7");
}

static void test_overflow_in_the_main_thread_is_reported(void)
{
    check_overflow_reported(0, "main");
}

/* ---- each thread its own alternate stack ---- */

static stack_t seen[2]; /* [0] after start, [1] after end */

static void look_thread(void *arg)
{
    (void)arg;
    CHECK_EQ_INT(stp_crash_thread_start("worker-1"), 0);
    sigaltstack(NULL, &seen[0]);
    stp_crash_thread_end();
    sigaltstack(NULL, &seen[1]);
}

static void test_each_thread_has_its_own_alt_stack(void)
{
    stack_t mine, before;
    sigaltstack(NULL, &before);
    CHECK(SANITIZER || (before.ss_flags & SS_DISABLE));
    CHECK_EQ_INT(stp_crash_thread_start("main"), 0);
    sigaltstack(NULL, &mine);
    uv_thread_t t;
    CHECK_EQ_INT(uv_thread_create(&t, look_thread, NULL), 0);
    uv_thread_join(&t);
    if (SANITIZER) {
        /* ASan's own stack (its threads have one): left alone */
        CHECK(mine.ss_sp == before.ss_sp);
    } else {
        CHECK(!(mine.ss_flags & SS_DISABLE));
        CHECK(mine.ss_size >= 64 * 1024);
        CHECK(!(seen[0].ss_flags & SS_DISABLE));
        CHECK(seen[0].ss_size >= 64 * 1024);
        CHECK(seen[0].ss_sp != mine.ss_sp);
        CHECK(seen[1].ss_flags & SS_DISABLE);
        /* the guard page below it: writing there must fault (a child tries) */
        pid_t pid = fork();
        if (pid == 0) {
            struct rlimit no_core = {0, 0};
            setrlimit(RLIMIT_CORE, &no_core);
            signal(SIGSEGV, SIG_DFL);
            ((volatile char *)mine.ss_sp)[-1] = 1;
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    }
    stp_crash_thread_end();
    stack_t after;
    sigaltstack(NULL, &after);
    if (!SANITIZER) {
        CHECK(after.ss_flags & SS_DISABLE);
    }
    stp_crash_thread_end(); /* twice: harmless */
}

int main(void)
{
    STP_RUN(test_each_thread_has_its_own_alt_stack);
    STP_RUN(test_overflow_in_a_thread_is_reported);
    STP_RUN(test_overflow_in_the_main_thread_is_reported);
    return STP_CHECK_DONE();
}
