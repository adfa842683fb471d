/* store/tasklog — where a task try's log file lives and how lines get into it.
 *
 * The file format is plain text, one line per container output line, stdout and
 * stderr interleaved in arrival order exactly as `docker logs` shows them; the stream
 * number is not recorded. A dg_tasklog owns its FILE*; output is buffered and reaches
 * the file on dg_tasklog_flush or dg_tasklog_close. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dagd/store.h"

struct dg_tasklog {
    FILE *f;
};

/* Ids come from DAG files and API callers, so one must never climb out of its
 * directory or add a level: '/' and '%' are percent-encoded (keeping the mapping
 * one-to-one), "." and ".." are written as %2E / %2E%2E, and an empty id as %00, which
 * no C string can contain. Everything else, ':' and '+' of run ids included, is kept. */
static void put_component(dg_buf *b, const char *s) {
    if (!s || !*s) {
        dg_buf_puts(b, "%00");
        return;
    }
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        for (; *s; s++) dg_buf_puts(b, "%2E");
        return;
    }
    for (; *s; s++) {
        if (*s == '/')
            dg_buf_puts(b, "%2F");
        else if (*s == '%')
            dg_buf_puts(b, "%25");
        else
            dg_buf_append(b, s, 1);
    }
}

char *dg_store_log_path(const char *state_dir, const char *dag, const char *run, const char *task,
                        int try_number) {
    if (!state_dir) return NULL;
    dg_buf b = {0};
    dg_buf_printf(&b, "%s/logs/", state_dir);
    put_component(&b, dag);
    dg_buf_puts(&b, "/");
    put_component(&b, run);
    dg_buf_puts(&b, "/");
    put_component(&b, task);
    dg_buf_printf(&b, "/%d.log", try_number);
    return dg_buf_steal(&b);
}

int dg_tasklog_open(const char *path, dg_tasklog **ret) {
    if (!path || !*path || !ret) return -EINVAL;
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        int r = dg_mkdir_p(dir, 0750);
        if (r < 0) return r;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return -errno;
    FILE *f = fdopen(fd, "a");
    if (!f) {
        int r = -errno;
        close(fd);
        return r;
    }
    dg_tasklog *l = xcalloc(1, sizeof *l);
    l->f = f;
    *ret = l;
    return 0;
}

void dg_tasklog_line(dg_tasklog *l, int stream, const char *line, size_t len) {
    if (!l || !l->f) return;
    if (line && len) fwrite(line, 1, len, l->f);
    fputc('\n', l->f);
}

int dg_tasklog_flush(dg_tasklog *l) {
    if (!l || !l->f) return 0;
    return fflush(l->f) == 0 ? 0 : -errno;
}

void dg_tasklog_close(dg_tasklog *l) {
    if (!l) return;
    if (l->f) fclose(l->f);
    free(l);
}
