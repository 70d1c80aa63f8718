/*
 * certwatch_test: renewed certificate files are noticed without a signal.
 * The state a change is seen against is the one taken before the files were
 * read (stp_certwatch_base), so a file rewritten between that look and
 * stp_certwatch_start (while the proxy loads it) still counts as changed;
 * files left alone never trigger a reload; a rewrite in place of the same
 * size, a rename over the file and a file that appears are all seen; the
 * log tells a file gone from one that cannot be looked at; a file that only
 * root could look at when the base was taken is no change once the proxy
 * runs as `user =`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "proxy/certwatch.h"
#include "test/unit/check.h"

#define POLL_MS 10

static uv_loop_t loop;
static uv_timer_t deadline;
static int changes;
static char dir[] = "/tmp/stp-certwatch-XXXXXX";
static stp_config_t *conf;

static void on_change(void)
{
    changes++;
    uv_stop(&loop);
}

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    uv_stop(&loop);
}

/* Runs the loop until a change is reported or `ms` have passed. */
static void run_for(unsigned ms)
{
    uv_timer_start(&deadline, on_deadline, ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_timer_stop(&deadline);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* A configuration with one pair, cert.pem + cert.key (or the key in the
 * certificate file when `key_too` is 0), both written with "old". */
static void setup(int key_too)
{
    changes = 0;
    memset(conf, 0, sizeof(*conf));
    conf->ncerts = 1;
    snprintf(conf->certs[0].cert, sizeof(conf->certs[0].cert), "%s/cert.pem", dir);
    write_file(conf->certs[0].cert, "old certificate\n");
    if (key_too) {
        snprintf(conf->certs[0].key, sizeof(conf->certs[0].key), "%s/cert.key", dir);
        write_file(conf->certs[0].key, "old key\n");
    }
}

/* What the proxy does once the files are loaded (nothing changed since). */
static void watch(void)
{
    stp_certwatch_base_t b;
    stp_certwatch_base(conf, &b);
    stp_certwatch_start(&loop, conf, &b, POLL_MS, on_change);
}

static void teardown(void)
{
    stp_certwatch_stop();
    uv_run(&loop, UV_RUN_NOWAIT); /* the close callbacks */
    unlink(conf->certs[0].cert);
    if (conf->certs[0].key[0]) {
        unlink(conf->certs[0].key);
    }
}

static void test_base_lists_cert_and_key_files(void)
{
    stp_certwatch_base_t b;
    setup(1);
    stp_certwatch_base(conf, &b);
    CHECK_EQ_INT(b.n, 2);
    CHECK(strcmp(b.path[0], conf->certs[0].cert) == 0);
    CHECK(strcmp(b.path[1], conf->certs[0].key) == 0);
    CHECK(b.ok[0] && b.ok[1]);
    teardown();

    setup(0); /* key inside the certificate file: one file to watch */
    stp_certwatch_base(conf, &b);
    CHECK_EQ_INT(b.n, 1);
    teardown();
}

static void test_unchanged_files_stay_quiet(void)
{
    setup(1);
    watch();
    run_for(800); /* many looks, longer than the quiet time after a change */
    CHECK_EQ_INT(changes, 0);
    teardown();
}

/* The race the base exists for: the proxy took its look, then read the
 * files; the renewal landed in between and must not be missed. */
static void test_rewrite_while_loading_is_seen(void)
{
    stp_certwatch_base_t b;
    setup(1);
    stp_certwatch_base(conf, &b);
    usleep(20 * 1000);                           /* a new mtime even on coarse clocks */
    write_file(conf->certs[0].key, "new key\n"); /* the same size */
    stp_certwatch_start(&loop, conf, &b, POLL_MS, on_change);
    run_for(3000);
    CHECK_EQ_INT(changes, 1);
    teardown();
}

static void test_rewrite_in_place_after_start_is_seen(void)
{
    setup(1);
    watch();
    run_for(50);
    CHECK_EQ_INT(changes, 0);
    write_file(conf->certs[0].cert, "new certificate, longer\n");
    run_for(3000);
    CHECK_EQ_INT(changes, 1);
    teardown();
}

static void test_rename_over_the_file_is_seen(void)
{
    char tmp[1100];
    setup(0);
    watch();
    run_for(50);
    snprintf(tmp, sizeof(tmp), "%s.new", conf->certs[0].cert);
    write_file(tmp, "old certificate\n"); /* same contents, new inode */
    CHECK_EQ_INT(rename(tmp, conf->certs[0].cert), 0);
    run_for(3000);
    CHECK_EQ_INT(changes, 1);
    teardown();
}

static stp_capture_t cap;

/* Runs the loop for up to 3 s and returns what was logged. */
static const char *run_logged(void)
{
    stp_capture_begin(&cap);
    run_for(3000);
    return stp_capture_end(&cap);
}

/* A file gone says missing=yes; one that cannot be looked at (here: its
 * directory became a file; after dropping privileges: permissions) says why,
 * rather than "missing". */
static void test_file_gone_or_unreachable_is_logged_as_such(void)
{
    setup(1);
    watch();
    unlink(conf->certs[0].key);
    const char *log = run_logged();
    CHECK_EQ_INT(changes, 1);
    CHECK(strstr(log, "cert.key\" changed=yes missing=yes") != NULL);
    teardown();

    char sub[64];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    CHECK_EQ_INT(mkdir(sub, 0700), 0);
    setup(0);
    snprintf(conf->certs[0].cert, sizeof(conf->certs[0].cert), "%s/cert.pem", sub);
    write_file(conf->certs[0].cert, "old certificate\n");
    watch();
    unlink(conf->certs[0].cert);
    rmdir(sub);
    write_file(sub, "not a directory\n");
    log = run_logged();
    CHECK_EQ_INT(changes, 1);
    CHECK(strstr(log, "cert.pem\" changed=yes error=\"Not a directory\"") != NULL);
    CHECK(strstr(log, "missing=yes") == NULL);
    teardown();
    unlink(sub);
}

/* Certificates only root may look at, and `user = nobody`: the base was
 * taken as root, the watch runs as nobody. That is said once at start, is
 * no change (no reload that could only fail), and the file is noticed once
 * it can be looked at. Needs root (skipped otherwise). */
static void test_file_hidden_by_dropped_privileges(void)
{
    stp_certwatch_base_t b;
    if (geteuid() != 0 || seteuid(65534) != 0) {
        fprintf(stderr, "certwatch_test: not root or cannot switch to uid 65534: skipped %s\n",
                __func__);
        return;
    }
    CHECK_EQ_INT(seteuid(0), 0);
    CHECK_EQ_INT(chmod(dir, 0700), 0);
    setup(1);
    stp_certwatch_base(conf, &b); /* as root */
    CHECK(b.ok[0] && b.ok[1]);
    CHECK_EQ_INT(seteuid(65534), 0); /* what drop_privileges() does, reversibly */
    stp_capture_begin(&cap);
    stp_certwatch_start(&loop, conf, &b, POLL_MS, on_change);
    run_for(800);
    const char *log = stp_capture_end(&cap);
    CHECK_EQ_INT(changes, 0);
    CHECK(strstr(log, "cert.pem\" watched=no error=\"Permission denied\"") != NULL);
    CHECK(strstr(log, "cert.key\" watched=no error=\"Permission denied\"") != NULL);
    CHECK(strstr(log, "changed=yes") == NULL);
    CHECK_EQ_INT(chmod(dir, 0700), -1); /* still nobody */
    CHECK_EQ_INT(seteuid(0), 0);        /* as if the admin opened the directory */
    run_for(3000);
    CHECK_EQ_INT(changes, 1);
    teardown();
}

static void test_file_that_appears_is_seen(void)
{
    stp_certwatch_base_t b;
    setup(1);
    unlink(conf->certs[0].key);
    stp_certwatch_base(conf, &b);
    CHECK(b.ok[0] && !b.ok[1]);
    stp_certwatch_start(&loop, conf, &b, POLL_MS, on_change);
    run_for(50);
    CHECK_EQ_INT(changes, 0);
    write_file(conf->certs[0].key, "key at last\n");
    run_for(3000);
    CHECK_EQ_INT(changes, 1);
    teardown();
}

int main(void)
{
    CHECK(mkdtemp(dir) != NULL);
    conf = calloc(1, sizeof(*conf));
    uv_loop_init(&loop);
    uv_timer_init(&loop, &deadline);
    STP_RUN(test_base_lists_cert_and_key_files);
    STP_RUN(test_unchanged_files_stay_quiet);
    STP_RUN(test_rewrite_while_loading_is_seen);
    STP_RUN(test_rewrite_in_place_after_start_is_seen);
    STP_RUN(test_rename_over_the_file_is_seen);
    STP_RUN(test_file_that_appears_is_seen);
    STP_RUN(test_file_gone_or_unreachable_is_logged_as_such);
    STP_RUN(test_file_hidden_by_dropped_privileges);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    free(conf);
    rmdir(dir);
    return STP_CHECK_DONE();
}
