/* exec/spec — one try's job spec: the task's templates rendered for the try, env_file <
 * env < connections (DockerOperator's precedence), the io.dagd.* labels that recovery and
 * the event stream find jobs by, a unique name, and the container policy applied. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "dagd/tmpl.h"
#include "exec_internal.h"

static int render(exec_try *t, const json_t *vars, const char *field, const char *src, char **ret, dg_error *err) {
    dg_tmpl_ctx ctx = {.vars = vars, .xcom_pull = dg__exec_xcom_pull, .userdata = t->er};
    dg_error e = {0};
    int r = dg_tmpl_render(src, &ctx, ret, &e);
    if (r < 0) {
        dg_error_set(err, r, "%s: %s", field, e.msg ? e.msg : "template error");
        dg_error_clear(&e);
    }
    return r;
}

static int render_strv(exec_try *t, const json_t *vars, const char *field, char **v, char ***ret, dg_error *err) {
    size_t n = dg_strv_len(v);
    char **out = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        int r = render(t, vars, field, v[i], &out[i], err);
        if (r < 0) {
            dg_strv_free(out);
            return r;
        }
    }
    *ret = out;
    return 0;
}

void dg__exec_add_secret(exec_run *er, const char *s) {
    if (!s || strlen(s) < 3) return; /* redacting tiny strings would mangle every line */
    size_t n = dg_strv_len(er->secrets);
    for (size_t i = 0; i < n; i++)
        if (strcmp(er->secrets[i], s) == 0) return;
    er->secrets = xrealloc(er->secrets, (n + 2) * sizeof(char *));
    er->secrets[n] = xstrdup(s);
    er->secrets[n + 1] = NULL;
}

void dg__exec_try_secrets(exec_try *t) {
    const dg_task *tk = &t->er->run->dag->tasks[t->task];
    json_auto_t *vars = NULL;
    for (size_t i = 0; i < tk->n_env; i++) {
        if (!tk->env[i].secret) continue;
        if (!vars) vars = dg__exec_vars(t);
        _cleanup_free_ char *v = NULL;
        _cleanup_error_ dg_error err = {0};
        if (render(t, vars, "env", tk->env[i].value, &v, &err) == 0) dg__exec_add_secret(t->er, v);
    }
}

static char *sanitize_name(const char *s) {
    char *r = xstrdup(s);
    for (char *p = r; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '.' || *p == '-'))
            *p = '_';
    return r;
}

/* Unique per try: a name taken by an earlier try (or another dagd) never collides. */
static char *job_name(exec_try *t, dg_error *err) {
    const dg_dag *dag = t->er->run->dag;
    _cleanup_free_ char *rnd = NULL;
    int r = dg_random_hex(3, &rnd);
    if (r < 0) {
        dg_error_set(err, r, "cannot get random bytes for a container name: %s", strerror(-r));
        return NULL;
    }
    _cleanup_free_ char *d = xstrndup(dag->dag_id, 60);
    _cleanup_free_ char *k = xstrndup(dag->tasks[t->task].id, 60);
    _cleanup_free_ char *raw = xasprintf("dagd-%s-%s-%d-%s", d, k, t->try_number, rnd);
    return sanitize_name(raw);
}

/* env_file lines: KEY=VALUE, '#' comments, blank lines; relative to the DAG file. */
static int read_env_file(const char *dag_file, const char *path, json_t *env_obj, dg_error *err) {
    _cleanup_free_ char *full = NULL;
    if (path[0] != '/') {
        _cleanup_free_ char *dir = xstrdup(dag_file);
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

/* ---- the policy ---- */

/* Whether path is dir or lies below it. */
static bool path_within(const char *path, const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    return !strncmp(path, dir, n) && (path[n] == 0 || path[n] == '/' || (n == 1 && dir[0] == '/'));
}

char *dg_exec_bind_source(const char *dag_file, const char *spec) {
    const char *colon = strchr(spec, ':');
    if (!colon) return NULL; /* an anonymous volume */
    _cleanup_free_ char *src = xstrndup(spec, (size_t)(colon - spec));
    if (src[0] == '/') return TAKE_PTR(src);
    if (src[0] != '.' && src[0] != '~') return NULL; /* a named volume */
    _cleanup_free_ char *base = NULL;
    if (src[0] == '~') {
        const char *home = getenv("HOME");
        base = xstrdup(home && *home ? home : "/");
    } else {
        _cleanup_free_ char *dir = xstrdup(dag_file ? dag_file : ".");
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        base = realpath(slash ? dir : ".", NULL);
    }
    const char *rest = src[0] == '~' ? src + 1 : (src[1] == '/' ? src + 2 : src + 1);
    while (*rest == '/') rest++;
    return xasprintf("%s/%s", base ? base : ".", rest);
}

/* Host paths a bind may not reach unless policy.allowed_sensitive_paths allows them: the
 * host's configuration, devices and kernel interfaces, and the state folders and sockets
 * of the container runtimes (see docs/dags.md, "The container policy"). A folder above
 * one of them (/, /var, /run, ...) reaches it too. Both spellings of the run folder are
 * listed for hosts where /var/run is not a link to /run. */
static const char *const sensitive_paths[] = {
    "/etc",
    "/dev",
    "/proc",
    "/sys",
    "/boot",
    "/root",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/containers",
    "/var/lib/kubelet",
    "/run/docker",
    "/run/docker.sock",
    "/run/containerd",
    "/run/crio",
    "/run/podman",
    "/run/containers",
    "/run/buildkit",
    "/run/k3s",
    "/run/cri-dockerd.sock",
    "/run/dockershim.sock",
    "/run/user",
    "/var/run/docker",
    "/var/run/docker.sock",
    "/var/run/containerd",
    "/var/run/crio",
    "/var/run/podman",
    "/var/run/containers",
    "/var/run/buildkit",
    "/var/run/k3s",
    "/var/run/cri-dockerd.sock",
    "/var/run/dockershim.sock",
    "/var/run/user",
};

char *dg_exec_host_path(const char *source) {
    if (source[0] != '/') return xstrdup(source);
    /* lexically, as the engine cleans a bind source: no "", "." or ".." parts */
    _cleanup_free_ char *copy = xstrdup(source);
    dg_buf clean = {0};
    char *save = NULL;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (!strcmp(part, ".")) continue;
        if (!strcmp(part, "..")) {
            char *slash = clean.data ? strrchr(clean.data, '/') : NULL;
            if (slash) {
                clean.len = (size_t)(slash - clean.data);
                clean.data[clean.len] = 0;
            }
            continue;
        }
        dg_buf_printf(&clean, "/%s", part);
    }
    if (!clean.len) dg_buf_puts(&clean, "/");
    /* then the links of the longest part that exists resolved, the rest kept as written */
    _cleanup_free_ char *path = clean.data;
    size_t cut = strlen(path);
    for (;;) {
        char save_c = path[cut];
        path[cut] = 0;
        char *real = realpath(cut ? path : "/", NULL);
        path[cut] = save_c;
        if (real) {
            const char *rest = path + cut;
            char *r = xasprintf("%s%s", strcmp(real, "/") || !*rest ? real : "", rest);
            free(real);
            return r;
        }
        if (!cut) return xstrdup(path);
        while (cut > 0 && path[cut - 1] != '/') cut--;
        if (cut > 0) cut--;
    }
}

/* The policy's own paths, taken the same way as a bind source (links resolved). */
static bool path_allowed(const char *path, char *const *allowed) {
    for (size_t i = 0; allowed && allowed[i]; i++) {
        _cleanup_free_ char *a = dg_exec_host_path(allowed[i]);
        if (path_within(path, a)) return true;
    }
    return false;
}

static bool is_protected(const dg_exec_policy *p, const char *path) {
    for (size_t i = 0; p->protected_paths && p->protected_paths[i]; i++)
        if (path_within(path, p->protected_paths[i])) return true;
    return false;
}

int dg_exec_check_bind(const dg_exec_policy *p, const char *source, char **ret_path, dg_error *err) {
    _cleanup_free_ char *path = dg_exec_host_path(source);
    /* messages name the path as written, and where it leads when that differs */
    _cleanup_free_ char *led = strcmp(path, source) ? xasprintf(" (it is %s on the host)", path) : xstrdup("");
    /* The engine's socket is root on the host: the socket itself, or any folder above it
     * (like /run), is refused unless allowed. */
    bool socket = strstr(path, "docker.sock") != NULL;
    for (size_t i = 0; !socket && p->protected_paths && p->protected_paths[i]; i++)
        socket = path_within(p->protected_paths[i], path);
    if (socket && !p->allow_docker_socket)
        return dg_error_set(err, -EPERM,
                            "volumes: %s gives the container the Docker engine's socket; refused by policy "
                            "(policy.allow_docker_socket)%s",
                            source, led);
    if (!path_allowed(path, p->allowed_sensitive_paths))
        for (size_t i = 0; i < ARRAY_SIZE(sensitive_paths); i++) {
            const char *s = sensitive_paths[i];
            /* the engine's own socket is allow_docker_socket's to allow */
            if (is_protected(p, s) || !(path_within(path, s) || path_within(s, path))) continue;
            _cleanup_free_ char *what = !strcmp(path, s)          ? xstrdup("is")
                                        : path_within(path, s) ? xasprintf("is under %s,", s)
                                                               : xasprintf("holds %s,", s);
            return dg_error_set(err, -EPERM,
                                "volumes: %s %s a sensitive host path; refused by policy unless "
                                "policy.allowed_sensitive_paths lists it%s",
                                source, what, led);
        }
    if (p->allowed_volume_prefixes) {
        bool ok = false;
        for (size_t i = 0; !ok && p->allowed_volume_prefixes[i]; i++)
            ok = path_within(path, p->allowed_volume_prefixes[i]);
        if (!ok)
            return dg_error_set(err, -EPERM, "volumes: host path %s is outside policy.allowed_volume_prefixes",
                                path);
    }
    if (ret_path) *ret_path = TAKE_PTR(path);
    return 0;
}

size_t dg_exec_task_refusals(const dg_exec_policy *p, const dg_task *t,
                             void (*refused)(void *ud, const char *msg), void *ud) {
    size_t n = 0;
    if (t->privileged && !p->allow_privileged) {
        refused(ud, "privileged: true is refused by policy (policy.allow_privileged)");
        n++;
    }
    const char *net = t->network;
    if (net && !strcmp(net, "host") && !p->allow_host_network) {
        refused(ud, "network: host gives the container the host's network stack; refused by policy "
                    "(policy.allow_host_network)");
        n++;
    }
    if (net && dg_str_has_prefix(net, "container:") && !p->allow_container_network) {
        _cleanup_free_ char *m = xasprintf("network: %s joins another container's network stack; refused by "
                                           "policy (policy.allow_container_network)",
                                           net);
        refused(ud, m);
        n++;
    }
    return n;
}

static void first_refusal(void *ud, const char *msg) {
    dg_error *err = ud;
    if (err && !err->msg) dg_error_set(err, -EPERM, "%s", msg);
}

int dg_exec_check_task(const dg_exec_policy *p, const dg_task *t, dg_error *err) {
    dg_error first = {0};
    if (!dg_exec_task_refusals(p, t, first_refusal, &first)) return 0;
    int r = dg_error_set(err, -EPERM, "%s", first.msg);
    dg_error_clear(&first);
    return r;
}

static dg_exec_policy policy_of(const dg_exec *x) {
    return (dg_exec_policy){
        .allow_privileged = x->allow_privileged,
        .allow_docker_socket = x->allow_docker_socket,
        .allow_host_network = x->allow_host_network,
        .allow_container_network = x->allow_container_network,
        .allowed_volume_prefixes = x->allowed_volume_prefixes,
        .allowed_sensitive_paths = x->allowed_sensitive_paths,
        .protected_paths = (const char *const *)x->protected_paths,
    };
}

/* ---- the spec ---- */

void dg__exec_spec_free(exec_spec *s) {
    dg_strv_free(s->command);
    dg_strv_free(s->entrypoint);
    dg_strv_free(s->env);
    dg_strv_free(s->binds);
    dg_strv_free(s->volumes);
    free(s->image);
    free(s->working_dir);
    free((char *)s->s.name);
    json_decref(s->labels);
    memset(s, 0, sizeof *s);
}

static int build(exec_try *t, exec_spec *sp, dg_error *err) {
    exec_run *er = t->er;
    dg_exec *x = t->x;
    const dg_dag *dag = er->run->dag;
    const dg_task *tk = &dag->tasks[t->task];
    dg_exec_policy pol = policy_of(x);
    json_auto_t *vars = dg__exec_vars(t);
    int r;

    if ((r = dg_exec_check_task(&pol, tk, err)) < 0) return r;
    if ((r = render(t, vars, "image", tk->image, &sp->image, err)) < 0) return r;
    if (tk->command && (r = render_strv(t, vars, "command", tk->command, &sp->command, err)) < 0) return r;
    if (tk->entrypoint && (r = render_strv(t, vars, "entrypoint", tk->entrypoint, &sp->entrypoint, err)) < 0)
        return r;

    json_auto_t *envo = json_object();
    if (tk->env_file && (r = read_env_file(dag->file, tk->env_file, envo, err)) < 0) return r;
    for (size_t i = 0; i < tk->n_env; i++) {
        _cleanup_free_ char *v = NULL;
        _cleanup_free_ char *field = xasprintf("env.%s", tk->env[i].key);
        if ((r = render(t, vars, field, tk->env[i].value, &v, err)) < 0) return r;
        if (tk->env[i].secret) dg__exec_add_secret(er, v); /* as dg__exec_try_secrets does */
        json_object_set_new(envo, tk->env[i].key, json_string(v));
    }
    for (size_t i = 0; tk->connections && tk->connections[i]; i++) {
        _cleanup_free_ char *var = dg_conn_env_name(tk->connections[i]);
        _cleanup_free_ char *id = dg_conn_id(tk->connections[i]);
        const char *uri = json_string_value(json_object_get(x->conn_uris, id));
        if (!uri)
            return dg_error_set(err, -ENOENT, "connection '%s' is not defined (connections_file or %s)",
                                tk->connections[i], var);
        json_object_set_new(envo, var, json_string(uri));
    }
    sp->env = xcalloc(json_object_size(envo) + 1, sizeof(char *));
    size_t ne = 0;
    const char *k;
    json_t *v;
    json_object_foreach(envo, k, v) sp->env[ne++] = xasprintf("%s=%s", k, json_string_value(v));

    if (tk->working_dir && (r = render(t, vars, "working_dir", tk->working_dir, &sp->working_dir, err)) < 0)
        return r;

    sp->labels = json_object();
    for (size_t i = 0; i < tk->n_labels; i++)
        json_object_set_new(sp->labels, tk->labels[i].key, json_string(tk->labels[i].value));
    json_object_set_new(sp->labels, "io.dagd.dag", json_string(dag->dag_id));
    json_object_set_new(sp->labels, "io.dagd.run", json_string(er->run->run_id));
    json_object_set_new(sp->labels, "io.dagd.task", json_string(tk->id));
    json_object_set_new(sp->labels, "io.dagd.try", json_sprintf("%d", t->try_number));
    json_object_set_new(sp->labels, "io.dagd.instance", json_string(x->instance));

    size_t nv = dg_strv_len(tk->volumes), nb = 0, na = 0;
    sp->binds = xcalloc(nv + 1, sizeof(char *));
    sp->volumes = xcalloc(nv + 1, sizeof(char *));
    for (size_t i = 0; i < nv; i++) {
        _cleanup_free_ char *s = NULL;
        if ((r = render(t, vars, "volumes", tk->volumes[i], &s, err)) < 0) return r;
        const char *colon = strchr(s, ':');
        if (!colon) {
            sp->volumes[na++] = TAKE_PTR(s);
            continue;
        }
        _cleanup_free_ char *src = dg_exec_bind_source(dag->file, s);
        _cleanup_free_ char *judged = NULL;
        if (src && (r = dg_exec_check_bind(&pol, src, &judged, err)) < 0) return r;
        sp->binds[nb++] = judged ? xasprintf("%s%s", judged, colon) : TAKE_PTR(s); /* the path judged */
    }

    _cleanup_free_ char *name = job_name(t, err);
    if (!name) return -EIO;
    sp->s = (dg_job_spec){
        .name = TAKE_PTR(name),
        .image = sp->image,
        .pull = tk->pull == DG_PULL_ALWAYS ? DG_JOB_PULL_ALWAYS
                : tk->pull == DG_PULL_NEVER ? DG_JOB_PULL_NEVER
                                            : DG_JOB_PULL_MISSING,
        .command = sp->command,
        .entrypoint = sp->entrypoint,
        .env = sp->env,
        .labels = sp->labels,
        .working_dir = sp->working_dir,
        .user = tk->user,
        .hostname = tk->hostname,
        .network = tk->network,
        .network_alias = tk->id,
        .binds = sp->binds,
        .volumes = sp->volumes,
        .extra_hosts = tk->extra_hosts,
        .constraints = tk->placement_constraints,
        .preferences = tk->placement_preferences,
        .cpus = tk->cpus,
        .memory = tk->memory,
        .shm_size = tk->shm_size,
        .privileged = tk->privileged,
    };
    return 0;
}

int dg__exec_build_spec(exec_try *t, exec_spec *ret, dg_error *err) {
    exec_spec sp = {0};
    int r = build(t, &sp, err);
    if (r < 0) {
        dg__exec_spec_free(&sp);
        return r;
    }
    *ret = sp;
    return 0;
}
