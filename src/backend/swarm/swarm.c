/* backend/swarm — jobs as Docker Swarm services in replicated-job mode (see
 * include/dagd/backend.h and docs/operations.md, "Running on a swarm").
 *
 * A job is one service with Mode.ReplicatedJob {MaxConcurrent 1, TotalCompletions 1} and
 * restart condition none: the swarm places and runs one task, dagd owns the retries. The
 * engine dagd talks to must be a swarm manager. Create only makes the overlay network
 * ready (a service runs as soon as it exists, so it is made at start); start creates the
 * service. The task's state comes from polling GET /tasks for every job in flight, and
 * GET /nodes: a task on a node that went down counts as failed (the swarm itself would
 * leave it "running" for good). Output comes from the service logs endpoint, demultiplexed
 * like a container's. Release removes the service, and with it its task's container.
 *
 * Ownership and reference counting as in the local backend: every engine call in flight
 * holds a reference to its job, as does the caller until it releases the job. */
#include <errno.h>
#include <string.h>

#include "dagd/backend_swarm.h"
#include "dagd/docker.h"
#include "dagd/log.h"

#define POLL_MS 400
#define ENGINE_RETRY_MS 1000
#define ENGINE_GIVE_UP_MS (10 * 60 * 1000)
#define LOGS_GRACE_MS 3000  /* after a task ends, how long its last lines may take */
#define STOP_GRACE_NS 10000000000LL
#define NO_TASK_ROUNDS 10   /* rounds without a task before the service is looked up */

typedef struct swarm_backend swarm_backend;
typedef struct swarm_job swarm_job;

struct swarm_backend {
    dg_backend base;
    uv_loop_t *loop;
    dg_docker *docker;
    char **protected;
    char **networks; /* overlay networks known to exist */
    char *description;
    char *log_max_size; /* the task containers' json-file max-size; NULL: the engine's settings */
    dg_backend_done_cb connect_cb;
    void *connect_ud;
    uv_timer_t *poll;
    int polls_in_flight;
    json_t *nodes; /* node id -> {"state", "hostname"} from the last GET /nodes */
    bool closing;
    swarm_job *jobs;
};

struct swarm_job {
    dg_job base;
    swarm_backend *b;
    swarm_job *next;
    int refs;
    const dg_job_events *ev;
    void *ud;
    bool released, remove_on_release;
    dg_backend_done_cb gone;
    void *gone_ud;
    char *gone_error;
    char *id, *name, *network;
    json_t *body;  /* the services/create body until it is sent */
    char *refusal; /* why the spec cannot run on a swarm */
    bool created, started, creating, ended, logs_done, exited_sent, removing, stopping, vanished;
    int exit_code;
    int no_task_rounds;
    char *container_id, *node_id, *last_err;
    char *image_id, *image_digest; /* swarm_image */
    bool image_looked, image_pending, exit_after_image;
    dg_docker_stream *logs;
    uv_timer_t *timer;
    void (*timer_step)(swarm_job *j);
    int64_t engine_down_since;
};

/* ---- job lifetime ---- */

static void handle_free_cb(uv_handle_t *h) { free(h); }

static swarm_job *job_ref(swarm_job *j) {
    j->refs++;
    return j;
}

static void job_unref(swarm_job *j) {
    if (!j || --j->refs > 0) return;
    swarm_backend *b = j->b;
    for (swarm_job **p = &b->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    if (j->timer) uv_close((uv_handle_t *)j->timer, handle_free_cb);
    if (j->gone) {
        dg_error e = {.code = -EIO, .msg = j->gone_error};
        j->gone(j->gone_ud, j->gone_error ? &e : NULL);
    }
    free(j->gone_error);
    free(j->id);
    free(j->name);
    free(j->network);
    free(j->refusal);
    free(j->container_id);
    free(j->image_id);
    free(j->image_digest);
    free(j->node_id);
    free(j->last_err);
    json_decref(j->body);
    free(j);
}

static bool live(swarm_job *j) { return !j->released && !j->b->closing; }

static void timer_cb(uv_timer_t *h) {
    swarm_job *j = h->data;
    void (*step)(swarm_job *) = j->timer_step;
    j->timer_step = NULL;
    if (step && live(j)) step(j);
    job_unref(j);
}

/* Run step from the loop after ms (events never run inside the call that caused them). */
static void later(swarm_job *j, uint64_t ms, void (*step)(swarm_job *j)) {
    if (!j->timer) {
        j->timer = xmalloc(sizeof *j->timer);
        uv_timer_init(j->b->loop, j->timer);
        j->timer->data = j;
    }
    if (j->timer_step) job_unref(j); /* the step it replaces held a reference */
    j->timer_step = step;
    uv_timer_start(j->timer, timer_cb, ms, 0);
    job_ref(j);
}

static void cancel_later(swarm_job *j) {
    if (!j->timer_step) return;
    j->timer_step = NULL;
    uv_timer_stop(j->timer);
    job_unref(j);
}

static void emit_line(swarm_job *j, const char *msg) {
    if (live(j)) j->ev->line(j->ud, 2, msg, strlen(msg));
}

/* ---- removal ---- */

static void removed_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_job *j = ud;
    if (err && err->code != -ECANCELED && err->code != -ENOENT) {
        dg_log(DG_LOG_WARNING, NULL, "removing service %s failed: %s", j->name ? j->name : j->id,
               err->msg ? err->msg : "");
        free(j->gone_error);
        j->gone_error = xasprintf("removing service %s: %s", j->name ? j->name : j->id, err->msg ? err->msg : "");
    }
    job_unref(j);
}

static void service_path_call(swarm_backend *b, const char *method, const char *id, dg_docker_cb cb, void *ud) {
    _cleanup_free_ char *path = xasprintf("/services/%s", id);
    dg_docker_call(b->docker, method, path, NULL, cb, ud);
}

static void remove_service(swarm_job *j) {
    if (!j->id || j->removing || j->b->closing) return;
    j->removing = true;
    service_path_call(j->b, "DELETE", j->id, removed_cb, job_ref(j));
}

/* ---- the end of a try ---- */

static void send_exited(swarm_job *j) {
    if (j->exited_sent) return;
    if (j->image_pending) { /* the try's record gets its image first (task_image_cb) */
        j->exit_after_image = true;
        return;
    }
    j->exited_sent = true;
    if (j->logs) {
        dg_docker_stream_cancel(j->logs);
        j->logs = NULL;
        job_unref(j); /* the stream's reference: its done callback will not come */
    }
    cancel_later(j);
    if (live(j)) j->ev->exited(j->ud, j->exit_code, j->vanished);
}

static void logs_late(swarm_job *j) {
    emit_line(j, "[dagd] the task's last lines did not arrive in time; the log may be incomplete");
    send_exited(j);
}

static void end_task(swarm_job *j, int code, bool vanished) {
    if (j->ended) return;
    j->ended = true;
    j->exit_code = code;
    j->vanished = vanished;
    if (j->logs_done || vanished || !j->logs) {
        send_exited(j);
        return;
    }
    dg_docker_logs_exited(j->logs);
    later(j, LOGS_GRACE_MS, logs_late);
}

/* ---- create: the network, then (at start) the service ---- */

static void fail_created(swarm_job *j) {
    if (!live(j)) return;
    dg_error e = {.code = -EIO, .msg = j->refusal};
    j->ev->created(j->ud, &e);
}

static void report_created(swarm_job *j) {
    if (j->refusal) {
        fail_created(j);
        return;
    }
    j->created = true;
    if (live(j)) j->ev->created(j->ud, NULL);
}

static bool cached(swarm_backend *b, const char *net) {
    for (size_t i = 0; b->networks && b->networks[i]; i++)
        if (strcmp(b->networks[i], net) == 0) return true;
    return false;
}

static void network_cb(void *ud, const dg_error *err) {
    swarm_job *j = ud;
    if (err) {
        if (err->code != -ECANCELED && !j->refusal) j->refusal = xasprintf("network %s: %s", j->network, err->msg);
    } else if (!cached(j->b, j->network)) {
        size_t n = dg_strv_len(j->b->networks);
        j->b->networks = xrealloc(j->b->networks, (n + 2) * sizeof(char *));
        j->b->networks[n] = xstrdup(j->network);
        j->b->networks[n + 1] = NULL;
    }
    if (!err || err->code != -ECANCELED) report_created(j);
    job_unref(j);
}

static json_t *strv_json(char *const *v) {
    json_t *a = json_array();
    for (size_t i = 0; v && v[i]; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

/* "host:container[:mode]" → a bind mount */
static json_t *bind_mount(const char *bind) {
    _cleanup_free_ char *s = xstrdup(bind);
    char *target = strchr(s, ':');
    if (!target) return NULL;
    *target++ = 0;
    char *mode = strchr(target, ':');
    bool ro = false;
    if (mode) {
        *mode++ = 0;
        ro = strstr(mode, "ro") != NULL;
    }
    return json_pack("{s:s, s:s, s:s, s:b}", "Type", "bind", "Source", s, "Target", target, "ReadOnly", ro);
}

/* The services/create body for a spec; *refusal says what a swarm cannot do. */
static json_t *service_spec(const dg_job_spec *s, const char *log_max_size, char **refusal) {
    if (s->privileged) *refusal = xstrdup("privileged: true is not available on the swarm backend");
    else if (s->shm_size > 0) *refusal = xstrdup("shm_size is not available on the swarm backend");
    else if (s->network && (!strcmp(s->network, "host") || !strncmp(s->network, "container:", 10)))
        *refusal = xasprintf("network: %s is not available on the swarm backend", s->network);
    json_t *cs = json_object();
    json_object_set_new(cs, "Image", json_string(s->image));
    if (s->entrypoint) {
        json_object_set_new(cs, "Command", strv_json(s->entrypoint));
        if (s->command) json_object_set_new(cs, "Args", strv_json(s->command));
    } else if (s->command) {
        json_object_set_new(cs, "Args", strv_json(s->command));
    }
    json_object_set_new(cs, "Env", strv_json(s->env));
    if (s->working_dir) json_object_set_new(cs, "Dir", json_string(s->working_dir));
    if (s->user) json_object_set_new(cs, "User", json_string(s->user));
    if (s->hostname) json_object_set_new(cs, "Hostname", json_string(s->hostname));
    json_object_set_new(cs, "Labels", s->labels ? json_deep_copy(s->labels) : json_object());
    json_object_set_new(cs, "StopGracePeriod", json_integer(STOP_GRACE_NS));
    json_t *mounts = json_array();
    for (size_t i = 0; s->binds && s->binds[i]; i++) {
        json_t *m = bind_mount(s->binds[i]);
        if (m) json_array_append_new(mounts, m);
    }
    for (size_t i = 0; s->volumes && s->volumes[i]; i++)
        json_array_append_new(mounts, json_pack("{s:s, s:s}", "Type", "volume", "Target", s->volumes[i]));
    json_object_set_new(cs, "Mounts", mounts);
    if (s->extra_hosts) {
        /* "name:address" → the service's "address name" */
        json_t *hosts = json_array();
        for (size_t i = 0; s->extra_hosts[i]; i++) {
            const char *c = strchr(s->extra_hosts[i], ':');
            if (c) json_array_append_new(hosts, json_sprintf("%s %.*s", c + 1, (int)(c - s->extra_hosts[i]), s->extra_hosts[i]));
        }
        json_object_set_new(cs, "Hosts", hosts);
    }

    json_t *tt = json_object();
    json_object_set_new(tt, "ContainerSpec", cs);
    json_object_set_new(tt, "RestartPolicy", json_pack("{s:s, s:i}", "Condition", "none", "MaxAttempts", 0));
    json_t *res = json_object();
    if (s->cpus > 0 || s->memory > 0) {
        json_t *lim = json_object();
        if (s->cpus > 0) json_object_set_new(lim, "NanoCPUs", json_integer((json_int_t)(s->cpus * 1e9)));
        if (s->memory > 0) json_object_set_new(lim, "MemoryBytes", json_integer(s->memory));
        json_object_set_new(res, "Reservations", json_deep_copy(lim));
        json_object_set_new(res, "Limits", lim);
    }
    json_object_set_new(tt, "Resources", res);
    json_t *pl = json_object();
    if (s->constraints) json_object_set_new(pl, "Constraints", strv_json(s->constraints));
    if (s->preferences) {
        json_t *prefs = json_array();
        for (size_t i = 0; s->preferences[i]; i++)
            json_array_append_new(prefs, json_pack("{s:{s:s}}", "Spread", "SpreadDescriptor", s->preferences[i] + 7));
        json_object_set_new(pl, "Preferences", prefs);
    }
    json_object_set_new(tt, "Placement", pl);
    /* as for local containers: a log big enough that the engine does not rotate away what
     * dagd has not read (docs/operations.md, "Logs") */
    if (log_max_size)
        json_object_set_new(tt, "LogDriver", json_pack("{s:s, s:{s:s}}", "Name", "json-file", "Options", "max-size",
                                                       log_max_size));
    if (s->network && !*refusal)
        json_object_set_new(tt, "Networks", json_pack("[{s:s, s:[s]}]", "Target", s->network, "Aliases",
                                                      s->network_alias ? s->network_alias : s->name));

    return json_pack("{s:s, s:o, s:o, s:{s:{s:i, s:i}}}", "Name", s->name, "Labels",
                     s->labels ? json_deep_copy(s->labels) : json_object(), "TaskTemplate", tt, "Mode", "ReplicatedJob",
                     "MaxConcurrent", 1, "TotalCompletions", 1);
}

/* A swarm names a service with at most 63 of [A-Za-z0-9_.-], starting alphanumeric; a
 * longer or other name keeps its start and gets a hash of the whole (labels, not names,
 * find dagd's services). */
static char *service_name(const char *name) {
    size_t n = strlen(name);
    bool ok = n > 0 && n <= 63;
    for (size_t i = 0; ok && i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        ok = alnum || (i > 0 && (c == '_' || c == '.' || c == '-'));
    }
    if (ok) return xstrdup(name);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)name[i]) * 16777619u;
    char head[55];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof head - 1; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (alnum || (k > 0 && (c == '_' || c == '.' || c == '-'))) head[k++] = c;
    }
    head[k] = 0;
    return xasprintf("%s%s%08x", head, k ? "-" : "j", h);
}

static swarm_job *job_new(swarm_backend *b, const dg_job_events *ev, void *ud) {
    swarm_job *j = xcalloc(1, sizeof *j);
    j->base.backend = &b->base;
    j->b = b;
    j->ev = ev;
    j->ud = ud;
    j->refs = 1; /* the caller's, until release */
    j->next = b->jobs;
    b->jobs = j;
    return j;
}

static dg_job *swarm_create(dg_backend *bb, const dg_job_spec *s, const dg_job_events *ev, void *ud) {
    swarm_backend *b = (swarm_backend *)bb;
    swarm_job *j = job_new(b, ev, ud);
    j->name = service_name(s->name);
    j->network = xstrdup(s->network);
    j->body = service_spec(s, b->log_max_size, &j->refusal);
    json_object_set_new(j->body, "Name", json_string(j->name));
    if (j->network && !j->refusal && !cached(b, j->network))
        dg_docker_overlay_ensure(b->docker, j->network, network_cb, job_ref(j));
    else
        later(j, 0, report_created);
    return &j->base;
}

/* ---- start: the service, its logs, and the poll ---- */

static void poll_start(swarm_backend *b);

static void delete_for_stop(swarm_job *j);

static void log_line_cb(void *ud, int stream, const char *line, size_t len) {
    swarm_job *j = ud;
    if (live(j)) j->ev->line(j->ud, stream, line, len);
}

static void logs_done_cb(void *ud, const dg_error *err) {
    swarm_job *j = ud;
    j->logs = NULL;
    j->logs_done = true;
    if (err && err->code == -ECANCELED) {
        job_unref(j);
        return;
    }
    if (err && live(j) && !j->stopping) {
        _cleanup_free_ char *m = xasprintf("[dagd] log stream ended with an error: %s", err->msg);
        emit_line(j, m);
    }
    if (j->ended) {
        send_exited(j);
    } else if (j->stopping && live(j)) {
        cancel_later(j);
        delete_for_stop(j);
    }
    job_unref(j);
}

static void follow_logs(swarm_job *j) {
    j->logs = dg_docker_service_logs_follow(j->b->docker, j->id, log_line_cb, logs_done_cb, job_ref(j));
}

static void start_step(swarm_job *j);

static void service_created_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_job *j = ud;
    j->creating = false;
    if (err) {
        if (err->code != -ECANCELED && live(j)) {
            int64_t now = dg_now_ms();
            if (err->code == -ECONNREFUSED || err->code == -ECONNRESET) {
                if (!j->engine_down_since) j->engine_down_since = now;
                if (now - j->engine_down_since <= ENGINE_GIVE_UP_MS) {
                    later(j, ENGINE_RETRY_MS, start_step);
                    job_unref(j);
                    return;
                }
            }
            dg_error e = {.code = -EIO, .msg = err->msg};
            j->ev->started(j->ud, &e);
        }
        job_unref(j);
        return;
    }
    const char *id = json_string_value(json_object_get(body, "ID"));
    j->id = xstrdup(id ? id : j->name);
    j->started = true;
    if (j->released) {
        if (j->remove_on_release) remove_service(j);
    } else if (live(j)) {
        j->ev->started(j->ud, NULL);
        if (live(j)) {
            follow_logs(j);
            poll_start(j->b);
        }
    }
    job_unref(j);
}

static void start_step(swarm_job *j) {
    j->creating = true;
    dg_docker_call(j->b->docker, "POST", "/services/create", j->body, service_created_cb, job_ref(j));
}

static const char *swarm_id(dg_job *jj) { return ((swarm_job *)jj)->id; }

static void swarm_image(dg_job *jj, const char **id, const char **digest) {
    swarm_job *j = (swarm_job *)jj;
    *id = j->image_id;
    *digest = j->image_digest;
}

static void swarm_start(dg_job *jj) { start_step((swarm_job *)jj); }

static void stop_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_job *j = ud;
    if (err && err->code != -ECANCELED && err->code != -ENOENT) {
        dg_log(DG_LOG_WARNING, NULL, "stopping service %s failed: %s", j->name, err->msg);
        j->removing = false; /* release tries again */
    } else if (!err || err->code == -ENOENT) {
        /* the service and its task are gone with their output: the try ends killed */
        if (j->logs) {
            dg_docker_stream_cancel(j->logs);
            j->logs = NULL;
            job_unref(j);
        }
        j->logs_done = true;
        end_task(j, 137, false);
    }
    job_unref(j);
}

static void delete_for_stop(swarm_job *j) {
    if (j->removing || j->ended) return;
    j->removing = true;
    service_path_call(j->b, "DELETE", j->id, stop_cb, job_ref(j));
}

/* A service's task cannot be signalled through the swarm: removing the service stops it
 * (SIGTERM, then SIGKILL after its stop grace period), and its output goes with it. So
 * the output so far is read first (one plain read, as at an exit), then the service is
 * removed, a few seconds later at the latest. */
static void swarm_stop(dg_job *jj, int grace_s) {
    swarm_job *j = (swarm_job *)jj;
    if (!j->started || !j->id || j->ended || j->stopping) return;
    j->stopping = true;
    if (j->logs && !j->logs_done) {
        dg_docker_logs_exited(j->logs);
        later(j, LOGS_GRACE_MS, delete_for_stop);
    } else {
        delete_for_stop(j);
    }
}

typedef struct file_req {
    swarm_job *j;
    dg_job_file_cb cb;
    void *ud;
} file_req;

static void archive_cb(void *ud, const char *content, size_t len, bool truncated, const dg_error *err) {
    file_req *r = ud;
    if (err && err->code == -ENOENT && r->j->node_id) {
        dg_error e = {0};
        dg_error_set(&e, -ENOENT, "%s (output files are read from tasks that ran on the manager's node)", err->msg);
        r->cb(r->ud, NULL, 0, &e);
        dg_error_clear(&e);
    } else {
        r->cb(r->ud, content, len, err);
    }
    job_unref(r->j);
    free(r);
}

static void swarm_read_file(dg_job *jj, const char *path, size_t max, dg_job_file_cb cb, void *ud) {
    swarm_job *j = (swarm_job *)jj;
    file_req *r = xcalloc(1, sizeof *r);
    r->j = job_ref(j);
    r->cb = cb;
    r->ud = ud;
    dg_docker_archive_file(j->b->docker, j->container_id ? j->container_id : "", path, max, archive_cb, r);
}

static void swarm_release(dg_job *jj, bool remove, dg_backend_done_cb gone, void *ud) {
    swarm_job *j = (swarm_job *)jj;
    if (j->released) return;
    j->released = true;
    j->remove_on_release = remove;
    j->gone = gone;
    j->gone_ud = ud;
    cancel_later(j);
    if (j->logs) {
        dg_docker_stream_cancel(j->logs);
        j->logs = NULL;
        job_unref(j);
    }
    if (remove && j->started) remove_service(j);
    /* a create in flight removes its service when it answers (service_created_cb) */
    job_unref(j);
}

static dg_job *swarm_adopt(dg_backend *bb, const dg_job_info *info, const dg_job_events *ev, void *ud) {
    swarm_backend *b = (swarm_backend *)bb;
    swarm_job *j = job_new(b, ev, ud);
    j->id = xstrdup(info->id);
    j->name = xstrdup(info->name ? info->name : info->id);
    j->created = j->started = true;
    follow_logs(j);
    poll_start(b);
    return &j->base;
}

/* ---- the poll: tasks and nodes ---- */

static bool in_flight(swarm_job *j) { return j->started && !j->ended && !j->released && j->id; }

static const char *node_state(swarm_backend *b, const char *node, const char **hostname) {
    json_t *n = node ? json_object_get(b->nodes, node) : NULL;
    if (hostname) *hostname = n ? json_string_value(json_object_get(n, "hostname")) : NULL;
    return n ? json_string_value(json_object_get(n, "state")) : NULL;
}

static void set_str(char **dst, const char *v) {
    if (!v || (*dst && strcmp(*dst, v) == 0)) return;
    free(*dst);
    *dst = xstrdup(v);
}

/* Which image the task ran (docs/operations.md, "Running on a swarm"). The task's spec
 * names the image as the service does: with a digest ("name:tag@sha256:...") only when the
 * DAG pinned one, since the manager resolves no tag by itself and dagd asks no registry.
 * The image id is the task container's Image, known only when that container is on the
 * engine dagd talks to (the manager's own node); on another node it stays unknown. */
static void task_image_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_job *j = ud;
    (void)status;
    if (err && err->code == -ECANCELED) {
        job_unref(j);
        return;
    }
    j->image_pending = false;
    if (!err) set_str(&j->image_id, json_string_value(json_object_get(body, "Image")));
    if (j->exit_after_image) send_exited(j);
    job_unref(j);
}

static void task_image(swarm_job *j, json_t *task) {
    const char *img = json_string_value(json_object_get(json_object_get(json_object_get(task, "Spec"), "ContainerSpec"), "Image"));
    if (img && strstr(img, "@sha256:")) set_str(&j->image_digest, img);
    if (j->container_id && !j->image_looked && live(j)) {
        j->image_looked = j->image_pending = true;
        dg_docker_container_inspect(j->b->docker, j->container_id, task_image_cb, job_ref(j));
    }
}

static void task_seen(swarm_job *j, json_t *task) {
    json_t *st = json_object_get(task, "Status");
    const char *state = json_string_value(json_object_get(st, "State"));
    const char *terr = json_string_value(json_object_get(st, "Err"));
    json_t *cst = json_object_get(st, "ContainerStatus");
    set_str(&j->container_id, json_string_value(json_object_get(cst, "ContainerID")));
    task_image(j, task);
    set_str(&j->node_id, json_string_value(json_object_get(task, "NodeID")));
    if (!state) return;
    json_t *code = json_object_get(cst, "ExitCode");
    if (!strcmp(state, "complete")) {
        end_task(j, code ? (int)json_integer_value(code) : 0, false);
    } else if (!strcmp(state, "failed")) {
        if (!code || !j->container_id) {
            _cleanup_free_ char *m = xasprintf("[dagd] the swarm task failed: %s", terr ? terr : "no reason given");
            emit_line(j, m);
        }
        end_task(j, code && json_integer_value(code) ? (int)json_integer_value(code) : 125, false);
    } else if (!strcmp(state, "rejected")) {
        _cleanup_free_ char *m = xasprintf("[dagd] the swarm rejected the task: %s", terr ? terr : "no reason given");
        emit_line(j, m);
        end_task(j, 125, false);
    } else if (!strcmp(state, "shutdown") || !strcmp(state, "orphaned") || !strcmp(state, "remove")) {
        _cleanup_free_ char *m = xasprintf("[dagd] the swarm ended the task (%s)%s%s", state, terr ? ": " : "",
                                           terr ? terr : "");
        emit_line(j, m);
        end_task(j, 255, false);
    } else {
        /* not ended: is it waiting for a node, or on a node that went down? */
        const char *host = NULL;
        const char *ns = node_state(j->b, j->node_id, &host);
        if (ns && strcmp(ns, "ready") != 0) {
            _cleanup_free_ char *m = xasprintf("[dagd] node %s is %s while its task was %s; the try counts as failed",
                                               host ? host : j->node_id, ns, state);
            emit_line(j, m);
            end_task(j, 255, false);
        } else if (terr && (!j->last_err || strcmp(j->last_err, terr) != 0)) {
            set_str(&j->last_err, terr);
            _cleanup_free_ char *m = xasprintf("[dagd] the swarm task is %s: %s", state, terr);
            emit_line(j, m);
        }
    }
}

static void service_gone_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_job *j = ud;
    if (err && err->code == -ENOENT && in_flight(j)) {
        emit_line(j, "[dagd] the service was removed outside dagd");
        end_task(j, -1, true);
    }
    job_unref(j);
}

static void poll_done(swarm_backend *b) {
    if (--b->polls_in_flight == 0 && !b->closing) poll_start(b);
}

static void tasks_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_backend *b = ud;
    if (err && err->code == -ECANCELED) return;
    if (!err) {
        /* an exit reported below may make the caller release jobs: hold them meanwhile */
        size_t n = 0;
        for (swarm_job *j = b->jobs; j; j = j->next) n += in_flight(j);
        swarm_job **held = xcalloc(n + 1, sizeof *held);
        n = 0;
        for (swarm_job *j = b->jobs; j; j = j->next)
            if (in_flight(j)) held[n++] = job_ref(j);
        for (size_t h = 0; h < n; h++) {
            swarm_job *j = held[h];
            if (!in_flight(j)) continue;
            /* the newest task of the service (a job service with restart none has one) */
            json_t *best = NULL, *t;
            size_t i;
            const char *best_at = NULL;
            json_array_foreach(body, i, t) {
                const char *sid = json_string_value(json_object_get(t, "ServiceID"));
                const char *at = json_string_value(json_object_get(t, "CreatedAt"));
                if (!sid || strcmp(sid, j->id) != 0) continue;
                if (!best || (at && best_at && strcmp(at, best_at) > 0)) {
                    best = t;
                    best_at = at;
                }
            }
            if (best) {
                j->no_task_rounds = 0;
                task_seen(j, best);
            } else if (++j->no_task_rounds % NO_TASK_ROUNDS == 0) {
                service_path_call(b, "GET", j->id, service_gone_cb, job_ref(j));
            }
        }
        for (size_t h = 0; h < n; h++) job_unref(held[h]);
        free(held);
    }
    poll_done(b);
}

static void nodes_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_backend *b = ud;
    if (err && err->code == -ECANCELED) return;
    if (!err) {
        json_t *m = json_object();
        size_t i;
        json_t *n;
        json_array_foreach(body, i, n) {
            const char *id = json_string_value(json_object_get(n, "ID"));
            const char *state = json_string_value(json_object_get(json_object_get(n, "Status"), "State"));
            const char *host = json_string_value(json_object_get(json_object_get(n, "Description"), "Hostname"));
            if (id && state) json_object_set_new(m, id, json_pack("{s:s, s:s}", "state", state, "hostname", host ? host : id));
        }
        json_decref(b->nodes);
        b->nodes = m;
    }
    poll_done(b);
}

static void poll_cb(uv_timer_t *h) {
    swarm_backend *b = h->data;
    if (b->polls_in_flight || b->closing) return;
    size_t n = 0;
    for (swarm_job *j = b->jobs; j; j = j->next) n += in_flight(j);
    if (n == 0) return; /* nothing to follow: the next start polls again */
    const char **ids = xcalloc(n + 1, sizeof *ids);
    n = 0;
    for (swarm_job *j = b->jobs; j; j = j->next)
        if (in_flight(j)) ids[n++] = j->id;
    _cleanup_free_ char *q = dg_docker_filters("service", ids);
    free(ids);
    _cleanup_free_ char *path = xasprintf("/tasks?filters=%s", q);
    b->polls_in_flight = 2;
    dg_docker_call(b->docker, "GET", "/nodes", NULL, nodes_cb, b);
    dg_docker_call(b->docker, "GET", path, NULL, tasks_cb, b);
}

static void poll_start(swarm_backend *b) {
    if (b->closing || b->polls_in_flight || uv_is_active((uv_handle_t *)b->poll)) return;
    uv_timer_start(b->poll, poll_cb, POLL_MS, 0);
}

/* ---- listing ---- */

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
    json_t *svc;
    json_array_foreach(body, i, svc) {
        const char *id = json_string_value(json_object_get(svc, "ID"));
        json_t *spec = json_object_get(svc, "Spec");
        const char *name = json_string_value(json_object_get(spec, "Name"));
        json_t *labels = json_object_get(spec, "Labels");
        if (!id) continue;
        /* a service runs from the moment it exists */
        v[k++] = (dg_job_info){
            .id = xstrdup(id),
            .name = xstrdup(name ? name : id),
            .started = true,
            .labels = labels ? json_incref(labels) : json_object(),
        };
    }
    r->cb(r->ud, v, k, NULL);
    dg_job_infos_free(v, k);
    free(r);
}

static void swarm_list(dg_backend *bb, const char *const *labels, dg_backend_list_cb cb, void *ud) {
    swarm_backend *b = (swarm_backend *)bb;
    list_req *r = xcalloc(1, sizeof *r);
    r->cb = cb;
    r->ud = ud;
    _cleanup_free_ char *f = dg_docker_filters("label", labels);
    _cleanup_free_ char *path = xasprintf("/services?filters=%s", f);
    dg_docker_call(b->docker, "GET", path, NULL, list_cb, r);
}

static void stale_removed_cb(void *ud, int status, json_t *body, const dg_error *err) {
    if (err && err->code != -ECANCELED && err->code != -ENOENT)
        dg_log(DG_LOG_WARNING, NULL, "removing a stale service: %s", err->msg);
}

static void swarm_remove(dg_backend *bb, const char *id) {
    service_path_call((swarm_backend *)bb, "DELETE", id, stale_removed_cb, NULL);
}

/* ---- connect: the engine must be a swarm manager ---- */

static void connect_finish(swarm_backend *b, const dg_error *err) {
    if (!b->connect_cb) return;
    dg_backend_done_cb cb = b->connect_cb;
    b->connect_cb = NULL;
    cb(b->connect_ud, err);
}

static void info_cb(void *ud, int status, json_t *body, const dg_error *err) {
    swarm_backend *b = ud;
    if (err) {
        if (err->code != -ECANCELED) connect_finish(b, err);
        return;
    }
    json_t *sw = json_object_get(body, "Swarm");
    const char *state = json_string_value(json_object_get(sw, "LocalNodeState"));
    bool manager = json_is_true(json_object_get(sw, "ControlAvailable"));
    if (!state || strcmp(state, "active") != 0 || !manager) {
        dg_error e = {0};
        if (!state || strcmp(state, "active") != 0)
            dg_error_set(&e, -ENOTSUP,
                         "the engine is not part of a swarm (its swarm state is '%s'): run `docker swarm init` on "
                         "it, point docker_host at a swarm manager, or use backend: local",
                         state ? state : "unknown");
        else
            dg_error_set(&e, -ENOTSUP,
                         "the engine is a swarm worker, not a manager: point docker_host at a manager (`docker "
                         "node ls` there lists the nodes), or use backend: local");
        connect_finish(b, &e);
        dg_error_clear(&e);
        return;
    }
    free(b->description);
    b->description = xasprintf("Docker Swarm manager %s (%d nodes), engine API %s",
                               json_string_value(json_object_get(sw, "NodeID")) ? json_string_value(json_object_get(sw, "NodeID")) : "?",
                               (int)json_integer_value(json_object_get(sw, "Nodes")), dg_docker_api_version(b->docker));
    connect_finish(b, NULL);
}

static void swarm_connect(dg_backend *bb, const char *const *labels, dg_backend_done_cb cb, void *ud) {
    swarm_backend *b = (swarm_backend *)bb;
    b->connect_cb = cb;
    b->connect_ud = ud;
    dg_docker_call(b->docker, "GET", "/info", NULL, info_cb, b);
}

static const char *const *swarm_protected_paths(dg_backend *bb) {
    return (const char *const *)((swarm_backend *)bb)->protected;
}

static const char *swarm_describe(dg_backend *bb) {
    swarm_backend *b = (swarm_backend *)bb;
    return b->description ? b->description : "Docker Swarm";
}

static void swarm_free(dg_backend *bb) {
    swarm_backend *b = (swarm_backend *)bb;
    b->closing = true;
    uv_timer_stop(b->poll);
    uv_close((uv_handle_t *)b->poll, handle_free_cb);
    for (swarm_job *j = b->jobs, *n; j; j = n) {
        n = j->next;
        if (!j->released) swarm_release(&j->base, false, NULL, NULL);
    }
    dg_docker_free(b->docker);
    dg_strv_free(b->protected);
    dg_strv_free(b->networks);
    json_decref(b->nodes);
    free(b->description);
    free(b->log_max_size);
    while (b->jobs) {
        swarm_job *j = b->jobs;
        j->refs = 1;
        job_unref(j);
    }
    free(b);
}

static const dg_backend_ops swarm_ops = {
    .name = "swarm",
    .connect = swarm_connect,
    .create = swarm_create,
    .id = swarm_id,
    .image = swarm_image,
    .start = swarm_start,
    .stop = swarm_stop,
    .read_file = swarm_read_file,
    .release = swarm_release,
    .list = swarm_list,
    .adopt = swarm_adopt,
    .remove = swarm_remove,
    .protected_paths = swarm_protected_paths,
    .describe = swarm_describe,
    .free = swarm_free,
};

int dg_backend_swarm_new(uv_loop_t *loop, const char *host, const char *log_max_size, dg_backend **ret,
                         dg_error *err) {
    dg_docker *d;
    int r = dg_docker_new(loop, host, &d, err);
    if (r < 0) return r;
    swarm_backend *b = xcalloc(1, sizeof *b);
    b->base.ops = &swarm_ops;
    b->loop = loop;
    b->docker = d;
    b->protected = dg_docker_socket_paths(host);
    b->nodes = json_object();
    if (log_max_size && strcmp(log_max_size, "engine") != 0) b->log_max_size = xstrdup(log_max_size);
    b->poll = xmalloc(sizeof *b->poll);
    uv_timer_init(loop, b->poll);
    b->poll->data = b;
    *ret = &b->base;
    return 0;
}
