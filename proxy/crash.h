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
 * Not installed in sanitizer builds: their own report is better.
 */
#ifndef STP_CRASH_H
#define STP_CRASH_H

#include "proxy/config.h"

/* Once, in the main thread, before other threads start. */
void stp_crash_install(stp_log_format_t format);

/* The calling thread's name in a crash report (a static string). */
void stp_crash_thread_name(const char *name);

#endif
