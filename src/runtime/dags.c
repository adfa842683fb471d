/* runtime/dags — the one DAG-folder scan, the one complete validation and the one DAG id /
 * file resolver (see include/dagd/runtime.h). */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "dagd/docker.h"
#include "dagd/runtime.h"
#include "dagd/tmpl.h"
#include "dagd/yaml.h"

#define DECLARED_ID_MAX_FILE (8 * 1024 * 1024)

static bool is_yaml_name(const char *n) {
    size_t l = strlen(n);
    return n[0] != '.' && ((l > 4 && strcmp(n + l - 4, ".yml") == 0) || (l > 5 && strcmp(n + l - 5, ".yaml") == 0));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int dg_dags_scan(const char *dir, char ***ret, size_t *ret_n) {
    _cleanup_closedir_ DIR *dp = opendir(dir);
    if (!dp) return -errno;
    char **v = NULL;
    size_t n = 0, dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (!is_yaml_name(e->d_name)) continue;
        v = xrealloc(v, (n + 2) * sizeof(char *));
        v[n++] = xasprintf("%.*s/%s", (int)dl, dir, e->d_name);
        v[n] = NULL;
    }
    if (n) qsort(v, n, sizeof(char *), cmp_str);
    *ret = v;
    *ret_n = n;
    return 0;
}

dg_exec_policy dg_runtime_policy(const dg_config *cfg, const char *const *protected_paths) {
    return (dg_exec_policy){
        .allow_privileged = cfg->allow_privileged,
        .allow_docker_socket = cfg->allow_docker_socket,
        .allow_host_network = cfg->allow_host_network,
        .allow_container_network = cfg->allow_container_network,
        .allowed_volume_prefixes = cfg->allowed_volume_prefixes,
        .allowed_sensitive_paths = cfg->allowed_sensitive_paths,
        .protected_paths = protected_paths,
    };
}

typedef struct policy_check {
    const dg_dag *dag;
    const dg_task *t;
    dg_diags *d;
} policy_check;

static void task_refused(void *ud, const char *msg) {
    policy_check *c = ud;
    dg_diags_add(c->d, c->dag->file, c->t->line, c->t->col, "task '%s': %s", c->t->id, msg);
}

/* The container policy, on what a file says before any template is rendered: every thing
 * the server would refuse at run time is refused here already (one judge for both, in
 * exec; see docs/dags.md, "The container policy"). */
static void check_policy(void *ud, const dg_dag *dag, const dg_task *t, dg_diags *d) {
    const dg_exec_policy *p = ud;
    _cleanup_error_ dg_error err = {0};
    policy_check c = {dag, t, d};
    dg_exec_task_refusals(p, t, task_refused, &c);
    for (size_t i = 0; t->volumes && t->volumes[i]; i++) {
        if (strstr(t->volumes[i], "{{")) continue; /* judged once rendered */
        _cleanup_free_ char *src = dg_exec_bind_source(dag->file, t->volumes[i]);
        if (src && dg_exec_check_bind(p, src, NULL, &err) < 0) {
            dg_diags_add(d, dag->file, t->line, t->col, "task '%s': %s", t->id, err.msg);
            dg_error_clear(&err);
        }
    }
}

int dg_dags_load(const dg_config *cfg, const char *path, dg_dag **ret, dg_diags *diags) {
    /* a task's pool must be one the configuration defines, or default_pool, which always
     * exists; connections are checked when the configuration names some */
    const char **pools = xcalloc(cfg->n_pools + 2, sizeof *pools);
    size_t np = 0;
    pools[np++] = "default_pool";
    for (size_t i = 0; i < cfg->n_pools; i++)
        if (strcmp(cfg->pools[i].name, "default_pool") != 0) pools[np++] = cfg->pools[i].name;
    size_t nc = json_object_size(cfg->connections), k = 0;
    const char **conns = xcalloc(nc + 1, sizeof *conns);
    const char *id;
    json_t *v;
    json_object_foreach(cfg->connections, id, v) conns[k++] = id;
    char **prot = dg_docker_socket_paths(cfg->docker_host);
    dg_exec_policy pol = dg_runtime_policy(cfg, (const char *const *)prot);
    dg_dag_opts opts = {
        .known_pools = pools,
        .known_connections = conns,
        .check_connections = nc > 0,
        .check_task = check_policy,
        .check_ud = &pol,
    };
    int r = dg_dag_load(path, &opts, ret, diags);
    dg_strv_free(prot);
    free(conns);
    free(pools);
    return r;
}

char *dg_dags_declared_id(const char *path) {
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > DECLARED_ID_MAX_FILE) return NULL;
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (dg_read_file(path, &text, &len) < 0) return NULL;
    _cleanup_diags_ dg_diags d = {0};
    dg_ynode *root = dg_yaml_parse(path, text, len, &d);
    char *id = NULL;
    for (size_t i = 0; root && root->type == DG_YMAP && i + 1 < root->n && !id; i += 2) {
        const dg_ynode *k = root->kids[i], *v = root->kids[i + 1];
        if (k->type == DG_YSCALAR && strcmp(k->str, "dag") == 0 && v->type == DG_YSCALAR && v->str && *v->str)
            id = xstrdup(v->str);
    }
    dg_ynode_free(root);
    return id;
}

int dg_dags_resolve(const dg_config *cfg, const char *what, const char *dags_folder, dg_dag **ret,
                    dg_diags *diags, dg_error *err) {
    struct stat st;
    bool is_file = strchr(what, '/') || is_yaml_name(what) || (stat(what, &st) == 0 && S_ISREG(st.st_mode));
    if (is_file) {
        if (stat(what, &st) < 0) return dg_error_set(err, -errno, "%s: %s", what, strerror(errno));
        return dg_dags_load(cfg, what, ret, diags);
    }
    const char *dir = dags_folder ? dags_folder : cfg->dags_folder;
    char **files = NULL;
    size_t n = 0;
    int r = dg_dags_scan(dir, &files, &n);
    if (r < 0)
        return dg_error_set(err, r, "no file %s, and the DAGs folder %s cannot be read: %s", what, dir, strerror(-r));
    size_t broken = 0;
    _cleanup_free_ char *declared_in = NULL; /* a broken file whose dag: is what */
    r = -ENOENT;
    for (size_t i = 0; i < n && r == -ENOENT; i++) {
        _cleanup_diags_ dg_diags d = {0};
        dg_dag *dag = NULL;
        if (dg_dags_load(cfg, files[i], &dag, &d) < 0) {
            broken++;
            _cleanup_free_ char *id = declared_in ? NULL : dg_dags_declared_id(files[i]);
            if (id && strcmp(id, what) == 0) declared_in = xstrdup(files[i]);
        } else if (strcmp(dag->dag_id, what) == 0) {
            *ret = dag;
            r = 0;
        } else
            dg_dag_free(dag);
    }
    dg_strv_free(files);
    if (r == -ENOENT && declared_in)
        dg_error_set(err, -ENOENT, "DAG '%s' is declared in %s, which has errors: dagd validate %s shows them", what,
                     declared_in, declared_in);
    else if (r == -ENOENT)
        dg_error_set(err, -ENOENT, "no DAG '%s' in %s (and no such file)%s", what, dir,
                     broken ? "; some files there have errors: dagd validate shows them" : "");
    return r;
}
