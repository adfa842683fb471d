/* util — allocation, errors, buffers, vectors. Allocation failure aborts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/util.h"

static void oom(void) {
    fputs("dagd: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *xcalloc(size_t n, size_t m) {
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) oom();
    return p;
}

void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) oom();
    return p;
}

char *xstrdup(const char *s) {
    if (!s) return NULL;
    char *r = strdup(s);
    if (!r) oom();
    return r;
}

char *xstrndup(const char *s, size_t n) {
    if (!s) return NULL;
    char *r = strndup(s, n);
    if (!r) oom();
    return r;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    char *r;
    va_start(ap, fmt);
    int n = vasprintf(&r, fmt, ap);
    va_end(ap);
    if (n < 0) oom();
    return r;
}

int dg_error_set(dg_error *err, int code, const char *fmt, ...) {
    if (!err) return code;
    char *msg;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) oom();
    va_end(ap);
    free(err->msg);
    err->msg = msg;
    err->code = code;
    return code;
}

void dg_error_clear(dg_error *err) {
    if (!err) return;
    free(err->msg);
    err->msg = NULL;
    err->code = 0;
}

static void buf_reserve(dg_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void dg_buf_append(dg_buf *b, const void *p, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void dg_buf_puts(dg_buf *b, const char *s) { dg_buf_append(b, s, strlen(s)); }

void dg_buf_printf(dg_buf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) oom();
    buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

void dg_buf_consume(dg_buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        if (b->data) b->data[0] = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = 0;
}

char *dg_buf_steal(dg_buf *b) {
    char *r = b->data ? b->data : xstrdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return r;
}

void dg_buf_free(dg_buf *b) {
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void dg_strv_free(char **v) {
    if (!v) return;
    for (char **p = v; *p; p++) free(*p);
    free(v);
}

size_t dg_strv_len(char *const *v) {
    size_t n = 0;
    if (v)
        while (v[n]) n++;
    return n;
}

char **dg_strv_copy(char *const *v) {
    if (!v) return NULL;
    size_t n = dg_strv_len(v);
    char **r = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) r[i] = xstrdup(v[i]);
    return r;
}

bool dg_str_has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int dg_mkdir_p(const char *path, unsigned mode) {
    _cleanup_free_ char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST) return -errno;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST) return -errno;
    return 0;
}

int dg_read_file(const char *path, char **ret, size_t *ret_len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -errno;
    dg_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) dg_buf_append(&b, chunk, n);
    int r = ferror(f) ? -EIO : 0;
    fclose(f);
    if (r < 0) {
        dg_buf_free(&b);
        return r;
    }
    if (ret_len) *ret_len = b.len;
    *ret = dg_buf_steal(&b);
    return 0;
}

int dg_random_hex(size_t nbytes, char **ret) {
    _cleanup_free_ unsigned char *rnd = xmalloc(nbytes);
    size_t got = 0;
    while (got < nbytes) {
        ssize_t n = getrandom(rnd + got, nbytes - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        got += (size_t)n;
    }
    char *hex = xmalloc(nbytes * 2 + 1);
    for (size_t i = 0; i < nbytes; i++) snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    *ret = hex;
    return 0;
}

void dg_diags_add(dg_diags *d, const char *file, int line, int col, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) abort();
    va_end(ap);
    d->v = xrealloc(d->v, (d->n + 1) * sizeof(dg_diag));
    d->v[d->n++] = (dg_diag){.file = xstrdup(file ? file : "<input>"), .line = line, .col = col,
                             .msg = msg};
}

void dg_diags_print(const dg_diags *d, FILE *f) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        const dg_diag *g = &d->v[i];
        if (g->line > 0)
            fprintf(f, "%s:%d:%d: error: %s\n", g->file, g->line, g->col, g->msg);
        else /* not tied to a place in the file, e.g. it could not be read */
            fprintf(f, "%s: error: %s\n", g->file, g->msg);
    }
}

void dg_diags_free(dg_diags *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].file);
        free(d->v[i].msg);
    }
    free(d->v);
    d->v = NULL;
    d->n = 0;
}

int dg_state_value(const char *path, size_t nbytes, unsigned mode, char **ret, dg_error *err) {
    _cleanup_free_ char *text = NULL;
    if (dg_read_file(path, &text, NULL) == 0) {
        text[strcspn(text, "\r\n")] = 0;
        if (strlen(text) >= 8) {
            chmod(path, mode);
            *ret = TAKE_PTR(text);
            return 0;
        }
    }
    _cleanup_free_ char *hex = NULL;
    int r = dg_random_hex(nbytes, &hex);
    if (r < 0) return dg_error_set(err, r, "cannot get random bytes for %s: %s", path, strerror(-r));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    size_t len = strlen(hex);
    if (fd < 0 || write(fd, hex, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fchmod(fd, mode) < 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return dg_error_set(err, -e, "%s: %s", path, strerror(e));
    }
    if (close(fd) < 0) return dg_error_set(err, -errno, "%s: %s", path, strerror(errno));
    *ret = TAKE_PTR(hex);
    return 1;
}

void dg_closep(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

void dg_closedirp(void *dirp) {
    DIR **d = dirp;
    if (*d) closedir(*d);
    *d = NULL;
}

char *dg_redact(char *const *secrets, const char *text, size_t len) {
    dg_buf b = {0};
    dg_buf_append(&b, text, len);
    for (size_t i = 0; secrets && secrets[i]; i++) {
        size_t sl = strlen(secrets[i]);
        char *p;
        size_t from = 0;
        while (sl && from < b.len && (p = memmem(b.data + from, b.len - from, secrets[i], sl))) {
            size_t off = (size_t)(p - b.data);
            dg_buf out = {0};
            dg_buf_append(&out, b.data, off);
            dg_buf_puts(&out, "***");
            dg_buf_append(&out, p + sl, b.len - off - sl);
            dg_buf_free(&b);
            b = out;
            from = off + 3;
        }
    }
    return dg_buf_steal(&b);
}
