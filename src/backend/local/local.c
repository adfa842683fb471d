/* backend/local — jobs as containers on one Docker engine (see include/dagd/backend.h).
 *
 * A job is one container: image made ready (pull per policy), network made ready, created
 * with the spec's labels, started, its logs followed from the first line (since=0, frames
 * demultiplexed into lines), its exit taken from the engine's `die` event (reconciled by
 * inspect after an event-stream reconnect or when the die never comes), and it is removed
 * when the caller releases it. Never AutoRemove: the exit and the logs are collected first.
 * An engine that refuses connections (a restart) has not seen the request: the step is
 * tried again each second for up to ten minutes without failing the job.
 *
 * Ownership: the backend owns its jobs. A job is reference counted: every docker call in
 * flight holds a reference, as does the caller until it releases the job; callbacks of a
 * released job are not delivered. */
#include <errno.h>
#include <string.h>

#include "dagd/backend_local.h"
#include "dagd/docker.h"
#include "dagd/log.h"

#define ENGINE_RETRY_MS 1000
#define ENGINE_GIVE_UP_MS (10 * 60 * 1000)
#define REMOVE_RETRY_MAX_MS 5000
#define DIE_FALLBACK_MS 2000
#define DIE_FALLBACK_REPEAT_MS 5000

typedef struct local_backend local_backend;
typedef struct local_job local_job;

struct local_backend {
    dg_backend base;
    uv_loop_t *loop;
    dg_docker *docker;
    char **protected;  /* where the engine's socket is on this host (resolved paths) */
    char **cache;      /* images and networks known to exist ("network:NAME") */
    char *description;
    char *log_max_size; /* json-file max-size for every container; NULL = the engine's */
    dg_docker_stream *events;
    dg_backend_done_cb connect_cb;
    void *connect_ud;
    bool ready, closing;
    local_job *jobs;
};

struct local_job {
    dg_job base;
    local_backend *b;
    local_job *next;
    int refs;
    const dg_job_events *ev;
    void *ud;
    bool released, remove_on_release;
    dg_backend_done_cb gone;
    void *gone_ud;
    char *gone_error;
    char *id, *name, *image, *network;
    char *image_id, *image_digest; /* what it was created from (local_image) */
    dg_job_pull pull;
    json_t *config; /* the create body until create is sent */
    bool image_ok, network_ok, created, started, die_seen, logs_done, vanished, exited_sent;
    bool removing;
    bool start_checked; /* a start of it may have been sent before: look first (start_checked_step) */
    int64_t remove_failing_since;
    uint64_t remove_delay;
    int exit_code;
    dg_docker_stream *logs;
    uv_timer_t *timer;
    int64_t engine_down_since;
    void (*retry_step)(local_job *j);
};

/* ---- what the engine already has ---- */

static bool cache_has(local_backend *b, const char *key) {
    for (size_t i = 0; b->cache && b->cache[i]; i++)
        if (strcmp(b->cache[i], key) == 0) return true;
    return false;
}

static void cache_put(local_backend *b, const char *key) {
    if (!key || cache_has(b, key)) return;
    size_t n = dg_strv_len(b->cache);
    b->cache = xrealloc(b->cache, (n + 2) * sizeof(char *));
    b->cache[n] = xstrdup(key);
    b->cache[n + 1] = NULL;
}

static void cache_drop(local_backend *b, const char *key) {
    size_t n = dg_strv_len(b->cache);
    for (size_t i = 0; i < n; i++)
        if (strcmp(b->cache[i], key) == 0) {
            free(b->cache[i]);
            b->cache[i] = b->cache[n - 1];
            b->cache[n - 1] = NULL;
            return;
        }
}

/* ---- job lifetime ---- */

static void timer_free_cb(uv_handle_t *h) { free(h); }

static local_job *job_ref(local_job *j) {
    j->refs++;
    return j;
}

static void job_unref(local_job *j) {
    if (!j || --j->refs > 0) return;
    local_backend *b = j->b;
    for (local_job **p = &b->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    if (j->timer) uv_close((uv_handle_t *)j->timer, timer_free_cb);
    if (j->gone) {
        dg_error e = {.code = -EIO, .msg = j->gone_error};
        j->gone(j->gone_ud, j->gone_error ? &e : NULL);
    }
    free(j->gone_error);
    free(j->id);
    free(j->name);
    free(j->image);
    free(j->image_id);
    free(j->image_digest);
    free(j->network);
    json_decref(j->config);
    free(j);
}

static uv_timer_t *job_timer(local_job *j) {
    if (!j->timer) {
        j->timer = xmalloc(sizeof *j->timer);
        uv_timer_init(j->b->loop, j->timer);
        j->timer->data = j;
    }
    return j->timer;
}

static bool live(local_job *j) { return !j->released && !j->b->closing; }

static void remove_container(local_job *j);

static void remove_retry_cb(uv_timer_t *h) {
    local_job *j = h->data;
    j->removing = false;
    remove_container(j);
    job_unref(j); /* the timer's */
}

static void removed_cb(void *ud, const dg_error *err) {
    local_job *j = ud;
    if (err && err->code != -ECANCELED && !j->b->closing) {
        /* an engine restarting, a connection cut: try again with a backoff, for as long
         * as an engine may take to come back; the job (and so a caller waiting for it to
         * be gone) stays until then */
        int64_t now = dg_now_ms();
        if (!j->remove_failing_since) {
            j->remove_failing_since = now;
            dg_log(DG_LOG_WARNING, NULL, "removing container %s failed, trying again: %s",
                   j->name ? j->name : j->id, err->msg ? err->msg : "");
        }
        if (now - j->remove_failing_since <= ENGINE_GIVE_UP_MS) {
            j->remove_delay = j->remove_delay ? j->remove_delay * 2 : ENGINE_RETRY_MS / 2;
            if (j->remove_delay > REMOVE_RETRY_MAX_MS) j->remove_delay = REMOVE_RETRY_MAX_MS;
            uv_timer_start(job_timer(j), remove_retry_cb, j->remove_delay, 0);
            return; /* the call's reference goes to the timer */
        }
    }
    if (err && err->code != -ECANCELED) {
        dg_log(DG_LOG_WARNING, NULL, "removing container %s failed: %s", j->name ? j->name : j->id,
               err->msg ? err->msg : "");
        free(j->gone_error);
        j->gone_error = xasprintf("removing container %s: %s", j->name ? j->name : j->id, err->msg ? err->msg : "");
    }
    job_unref(j);
}

static void remove_container(local_job *j) {
    if (!j->id || j->removing || j->b->closing) return;
    j->removing = true;
    dg_docker_container_remove(j->b->docker, j->id, removed_cb, job_ref(j));
}

static void send_exited(local_job *j, bool vanished) {
    if (j->exited_sent) return;
    j->exited_sent = true;
    if (j->timer) uv_timer_stop(j->timer);
    if (live(j)) j->ev->exited(j->ud, j->exit_code, vanished);
}

static void fail_created(local_job *j, const char *msg) {
    if (!live(j)) return;
    dg_error e = {.code = -EIO, .msg = (char *)msg};
    j->ev->created(j->ud, &e);
}

/* code -ENOENT: the container is gone (docs/architecture.md, "Crash recovery") */
static void fail_started(local_job *j, int code, const char *msg) {
    if (!live(j)) return;
    dg_error e = {.code = code == -ENOENT ? -ENOENT : -EIO, .msg = (char *)msg};
    j->ev->started(j->ud, &e);
}

/* ---- an engine that is restarting ---- */

static void engine_retry_cb(uv_timer_t *h) {
    local_job *j = h->data;
    void (*step)(local_job *) = j->retry_step;
    j->retry_step = NULL;
    if (step && live(j)) step(j);
    job_unref(j);
}

/* repeatable: the step may be sent again after a connection that broke mid-request (the
 * engine may have acted on it): ensuring an image or a network, a start (304 then), an
 * inspect — not a create, which looks for its container first (find_created_cb). */
static bool retry_when_engine_back(local_job *j, const dg_error *err, bool repeatable, void (*step)(local_job *j)) {
    if (!(err->code == -ECONNREFUSED || (repeatable && err->code == -ECONNRESET)) || !live(j)) return false;
    int64_t now = dg_now_ms();
    if (!j->engine_down_since) j->engine_down_since = now;
    if (now - j->engine_down_since > ENGINE_GIVE_UP_MS) return false;
    j->retry_step = step;
    uv_timer_start(job_timer(j), engine_retry_cb, ENGINE_RETRY_MS, 0);
    job_ref(j);
    return true;
}

/* ---- create: image → network → container ---- */

static void create_step(local_job *j);

static void image_cb(void *ud, const dg_error *err) {
    local_job *j = ud;
    if (err) {
        if (err->code != -ECANCELED) {
            j->image_ok = false;
            if (!retry_when_engine_back(j, err, true, create_step)) fail_created(j, err->msg);
        }
    } else {
        cache_put(j->b, j->image);
        if (live(j)) create_step(j);
    }
    job_unref(j);
}

static void network_cb(void *ud, const dg_error *err) {
    local_job *j = ud;
    if (err) {
        if (err->code != -ECANCELED && !retry_when_engine_back(j, err, true, create_step)) {
            _cleanup_free_ char *m = xasprintf("network %s: %s", j->network, err->msg);
            fail_created(j, m);
        }
    } else {
        _cleanup_free_ char *key = xasprintf("network:%s", j->network);
        cache_put(j->b, key);
        j->network_ok = true;
        if (live(j)) create_step(j);
    }
    job_unref(j);
}

static void start_step(local_job *j);

/* Which image the container was made from: the container's Image (the engine's id, fixed
 * at create, whatever the name points at later) and that image's first RepoDigests entry
 * (none for an image built here and never pushed or pulled). The job counts as created once
 * both are known, so the try's record and log say it before the command runs; a failed look
 * leaves them unknown and the job goes on (docs/dags.md, "Tries"). */
static void image_digest_cb(void *ud, int status, json_t *body, const dg_error *err) {
    local_job *j = ud;
    (void)status;
    if (err && err->code == -ECANCELED) {
        job_unref(j);
        return;
    }
    if (err) {
        dg_log(DG_LOG_WARNING, NULL, "container %s: cannot inspect its image %s: %s", j->name, j->image_id, err->msg);
    } else {
        const char *d = json_string_value(json_array_get(json_object_get(body, "RepoDigests"), 0));
        if (d) j->image_digest = xstrdup(d);
    }
    if (live(j)) j->ev->created(j->ud, NULL);
    job_unref(j);
}

static void image_known(local_job *j, json_t *inspect) {
    const char *img = json_string_value(json_object_get(inspect, "Image"));
    if (img) {
        free(j->image_id);
        j->image_id = xstrdup(img);
        dg_docker_image_inspect(j->b->docker, img, image_digest_cb, job_ref(j));
        return;
    }
    if (live(j)) j->ev->created(j->ud, NULL);
}

static void image_id_cb(void *ud, int status, json_t *body, const dg_error *err) {
    local_job *j = ud;
    (void)status;
    if (err && err->code == -ECANCELED) {
        job_unref(j);
        return;
    }
    if (err) {
        dg_log(DG_LOG_WARNING, NULL, "container %s: cannot inspect it for its image: %s", j->name, err->msg);
        if (live(j)) j->ev->created(j->ud, NULL);
    } else if (live(j)) {
        image_known(j, body);
    }
    job_unref(j);
}

/* inspect: the container's inspect when the caller has it (NULL: ask for it) */
static void created(local_job *j, const char *id, json_t *inspect) {
    j->id = xstrdup(id);
    j->created = true;
    if (j->released) {
        if (j->remove_on_release) remove_container(j);
    } else if (live(j)) {
        if (inspect) image_known(j, inspect);
        else dg_docker_container_inspect(j->b->docker, j->id, image_id_cb, job_ref(j));
    }
}

static void find_created_step(local_job *j);

/* A create whose answer was lost (or a repeat of it, answered 409): the container may
 * exist. Its name is this try's own (it ends in random digits), so one by that name whose
 * labels are this create's is it; none: create it now. */
static void find_created_cb(void *ud, int status, json_t *body, const dg_error *err) {
    local_job *j = ud;
    if (err) {
        if (err->code == -ENOENT) {
            if (live(j)) create_step(j);
        } else if (err->code != -ECANCELED && !retry_when_engine_back(j, err, true, find_created_step)) {
            fail_created(j, err->msg);
        }
        job_unref(j);
        return;
    }
    const char *id = json_string_value(json_object_get(body, "Id"));
    json_t *want = json_object_get(j->config, "Labels");
    json_t *have = json_object_get(json_object_get(body, "Config"), "Labels");
    bool ours = id && json_is_object(want) && json_is_object(have);
    const char *k;
    json_t *v;
    json_object_foreach(want, k, v) ours = ours && json_equal(v, json_object_get(have, k)); /* image labels join them */
    if (ours) {
        created(j, id, body);
    } else {
        _cleanup_free_ char *m = xasprintf("a container named %s that dagd did not create for this try exists", j->name);
        fail_created(j, m);
    }
    job_unref(j);
}

static void find_created_step(local_job *j) {
    dg_docker_container_inspect(j->b->docker, j->name, find_created_cb, job_ref(j));
}

static void create_cb(void *ud, const char *id, const dg_error *err) {
    local_job *j = ud;
    if (err) {
        if (err->code != -ECANCELED) {
            /* a cached image that vanished since: forget it so the next job checks again */
            if (err->code == -ENOENT) cache_drop(j->b, j->image);
            if ((err->code == -ECONNRESET || err->code == -EEXIST) && live(j)) {
                /* the engine may have made it (see find_created_cb) */
                if (err->code == -EEXIST) find_created_step(j);
                else if (!retry_when_engine_back(j, err, true, find_created_step)) fail_created(j, err->msg);
            } else if (!retry_when_engine_back(j, err, false, create_step)) {
                fail_created(j, err->msg);
            }
        }
        job_unref(j);
        return;
    }
    created(j, id, NULL);
    job_unref(j);
}

/* The engine's network modes that are no network to create and take no alias: the host's
 * stack, another container's, none (docs/dags.md, "The container policy"). */
static bool network_mode(const char *net) {
    return !strcmp(net, "host") || !strcmp(net, "none") || dg_str_has_prefix(net, "container:");
}

static void create_step(local_job *j) {
    local_backend *b = j->b;
    if (!j->image_ok) {
        j->image_ok = true;
        if (j->pull == DG_JOB_PULL_ALWAYS || !cache_has(b, j->image)) {
            dg_docker_image_ensure(b->docker, j->image, (dg_docker_pull)j->pull, image_cb, job_ref(j));
            return;
        }
    }
    if (j->network && !j->network_ok && !network_mode(j->network)) {
        _cleanup_free_ char *key = xasprintf("network:%s", j->network);
        if (!cache_has(b, key)) {
            dg_docker_network_ensure(b->docker, j->network, network_cb, job_ref(j));
            return;
        }
        j->network_ok = true;
    }
    dg_docker_container_create(b->docker, j->name, j->config, create_cb, job_ref(j));
}

static json_t *strv_json(char *const *v) {
    json_t *a = json_array();
    for (size_t i = 0; v && v[i]; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

/* The engine's create body for a spec. */
static json_t *container_config(const local_backend *b, const dg_job_spec *s) {
    json_t *cfg = json_object();
    json_t *host = json_object();
    json_object_set_new(cfg, "Image", json_string(s->image));
    if (s->command) json_object_set_new(cfg, "Cmd", strv_json(s->command));
    if (s->entrypoint) json_object_set_new(cfg, "Entrypoint", strv_json(s->entrypoint));
    json_object_set_new(cfg, "Env", strv_json(s->env));
    if (s->working_dir) json_object_set_new(cfg, "WorkingDir", json_string(s->working_dir));
    if (s->user) json_object_set_new(cfg, "User", json_string(s->user));
    if (s->hostname) json_object_set_new(cfg, "Hostname", json_string(s->hostname));
    json_object_set_new(cfg, "Tty", json_false());
    json_object_set_new(cfg, "OpenStdin", json_false());
    json_object_set_new(cfg, "AttachStdout", json_false());
    json_object_set_new(cfg, "AttachStderr", json_false());
    json_object_set_new(cfg, "Labels", s->labels ? json_deep_copy(s->labels) : json_object());
    if (s->volumes && s->volumes[0]) {
        json_t *anon = json_object();
        for (size_t i = 0; s->volumes[i]; i++) json_object_set_new(anon, s->volumes[i], json_object());
        json_object_set_new(cfg, "Volumes", anon);
    }
    json_object_set_new(host, "Binds", strv_json(s->binds));
    if (s->network) json_object_set_new(host, "NetworkMode", json_string(s->network));
    if (s->network && !network_mode(s->network)) {
        json_t *ep = json_pack("{s:{s:{s:[s]}}}", "EndpointsConfig", s->network, "Aliases",
                               s->network_alias ? s->network_alias : s->name);
        json_object_set_new(cfg, "NetworkingConfig", ep);
    }
    if (s->memory > 0) json_object_set_new(host, "Memory", json_integer(s->memory));
    if (s->cpus > 0) json_object_set_new(host, "NanoCpus", json_integer((json_int_t)(s->cpus * 1e9)));
    if (s->shm_size > 0) json_object_set_new(host, "ShmSize", json_integer(s->shm_size));
    if (s->privileged) json_object_set_new(host, "Privileged", json_true());
    if (s->extra_hosts) json_object_set_new(host, "ExtraHosts", strv_json(s->extra_hosts));
    json_object_set_new(host, "AutoRemove", json_false());
    /* a json-file log large enough that the engine does not rotate away lines dagd has
     * not read yet (docs/operations.md, Logs) */
    if (b->log_max_size)
        json_object_set_new(host, "LogConfig",
                            json_pack("{s:s,s:{s:s}}", "Type", "json-file", "Config", "max-size", b->log_max_size));
    json_object_set_new(cfg, "HostConfig", host);
    return cfg;
}

static local_job *job_new(local_backend *b, const dg_job_events *ev, void *ud) {
    local_job *j = xcalloc(1, sizeof *j);
    j->base.backend = &b->base;
    j->b = b;
    j->ev = ev;
    j->ud = ud;
    j->refs = 1; /* the caller's, until release */
    j->next = b->jobs;
    b->jobs = j;
    return j;
}

static dg_job *local_create(dg_backend *bb, const dg_job_spec *s, const dg_job_events *ev, void *ud) {
    local_backend *b = (local_backend *)bb;
    local_job *j = job_new(b, ev, ud);
    j->name = xstrdup(s->name);
    j->image = xstrdup(s->image);
    j->network = xstrdup(s->network);
    j->pull = s->pull;
    j->config = container_config(b, s);
    create_step(j);
    return &j->base;
}

/* ---- running: start, logs, exit ---- */

static void try_exited(local_job *j) {
    if (j->vanished) {
        send_exited(j, true);
        return;
    }
    if (j->die_seen && j->logs_done) send_exited(j, false);
}

static void on_die(local_job *j, int code) {
    if (j->die_seen) return;
    j->die_seen = true;
    j->exit_code = code;
    if (j->logs && !j->logs_done) dg_docker_logs_exited(j->logs);
    try_exited(j);
}

static void inspect_cb(void *ud, int status, json_t *body, const dg_error *err) {
    local_job *j = ud;
    if (!err && !j->die_seen) {
        json_t *st = json_object_get(body, "State");
        if (st && !json_is_true(json_object_get(st, "Running")) && !json_is_true(json_object_get(st, "Restarting"))) {
            const char *s = json_string_value(json_object_get(st, "Status"));
            if (!s || strcmp(s, "created") != 0) on_die(j, (int)json_integer_value(json_object_get(st, "ExitCode")));
        }
    } else if (err && err->code == -ENOENT && !j->die_seen) {
        j->die_seen = j->vanished = true;
        try_exited(j);
    }
    job_unref(j);
}

/* Ask the engine whether a started container has ended (a die event may have been missed). */
static void reconcile(local_job *j) {
    if (!j->id || j->die_seen || !j->started || j->b->closing) return;
    dg_docker_container_inspect(j->b->docker, j->id, inspect_cb, job_ref(j));
}

static void die_fallback_cb(uv_timer_t *h) { reconcile(h->data); }

static void log_line_cb(void *ud, int stream, const char *line, size_t len) {
    local_job *j = ud;
    if (stream == DG_DOCKER_GAP) {
        /* on stdout, so that a gap at the end is the try's output, never a line from
         * before it (docs/operations.md, Logs) */
        dg_log(DG_LOG_WARNING, NULL, "container %s: %s", j->name ? j->name : j->id, line);
        stream = 1;
    }
    if (live(j)) j->ev->line(j->ud, stream, line, len);
}

static void logs_done_cb(void *ud, const dg_error *err) {
    local_job *j = ud;
    j->logs = NULL;
    j->logs_done = true;
    if (err && err->code == -ECANCELED) {
        job_unref(j);
        return;
    }
    if (err && live(j)) {
        _cleanup_free_ char *m = xasprintf("[dagd] log stream ended with an error: %s", err->msg);
        j->ev->line(j->ud, 2, m, strlen(m));
    }
    if (j->die_seen) {
        try_exited(j);
    } else {
        /* the stream ends when the container stops; the die event normally follows within
         * milliseconds. If it was lost (engine restart), ask the engine. */
        uv_timer_start(job_timer(j), die_fallback_cb, DIE_FALLBACK_MS, DIE_FALLBACK_REPEAT_MS);
    }
    job_unref(j);
}

static void follow_logs(local_job *j) {
    j->logs = dg_docker_logs_follow(j->b->docker, j->id, log_line_cb, logs_done_cb, job_ref(j));
}

static void on_started(local_job *j) {
    j->started = true;
    if (live(j)) {
        j->ev->started(j->ud, NULL);
        if (live(j)) follow_logs(j);
    }
}

static void start_checked_step(local_job *j);

static void start_cb(void *ud, const dg_error *err) {
    local_job *j = ud;
    if (err) {
        /* the engine may have acted on a start whose connection broke: look before a
         * second start, which would run an exited container again */
        if (err->code != -ECANCELED && !retry_when_engine_back(j, err, true, start_checked_step))
            fail_started(j, err->code, err->msg);
        job_unref(j);
        return;
    }
    on_started(j);
    job_unref(j);
}

static void start_step(local_job *j) {
    dg_docker_container_start(j->b->docker, j->id, start_cb, job_ref(j));
}

/* A start that may not be the container's first (a start a dead dagd sent, a start whose
 * connection broke): the engine has no "start only if never started", and starting an
 * exited container runs its command again. So the container is started only if the engine
 * says it never was (status "created", StartedAt the zero time); otherwise it is taken as
 * started and followed to its exit. See docs/architecture.md, "Crash recovery". */
static void start_checked_cb(void *ud, int status, json_t *body, const dg_error *err) {
    local_job *j = ud;
    if (err) {
        if (err->code != -ECANCELED && !retry_when_engine_back(j, err, true, start_checked_step))
            fail_started(j, err->code, err->msg);
        job_unref(j);
        return;
    }
    json_t *st = json_object_get(body, "State");
    const char *s = json_string_value(json_object_get(st, "Status"));
    const char *at = json_string_value(json_object_get(st, "StartedAt"));
    bool never = s && !strcmp(s, "created") && at && !strncmp(at, "0001-01-01T00:00:00", 19);
    if (!live(j)) {
        /* released meanwhile */
    } else if (never) {
        start_step(j);
    } else {
        dg_log(DG_LOG_NOTICE, NULL, "container %s was started before (%s): following it, not starting it again",
               j->name ? j->name : j->id, s ? s : "?");
        on_started(j);
        reconcile(j); /* it may have exited already */
    }
    job_unref(j);
}

static void start_checked_step(local_job *j) {
    dg_docker_container_inspect(j->b->docker, j->id, start_checked_cb, job_ref(j));
}

static const char *local_id(dg_job *jj) { return ((local_job *)jj)->id; }

static void local_image(dg_job *jj, const char **id, const char **digest) {
    local_job *j = (local_job *)jj;
    *id = j->image_id;
    *digest = j->image_digest;
}

static void local_start(dg_job *jj) {
    local_job *j = (local_job *)jj;
    if (j->start_checked) start_checked_step(j); /* adopted, listed as only created */
    else start_step(j);
}

static void stop_cb(void *ud, const dg_error *err) {
    local_job *j = ud;
    if (err && err->code != -ECANCELED) {
        dg_log(DG_LOG_WARNING, NULL, "stopping %s failed: %s", j->name, err->msg);
        reconcile(j);
    }
    job_unref(j);
}

static void local_stop(dg_job *jj, int grace_s) {
    local_job *j = (local_job *)jj;
    if (j->started && j->id) dg_docker_container_stop(j->b->docker, j->id, grace_s, stop_cb, job_ref(j));
}

typedef struct file_req {
    local_job *j;
    dg_job_file_cb cb;
    void *ud;
} file_req;

static void archive_cb(void *ud, const char *content, size_t len, bool truncated, const dg_error *err) {
    file_req *r = ud;
    r->cb(r->ud, content, len, err); /* also -ECANCELED: the caller lets go then */
    job_unref(r->j);
    free(r);
}

static void local_read_file(dg_job *jj, const char *path, size_t max, dg_job_file_cb cb, void *ud) {
    local_job *j = (local_job *)jj;
    file_req *r = xcalloc(1, sizeof *r);
    r->j = job_ref(j);
    r->cb = cb;
    r->ud = ud;
    dg_docker_archive_file(j->b->docker, j->id, path, max, archive_cb, r);
}

static void local_release(dg_job *jj, bool remove, dg_backend_done_cb gone, void *ud) {
    local_job *j = (local_job *)jj;
    if (j->released) return;
    j->released = true;
    j->remove_on_release = remove;
    j->gone = gone;
    j->gone_ud = ud;
    if (j->retry_step) {
        /* a step waiting for the engine: its timer's reference goes with it */
        j->retry_step = NULL;
        uv_timer_stop(j->timer);
        job_unref(j);
    }
    if (j->timer) uv_timer_stop(j->timer);
    if (j->logs) {
        dg_docker_stream_cancel(j->logs);
        j->logs = NULL;
        job_unref(j); /* the stream's reference: its done callback will not come */
    }
    if (remove && j->created) remove_container(j);
    /* a create still in flight removes its container when it answers (create_cb) */
    job_unref(j);
}

static dg_job *local_adopt(dg_backend *bb, const dg_job_info *info, const dg_job_events *ev, void *ud) {
    local_backend *b = (local_backend *)bb;
    local_job *j = job_new(b, ev, ud);
    j->id = xstrdup(info->id);
    j->name = xstrdup(info->name ? info->name : info->id);
    j->image_ok = j->network_ok = j->created = true;
    if (info->started) {
        j->started = true;
        follow_logs(j);
        reconcile(j);
    } else {
        j->start_checked = true; /* listed as created: a start may be in flight (local_start) */
    }
    return &j->base;
}

/* ---- listing and the event stream ---- */

typedef struct list_req {
    dg_backend_list_cb cb;
    void *ud;
} list_req;

static void list_cb(void *ud, int status, json_t *body, const dg_error *err) {
    list_req *r = ud;
    if (err) {
        if (err->code != -ECANCELED) r->cb(r->ud, NULL, 0, err);
        free(r);
        return;
    }
    size_t n = json_array_size(body), k = 0;
    dg_job_info *v = xcalloc(n + 1, sizeof *v);
    size_t i;
    json_t *ct;
    json_array_foreach(body, i, ct) {
        const char *id = json_string_value(json_object_get(ct, "Id"));
        const char *st = json_string_value(json_object_get(ct, "State"));
        if (!id || !st) continue;
        const char *name = json_string_value(json_array_get(json_object_get(ct, "Names"), 0));
        if (name && name[0] == '/') name++;
        json_t *labels = json_object_get(ct, "Labels");
        v[k++] = (dg_job_info){
            .id = xstrdup(id),
            .name = xstrdup(name ? name : id),
            .started = strcmp(st, "created") != 0,
            .labels = labels ? json_incref(labels) : json_object(),
        };
    }
    r->cb(r->ud, v, k, NULL);
    dg_job_infos_free(v, k);
    free(r);
}

static void local_list(dg_backend *bb, const char *const *labels, dg_backend_list_cb cb, void *ud) {
    local_backend *b = (local_backend *)bb;
    list_req *r = xcalloc(1, sizeof *r);
    r->cb = cb;
    r->ud = ud;
    dg_docker_containers_labelled(b->docker, labels, list_cb, r);
}

static void stale_removed_cb(void *ud, const dg_error *err) {
    if (err && err->code != -ECANCELED) dg_log(DG_LOG_WARNING, NULL, "removing a stale container: %s", err->msg);
}

static void local_remove(dg_backend *bb, const char *id) {
    local_backend *b = (local_backend *)bb;
    dg_docker_container_remove(b->docker, id, stale_removed_cb, NULL);
}

static local_job *find_container(local_backend *b, const char *id) {
    for (local_job *j = b->jobs; j; j = j->next)
        if (j->id && !j->released && strcmp(j->id, id) == 0) return j;
    return NULL;
}

static void event_cb(void *ud, json_t *ev) {
    local_backend *b = ud;
    const char *action = json_string_value(json_object_get(ev, "Action"));
    json_t *actor = json_object_get(ev, "Actor");
    const char *id = json_string_value(json_object_get(actor, "ID"));
    if (!action || !id || strcmp(action, "die") != 0) return;
    local_job *j = find_container(b, id);
    if (!j) return;
    const char *code = json_string_value(json_object_get(json_object_get(actor, "Attributes"), "exitCode"));
    on_die(j, code ? atoi(code) : -1);
}

static void events_connected_cb(void *ud, const dg_error *err) {
    local_backend *b = ud;
    if (err) return;
    if (!b->ready) {
        b->ready = true;
        free(b->description);
        b->description = xasprintf("Docker engine API %s", dg_docker_api_version(b->docker));
        if (b->connect_cb) {
            dg_backend_done_cb cb = b->connect_cb;
            b->connect_cb = NULL;
            cb(b->connect_ud, NULL);
        }
        return;
    }
    /* reconnected: events may have been missed; ask the engine about every live container */
    for (local_job *j = b->jobs; j; j = j->next)
        if (!j->released) reconcile(j);
}

typedef struct connect_req {
    local_backend *b;
    char **labels;
} connect_req;

static void ping_cb(void *ud, const dg_error *err) {
    connect_req *c = ud;
    local_backend *b = c->b;
    if (err) {
        if (err->code != -ECANCELED && b->connect_cb) {
            dg_backend_done_cb cb = b->connect_cb;
            b->connect_cb = NULL;
            cb(b->connect_ud, err);
        }
    } else {
        b->events = dg_docker_events(b->docker, (const char *const *)c->labels, event_cb, events_connected_cb, b);
    }
    dg_strv_free(c->labels);
    free(c);
}

static void local_connect(dg_backend *bb, const char *const *labels, dg_backend_done_cb cb, void *ud) {
    local_backend *b = (local_backend *)bb;
    b->connect_cb = cb;
    b->connect_ud = ud;
    connect_req *c = xcalloc(1, sizeof *c);
    c->b = b;
    c->labels = dg_strv_copy((char *const *)labels);
    dg_docker_ping(b->docker, ping_cb, c);
}

static const char *const *local_protected_paths(dg_backend *bb) {
    return (const char *const *)((local_backend *)bb)->protected;
}

static const char *local_describe(dg_backend *bb) {
    local_backend *b = (local_backend *)bb;
    return b->description ? b->description : "Docker engine";
}

static void local_free(dg_backend *bb) {
    local_backend *b = (local_backend *)bb;
    b->closing = true;
    if (b->events) dg_docker_stream_cancel(b->events);
    /* jobs still held are abandoned: in-flight calls end with -ECANCELED and let go */
    for (local_job *j = b->jobs, *n; j; j = n) {
        n = j->next;
        if (!j->released) local_release(&j->base, false, NULL, NULL);
    }
    dg_docker_free(b->docker);
    dg_strv_free(b->protected);
    dg_strv_free(b->cache);
    free(b->description);
    free(b->log_max_size);
    /* jobs freed by their last docker callback (run during dg_docker_free) are gone; any
     * left have no call in flight */
    while (b->jobs) {
        local_job *j = b->jobs;
        j->refs = 1;
        job_unref(j);
    }
    free(b);
}

static const dg_backend_ops local_ops = {
    .name = "local",
    .connect = local_connect,
    .create = local_create,
    .id = local_id,
    .image = local_image,
    .start = local_start,
    .stop = local_stop,
    .read_file = local_read_file,
    .release = local_release,
    .list = local_list,
    .adopt = local_adopt,
    .remove = local_remove,
    .protected_paths = local_protected_paths,
    .describe = local_describe,
    .free = local_free,
};

int dg_backend_local_new(uv_loop_t *loop, const char *host, const char *log_max_size, dg_backend **ret,
                         dg_error *err) {
    dg_docker *d;
    int r = dg_docker_new(loop, host, &d, err);
    if (r < 0) return r;
    local_backend *b = xcalloc(1, sizeof *b);
    b->base.ops = &local_ops;
    b->loop = loop;
    b->docker = d;
    b->protected = dg_docker_socket_paths(host);
    if (log_max_size && strcmp(log_max_size, "engine") != 0) b->log_max_size = xstrdup(log_max_size);
    *ret = &b->base;
    return 0;
}
