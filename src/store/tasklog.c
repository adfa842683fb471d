/* store/tasklog — where a task try's log file lives and how lines get into it.
 *
 * The file format is plain text, one line per container output line, stdout and
 * stderr interleaved in arrival order exactly as `docker logs` shows them. Which stream
 * each line came from is kept beside it in <try>.streams, one byte per line ('o' stdout,
 * 'e' stderr, 'd' a header line dagd wrote before the command ran), for the web UI and for
 * leaving the header out of what is served by default (docs/api.md, Log following). A
 * dg_tasklog holds no file descriptor between calls (thousands of tries may be in flight at
 * once, docs/benchmarks.md): lines are buffered in memory and reach the files on
 * dg_tasklog_flush or dg_tasklog_close, each through a short open(O_APPEND)/write/close,
 * the streams file first so that it never has fewer lines. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dagd/store.h"

struct dg_tasklog {
    char *path;    /* <try>.log */
    char *spath;   /* <try>.streams; NULL when it could not be made */
    dg_buf text;   /* lines not yet written */
    dg_buf marks;  /* their stream bytes */
};

/* <try>.log -> <try>.streams */
static char *streams_path(const char *log_path) {
    size_t n = strlen(log_path);
    if (n > 4 && strcmp(log_path + n - 4, ".log") == 0) n -= 4;
    return xasprintf("%.*s.streams", (int)n, log_path);
}

/* Appends len bytes of data to path (made if missing): 0 or -errno. */
static int append_file(const char *path, const char *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return -errno;
    int r = 0;
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            r = -errno;
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    if (close(fd) < 0 && r == 0 && errno != EINTR) r = -errno;
    return r;
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
    int r = append_file(path, "", 0); /* the file exists from the start, as it always did */
    if (r < 0) return r;
    dg_tasklog *l = xcalloc(1, sizeof *l);
    l->path = xstrdup(path);
    l->spath = streams_path(path);
    if (append_file(l->spath, "", 0) < 0) l->spath = (free(l->spath), NULL);
    *ret = l;
    return 0;
}

void dg_tasklog_line(dg_tasklog *l, int stream, const char *line, size_t len) {
    if (!l) return;
    if (l->spath) dg_buf_append(&l->marks, stream == 2 ? "e" : stream == DG_TASKLOG_HEADER ? "d" : "o", 1);
    if (line && len) dg_buf_append(&l->text, line, len);
    dg_buf_append(&l->text, "\n", 1);
}

int dg_tasklog_flush(dg_tasklog *l) {
    if (!l || l->text.len == 0) return 0;
    if (l->spath && l->marks.len && append_file(l->spath, l->marks.data, l->marks.len) < 0)
        l->spath = (free(l->spath), NULL); /* as an unopenable streams file: lines go on without */
    l->marks.len = 0;
    int r = append_file(l->path, l->text.data, l->text.len);
    l->text.len = 0; /* written or not (a full disk), the lines are not kept: memory stays bounded */
    return r;
}

void dg_tasklog_close(dg_tasklog *l) {
    if (!l) return;
    dg_tasklog_flush(l);
    free(l->path);
    free(l->spath);
    free(l->text.data);
    free(l->marks.data);
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
