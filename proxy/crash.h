/*
 * crash: what a fatal signal leaves in the log.
 *
 * On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT the process writes one
 * error line naming the signal and the thread ("main", "worker-N"), then the
 * stack of that thread, straight to stderr with write(2) and nothing
 * allocated; then the signal's default action ends it (with a core file
 * where the system keeps them). A frame in the proxy's own binary shows its
 * offset: `addr2line -f -e smtp-tls-proxy OFFSET` names the function.
 *
 * A stack overflow is reported too: the handler runs on the thread's
 * alternate signal stack (sigaltstack(2)), which the main thread and each
 * worker set up with stp_crash_thread_start. libuv's thread-pool threads
 * (the state-file save) have none: a crash there is reported with
 * thread=other, an overflow there is not.
 *
 * Not installed in sanitizer builds: their own report is better (ASan
 * gives every thread its own alternate stack and reports an overflow).
 */
#ifndef STP_CRASH_H
#define STP_CRASH_H

#include "proxy/config.h"

/* Once, in the main thread, before other threads start. */
void stp_crash_install(stp_log_format_t format);

/*
 * First thing in a thread the proxy starts: its name in a crash report (a
 * static string) and its alternate signal stack (mapped here, owned by the
 * thread until stp_crash_thread_end). Returns 0, or -1 if the stack could
 * not be mapped (the thread still runs; an overflow in it then ends the
 * process without a report). Sanitizer builds: the name only.
 */
int stp_crash_thread_start(const char *name);

/* Last thing before the calling thread ends (the main thread: before main
 * returns): its alternate stack disabled and unmapped. Harmless when it
 * has none. */
void stp_crash_thread_end(void);

#endif
