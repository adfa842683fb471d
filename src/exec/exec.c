/* exec — the local Docker backend (see include/dagd/exec.h).
 *
 * Ownership: dg_exec owns one exec_run per scheduler run (run->userdata) and one
 * exec_try per try it started or prepared. An exec_try is reference counted: every
 * docker call in flight holds a reference, as does the executor while the try is
 * live; it is freed when the last reference goes, so callbacks never see freed memory. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <string.h>
#include <unistd.h>

#include "dagd/exec.h"
#include "dagd/tmpl.h"
#include "exec_internal.h"

static void pump(dg_exec *x);
static void check_stalled(dg_exec *x);
static void try_unref(exec_try *t);
static void try_report_exit(exec_try *t);

static int64_t now_ms(void) { return dg_now_ms(); }

/* ---- try lifecycle helpers ---- */

static exec_try *try_new(exec_run *er, size_t task, int try_number) {
    exec_try *t = xcalloc(1, sizeof *t);
    t->x = er->x;
    t->er = er;
    t->task = task;
    t->try_number = try_number;
    t->refs = 1; /* the executor's own */
    t->next = er->x->tries;
    er->x->tries = t;
    er->x->outstanding++;
    er->refs++;
    return t;
}

static exec_try *try_ref(exec_try *t) {
    t->refs++;
    return t;
}

static void timer_free_cb(uv_handle_t *h) { free(h); }

static void run_unref(exec_run *er);
static void exec_release(dg_exec *x);

static void try_unref(exec_try *t) {
    if (!t || --t->refs > 0) return;
    dg_exec *x = t->x;
    for (exec_try **p = &x->tries; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            break;
        }
    if (t->er->cur[t->task] == t) t->er->cur[t->task] = NULL;
    if (t->er->prepared[t->task] == t) t->er->prepared[t->task] = NULL;
    if (t->timer) uv_close((uv_handle_t *)t->timer, timer_free_cb);
    dg_tasklog_close(t->log);
    dg_buf_free(&t->last_line);
    free(t->container_id);
    free(t->name);
    free(t->image);
    free(t->message);
    json_decref(t->config);
    free(t->output_error);
    exec_run *er = t->er;
    free(t);
    x->outstanding--;
    run_unref(er);
    if (x->outstanding == 0) {
        check_stalled(x);
        if (x->hooks.idle) x->hooks.idle(x->hooks.ud);
        if (x->closing && x->wake_closed) exec_release(x);
    }
}

/* The executor lets go of a try: it is finished from the scheduler's point of view and
 * nothing more will be started for it (in-flight calls keep it alive until they return). */
static void try_release(exec_try *t) {
    if (t->released) return;
    t->released = true;
    try_unref(t);
}

static void run_unref(exec_run *er) {
    if (--er->refs > 0) return;
    json_decref(er->conf);
    json_decref(er->params);
    for (size_t i = 0; i < er->n_tasks; i++) free(er->outputs[i]);
    free(er->outputs);
    free(er->cur);
    free(er->prepared);
    free(er->run_type);
    dg_strv_free(er->secrets);
    free(er);
}

exec_try *dg__exec_find_container(dg_exec *x, const char *id) {
    for (exec_try *t = x->tries; t; t = t->next)
        if (t->container_id && strcmp(t->container_id, id) == 0) return t;
    return NULL;
}

/* ---- persistence ---- */

static void persist_ti(dg_exec *x, dg_run *run, size_t task) {
    exec_run *er = run->userdata;
    const dg_ti *ti = &run->ti[task];
    const dg_task *tk = &run->dag->tasks[task];
    exec_try *t = er->cur[task];
    if (x->store) {
        dg_ti_rec r = {
            .dag_id = run->dag->dag_id,
            .run_id = run->run_id,
            .task_id = tk->id,
            .state = (char *)dg_ti_state_name(ti->state),
            .try_number = ti->try_number,
            .max_tries = ti->max_tries,
            .start_ms = ti->start_ms,
            .end_ms = ti->end_ms,
            .has_exit_code = ti->has_exit_code,
            .exit_code = ti->exit_code,
            .container_id = t ? t->container_id : NULL,
            .container_name = t ? t->name : NULL,
            .image = t && t->image ? t->image : tk->image,
            .output = er->outputs[task],
            .message = ti->message,
        };
        int r1 = dg_store_put_ti(x->store, &r);
        /* the try record mirrors the instance while that try is current; `scheduled`
         * (a retry waiting) and `none` say nothing about the last try */
        if (ti->try_number > 0 && (!t || t->try_number == ti->try_number) && ti->state != DG_TI_SCHEDULED &&
            ti->state != DG_TI_NONE) {
            dg_try_rec tr = {
                .dag_id = run->dag->dag_id,
                .run_id = run->run_id,
                .task_id = tk->id,
                /* a try that will be retried ended failed; the instance waits */
                .state = (char *)dg_ti_state_name(ti->state == DG_TI_UP_FOR_RETRY ? DG_TI_FAILED : ti->state),
                .try_number = ti->try_number,
                .start_ms = ti->start_ms,
                .end_ms = ti->end_ms ? ti->end_ms : (t ? t->end_ms : 0),
                .has_exit_code = ti->has_exit_code,
                .exit_code = ti->exit_code,
                .container_id = t ? t->container_id : NULL,
                .container_name = t ? t->name : NULL,
                .message = ti->message,
            };
            int r2 = dg_store_put_try(x->store, &tr);
            if (r2 < 0) r1 = r2;
        }
        if (r1 < 0) fprintf(stderr, "dagd: saving task state failed: %s\n", strerror(-r1));
    }
}

static void persist_run(dg_exec *x, dg_run *run) {
    exec_run *er = run->userdata;
    if (!x->store) return;
    _cleanup_free_ char *conf = json_dumps(er->conf ? er->conf : json_object(), JSON_COMPACT);
    dg_run_rec r = {
        .dag_id = run->dag->dag_id,
        .run_id = run->run_id,
        .run_type = er->run_type,
        .state = (char *)dg_run_state_name(run->state),
        .logical_ms = er->logical_ms,
        .interval_start_ms = er->interval_start_ms,
        .interval_end_ms = er->interval_end_ms,
        .start_ms = run->start_ms,
        .end_ms = run->end_ms,
        .conf_json = conf,
    };
    int r1 = dg_store_put_run(x->store, &r);
    if (r1 < 0) fprintf(stderr, "dagd: saving run state failed: %s\n", strerror(-r1));
}

/* ---- reporting to the scheduler ---- */

static void report(exec_try *t, const dg_result *res) {
    if (t->reported) return;
    t->reported = true;
    t->end_ms = now_ms();
    dg_sched_on_finished(t->x->sched, t->er->run, t->task, t->try_number, res, now_ms());
    pump(t->x);
}

static void remove_cb(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err && err->code != -ECANCELED)
        fprintf(stderr, "dagd: removing container %s failed: %s\n", t->name ? t->name : "?",
                err->msg ? err->msg : "");
    try_unref(t);
}

static void try_remove_container(exec_try *t) {
    if (!t->container_id || t->removing) return;
    t->removing = true;
    dg_docker_container_remove(t->x->docker, t->container_id, remove_cb, try_ref(t));
}

/* A try that could not run (or was stopped before its container ran). */
void dg__exec_try_fail(exec_try *t, const char *msg) {
    dg_result res = {.type = DG_RES_ERROR, .message = msg};
    if (t->stopping && !msg) res.message = "stopped";
    free(t->message);
    t->message = xstrdup(msg);
    if (t->er->prepared[t->task] == t) t->er->prepared[t->task] = NULL; /* START makes a new try */
    if (t->container_id) try_remove_container(t);
    if (!t->prepare_only || t->start_requested) report(t, &res);
    try_release(t);
}

void dg__exec_try_succeed(exec_try *t) {
    dg_result res = {.type = DG_RES_EXITED, .exit_code = 0};
    report(t, &res);
    try_release(t);
}

static void try_done_after_report(exec_try *t, bool success) {
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    bool rm = tk->remove == DG_REMOVE_ALWAYS || (tk->remove == DG_REMOVE_ON_SUCCESS && success);
    if (rm) try_remove_container(t);
    try_release(t);
}

/* ---- rendering a container config ---- */

int dg__exec_xcom_pull(void *ud, const char *task_id, char **ret, dg_error *err) {
    exec_run *er = ud;
    const dg_dag *dag = er->run->dag;
    if (er->x->test_mode)
        return dg_error_set(err, -ENOENT,
                            "ti.xcom_pull('%s') has no upstream output under `dagd test`",
                            task_id);
    ssize_t i = dg_dag_task_index(dag, task_id);
    if (i < 0) return dg_error_set(err, -ENOENT, "ti.xcom_pull: no task '%s' in DAG '%s'", task_id, dag->dag_id);
    if (!er->outputs[i])
        return dg_error_set(err, -ENOENT, "ti.xcom_pull: task '%s' has no output (state %s)",
                            task_id, dg_ti_state_name(er->run->ti[i].state));
    *ret = xstrdup(er->outputs[i]);
    return 0;
}

static json_t *try_vars(exec_run *er, size_t task, int try_number) {
    const dg_dag *dag = er->run->dag;
    return dg_tmpl_vars(dag->dag_id, er->run->run_id, dag->tasks[task].id, try_number,
                        er->logical_ms, er->interval_start_ms, er->interval_end_ms, er->params,
                        er->conf);
}

static int render(exec_try *t, const json_t *vars, const char *field, const char *src, char **ret,
                  dg_error *err);
json_t *dg__exec_vars(exec_try *t) { return try_vars(t->er, t->task, t->try_number); }
int dg__exec_render(exec_try *t, const json_t *vars, const char *field, const char *src, char **ret,
                    dg_error *err) {
    return render(t, vars, field, src, ret, err);
}

static int render(exec_try *t, const json_t *vars, const char *field, const char *src, char **ret,
                  dg_error *err) {
    dg_tmpl_ctx ctx = {.vars = vars, .xcom_pull = dg__exec_xcom_pull, .userdata = t->er};
    dg_error e = {0};
    int r = dg_tmpl_render(src, &ctx, ret, &e);
    if (r < 0) {
        dg_error_set(err, r, "%s: %s", field, e.msg ? e.msg : "template error");
        dg_error_clear(&e);
    }
    return r;
}

static void add_secret(exec_run *er, const char *s) {
    if (!s || strlen(s) < 3) return; /* redacting tiny strings would mangle every line */
    size_t n = dg_strv_len(er->secrets);
    for (size_t i = 0; i < n; i++)
        if (strcmp(er->secrets[i], s) == 0) return;
    er->secrets = xrealloc(er->secrets, (n + 2) * sizeof(char *));
    er->secrets[n] = xstrdup(s);
    er->secrets[n + 1] = NULL;
}

static int render_strv(exec_try *t, const json_t *vars, const char *field, char **v, json_t **ret,
                       dg_error *err) {
    json_auto_t *arr = json_array();
    for (size_t i = 0; v && v[i]; i++) {
        char *s;
        int r = render(t, vars, field, v[i], &s, err);
        if (r < 0) return r;
        json_array_append_new(arr, json_string(s));
        free(s);
    }
    *ret = json_incref(arr);
    return 0;
}

static char *sanitize_name(const char *s) {
    char *r = xstrdup(s);
    for (char *p = r; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            *p = '_';
    return r;
}

/* Names and instance labels only need to differ, not to be secret: a clock-based value
 * stands in should the random source fail. */
static char *unique_hex(size_t nbytes) {
    char *hex;
    if (dg_random_hex(nbytes, &hex) == 0) return hex;
    return xasprintf("%0*llx", (int)(nbytes * 2),
                     (unsigned long long)(((uint64_t)now_ms() * 2654435761u ^ (uint64_t)getpid()) &
                                          (nbytes >= 8 ? UINT64_MAX : ((1ULL << (nbytes * 8)) - 1))));
}

static char *container_name(exec_try *t) {
    const dg_dag *dag = t->er->run->dag;
    _cleanup_free_ char *rnd = unique_hex(3);
    _cleanup_free_ char *d = xstrndup(dag->dag_id, 60);
    _cleanup_free_ char *k = xstrndup(dag->tasks[t->task].id, 60);
    _cleanup_free_ char *raw = xasprintf("dagd-%s-%s-%d-%s", d, k, t->try_number, rnd);
    return sanitize_name(raw);
}

/* env_file lines: KEY=VALUE, '#' comments, blank lines; relative to the DAG file. */
static int read_env_file(exec_run *er, const char *path, json_t *env_obj, dg_error *err) {
    _cleanup_free_ char *full = NULL;
    if (path[0] != '/') {
        _cleanup_free_ char *dir = xstrdup(er->run->dag->file);
        char *slash = strrchr(dir, '/');
        full = slash ? (*slash = 0, xasprintf("%s/%s", dir, path)) : xstrdup(path);
    } else
        full = xstrdup(path);
    _cleanup_free_ char *text = NULL;
    int r = dg_read_file(full, &text, NULL);
    if (r < 0) return dg_error_set(err, r, "env_file %s: %s", full, strerror(-r));
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t') line++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r') line[--n] = 0;
        if (!*line || *line == '#') continue;
        if (dg_str_has_prefix(line, "export ")) line += 7;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        char *val = eq + 1;
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = 0;
            val++;
        }
        json_object_set_new(env_obj, line, json_string(val));
    }
    return 0;
}

/* Whether path is dir or lies below it. */
static bool path_within(const char *path, const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    return !strncmp(path, dir, n) && (path[n] == 0 || path[n] == '/' || (n == 1 && dir[0] == '/'));
}

/* The server's policy on host paths (SPEC §9). The engine's socket is root on the host,
 * so a bind that reaches it (the socket itself, or any folder above it, like /run) is
 * refused unless allowed. */
static int check_bind(dg_exec *x, const char *spec, const char *colon, dg_error *err) {
    _cleanup_free_ char *src = xstrndup(spec, (size_t)(colon - spec));
    if (src[0] != '/' && src[0] != '.' && src[0] != '~') return 0; /* a named volume */
    _cleanup_free_ char *canon = realpath(src, NULL);
    const char *p = canon ? canon : src;
    bool socket = strstr(p, "docker.sock") != NULL;
    for (size_t i = 0; !socket && x->engine_sockets && x->engine_sockets[i]; i++)
        socket = path_within(x->engine_sockets[i], p);
    if (socket && !x->allow_docker_socket)
        return dg_error_set(err, -EPERM, "volumes: %s gives the container the Docker engine's socket; refused by "
                                         "policy (policy.allow_docker_socket)", src);
    if (!x->allowed_volume_prefixes) return 0;
    for (size_t i = 0; x->allowed_volume_prefixes[i]; i++)
        if (path_within(p, x->allowed_volume_prefixes[i])) return 0;
    return dg_error_set(err, -EPERM, "volumes: host path %s is outside policy.allowed_volume_prefixes", p);
}

/* The engine's socket as the volume policy sees it: the usual place and the one the
 * client talks to, resolved (/var/run is a link to /run on most hosts). */
static char **engine_sockets(const dg_docker *d) {
    const char *paths[] = {"/var/run/docker.sock", dg_docker_unix_path(d)};
    char **v = xcalloc(ARRAY_SIZE(paths) + 1, sizeof(char *));
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        if (!paths[i]) continue;
        char *r = realpath(paths[i], NULL);
        v[n++] = r ? r : xstrdup(paths[i]);
    }
    return v;
}

/* Build the container config for a try, or fail with a message for the user. */
static int build_config(exec_try *t, json_t **ret, dg_error *err) {
    exec_run *er = t->er;
    dg_exec *x = t->x;
    const dg_dag *dag = er->run->dag;
    const dg_task *tk = &dag->tasks[t->task];
    json_auto_t *vars = try_vars(er, t->task, t->try_number);
    json_auto_t *cfg = json_object();
    json_auto_t *host = json_object();
    int r;

    if (tk->privileged && !x->allow_privileged)
        return dg_error_set(err, -EPERM,
                            "privileged: true is refused by policy (policy.allow_privileged)");

    char *image;
    if ((r = render(t, vars, "image", tk->image, &image, err)) < 0) return r;
    free(t->image);
    t->image = image;
    json_object_set_new(cfg, "Image", json_string(image));

    if (tk->command) {
        json_t *a;
        if ((r = render_strv(t, vars, "command", tk->command, &a, err)) < 0) return r;
        json_object_set_new(cfg, "Cmd", a);
    }
    if (tk->entrypoint) {
        json_t *a;
        if ((r = render_strv(t, vars, "entrypoint", tk->entrypoint, &a, err)) < 0) return r;
        json_object_set_new(cfg, "Entrypoint", a);
    }

    /* env precedence as DockerOperator: env_file < env < connections */
    json_auto_t *envo = json_object();
    if (tk->env_file && (r = read_env_file(er, tk->env_file, envo, err)) < 0) return r;
    for (size_t i = 0; i < tk->n_env; i++) {
        char *v;
        _cleanup_free_ char *field = xasprintf("env.%s", tk->env[i].key);
        if ((r = render(t, vars, field, tk->env[i].value, &v, err)) < 0) return r;
        if (tk->env[i].secret) add_secret(er, v);
        json_object_set_new(envo, tk->env[i].key, json_string(v));
        free(v);
    }
    for (size_t i = 0; tk->connections && tk->connections[i]; i++) {
        _cleanup_free_ char *var = dg_conn_env_name(tk->connections[i]);
        const char *uri = getenv(var);
        if (!uri)
            return dg_error_set(err, -ENOENT, "connection '%s' is not defined (set %s)",
                                tk->connections[i], var);
        json_auto_t *c = dg_conn_parse_uri(uri, NULL);
        const char *pw = c ? json_string_value(json_object_get(c, "password")) : NULL;
        add_secret(er, pw);
        json_object_set_new(envo, var, json_string(uri));
    }
    json_t *env = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(envo, k, v) {
        json_array_append_new(env, json_sprintf("%s=%s", k, json_string_value(v)));
    }
    json_object_set_new(cfg, "Env", env);

    if (tk->working_dir) {
        char *s;
        if ((r = render(t, vars, "working_dir", tk->working_dir, &s, err)) < 0) return r;
        json_object_set_new(cfg, "WorkingDir", json_string(s));
        free(s);
    }
    if (tk->user) json_object_set_new(cfg, "User", json_string(tk->user));
    if (tk->hostname) json_object_set_new(cfg, "Hostname", json_string(tk->hostname));
    json_object_set_new(cfg, "Tty", json_false());
    json_object_set_new(cfg, "OpenStdin", json_false());
    json_object_set_new(cfg, "AttachStdout", json_false());
    json_object_set_new(cfg, "AttachStderr", json_false());

    json_t *labels = json_object();
    for (size_t i = 0; i < tk->n_labels; i++)
        json_object_set_new(labels, tk->labels[i].key, json_string(tk->labels[i].value));
    json_object_set_new(labels, "io.dagd.dag", json_string(dag->dag_id));
    json_object_set_new(labels, "io.dagd.run", json_string(er->run->run_id));
    json_object_set_new(labels, "io.dagd.task", json_string(tk->id));
    json_object_set_new(labels, "io.dagd.try", json_sprintf("%d", t->try_number));
    json_object_set_new(labels, "io.dagd.instance", json_string(x->instance));
    json_object_set_new(cfg, "Labels", labels);

    json_t *binds = json_array();
    json_t *anon = json_object();
    for (size_t i = 0; tk->volumes && tk->volumes[i]; i++) {
        char *s;
        if ((r = render(t, vars, "volumes", tk->volumes[i], &s, err)) < 0) {
            json_decref(binds);
            json_decref(anon);
            return r;
        }
        char *bind = NULL;
        if (!strchr(s, ':')) {
            json_object_set_new(anon, s, json_object());
        } else if (s[0] == '.' || s[0] == '~') {
            /* compose resolves relative host paths against the file's folder */
            _cleanup_free_ char *dir = xstrdup(dag->file);
            char *slash = strrchr(dir, '/');
            if (slash) *slash = 0;
            _cleanup_free_ char *base =
                s[0] == '~' ? xstrdup(getenv("HOME") ? getenv("HOME") : "/")
                            : (slash ? realpath(dir, NULL) : realpath(".", NULL));
            const char *rest = s[0] == '~' ? s + 1 : (s[1] == '/' ? s + 2 : s + 1);
            bind = xasprintf("%s/%s", base ? base : ".", rest);
        } else {
            bind = xstrdup(s);
        }
        free(s);
        if (bind && (r = check_bind(x, bind, strchr(bind, ':'), err)) < 0) {
            free(bind);
            json_decref(binds);
            json_decref(anon);
            return r;
        }
        if (bind) json_array_append_new(binds, json_string(bind));
        free(bind);
    }
    if (json_object_size(anon)) json_object_set_new(cfg, "Volumes", anon);
    else json_decref(anon);
    json_object_set_new(host, "Binds", binds);
    if (tk->network) {
        json_object_set_new(host, "NetworkMode", json_string(tk->network));
        json_t *ep = json_pack("{s:{s:{s:[s]}}}", "EndpointsConfig", tk->network, "Aliases", tk->id);
        json_object_set_new(cfg, "NetworkingConfig", ep);
    }
    if (tk->memory > 0) json_object_set_new(host, "Memory", json_integer(tk->memory));
    if (tk->cpus > 0) json_object_set_new(host, "NanoCpus", json_integer((json_int_t)(tk->cpus * 1e9)));
    if (tk->shm_size > 0) json_object_set_new(host, "ShmSize", json_integer(tk->shm_size));
    if (tk->privileged) json_object_set_new(host, "Privileged", json_true());
    if (tk->extra_hosts) {
        json_t *eh = json_array();
        for (size_t i = 0; tk->extra_hosts[i]; i++) json_array_append_new(eh, json_string(tk->extra_hosts[i]));
        json_object_set_new(host, "ExtraHosts", eh);
    }
    json_object_set_new(host, "AutoRemove", json_false());
    json_object_set_new(cfg, "HostConfig", json_incref(host));
    *ret = json_incref(cfg);
    return 0;
}

/* ---- the container path ---- */

static void create_container(exec_try *t);
static void start_container(exec_try *t);

static bool try_aborted(exec_try *t) {
    if (!t->stopping && !t->unprepared) return false;
    dg__exec_try_fail(t, t->unprepared ? NULL : "stopped before the container started");
    return true;
}

#define ENGINE_RETRY_MS 1000
#define ENGINE_GIVE_UP_MS (10 * 60 * 1000)

static void engine_retry_cb(uv_timer_t *h) {
    exec_try *t = h->data;
    void (*step)(exec_try *) = t->retry_step;
    t->retry_step = NULL;
    if (step && !t->x->closing) {
        if (!try_aborted(t)) step(t);
    }
    try_unref(t);
}

/* An engine that refuses connections (restarting, say) has not seen the request: the step
 * is tried again until it answers, without using up a try. Gives up after a while. */
static bool retry_when_engine_back(exec_try *t, const dg_error *err, void (*step)(exec_try *t)) {
    if (err->code != -ECONNREFUSED || t->stopping || t->unprepared || t->x->closing) return false;
    int64_t now = now_ms();
    if (!t->engine_down_since) t->engine_down_since = now;
    if (now - t->engine_down_since > ENGINE_GIVE_UP_MS) return false;
    if (!t->timer) {
        t->timer = xmalloc(sizeof *t->timer);
        uv_timer_init(t->x->loop, t->timer);
        t->timer->data = t;
    }
    t->retry_step = step;
    uv_timer_start(t->timer, engine_retry_cb, ENGINE_RETRY_MS, 0);
    try_ref(t);
    return true;
}

static void image_cb(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err) {
        if (err->code != -ECANCELED) {
            t->image_ok = false;
            if (!retry_when_engine_back(t, err, create_container)) dg__exec_try_fail(t, err->msg);
        }
        try_unref(t);
        return;
    }
    dg__exec_cache_put(t->x, t->image);
    if (!try_aborted(t)) create_container(t);
    try_unref(t);
}

static void network_cb(void *ud, const dg_error *err) {
    exec_try *t = ud;
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    if (err) {
        if (err->code != -ECANCELED && !retry_when_engine_back(t, err, create_container)) {
            _cleanup_free_ char *m = xasprintf("network %s: %s", tk->network, err->msg);
            dg__exec_try_fail(t, m);
        }
        try_unref(t);
        return;
    }
    _cleanup_free_ char *key = xasprintf("network:%s", tk->network);
    dg__exec_cache_put(t->x, key);
    if (!try_aborted(t)) {
        t->network_ok = true;
        create_container(t);
    }
    try_unref(t);
}

static void create_cb(void *ud, const char *id, const dg_error *err) {
    exec_try *t = ud;
    if (err) {
        if (err->code != -ECANCELED) {
            /* a cached image that vanished since: forget it so the next try checks again */
            if (err->code == -ENOENT) dg__exec_cache_drop(t->x, t->image);
            if (!retry_when_engine_back(t, err, create_container)) dg__exec_try_fail(t, err->msg);
        }
        try_unref(t);
        return;
    }
    t->container_id = xstrdup(id);
    t->created = true;
    if (t->unprepared) {
        try_remove_container(t);
        try_release(t);
    } else if (t->stopping) {
        dg__exec_try_fail(t, "stopped before the container started");
    } else if (t->start_requested) {
        start_container(t);
    }
    try_unref(t);
}

/* image → network → create, skipping what is already known to be there. */
static void create_container(exec_try *t) {
    dg_exec *x = t->x;
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    if (!t->config) {
        dg_error err = {0};
        json_t *cfg = NULL;
        if (build_config(t, &cfg, &err) < 0) {
            dg__exec_try_fail(t, err.msg);
            dg_error_clear(&err);
            return;
        }
        t->config = cfg;
        free(t->name);
        t->name = container_name(t);
    }
    if (!t->image_ok) {
        t->image_ok = true;
        if (tk->pull == DG_PULL_ALWAYS || !dg__exec_cache_has(x, t->image)) {
            dg_docker_image_ensure(x->docker, t->image, tk->pull, image_cb, try_ref(t));
            return;
        }
    }
    if (tk->network && !t->network_ok) {
        _cleanup_free_ char *key = xasprintf("network:%s", tk->network);
        if (!dg__exec_cache_has(x, key)) {
            dg_docker_network_ensure(x->docker, tk->network, network_cb, try_ref(t));
            return;
        }
        t->network_ok = true;
    }
    json_t *cfg = t->config;
    t->config = NULL;
    dg_docker_container_create(x->docker, t->name, cfg, create_cb, try_ref(t));
    json_decref(cfg);
}

static void log_line_cb(void *ud, int stream, const char *line, size_t len) {
    exec_try *t = ud;
    exec_run *er = t->er;
    _cleanup_free_ char *red = NULL;
    if (er->secrets) {
        red = dg__exec_redact(er->secrets, line, len);
        line = red;
        len = strlen(red);
    }
    if (t->log) {
        dg_tasklog_line(t->log, stream, line, len);
        dg_tasklog_flush(t->log); /* followers (logs -f) read the file as it grows */
    }
    if (stream == 1) {
        size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) i++;
        if (i < len) {
            t->last_line.len = 0;
            dg_buf_append(&t->last_line, line, len > DG_OUTPUT_MAX ? DG_OUTPUT_MAX : len);
        }
    }
    if (t->x->hooks.log_line) t->x->hooks.log_line(t->x->hooks.ud, er->run, t->task, stream, line, len);
}

static void inspect_exit_cb(void *ud, int status, json_t *body, const dg_error *err) {
    exec_try *t = ud;
    if (!err && !t->die_seen) {
        json_t *st = json_object_get(body, "State");
        if (st && !json_is_true(json_object_get(st, "Running")) &&
            !json_is_true(json_object_get(st, "Restarting"))) {
            const char *s = json_string_value(json_object_get(st, "Status"));
            if (!s || strcmp(s, "created") != 0)
                dg__exec_on_exit(t, (int)json_integer_value(json_object_get(st, "ExitCode")));
        }
    } else if (err && err->code == -ENOENT && !t->die_seen) {
        t->die_seen = true;
        t->container_gone = true;
        try_report_exit(t);
    }
    try_unref(t);
}

void dg__exec_reconcile(exec_try *t) {
    if (!t->container_id || t->die_seen || !t->started) return;
    dg_docker_container_inspect(t->x->docker, t->container_id, inspect_exit_cb, try_ref(t));
}

static void die_fallback_cb(uv_timer_t *h) {
    exec_try *t = h->data;
    dg__exec_reconcile(t);
}

static void logs_done_cb(void *ud, const dg_error *err) {
    exec_try *t = ud;
    t->logs = NULL;
    t->logs_done = true;
    if (err && err->code == -ECANCELED) {
        try_unref(t);
        return;
    }
    if (err) {
        _cleanup_free_ char *m = xasprintf("[dagd] log stream ended with an error: %s", err->msg);
        if (t->log) dg_tasklog_line(t->log, 2, m, strlen(m));
    }
    if (t->log) dg_tasklog_close(t->log), t->log = NULL;
    if (t->die_seen) {
        try_report_exit(t);
    } else {
        /* the stream ends when the container stops; the die event normally follows within
         * milliseconds. If it was lost (engine restart), ask the engine. */
        if (!t->timer) {
            t->timer = xmalloc(sizeof *t->timer);
            uv_timer_init(t->x->loop, t->timer);
            t->timer->data = t;
        }
        uv_timer_start(t->timer, die_fallback_cb, 2000, 5000);
    }
    try_unref(t);
}

static void start_cb(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err) {
        if (err->code != -ECANCELED && !retry_when_engine_back(t, err, start_container))
            dg__exec_try_fail(t, err->msg);
        try_unref(t);
        return;
    }
    t->started = true;
    int64_t now = now_ms();
    dg_exec *x = t->x;
    x->starts++;
    if (t->start_cmd_ms) {
        double lat = (double)(now - t->start_cmd_ms) / 1000.0;
        x->start_lat_sum += lat;
        static const double bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
        size_t b = 0;
        while (b < ARRAY_SIZE(bounds) && lat > bounds[b]) b++;
        x->start_lat_buckets[b]++;
    }
    dg_sched_on_started(t->x->sched, t->er->run, t->task, t->try_number, now);
    t->logs = dg_docker_logs_follow(t->x->docker, t->container_id, log_line_cb, logs_done_cb, try_ref(t));
    pump(t->x);
    try_unref(t);
}

static void start_container(exec_try *t) {
    dg_exec *x = t->x;
    exec_run *er = t->er;
    if (x->state_dir && !t->log) {
        _cleanup_free_ char *path = dg_store_log_path(x->state_dir, er->run->dag->dag_id,
                                                      er->run->run_id,
                                                      er->run->dag->tasks[t->task].id, t->try_number);
        int r = dg_tasklog_open(path, &t->log);
        if (r < 0) fprintf(stderr, "dagd: cannot open log %s: %s\n", path, strerror(-r));
    }
    persist_ti(x, er->run, t->task);
    dg_docker_container_start(x->docker, t->container_id, start_cb, try_ref(t));
}

static void archive_cb(void *ud, const char *content, size_t len, bool truncated, const dg_error *err) {
    exec_try *t = ud;
    if (err && err->code == -ECANCELED) {
        try_unref(t);
        return;
    }
    exec_run *er = t->er;
    if (err) {
        t->output_error = xasprintf("output file: %s", err->msg);
    } else {
        free(er->outputs[t->task]);
        er->outputs[t->task] = xstrndup(content, len);
        (void)truncated;
    }
    t->output_read = true;
    try_report_exit(t);
    try_unref(t);
}

/* Both the exit code and the end of the logs are known: collect the output, report,
 * then remove the container. */
static void try_report_exit(exec_try *t) {
    if (t->reported || !t->die_seen || !(t->logs_done || t->container_gone)) return;
    exec_run *er = t->er;
    const dg_task *tk = &er->run->dag->tasks[t->task];
    if (t->timer) uv_timer_stop(t->timer);
    if (t->container_gone) {
        dg__exec_try_fail(t, "the container vanished (removed outside dagd?)");
        return;
    }
    if (tk->output_file && !t->output_read && t->exit_code == 0 && !t->stopping) {
        dg_docker_archive_file(t->x->docker, t->container_id, tk->output_file, DG_OUTPUT_MAX,
                               archive_cb, try_ref(t));
        return;
    }
    if (!tk->output_file && t->last_line.len) {
        free(er->outputs[t->task]);
        er->outputs[t->task] = xstrdup(t->last_line.data);
    }
    dg_result res = {.type = DG_RES_EXITED, .exit_code = t->exit_code};
    if (t->output_error && t->exit_code == 0) {
        res.type = DG_RES_ERROR;
        res.message = t->output_error;
    }
    report(t, &res);
    free(t->output_error);
    t->output_error = NULL;
    try_done_after_report(t, res.type == DG_RES_EXITED && t->exit_code == 0);
}

void dg__exec_on_exit(exec_try *t, int code) {
    if (t->die_seen) return;
    t->die_seen = true;
    t->exit_code = code;
    if (t->logs && !t->logs_done) dg_docker_logs_exited(t->logs);
    try_report_exit(t);
}

/* ---- sensors: a glob on the dagd host ---- */

static bool sensor_check(exec_try *t, dg_error *err) {
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    json_auto_t *vars = try_vars(t->er, t->task, t->try_number);
    _cleanup_free_ char *pat = NULL;
    if (render(t, vars, "sensor.file", tk->sensor.file, &pat, err) < 0) return false;
    glob_t g;
    int r = glob(pat, 0, NULL, &g);
    bool found = r == 0 && g.gl_pathc > 0;
    if (r == 0) globfree(&g);
    return found;
}

static void sensor_poke_cb(uv_timer_t *h) {
    exec_try *t = h->data;
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    dg_error err = {0};
    bool found = sensor_check(t, &err);
    if (err.msg) {
        uv_timer_stop(h);
        dg__exec_try_fail(t, err.msg);
    } else if (found) {
        uv_timer_stop(h);
        dg_result res = {.type = DG_RES_EXITED, .exit_code = 0};
        report(t, &res);
        try_release(t);
    } else if (now_ms() - t->sensor_start_ms >= tk->sensor.timeout_ms) {
        uv_timer_stop(h);
        _cleanup_free_ char *d = dg_format_duration(tk->sensor.timeout_ms);
        _cleanup_free_ char *m = xasprintf("sensor timed out after %s", d);
        dg__exec_try_fail(t, m);
    }
    dg_error_clear(&err);
}

static void start_sensor(exec_try *t) {
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    const dg_ti *ti = &t->er->run->ti[t->task];
    dg_sched_on_started(t->x->sched, t->er->run, t->task, t->try_number, now_ms());
    t->sensor_start_ms = ti->first_start_ms ? ti->first_start_ms : now_ms();
    if (tk->sensor.reschedule) {
        dg_error err = {0};
        bool found = sensor_check(t, &err);
        if (err.msg) dg__exec_try_fail(t, err.msg);
        else {
            dg_result res = {.type = found ? DG_RES_EXITED : DG_RES_NOT_YET, .exit_code = 0};
            report(t, &res);
            try_release(t);
        }
        dg_error_clear(&err);
        return;
    }
    t->timer = xmalloc(sizeof *t->timer);
    uv_timer_init(t->x->loop, t->timer);
    t->timer->data = t;
    uv_timer_start(t->timer, sensor_poke_cb, 0, (uint64_t)tk->sensor.interval_ms);
}

/* ---- command handling ---- */

static void handle_start(dg_exec *x, dg_run *run, size_t task, int try_number) {
    exec_run *er = run->userdata;
    const dg_task *tk = &run->dag->tasks[task];
    exec_try *t = er->prepared[task];
    if (t && try_number == 1 && !t->unprepared) {
        er->prepared[task] = NULL;
        t->prepare_only = false;
        t->start_requested = true;
        t->start_cmd_ms = now_ms();
        er->cur[task] = t;
        if (t->created) start_container(t);
        return;
    }
    t = try_new(er, task, try_number);
    er->cur[task] = t;
    t->start_requested = true;
    t->start_cmd_ms = now_ms();
    switch (tk->kind) {
    case DG_KIND_CONTAINER: create_container(t); break;
    case DG_KIND_SENSOR: start_sensor(t); break;
    case DG_KIND_NOTIFY: dg__exec_notify_task(t); break;
    default: dg__exec_try_fail(t, "task has no kind"); break;
    }
}

static void stop_cb(void *ud, const dg_error *err) {
    exec_try *t = ud;
    if (err && err->code != -ECANCELED) {
        fprintf(stderr, "dagd: stopping %s failed: %s\n", t->name, err->msg);
        dg__exec_reconcile(t);
    }
    try_unref(t);
}

static void handle_stop(dg_exec *x, dg_run *run, size_t task, int try_number) {
    exec_run *er = run->userdata;
    exec_try *t = er->cur[task];
    if (!t || t->try_number != try_number || t->reported) return;
    t->stopping = true;
    if (t->started && t->container_id) {
        dg_docker_container_stop(x->docker, t->container_id, x->stop_grace_s, stop_cb, try_ref(t));
    } else if (run->dag->tasks[task].kind == DG_KIND_SENSOR) {
        if (t->timer) uv_timer_stop(t->timer);
        dg__exec_try_fail(t, "sensor stopped");
    } else if (t->created) {
        dg__exec_try_fail(t, "stopped before the container started");
    }
    /* otherwise an image pull, network or create call is in flight: its callback sees
     * `stopping` and ends the try */
}

static void handle_prepare(dg_exec *x, dg_run *run, size_t task) {
    exec_run *er = run->userdata;
    const dg_task *tk = &run->dag->tasks[task];
    if (tk->kind != DG_KIND_CONTAINER || er->prepared[task] || er->cur[task]) return;
    if (dg_tmpl_uses_xcom(tk->image) || (tk->working_dir && dg_tmpl_uses_xcom(tk->working_dir)))
        return;
    for (size_t i = 0; tk->command && tk->command[i]; i++)
        if (dg_tmpl_uses_xcom(tk->command[i])) return;
    for (size_t i = 0; tk->entrypoint && tk->entrypoint[i]; i++)
        if (dg_tmpl_uses_xcom(tk->entrypoint[i])) return;
    for (size_t i = 0; i < tk->n_env; i++)
        if (dg_tmpl_uses_xcom(tk->env[i].value)) return;
    for (size_t i = 0; tk->volumes && tk->volumes[i]; i++)
        if (dg_tmpl_uses_xcom(tk->volumes[i])) return;
    exec_try *t = try_new(er, task, 1);
    t->prepare_only = true;
    er->prepared[task] = t;
    create_container(t);
}

static void handle_unprepare(dg_exec *x, dg_run *run, size_t task) {
    exec_run *er = run->userdata;
    exec_try *t = er->prepared[task];
    if (!t) return;
    er->prepared[task] = NULL;
    t->unprepared = true;
    if (t->created) {
        try_remove_container(t);
        try_release(t);
    } else if (!t->config && !t->name) {
        try_release(t);
    }
    /* else: the create chain is in flight; its callback removes and releases */
}

static void handle(dg_exec *x, const dg_cmd *c) {
    switch (c->type) {
    case DG_CMD_START: handle_start(x, c->run, c->task, c->try_number); break;
    case DG_CMD_STOP: handle_stop(x, c->run, c->task, c->try_number); break;
    case DG_CMD_PREPARE: handle_prepare(x, c->run, c->task); break;
    case DG_CMD_UNPREPARE: handle_unprepare(x, c->run, c->task); break;
    case DG_CMD_TI_CHANGED:
        /* a state already left again in the same tick (scheduled → queued) is not news */
        if (c->state != c->run->ti[c->task].state) break;
        persist_ti(x, c->run, c->task);
        if (x->hooks.ti_changed) x->hooks.ti_changed(x->hooks.ud, c->run, c->task);
        break;
    case DG_CMD_RUN_CHANGED:
        /* queued → running in one tick is one change to report */
        if (((exec_run *)c->run->userdata)->last_state == (int)c->run->state) break;
        ((exec_run *)c->run->userdata)->last_state = (int)c->run->state;
        persist_run(x, c->run);
        if (x->hooks.run_changed) x->hooks.run_changed(x->hooks.ud, c->run);
        break;
    case DG_CMD_NOTIFY: dg__exec_notify_event(x, c->run, c->task, c->event); break;
    }
}

static void wake_cb(uv_timer_t *h) { pump(h->data); }

static void check_stalled(dg_exec *x) {
    if (x->closing || !x->ready || x->held || x->pumping || x->outstanding > 0 || !x->hooks.stalled) return;
    if (dg_sched_next_wakeup(x->sched) >= 0) return;
    for (dg_run *r = dg_sched_runs(x->sched); r; r = r->next)
        if (r->state == DG_RUN_RUNNING) x->hooks.stalled(x->hooks.ud, r);
}

static void pump(dg_exec *x) {
    if (!x->ready || x->closing || x->held) return;
    if (x->pumping) {
        x->pump_again = true;
        return;
    }
    x->pumping = true;
    for (;;) {
        x->pump_again = false;
        dg_sched_tick(x->sched, now_ms());
        dg_cmd *cmds;
        size_t n = dg_sched_take_cmds(x->sched, &cmds);
        for (size_t i = 0; i < n; i++) handle(x, &cmds[i]);
        free(cmds);
        if (n == 0 && !x->pump_again) break;
    }
    x->pumping = false;
    int64_t w = dg_sched_next_wakeup(x->sched);
    check_stalled(x);
    if (w >= 0) {
        int64_t d = w - now_ms();
        uv_timer_start(&x->wake, wake_cb, (uint64_t)(d > 0 ? d : 0), 0);
    } else {
        uv_timer_stop(&x->wake);
    }
}

void dg_exec_pump(dg_exec *x) { pump(x); }

/* ---- events ---- */

static void event_cb(void *ud, json_t *ev) {
    dg_exec *x = ud;
    const char *action = json_string_value(json_object_get(ev, "Action"));
    json_t *actor = json_object_get(ev, "Actor");
    const char *id = json_string_value(json_object_get(actor, "ID"));
    if (!action || !id || strcmp(action, "die") != 0) return;
    exec_try *t = dg__exec_find_container(x, id);
    if (!t) return;
    const char *code = json_string_value(json_object_get(json_object_get(actor, "Attributes"), "exitCode"));
    dg__exec_on_exit(t, code ? atoi(code) : -1);
}

static void events_connected_cb(void *ud, const dg_error *err) {
    dg_exec *x = ud;
    if (err) return;
    if (!x->ready) {
        x->ready = true;
        if (x->connect_cb) {
            dg_docker_done_cb cb = x->connect_cb;
            x->connect_cb = NULL;
            cb(x->connect_ud, NULL);
        }
        pump(x);
        return;
    }
    /* reconnected: events may have been missed; ask the engine about every live container */
    for (exec_try *t = x->tries; t; t = t->next) dg__exec_reconcile(t);
}

static void ping_cb(void *ud, const dg_error *err) {
    dg_exec *x = ud;
    if (err) {
        if (x->connect_cb) {
            dg_docker_done_cb cb = x->connect_cb;
            x->connect_cb = NULL;
            cb(x->connect_ud, err);
        }
        return;
    }
    _cleanup_free_ char *label = xasprintf("io.dagd.instance=%s", x->instance);
    const char *labels[] = {label, NULL};
    x->events = dg_docker_events(x->docker, labels, event_cb, events_connected_cb, x);
}

void dg_exec_connect(dg_exec *x, dg_docker_done_cb cb, void *ud) {
    x->connect_cb = cb;
    x->connect_ud = ud;
    dg_docker_ping(x->docker, ping_cb, x);
}

int dg_exec_new(const dg_exec_opts *opts, dg_exec **ret, dg_error *err) {
    dg_exec *x = xcalloc(1, sizeof *x);
    x->loop = opts->loop;
    x->docker = opts->docker;
    x->sched = opts->sched;
    x->store = opts->store;
    x->state_dir = xstrdup(opts->state_dir);
    x->stop_grace_s = opts->stop_grace_s > 0 ? opts->stop_grace_s : 10;
    x->allow_privileged = opts->allow_privileged;
    x->allow_docker_socket = opts->allow_docker_socket;
    x->allowed_volume_prefixes = dg_strv_copy(opts->allowed_volume_prefixes);
    x->engine_sockets = engine_sockets(opts->docker);
    x->hooks = opts->hooks;
    x->test_mode = opts->store == NULL;
    x->instance = opts->instance ? xstrdup(opts->instance) : unique_hex(6);
    uv_timer_init(x->loop, &x->wake);
    x->wake.data = x;
    *ret = x;
    return 0;
}

/* depends_on_past looks at the previous run (by logical date) in the store. A task the
 * previous run did not have counts as succeeded there, as in Airflow. */
static void set_prev_states(dg_exec *x, dg_run *run, int64_t logical_ms) {
    const dg_dag *dag = run->dag;
    bool needed = false;
    for (size_t i = 0; i < dag->n_tasks; i++) needed |= dag->tasks[i].depends_on_past;
    if (!needed || !x->store) return;
    dg_run_rec *prev = NULL;
    if (dg_store_prev_run(x->store, dag->dag_id, logical_ms, &prev) < 0) return;
    dg_ti_rec **tis = NULL;
    size_t n = 0;
    if (dg_store_list_tis(x->store, dag->dag_id, prev->run_id, &tis, &n) >= 0) {
        dg_ti_state *st = xcalloc(dag->n_tasks, sizeof *st);
        for (size_t i = 0; i < dag->n_tasks; i++) st[i] = DG_TI_SUCCESS;
        for (size_t k = 0; k < n; k++) {
            ssize_t i = dg_dag_task_index(dag, tis[k]->task_id);
            int s = dg_ti_state_from_name(tis[k]->state);
            if (i >= 0 && s >= 0) st[i] = (dg_ti_state)s;
        }
        dg_sched_set_prev_states(run, st);
        free(st);
        dg_ti_recs_free(tis, n);
    }
    dg_run_rec_free(prev);
}

dg_run *dg_exec_add_run(dg_exec *x, const dg_dag *dag, const char *run_id, const char *run_type,
                        int64_t logical_ms, int64_t interval_start_ms, int64_t interval_end_ms,
                        const json_t *conf) {
    dg_run *run = dg_sched_add_run(x->sched, dag, run_id, now_ms());
    exec_run *er = xcalloc(1, sizeof *er);
    er->x = x;
    er->run = run;
    er->refs = 1;
    er->last_state = -1;
    er->run_type = xstrdup(run_type);
    er->logical_ms = logical_ms;
    er->interval_start_ms = interval_start_ms;
    er->interval_end_ms = interval_end_ms;
    er->conf = conf ? json_deep_copy(conf) : json_object();
    er->params = json_deep_copy(dag->params); /* dg_tmpl_vars lays conf over it */
    json_auto_t *conns = dg_conn_from_env(); /* connection passwords never reach a log */
    const char *cid;
    json_t *c;
    json_object_foreach(conns, cid, c) add_secret(er, json_string_value(json_object_get(c, "password")));
    er->n_tasks = dag->n_tasks;
    er->outputs = xcalloc(dag->n_tasks, sizeof(char *));
    er->cur = xcalloc(dag->n_tasks, sizeof(exec_try *));
    er->prepared = xcalloc(dag->n_tasks, sizeof(exec_try *));
    run->userdata = er;
    set_prev_states(x, run, logical_ms);
    persist_run(x, run);
    return run;
}

void dg_exec_cancel_all(dg_exec *x) {
    for (dg_run *r = dg_sched_runs(x->sched); r; r = r->next)
        if (r->state == DG_RUN_QUEUED || r->state == DG_RUN_RUNNING)
            dg_sched_cancel_run(x->sched, r, now_ms());
    pump(x);
}

const char *dg_exec_container_name(dg_exec *x, dg_run *run, size_t task) {
    exec_run *er = run->userdata;
    return er && er->cur[task] ? er->cur[task]->name : NULL;
}

const char *dg_exec_output(dg_exec *x, dg_run *run, size_t task) {
    exec_run *er = run->userdata;
    return er ? er->outputs[task] : NULL;
}

int dg_exec_outstanding(dg_exec *x) { return x->outstanding; }

const char *dg_exec_instance(const dg_exec *x) { return x->instance; }

void dg_exec_hold(dg_exec *x, bool hold) {
    x->held = hold;
    if (!hold) pump(x);
}

bool dg_exec_try_live(dg_exec *x, dg_run *run, size_t task, int try_number) {
    exec_run *er = run->userdata;
    exec_try *t = er ? er->cur[task] : NULL;
    return t && t->try_number == try_number && !t->reported;
}

void dg_exec_stats(const dg_exec *x, dg_exec_stats_t *ret) {
    ret->starts = x->starts;
    ret->start_latency_sum = x->start_lat_sum;
    for (size_t i = 0; i < 8; i++) ret->start_latency_buckets[i] = x->start_lat_buckets[i];
}

void dg_exec_persist_run(dg_exec *x, dg_run *run) { persist_run(x, run); }

void dg_exec_persist_new_tis(dg_exec *x, dg_run *run) {
    for (size_t i = 0; i < run->dag->n_tasks; i++) persist_ti(x, run, i);
}

void dg_exec_set_output(dg_exec *x, dg_run *run, size_t task, const char *output) {
    exec_run *er = run->userdata;
    free(er->outputs[task]);
    er->outputs[task] = xstrdup(output);
}

void dg_exec_adopt(dg_exec *x, dg_run *run, size_t task, int try_number, const char *container_id,
                   const char *name) {
    exec_run *er = run->userdata;
    exec_try *t = try_new(er, task, try_number);
    er->cur[task] = t;
    t->start_requested = t->created = t->started = t->image_ok = t->network_ok = true;
    t->container_id = xstrdup(container_id);
    t->name = xstrdup(name);
    if (x->state_dir) {
        _cleanup_free_ char *path = dg_store_log_path(x->state_dir, run->dag->dag_id, run->run_id,
                                                      run->dag->tasks[task].id, try_number);
        unlink(path); /* the engine keeps the whole log: rewrite it from there */
        int r = dg_tasklog_open(path, &t->log);
        if (r < 0) fprintf(stderr, "dagd: cannot open log %s: %s\n", path, strerror(-r));
    }
    t->logs = dg_docker_logs_follow(x->docker, t->container_id, log_line_cb, logs_done_cb, try_ref(t));
    dg__exec_reconcile(t);
}

bool dg_exec_forget_run(dg_exec *x, dg_run *run) {
    exec_run *er = run->userdata;
    if (run->state != DG_RUN_SUCCESS && run->state != DG_RUN_FAILED) return false;
    if (er) {
        if (er->refs > 1) return false; /* a try of it is still in flight (a removal) */
        run->userdata = NULL;
        run_unref(er);
    }
    dg_sched_remove_run(x->sched, run);
    return true;
}

static void exec_release(dg_exec *x) {
    dg__exec_cache_free(x);
    dg_strv_free(x->allowed_volume_prefixes);
    dg_strv_free(x->engine_sockets);
    free(x->state_dir);
    free(x->instance);
    free(x);
}

static void exec_free_cb(uv_handle_t *h) {
    dg_exec *x = h->data;
    x->wake_closed = true;
    if (x->outstanding == 0) exec_release(x);
}

void dg_exec_free(dg_exec *x) {
    if (!x) return;
    x->closing = true;
    if (x->events) dg_docker_stream_cancel(x->events);
    /* tries still alive at this point are abandoned: drop the executor's references;
     * in-flight docker callbacks (cancelled by dg_docker_free) release the rest */
    for (exec_try *t = x->tries, *n; t; t = n) {
        n = t->next;
        if (t->retry_step) {
            /* a step waiting for the engine: its timer's reference goes with it */
            t->retry_step = NULL;
            uv_timer_stop(t->timer);
            try_unref(t);
        }
    }
    for (exec_try *t = x->tries, *n; t; t = n) {
        n = t->next;
        if (t->logs) {
            dg_docker_stream_cancel(t->logs);
            t->logs = NULL;
            try_unref(t); /* the stream's reference: its done callback will not come */
        }
    }
    for (dg_run *r = dg_sched_runs(x->sched); r; r = r->next) {
        exec_run *er = r->userdata;
        if (!er) continue;
        for (size_t i = 0; i < r->dag->n_tasks; i++) {
            if (er->prepared[i]) try_release(er->prepared[i]);
            if (er->cur[i]) try_release(er->cur[i]);
        }
        r->userdata = NULL;
        run_unref(er);
    }
    x->hooks.idle = NULL;
    uv_close((uv_handle_t *)&x->wake, exec_free_cb);
}
