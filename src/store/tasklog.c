/* store/tasklog — where a task try's log file lives and how lines get into it.
 *
 * The file format is plain text, one line per container output line, stdout and
 * stderr interleaved in arrival order exactly as `docker logs` shows them. Which stream
 * each line came from is kept beside it in <try>.streams, one byte per line ('o' stdout,
 * 'e' stderr, 'd' a header line dagd wrote before the command ran), for the web UI and for
 * leaving the header out of what is served by default (docs/api.md, Log following). A dg_tasklog owns its two
 * FILE*s; output is buffered and reaches the files on dg_tasklog_flush or
 * dg_tasklog_close, the streams file first so that it never has fewer lines. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dagd/store.h"

struct dg_tasklog {
    FILE *f;
    FILE *s; /* the streams file; NULL when it could not be opened */
};

/* <try>.log -> <try>.streams */
static char *streams_path(const char *log_path) {
    size_t n = strlen(log_path);
    if (n > 4 && strcmp(log_path + n - 4, ".log") == 0) n -= 4;
    return xasprintf("%.*s.streams", (int)n, log_path);
}

static FILE *open_append(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "a");
    if (!f) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return f;
}

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
    FILE *f = open_append(path);
    if (!f) return -errno;
    dg_tasklog *l = xcalloc(1, sizeof *l);
    l->f = f;
    _cleanup_free_ char *sp = streams_path(path);
    l->s = open_append(sp);
    *ret = l;
    return 0;
}

void dg_tasklog_line(dg_tasklog *l, int stream, const char *line, size_t len) {
    if (!l || !l->f) return;
    if (l->s) fputc(stream == 2 ? 'e' : stream == DG_TASKLOG_HEADER ? 'd' : 'o', l->s);
    if (line && len) fwrite(line, 1, len, l->f);
    fputc('\n', l->f);
}

int dg_tasklog_flush(dg_tasklog *l) {
    if (!l || !l->f) return 0;
    if (l->s) fflush(l->s);
    return fflush(l->f) == 0 ? 0 : -errno;
}

void dg_tasklog_close(dg_tasklog *l) {
    if (!l) return;
    if (l->s) fclose(l->s);
    if (l->f) fclose(l->f);
    free(l);
}

int dg_tasklog_read_streams(const char *log_path, char **ret, size_t *ret_len) {
    _cleanup_free_ char *text = NULL, *marks = NULL;
    size_t len = 0, nmarks = 0;
    int r = dg_read_file(log_path, &text, &len);
    if (r < 0) return r;
    _cleanup_free_ char *sp = streams_path(log_path);
    if (dg_read_file(sp, &marks, &nmarks) < 0) nmarks = 0;
    dg_buf b = {0};
    size_t line = 0;
    for (size_t i = 0; i < len; line++) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len;
        char m = line < nmarks ? marks[line] : 0;
        dg_buf_puts(&b, m == 'e' ? "stderr\t" : m == 'o' ? "stdout\t" : m == 'd' ? "dagd\t" : "-\t");
        dg_buf_append(&b, text + i, end - i);
        dg_buf_puts(&b, "\n");
        i = end + 1;
    }
    if (ret_len) *ret_len = b.len;
    *ret = dg_buf_steal(&b);
    return 0;
}

int64_t dg_tasklog_header_len(const char *log_path) {
    _cleanup_free_ char *sp = streams_path(log_path);
    FILE *s = fopen(sp, "re");
    if (!s) return 0;
    size_t lines = 0;
    int ch;
    while ((ch = fgetc(s)) == 'd') lines++;
    fclose(s);
    if (!lines) return 0;
    FILE *f = fopen(log_path, "re");
    if (!f) return 0;
    int64_t len = 0;
    while (lines && (ch = fgetc(f)) != EOF) {
        len++;
        if (ch == '\n') lines--;
    }
    fclose(f);
    return lines ? 0 : len; /* a header cut short (a full disk) is served as it is */
}

void dg_tasklog_remove(const char *path) {
    if (!path) return;
    unlink(path);
    _cleanup_free_ char *sp = streams_path(path);
    unlink(sp);
}
