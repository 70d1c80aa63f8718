/*
 * state_store_test: the state file on a real disk. A restart (save, then
 * load into a new cache) gives back the same knowledge; a truncated,
 * corrupted, unreadable or missing file is ignored (with a warning on
 * stderr, the file moved aside) and never stops anything; a half-written
 * temporary file from a crash is never taken for the state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/log.h"
#include "proxy/state_store.h"
#include "test/unit/check.h"

static char dir[512];
static char path[600];

static const int64_t T0 = 1700000000;

static void write_file(const char *p, const char *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(fwrite(data, 1, len, f), len);
        fclose(f);
    }
}

static char *read_file(const char *p, size_t *len)
{
    static char buf[65536];
    FILE *f = fopen(p, "rb");
    if (f == NULL) {
        return NULL;
    }
    *len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return buf;
}

static stp_cache_t *sample(void)
{
    stp_cache_t *c = stp_cache_new(100);
    stp_mta_sts_policy_t p;
    const char *text = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 604800\n";
    CHECK_EQ_INT(stp_mta_sts_policy_parse(text, strlen(text), &p, NULL, 0), 0);
    CHECK_EQ_INT(stp_cache_sts_put(c, "example.com", "abc", &p, T0), 0);
    CHECK_EQ_INT(stp_cache_tls_seen(c, "tofu.example", T0, 86400 * 30), 0);
    return c;
}

static void test_missing_file(void)
{
    stp_cache_t *c = sample();
    char p[700];
    snprintf(p, sizeof(p), "%s/none/domains.state", dir);
    CHECK_EQ_INT(stp_state_load(c, p, T0), 0);
    CHECK_EQ_INT(stp_cache_count(c), 0);
    stp_cache_free(c);
}

static void test_restart(void)
{
    stp_cache_t *c = sample();
    CHECK_EQ_INT(stp_state_save(c, path), 0);
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);

    stp_cache_t *after = stp_cache_new(100);
    CHECK_EQ_INT(stp_state_load(after, path, T0 + 3600), 1);
    CHECK_EQ_INT(stp_cache_count(after), 2);
    CHECK(stp_cache_sts_valid(after, "example.com", T0 + 3600) != NULL);
    CHECK_EQ_INT(stp_cache_sts_action(after, "example.com", STP_STS_TXT_DNS_ERROR, NULL, T0 + 3600),
                 STP_STS_USE_CACHED);
    CHECK_EQ_INT(stp_cache_tls_required(after, "tofu.example", T0 + 3600, NULL, NULL), 1);

    /* saving over an existing file replaces it whole */
    CHECK_EQ_INT(stp_cache_tls_seen(after, "new.example", T0 + 3600, 86400), 0);
    CHECK_EQ_INT(stp_state_save(after, path), 0);
    stp_cache_t *third = stp_cache_new(100);
    CHECK_EQ_INT(stp_state_load(third, path, T0 + 3600), 1);
    CHECK_EQ_INT(stp_cache_count(third), 3);
    stp_cache_free(third);
    stp_cache_free(after);
    stp_cache_free(c);
}

static void test_damaged_files(void)
{
    stp_cache_t *c = sample();
    char bad[700];
    size_t len = 0;
    snprintf(bad, sizeof(bad), "%s.bad", path);
    CHECK_EQ_INT(stp_state_save(c, path), 0);
    char *good = read_file(path, &len);
    CHECK(good != NULL);
    char *saved = malloc(len);
    memcpy(saved, good, len);

    /* truncated (a disk that lost the end): ignored, moved aside, cache empty */
    write_file(path, saved, len / 2);
    CHECK_EQ_INT(stp_state_load(c, path, T0), -1);
    CHECK_EQ_INT(stp_cache_count(c), 0);
    CHECK(access(path, F_OK) != 0);
    CHECK_EQ_INT(access(bad, F_OK), 0);

    /* one changed byte */
    saved[len / 3] ^= 1;
    write_file(path, saved, len);
    CHECK_EQ_INT(stp_state_load(c, path, T0), -1);
    saved[len / 3] ^= 1;

    /* garbage, and an empty file */
    write_file(path, "\x00\xff\x7f garbage\n", 11);
    CHECK_EQ_INT(stp_state_load(c, path, T0), -1);
    write_file(path, "", 0);
    CHECK_EQ_INT(stp_state_load(c, path, T0), -1);

    /* a directory where the file should be */
    unlink(path);
    CHECK_EQ_INT(mkdir(path, 0700), 0);
    CHECK_EQ_INT(stp_state_load(c, path, T0), -1);
    CHECK_EQ_INT(stp_state_save(c, path), -1); /* cannot replace a directory */
    rmdir(path);

    /* after all that, saving and loading work again */
    write_file(path, saved, len);
    CHECK_EQ_INT(stp_state_load(c, path, T0), 1);
    CHECK_EQ_INT(stp_cache_count(c), 2);
    free(saved);
    stp_cache_free(c);
}

/* A crash in the middle of a save leaves a temporary file; it is never read. */
static void test_crash_leftover(void)
{
    stp_cache_t *c = sample();
    char tmp[700];
    CHECK_EQ_INT(stp_state_save(c, path), 0);
    snprintf(tmp, sizeof(tmp), "%s.tmp.99999", path);
    write_file(tmp, "smtp-tls-proxy state 1\nsts half", 32);
    stp_cache_t *after = stp_cache_new(100);
    CHECK_EQ_INT(stp_state_load(after, path, T0), 1);
    CHECK_EQ_INT(stp_cache_count(after), 2);
    unlink(tmp);
    /* no temporary file of our own is left behind by a save */
    char mine[700];
    snprintf(mine, sizeof(mine), "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(mine, F_OK) != 0);
    stp_cache_free(after);
    stp_cache_free(c);
}

static void test_unwritable(void)
{
    stp_cache_t *c = sample();
    char p[700];
    snprintf(p, sizeof(p), "%s/missing-dir/domains.state", dir);
    CHECK_EQ_INT(stp_state_save(c, p), -1);
    char buf[8];
    CHECK_EQ_INT(stp_state_path("/var/lib/x", buf, sizeof(buf)), -1);
    char ok[64];
    CHECK_EQ_INT(stp_state_path("/var/lib/x", ok, sizeof(ok)), 0);
    CHECK_STR(ok, "/var/lib/x/domains.state");
    stp_cache_free(c);
}

int main(void)
{
    const char *base = getenv("TEST_TMPDIR");
    snprintf(dir, sizeof(dir), "%s/stp-state-XXXXXX", base ? base : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, STP_STATE_FILE);
    stp_log_init(STP_LOG_TEXT, STP_LOG_INFO);
    STP_RUN(test_missing_file);
    STP_RUN(test_restart);
    STP_RUN(test_damaged_files);
    STP_RUN(test_crash_leftover);
    STP_RUN(test_unwritable);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", dir);
    }
    return STP_CHECK_DONE();
}
