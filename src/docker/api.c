/* docker/api — the client object, API version negotiation and the request/response
 * calls (generic call, ping, images, networks, containers).
 *
 * Negotiation is implicit: a versioned call made before the version is known waits in a
 * queue, and the first such call starts GET /_ping; when it answers, queued calls go out
 * with the /vX.Y prefix, or all fail with the ping's error (the next call tries again).
 * dg_docker_ping does the same negotiation explicitly. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_HOST "unix:///var/run/docker.sock"

char *dg__escape(const char *s) {
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e) abort();
    char *r = xstrdup(e);
    curl_free(e);
    return r;
}

int dg_docker_new(uv_loop_t *loop, const char *host, dg_docker **ret, dg_error *err) {
    static bool curl_ready;
    if (!host || !*host) host = getenv("DOCKER_HOST");
    if (!host || !*host) host = DEFAULT_HOST;
    dg_docker_endpoint ep;
    int r = dg_docker_parse_host(host, &ep, err);
    if (r < 0) return r;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            dg_docker_endpoint_free(&ep);
            return dg_error_set(err, -EIO, "libcurl failed to initialise");
        }
        curl_ready = true;
    }
    dg_docker *d = xcalloc(1, sizeof *d);
    d->loop = loop;
    d->host = xstrdup(host);
    d->ep = ep;
    dg__transport_init(d);
    *ret = d;
    return 0;
}

static void client_closed(uv_handle_t *h) {
    dg_docker *d = h->data;
    if (--d->open_handles > 0) return;
    dg_docker_endpoint_free(&d->ep);
    free(d->host);
    free(d->version);
    free(d);
}

void dg_docker_free(dg_docker *d) {
    if (!d || d->closing) return;
    d->closing = true;
    dg__transport_shutdown(d);
    d->open_handles = 2;
    uv_timer_stop(&d->timer);
    uv_timer_stop(&d->defer);
    uv_close((uv_handle_t *)&d->timer, client_closed);
    uv_close((uv_handle_t *)&d->defer, client_closed);
}

const char *dg_docker_api_version(const dg_docker *d) { return d ? d->version : NULL; }
const char *dg_docker_unix_path(const dg_docker *d) { return d ? d->ep.unix_path : NULL; }

/* ---- version negotiation ---- */

static int version_num(const char *v) {
    unsigned maj, min;
    if (sscanf(v, "%u.%u", &maj, &min) != 2) return -1;
    return (int)(maj * 1000 + min);
}

typedef struct ping_ctx {
    dg_docker_done_cb cb;
    void *ud;
} ping_ctx;

static void ping_done(dg__req *r, const dg_error *err) {
    dg_docker *d = r->d;
    ping_ctx *c = r->ctx;
    dg_error e = {0};
    d->pinging = false;
    if (err) {
        dg_error_set(&e, err->code, "%s", err->msg);
    } else if (!r->api_version[0] || version_num(r->api_version) < 0) {
        dg_error_set(&e, -EPROTO, "the Docker engine at %s did not report its API version",
                     d->host);
    } else if (version_num(r->api_version) < version_num(DG_DOCKER_API_FLOOR)) {
        dg_error_set(&e, -EPROTONOSUPPORT,
                     "the Docker engine at %s speaks API %s, older than the minimum %s this "
                     "program needs",
                     d->host, r->api_version, DG_DOCKER_API_FLOOR);
    } else {
        free(d->version);
        d->version = xstrdup(version_num(r->api_version) < version_num(DG_DOCKER_API_MAX)
                                 ? r->api_version
                                 : DG_DOCKER_API_MAX);
    }
    dg__version_settled(d, e.code ? &e : NULL);
    if (c && c->cb) c->cb(c->ud, e.code ? &e : NULL);
    dg_error_clear(&e);
    free(c);
}

static void start_ping(dg_docker *d, ping_ctx *c) {
    dg__req *r = dg__req_new(d, "GET", "/_ping", NULL, ping_done, c);
    r->versioned = false;
    d->pinging = true;
    dg__req_submit(r);
}

void dg__negotiate(dg_docker *d) {
    if (d->pinging || d->version || d->closing) return;
    start_ping(d, NULL);
}

void dg_docker_ping(dg_docker *d, dg_docker_done_cb cb, void *ud) {
    ping_ctx *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    start_ping(d, c);
}

/* ---- generic call ---- */

typedef struct call_ctx {
    dg_docker_cb cb;
    dg_docker_done_cb done;
    dg_docker_id_cb id_cb;
    void *ud;
    long ok[2]; /* statuses >= 400 that mean success for this operation */
} call_ctx;

static void call_done(dg__req *r, const dg_error *err) {
    call_ctx *c = r->ctx;
    json_t *j = dg__req_json(r);
    if (c->cb) c->cb(c->ud, (int)r->status, j, err);
    json_decref(j);
    free(c);
}

static char *dump_json(const json_t *j) {
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s) abort();
    return s;
}

void dg_docker_call(dg_docker *d, const char *method, const char *path, const json_t *req,
                    dg_docker_cb cb, void *ud) {
    call_ctx *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    _cleanup_free_ char *body = dump_json(req);
    dg__req_submit(dg__req_new(d, method, path, body, call_done, c));
}

/* done-style operations: some error statuses are success (304 start and stop, 404 remove). */
static void op_done(dg__req *r, const dg_error *err) {
    call_ctx *c = r->ctx;
    if (err && r->status && (r->status == c->ok[0] || r->status == c->ok[1])) err = NULL;
    if (c->done) c->done(c->ud, err);
    free(c);
}

static dg__req *op_req(dg_docker *d, const char *method, const char *path, dg_docker_done_cb cb,
                       void *ud, long ok0, long ok1) {
    call_ctx *c = xcalloc(1, sizeof *c);
    c->done = cb;
    c->ud = ud;
    c->ok[0] = ok0;
    c->ok[1] = ok1;
    return dg__req_new(d, method, path, NULL, op_done, c);
}

/* ---- containers ---- */

static void create_done(dg__req *r, const dg_error *err) {
    call_ctx *c = r->ctx;
    json_t *j = err ? NULL : dg__req_json(r);
    const char *id = j ? json_string_value(json_object_get(j, "Id")) : NULL;
    if (err) {
        c->id_cb(c->ud, NULL, err);
    } else if (!id) {
        dg_error e = {0};
        dg_error_set(&e, -EPROTO, "the Docker engine answered container create without an Id");
        c->id_cb(c->ud, NULL, &e);
        dg_error_clear(&e);
    } else {
        c->id_cb(c->ud, id, NULL);
    }
    json_decref(j);
    free(c);
}

void dg_docker_container_create(dg_docker *d, const char *name, const json_t *config,
                                dg_docker_id_cb cb, void *ud) {
    call_ctx *c = xcalloc(1, sizeof *c);
    c->id_cb = cb;
    c->ud = ud;
    _cleanup_free_ char *path = NULL;
    if (name && *name) {
        _cleanup_free_ char *n = dg__escape(name);
        path = xasprintf("/containers/create?name=%s", n);
    } else {
        path = xstrdup("/containers/create");
    }
    _cleanup_free_ char *body = dump_json(config);
    dg__req *r = dg__req_new(d, "POST", path, body ? body : "{}", create_done, c);
    if (!config) dg__req_fail_later(r, -EINVAL, "container create needs a configuration");
    else dg__req_submit(r);
}

static char *container_path(const char *id, const char *suffix) {
    _cleanup_free_ char *e = dg__escape(id ? id : "");
    return xasprintf("/containers/%s%s", e, suffix);
}

void dg_docker_container_start(dg_docker *d, const char *id, dg_docker_done_cb cb, void *ud) {
    _cleanup_free_ char *path = container_path(id, "/start");
    /* 304: started already (a start repeated after a broken connection) */
    dg__req_submit(op_req(d, "POST", path, cb, ud, 304, 0));
}

void dg_docker_container_stop(dg_docker *d, const char *id, int grace_s, dg_docker_done_cb cb,
                              void *ud) {
    _cleanup_free_ char *suffix = xasprintf("/stop?t=%d", grace_s < 0 ? 0 : grace_s);
    _cleanup_free_ char *path = container_path(id, suffix);
    dg__req *r = op_req(d, "POST", path, cb, ud, 0, 0);
    r->stream = true; /* lasts up to the grace period: no fixed total timeout */
    dg__req_submit(r);
}

void dg_docker_container_remove(dg_docker *d, const char *id, dg_docker_done_cb cb, void *ud) {
    _cleanup_free_ char *path = container_path(id, "?force=1&v=1");
    dg__req_submit(op_req(d, "DELETE", path, cb, ud, 404, 0));
}

char *dg__label_filters(const char *type, const char *const *labels) {
    json_auto_t *f = json_object();
    if (type) json_object_set_new(f, "type", json_pack("[s]", type));
    json_t *lab = json_array();
    for (const char *const *l = labels; l && *l; l++) json_array_append_new(lab, json_string(*l));
    if (json_array_size(lab) > 0) json_object_set(f, "label", lab);
    json_decref(lab);
    _cleanup_free_ char *fs = json_dumps(f, JSON_COMPACT);
    if (!fs) abort();
    return dg__escape(fs);
}

char *dg_docker_filters(const char *key, const char *const *values) {
    json_auto_t *f = json_object();
    json_t *a = json_array();
    for (const char *const *v = values; v && *v; v++) json_array_append_new(a, json_string(*v));
    json_object_set_new(f, key, a);
    _cleanup_free_ char *fs = json_dumps(f, JSON_COMPACT);
    if (!fs) abort();
    return dg__escape(fs);
}

void dg_docker_containers_labelled(dg_docker *d, const char *const *labels, dg_docker_cb cb, void *ud) {
    _cleanup_free_ char *f = dg__label_filters(NULL, labels);
    _cleanup_free_ char *path = xasprintf("/containers/json?all=1&filters=%s", f);
    dg_docker_call(d, "GET", path, NULL, cb, ud);
}

void dg_docker_container_inspect(dg_docker *d, const char *id, dg_docker_cb cb, void *ud) {
    _cleanup_free_ char *path = container_path(id, "/json");
    call_ctx *c = xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    dg__req_submit(dg__req_new(d, "GET", path, NULL, call_done, c));
}

void dg_docker_image_inspect(dg_docker *d, const char *image, dg_docker_cb cb, void *ud) {
    _cleanup_free_ char *e = dg__escape(image ? image : "");
    _cleanup_free_ char *path = xasprintf("/images/%s/json", e);
    dg_docker_call(d, "GET", path, NULL, cb, ud);
}

/* ---- networks ---- */

typedef struct net_ctx {
    char *name;
    const char *driver; /* "bridge" or "overlay" (attachable, swarm-wide) */
    dg_docker_done_cb cb;
    void *ud;
    dg_error create_err; /* a failed create, kept while the network is looked up again */
    bool created;        /* the create was tried: a second look-up decides, no second create */
} net_ctx;

static void net_finish(net_ctx *c, const dg_error *err) {
    if (c->cb) c->cb(c->ud, err);
    dg_error_clear(&c->create_err);
    free(c->name);
    free(c);
}

static void net_lookup(dg_docker *d, net_ctx *c);

static void net_create_done(dg__req *r, const dg_error *err) {
    net_ctx *c = r->ctx;
    if (!err) {
        net_finish(c, NULL);
        return;
    }
    /* Someone may have made it between our look-up and the create (a 409, or a swarm
     * manager's 500): whatever the engine said, look again and take a network of that
     * name and the right driver; only when there is none does the create's error stand. */
    dg_error_set(&c->create_err, err->code, "%s", err->msg ? err->msg : "network create failed");
    c->created = true;
    net_lookup(r->d, c);
}

static void net_create(dg_docker *d, net_ctx *c) {
    json_t *body = json_pack("{s:s, s:s, s:b, s:b, s:{s:s}}", "Name", c->name, "Driver", c->driver,
                             "CheckDuplicate", 1, "Attachable", strcmp(c->driver, "overlay") == 0,
                             "Labels", "io.dagd.managed", "true");
    _cleanup_free_ char *s = dump_json(body);
    json_decref(body);
    dg__req_submit(dg__req_new(d, "POST", "/networks/create", s, net_create_done, c));
}

static void net_inspect_done(dg__req *r, const dg_error *err) {
    net_ctx *c = r->ctx;
    if (err && r->status != 404) {
        net_finish(c, err);
        return;
    }
    if (err && c->created) { /* not there after a failed create: the create's error */
        net_finish(c, &c->create_err);
        return;
    }
    if (!err) {
        /* The engine also matches ID prefixes; only an exact name is ours. */
        json_t *j = dg__req_json(r);
        const char *name = j ? json_string_value(json_object_get(j, "Name")) : NULL;
        const char *driver = j ? json_string_value(json_object_get(j, "Driver")) : NULL;
        bool same = name && strcmp(name, c->name) == 0;
        /* a swarm network still being made answers with no driver yet: that is ours */
        if (same && strcmp(c->driver, "overlay") == 0 && driver && *driver && strcmp(driver, "overlay") != 0) {
            dg_error e = {0};
            dg_error_set(&e, -EINVAL, "network %s exists with driver %s; jobs on a swarm need an overlay network",
                         c->name, driver ? driver : "?");
            json_decref(j);
            net_finish(c, &e);
            dg_error_clear(&e);
            return;
        }
        json_decref(j);
        if (same) {
            net_finish(c, NULL);
            return;
        }
    }
    if (c->created) net_finish(c, &c->create_err);
    else net_create(r->d, c);
}

static void network_ensure(dg_docker *d, const char *name, const char *driver, dg_docker_done_cb cb, void *ud) {
    net_ctx *c = xcalloc(1, sizeof *c);
    c->name = xstrdup(name ? name : "");
    c->driver = driver;
    c->cb = cb;
    c->ud = ud;
    net_lookup(d, c);
}

static void net_lookup(dg_docker *d, net_ctx *c) {
    _cleanup_free_ char *e = dg__escape(c->name);
    _cleanup_free_ char *path = xasprintf("/networks/%s", e);
    dg__req *r = dg__req_new(d, "GET", path, NULL, net_inspect_done, c);
    if (!*c->name) dg__req_fail_later(r, -EINVAL, "empty network name");
    else dg__req_submit(r);
}

void dg_docker_network_ensure(dg_docker *d, const char *name, dg_docker_done_cb cb, void *ud) {
    network_ensure(d, name, "bridge", cb, ud);
}

void dg_docker_overlay_ensure(dg_docker *d, const char *name, dg_docker_done_cb cb, void *ud) {
    network_ensure(d, name, "overlay", cb, ud);
}
