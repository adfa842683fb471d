/* docker/image — making an image usable according to a pull policy: inspect, and pull
 * through POST /images/create whose 200 answer is a JSON-lines progress stream that
 * carries failures inside it. */
#include <errno.h>
#include <string.h>

#include "internal.h"

typedef struct image_ctx {
    char *image;
    int policy;
    dg_docker_done_cb cb;
    void *ud;
    dg_buf partial;   /* progress line not yet complete */
    dg_error failure; /* first error reported inside the progress stream */
} image_ctx;

static void image_finish(image_ctx *c, const dg_error *err) {
    if (c->cb) c->cb(c->ud, err);
    free(c->image);
    dg_buf_free(&c->partial);
    dg_error_clear(&c->failure);
    free(c);
}

void dg_docker_image_split(const char *image, char **ret_repo, char **ret_tag) {
    const char *at = strchr(image, '@');
    const char *slash = strrchr(image, '/');
    const char *end = at ? at : image + strlen(image);
    const char *colon = NULL;
    for (const char *p = slash ? slash : image; p < end; p++)
        if (*p == ':') colon = p;
    const char *repo_end = colon ? colon : end;
    *ret_repo = xstrndup(image, (size_t)(repo_end - image));
    if (at)
        *ret_tag = xstrdup(at + 1);
    else if (colon)
        *ret_tag = xstrdup(colon + 1);
    else
        *ret_tag = xstrdup("latest");
}

static bool valid_reference(const char *s) {
    if (!*s) return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@") ==
           strlen(s);
}

static void progress_line(image_ctx *c, const char *line, size_t len) {
    if (c->failure.code || len == 0) return;
    json_t *j = json_loadb(line, len, 0, NULL);
    if (!j) return;
    const char *m = json_string_value(json_object_get(json_object_get(j, "errorDetail"), "message"));
    if (!m) m = json_string_value(json_object_get(j, "error"));
    if (m) dg_error_set(&c->failure, -EIO, "pulling %s failed: %s", c->image, m);
    json_decref(j);
}

static void pull_data(dg__req *r, const char *data, size_t len) {
    image_ctx *c = r->ctx;
    dg_buf_append(&c->partial, data, len);
    char *start = c->partial.data, *nl;
    while ((nl = memchr(start, '\n', c->partial.len - (size_t)(start - c->partial.data)))) {
        progress_line(c, start, (size_t)(nl - start));
        start = nl + 1;
    }
    dg_buf_consume(&c->partial, (size_t)(start - c->partial.data));
}

static void pull_done(dg__req *r, const dg_error *err) {
    image_ctx *c = r->ctx;
    if (err) {
        image_finish(c, err);
        return;
    }
    progress_line(c, c->partial.data, c->partial.len);
    image_finish(c, c->failure.code ? &c->failure : NULL);
}

static void pull(dg_docker *d, image_ctx *c) {
    _cleanup_free_ char *repo = NULL, *tag = NULL;
    dg_docker_image_split(c->image, &repo, &tag);
    _cleanup_free_ char *erepo = dg__escape(repo), *etag = dg__escape(tag);
    _cleanup_free_ char *path = xasprintf("/images/create?fromImage=%s&tag=%s", erepo, etag);
    dg__req *r = dg__req_new(d, "POST", path, NULL, pull_done, c);
    r->stream = true;
    r->on_data = pull_data;
    dg__req_submit(r);
}

static void inspect_done(dg__req *r, const dg_error *err) {
    image_ctx *c = r->ctx;
    if (!err) {
        image_finish(c, NULL);
    } else if (r->status != 404) {
        image_finish(c, err);
    } else if (c->policy == DG_DOCKER_PULL_NEVER) {
        dg_error e = {0};
        dg_error_set(&e, -ENOENT, "image %s not present and pull: never", c->image);
        image_finish(c, &e);
        dg_error_clear(&e);
    } else {
        pull(r->d, c);
    }
}

void dg_docker_image_ensure(dg_docker *d, const char *image, dg_docker_pull pull_policy,
                            dg_docker_done_cb cb, void *ud) {
    image_ctx *c = xcalloc(1, sizeof *c);
    c->image = xstrdup(image ? image : "");
    c->policy = pull_policy;
    c->cb = cb;
    c->ud = ud;
    if (!valid_reference(c->image)) {
        dg__req *r = dg__req_new(d, "GET", "/_ping", NULL, inspect_done, c);
        dg__req_fail_later(r, -EINVAL, "invalid image reference \"%s\"", c->image);
        return;
    }
    if (pull_policy == DG_DOCKER_PULL_ALWAYS) {
        pull(d, c);
        return;
    }
    _cleanup_free_ char *path = xasprintf("/images/%s/json", c->image);
    dg__req_submit(dg__req_new(d, "GET", path, NULL, inspect_done, c));
}
