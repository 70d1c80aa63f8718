/*
 * state_store: reading and atomically replacing the state file.
 */
#include "proxy/state_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proxy/log.h"

/* The file holds at most a few thousand domains; far bigger is not ours. */
#define MAX_STATE_SIZE (64 * 1024 * 1024)

int stp_state_path(const char *state_dir, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", state_dir, STP_STATE_FILE);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static void warn_ignored(const char *path, const char *why, const char *moved)
{
    char p[300], w[300];
    stp_log(STP_LOG_WARN, "state file=\"%s\" ignored=yes reason=\"%s\"%s%s%s",
            stp_log_escape(p, sizeof(p), path, strlen(path)),
            stp_log_escape(w, sizeof(w), why, strlen(why)), moved ? " moved_to=\"" : "",
            moved ? moved : "", moved ? "\"" : "");
}

char *stp_state_read(const char *path, size_t *len, const char **why)
{
    struct stat st;
    *why = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            *why = strerror(errno);
        }
        return NULL;
    }
    if (fstat(fd, &st) != 0) {
        *why = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        *why = "not a regular file";
    } else if (st.st_size > MAX_STATE_SIZE) {
        *why = "too large";
    }
    size_t size = *why == NULL ? (size_t)st.st_size : 0, got = 0;
    char *text = *why == NULL ? malloc(size ? size : 1) : NULL;
    if (*why == NULL && text == NULL) {
        *why = "out of memory";
    }
    while (text != NULL && got < size) {
        ssize_t n = read(fd, text + got, size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return text;
}

int stp_state_load(stp_cache_t *c, const char *path, int64_t now)
{
    char why[256];
    const char *refuse;
    size_t got = 0;

    stp_cache_load(c, "", 0, now, NULL, 0); /* empty whatever happens */
    char *text = stp_state_read(path, &got, &refuse);
    if (text == NULL) {
        if (refuse == NULL) {
            return 0;
        }
        warn_ignored(path, refuse, NULL);
        return -1;
    }
    if (stp_cache_load(c, text, got, now, why, sizeof(why)) == 0) {
        free(text);
        return 1;
    }
    free(text);
    char bad[1100];
    if (snprintf(bad, sizeof(bad), "%s.bad", path) < (int)sizeof(bad) && rename(path, bad) == 0) {
        warn_ignored(path, why, bad);
    } else {
        warn_ignored(path, why, NULL);
    }
    return -1;
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int save_error(const char *path, const char *what, int err)
{
    char p[300];
    stp_log(STP_LOG_ERROR, "state file=\"%s\" saved=no error=\"%s: %s\"",
            stp_log_escape(p, sizeof(p), path, strlen(path)), what, strerror(err));
    return -1;
}

int stp_state_save(const stp_cache_t *c, const char *path)
{
    size_t len = 0;
    char *text = stp_cache_serialize(c, &len); /* before len is read */
    return stp_state_write(text, len, path);
}

int stp_state_write(char *text, size_t len, const char *path)
{
    char tmp[1100], dir[1100];

    if (text == NULL) {
        return save_error(path, "serialize", ENOMEM);
    }

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        free(text);
        return save_error(path, "path", ENAMETOOLONG);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        free(text);
        return save_error(path, "create", e);
    }
    int rc = write_all(fd, text, len);
    int e = errno;
    free(text);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -1;
        e = errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        e = errno;
    }
    if (rc != 0) {
        unlink(tmp);
        return save_error(path, "write", e);
    }
    /* the rename itself must reach the disk */
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) {
        slash[1] = '\0';
    } else if (slash) {
        *slash = '\0';
    } else {
        snprintf(dir, sizeof(dir), ".");
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}
