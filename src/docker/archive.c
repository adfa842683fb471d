/* docker/archive — reading one file out of a container through
 * GET /containers/{id}/archive, which answers with a tar stream (libarchive reads it).
 * The body is collected up to max_bytes plus room for tar headers; the transfer stops
 * there, which is enough for the first file's first max_bytes. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Room for the tar (and pax) headers and directory entries before the file's data. */
#define HEADER_SLACK (1024 * 1024)

typedef struct archive_ctx {
    char *id, *path;
    size_t max_bytes;
    dg_docker_file_cb cb;
    void *ud;
} archive_ctx;

static int read_first_file(archive_ctx *c, const char *tar, size_t tar_len, bool capped,
                           char **ret, size_t *ret_len, bool *ret_truncated, dg_error *err) {
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    int r = -ENOENT;
    if (archive_read_open_memory(a, tar, tar_len) != ARCHIVE_OK) {
        r = dg_error_set(err, -EPROTO, "reading the archive of %s from container %s: %s", c->path,
                         c->id, archive_error_string(a));
        goto out;
    }
    struct archive_entry *ent;
    int ar;
    while ((ar = archive_read_next_header(a, &ent)) == ARCHIVE_OK) {
        if (archive_entry_filetype(ent) != AE_IFREG) continue;
        int64_t size = archive_entry_size_is_set(ent) ? archive_entry_size(ent) : -1;
        dg_buf b = {0};
        char chunk[65536];
        bool truncated = false;
        for (;;) {
            la_ssize_t n = archive_read_data(a, chunk, sizeof chunk);
            if (n == 0) break;
            if (n < 0) {
                /* We cut the tar ourselves; running out of it just means truncated. */
                if (capped) {
                    truncated = true;
                    break;
                }
                r = dg_error_set(err, -EPROTO, "reading %s from container %s: %s", c->path,
                                 c->id, archive_error_string(a));
                dg_buf_free(&b);
                goto out;
            }
            size_t take = (size_t)n;
            if (b.len + take > c->max_bytes) {
                take = c->max_bytes - b.len;
                truncated = true;
            }
            dg_buf_append(&b, chunk, take);
            if (truncated) break;
        }
        if (size >= 0 && (uint64_t)size > c->max_bytes) truncated = true;
        if (!b.data) dg_buf_append(&b, "", 0);
        *ret_len = b.len;
        *ret_truncated = truncated;
        *ret = dg_buf_steal(&b);
        r = 0;
        goto out;
    }
    if (ar == ARCHIVE_EOF || capped)
        r = dg_error_set(err, -ENOENT, "%s in container %s is not a regular file", c->path, c->id);
    else
        r = dg_error_set(err, -EPROTO, "reading the archive of %s from container %s: %s", c->path,
                         c->id, archive_error_string(a));
out:
    archive_read_free(a);
    return r;
}

static void archive_done(dg__req *r, const dg_error *err) {
    archive_ctx *c = r->ctx;
    if (err) {
        c->cb(c->ud, NULL, 0, false, err);
    } else {
        dg_error e = {0};
        _cleanup_free_ char *content = NULL;
        size_t len = 0;
        bool truncated = false;
        if (read_first_file(c, r->body.data, r->body.len, r->capped, &content, &len, &truncated,
                            &e) < 0)
            c->cb(c->ud, NULL, 0, false, &e);
        else
            c->cb(c->ud, content, len, truncated, NULL);
        dg_error_clear(&e);
    }
    free(c->id);
    free(c->path);
    free(c);
}

void dg_docker_archive_file(dg_docker *d, const char *id, const char *path, size_t max_bytes,
                            dg_docker_file_cb cb, void *ud) {
    archive_ctx *c = xcalloc(1, sizeof *c);
    c->id = xstrdup(id ? id : "");
    c->path = xstrdup(path ? path : "");
    c->max_bytes = max_bytes;
    c->cb = cb;
    c->ud = ud;
    _cleanup_free_ char *eid = dg__escape(c->id), *epath = dg__escape(c->path);
    _cleanup_free_ char *url = xasprintf("/containers/%s/archive?path=%s", eid, epath);
    dg__req *r = dg__req_new(d, "GET", url, NULL, archive_done, c);
    r->stream = true;
    r->max_body = max_bytes > SIZE_MAX - HEADER_SLACK ? 0 : max_bytes + HEADER_SLACK;
    dg__req_submit(r);
}
