/* config — dagd.yml, then DAGD_* environment overrides (see include/dagd/config.h). The
 * YAML is read as a marked tree so errors carry file:line:col. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "dagd/config.h"
#include "dagd/tmpl.h"
#include "dagd/yaml.h"

extern char **environ;

static const char *const top_keys[] = {"dags_folder", "state_dir", "listen", "token_file", "parallelism", "pools",
                                       "backend", "docker_host", "container_log_max_size", "smtp", "connections_file", "policy",
                                       "log", "api"};
static const char *const smtp_keys[] = {"url", "from", "user", "password"};
static const char *const policy_keys[] = {"allow_privileged",   "allowed_volume_prefixes", "allow_docker_socket",
                                          "allow_host_network", "allow_container_network", "allowed_sensitive_paths"};
static const char *const api_keys[] = {"max_connections", "max_connections_per_address", "request_head_timeout"};

char *dg_config_default_state_dir(void) {
    const char *s = getenv("STATE_DIRECTORY");
    if (s && *s) {
        const char *colon = strchr(s, ':'); /* systemd may list several */
        return colon ? xstrndup(s, (size_t)(colon - s)) : xstrdup(s);
    }
    s = getenv("XDG_STATE_HOME");
    if (s && *s) return xasprintf("%s/dagd", s);
    s = getenv("HOME");
    return xasprintf("%s/.local/state/dagd", s && *s ? s : ".");
}

static int set_bool(const char *v, bool *ret) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on")) *ret = true;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off")) *ret = false;
    else return -EINVAL;
    return 0;
}

static int set_int_range(const char *v, long max, int *ret) {
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 1 || n > max) return -EINVAL;
    *ret = (int)n;
    return 0;
}

static int set_int(const char *v, int *ret) { return set_int_range(v, 100000, ret); }

static void add_pool(dg_config *c, const char *name, int slots) {
    for (size_t i = 0; i < c->n_pools; i++)
        if (!strcmp(c->pools[i].name, name)) {
            c->pools[i].slots = slots;
            return;
        }
    c->pools = xrealloc(c->pools, (c->n_pools + 1) * sizeof *c->pools);
    c->pools[c->n_pools].name = xstrdup(name);
    c->pools[c->n_pools].slots = slots;
    c->n_pools++;
}

/* "name=slots,name=slots" */
static int parse_pools(dg_config *c, const char *v) {
    _cleanup_free_ char *copy = xstrdup(v);
    char *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(p, '=');
        int slots;
        if (!eq || eq == p || set_int(eq + 1, &slots) < 0) return -EINVAL;
        *eq = 0;
        add_pool(c, p, slots);
    }
    return 0;
}

/* "a,b c": a list of paths, comma- or space-separated. */
static int set_paths(const char *v, char ***ret) {
    dg_strv_free(*ret);
    *ret = NULL;
    size_t n;
    _cleanup_free_ char *copy = xstrdup(v);
    for (char *p = copy; *p; p++)
        if (*p == ',') *p = ' ';
    return dg_split_words(copy, ret, &n) < 0 ? -EINVAL : 0;
}

/* The engine's json-file max-size: digits and one unit of k, m or g (docs/daemon.md). */
static bool log_size_ok(const char *v) {
    size_t n = strspn(v, "0123456789");
    if (n == 0 || n > 12 || v[0] == '0') return false;
    return !v[n] || (strchr("kmg", v[n]) && !v[n + 1]);
}

static void set_str(char **dst, const char *v) {
    free(*dst);
    *dst = xstrdup(v);
}

/* The accepted form of each setting that can be refused, for messages. */
static const char *expected_form(const char *key) {
    if (!strcmp(key, "parallelism")) return "a whole number from 1 to 100000";
    if (!strcmp(key, "pools")) return "name=slots,name=slots";
    if (!strcmp(key, "backend")) return "local or swarm";
    if (!strcmp(key, "log")) return "auto, journald or stderr";
    if (!strcmp(key, "container_log_max_size")) return "a size such as 100m or 1g, or engine";
    if (!strcmp(key, "policy_allowed_volume_prefixes") || !strcmp(key, "policy_allowed_sensitive_paths"))
        return "a list of absolute paths";
    if (!strcmp(key, "api_max_connections") || !strcmp(key, "api_max_connections_per_address"))
        return "a whole number from 1 to 100000";
    if (!strcmp(key, "api_request_head_timeout")) return "a number of seconds from 1 to 3600";
    return "true or false";
}

/* One key=value, from either source. The message says what is wrong and what is accepted;
 * the caller puts the setting's place in front (file:line:col and key, or DAGD_<KEY>). */
static int apply(dg_config *c, const char *key, const char *v, dg_error *err) {
    int r = 0;
    if (!strcmp(key, "dags_folder")) set_str(&c->dags_folder, v);
    else if (!strcmp(key, "state_dir")) set_str(&c->state_dir, v);
    else if (!strcmp(key, "listen")) set_str(&c->listen, v);
    else if (!strcmp(key, "token_file")) set_str(&c->token_file, v);
    else if (!strcmp(key, "parallelism")) r = set_int(v, &c->parallelism);
    else if (!strcmp(key, "pools")) r = parse_pools(c, v);
    else if (!strcmp(key, "backend")) {
        if (strcmp(v, "local") && strcmp(v, "swarm")) r = -EINVAL;
        else set_str(&c->backend, v);
    } else if (!strcmp(key, "docker_host")) set_str(&c->docker_host, v);
    else if (!strcmp(key, "container_log_max_size")) {
        if (strcmp(v, "engine") && !log_size_ok(v)) r = -EINVAL;
        else set_str(&c->container_log_max_size, v);
    }
    else if (!strcmp(key, "smtp_url")) set_str(&c->smtp_url, v);
    else if (!strcmp(key, "smtp_from")) set_str(&c->smtp_from, v);
    else if (!strcmp(key, "smtp_user")) set_str(&c->smtp_user, v);
    else if (!strcmp(key, "smtp_password")) set_str(&c->smtp_password, v);
    else if (!strcmp(key, "connections_file")) set_str(&c->connections_file, v);
    else if (!strcmp(key, "policy_allow_privileged")) r = set_bool(v, &c->allow_privileged);
    else if (!strcmp(key, "policy_allow_docker_socket")) r = set_bool(v, &c->allow_docker_socket);
    else if (!strcmp(key, "policy_allow_host_network")) r = set_bool(v, &c->allow_host_network);
    else if (!strcmp(key, "policy_allow_container_network")) r = set_bool(v, &c->allow_container_network);
    else if (!strcmp(key, "policy_allowed_volume_prefixes")) r = set_paths(v, &c->allowed_volume_prefixes);
    else if (!strcmp(key, "policy_allowed_sensitive_paths")) r = set_paths(v, &c->allowed_sensitive_paths);
    else if (!strcmp(key, "api_max_connections")) r = set_int(v, &c->api_max_connections);
    else if (!strcmp(key, "api_max_connections_per_address")) r = set_int(v, &c->api_max_connections_per_address);
    else if (!strcmp(key, "api_request_head_timeout")) r = set_int_range(v, 3600, &c->api_request_head_timeout);
    else if (!strcmp(key, "log")) {
        if (strcmp(v, "auto") && strcmp(v, "journald") && strcmp(v, "stderr")) r = -EINVAL;
        else set_str(&c->log, v);
    } else
        return dg_error_set(err, -EINVAL, "unknown setting");
    if (r < 0) return dg_error_set(err, -EINVAL, "invalid value '%s' (expected %s)", v, expected_form(key));
    return 0;
}

static int load_file(dg_config *c, const char *file, dg_error *err) {
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = dg_read_file(file, &text, &len);
    if (r < 0) return dg_error_set(err, r, "%s: %s", file, strerror(-r));
    dg_diags d = {0};
    dg_ynode *root = dg_yaml_parse(file, text, len, &d);
    if (!root || d.n) {
        if (d.n) dg_error_set(err, -EINVAL, "%s:%d:%d: error: %s", d.v[0].file, d.v[0].line, d.v[0].col, d.v[0].msg);
        else if (!root) dg_error_set(err, -EINVAL, "%s: error: the file is empty", file);
        dg_diags_free(&d);
        dg_ynode_free(root);
        return -EINVAL;
    }
    r = 0;
    if (root->type != DG_YMAP) {
        r = dg_error_set(err, -EINVAL, "%s:%d:%d: error: expected a mapping of settings", file, root->line, root->col);
        goto out;
    }
    for (size_t i = 0; i + 1 < root->n && r >= 0; i += 2) {
        const dg_ynode *k = root->kids[i], *v = root->kids[i + 1];
        const char *key = k->str;
        bool nested = !strcmp(key, "smtp") || !strcmp(key, "policy") || !strcmp(key, "api");
        bool known = false;
        for (size_t t = 0; t < ARRAY_SIZE(top_keys); t++) known |= !strcmp(key, top_keys[t]);
        if (!known) {
            const char *s = dg_suggest(key, top_keys, ARRAY_SIZE(top_keys));
            r = dg_error_set(err, -EINVAL, "%s:%d:%d: error: unknown setting '%s'%s%s%s", file, k->line, k->col, key,
                             s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
            break;
        }
        _cleanup_free_ char *where = xasprintf("%s:%d:%d", file, v->line, v->col);
        dg_error e2 = {0};
        if (nested) {
            if (v->type != DG_YMAP) {
                r = dg_error_set(err, -EINVAL, "%s: error: '%s' must be a mapping", where, key);
                break;
            }
            const char *const *sub = !strcmp(key, "smtp") ? smtp_keys : !strcmp(key, "api") ? api_keys : policy_keys;
            size_t nsub = !strcmp(key, "smtp")  ? ARRAY_SIZE(smtp_keys)
                          : !strcmp(key, "api") ? ARRAY_SIZE(api_keys)
                                                : ARRAY_SIZE(policy_keys);
            for (size_t j = 0; j + 1 < v->n && r >= 0; j += 2) {
                const dg_ynode *sk = v->kids[j], *sv = v->kids[j + 1];
                bool ok = false;
                for (size_t t = 0; t < nsub; t++) ok |= !strcmp(sk->str, sub[t]);
                _cleanup_free_ char *w2 = xasprintf("%s:%d:%d", file, sk->line, sk->col);
                if (!ok) {
                    const char *s = dg_suggest(sk->str, sub, nsub);
                    r = dg_error_set(err, -EINVAL, "%s: error: unknown setting '%s.%s'%s%s%s%s%s", w2, key,
                                     sk->str, s ? " (did you mean '" : "", s ? key : "", s ? "." : "", s ? s : "",
                                     s ? "'?)" : "");
                    break;
                }
                _cleanup_free_ char *full = xasprintf("%s_%s", key, sk->str);
                dg_buf val = {0};
                if (sv->type == DG_YSEQ)
                    for (size_t q = 0; q < sv->n; q++)
                        dg_buf_printf(&val, "%s%s", q ? "," : "", sv->kids[q]->str ? sv->kids[q]->str : "");
                else dg_buf_puts(&val, sv->str ? sv->str : "");
                if (apply(c, full, val.data, &e2) < 0)
                    r = dg_error_set(err, -EINVAL, "%s:%d:%d: error: %s.%s: %s", file, sv->line, sv->col, key,
                                     sk->str, e2.msg);
                dg_error_clear(&e2);
                dg_buf_free(&val);
            }
        } else if (!strcmp(key, "pools") && v->type == DG_YMAP) {
            for (size_t j = 0; j + 1 < v->n && r >= 0; j += 2) {
                int slots;
                const dg_ynode *pk = v->kids[j], *pv = v->kids[j + 1];
                if (pv->type != DG_YSCALAR)
                    r = dg_error_set(err, -EINVAL,
                                     "%s:%d:%d: error: pools.%s: pool '%s' needs a number of slots (a whole number "
                                     "from 1 to 100000), not a %s",
                                     file, pv->line, pv->col, pk->str, pk->str,
                                     pv->type == DG_YMAP ? "mapping" : "list");
                else if (set_int(pv->str, &slots) < 0)
                    r = dg_error_set(err, -EINVAL,
                                     "%s:%d:%d: error: pools.%s: invalid value '%s' (expected a number of slots, a "
                                     "whole number from 1 to 100000)",
                                     file, pv->line, pv->col, pk->str, pv->str);
                else add_pool(c, pk->str, slots);
            }
        } else if (v->type != DG_YSCALAR) {
            r = dg_error_set(err, -EINVAL, "%s: error: '%s' must be a single value", where, key);
        } else if (apply(c, key, v->str, &e2) < 0) {
            r = dg_error_set(err, -EINVAL, "%s: error: %s: %s", where, key, e2.msg);
        }
        dg_error_clear(&e2);
    }
out:
    dg_diags_free(&d);
    dg_ynode_free(root);
    return r;
}

/* connections_file: a YAML mapping `id: uri`, readable by its owner only. */
static int load_connections(dg_config *c, const char *path, dg_error *err) {
    struct stat st;
    if (stat(path, &st) < 0) return dg_error_set(err, -errno, "connections_file %s: %s", path, strerror(errno));
    if (st.st_mode & 077)
        return dg_error_set(err, -EPERM, "connections_file %s is readable by others (mode %03o); chmod 600 it", path,
                            (unsigned)(st.st_mode & 0777));
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = dg_read_file(path, &text, &len);
    if (r < 0) return dg_error_set(err, r, "connections_file %s: %s", path, strerror(-r));
    _cleanup_(dg_diags_free) dg_diags d = {0};
    dg_ynode *root = len ? dg_yaml_parse(path, text, len, &d) : NULL;
    if (!root || d.n || root->type != DG_YMAP) {
        r = dg_error_set(err, -EINVAL, "connections_file %s: expected a mapping of connection id to URI%s%s", path,
                         d.n ? ": " : "", d.n ? d.v[0].msg : "");
        dg_ynode_free(root);
        return r;
    }
    r = 0;
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        const dg_ynode *k = root->kids[i], *v = root->kids[i + 1];
        if (v->type != DG_YSCALAR || !v->str) {
            r = dg_error_set(err, -EINVAL, "%s:%d:%d: error: connection '%s' must be a URI", path, v->line, v->col,
                             k->str ? k->str : "?");
            break;
        }
        _cleanup_free_ char *id = dg_conn_id(k->str);
        json_object_set_new(c->connections, id, json_string(v->str));
    }
    dg_ynode_free(root);
    return r;
}

/* DAGD_CONN_<ID>=<uri> variables; they win over the file. */
static void env_connections(dg_config *c) {
    static const char prefix[] = "DAGD_CONN_";
    for (char **e = environ; e && *e; e++) {
        if (!dg_str_has_prefix(*e, prefix)) continue;
        const char *id = *e + sizeof prefix - 1, *eq = strchr(id, '=');
        if (!eq || eq == id) continue;
        _cleanup_free_ char *raw = xstrndup(id, (size_t)(eq - id));
        _cleanup_free_ char *key = dg_conn_id(raw);
        json_object_set_new(c->connections, key, json_string(eq + 1));
    }
}

static const char *const env_keys[] = {
    "dags_folder",      "state_dir",   "listen",    "token_file",  "parallelism",
    "pools",            "backend",     "docker_host", "container_log_max_size", "smtp_url",  "smtp_from",
    "smtp_user", "smtp_password", "connections_file", "policy_allow_privileged", "policy_allow_docker_socket",
    "policy_allowed_volume_prefixes", "policy_allow_host_network", "policy_allow_container_network",
    "policy_allowed_sensitive_paths", "log", "api_max_connections", "api_max_connections_per_address",
    "api_request_head_timeout"};

int dg_config_load(const char *file, dg_config *ret, dg_error *err) {
    dg_config c = {.parallelism = 32, .api_max_connections = 1024, .api_max_connections_per_address = 64,
                   .api_request_head_timeout = 10};
    int r = 0;
    if (file && (r = load_file(&c, file, err)) < 0) goto fail;
    for (size_t i = 0; i < ARRAY_SIZE(env_keys); i++) {
        _cleanup_free_ char *name = xasprintf("DAGD_%s", env_keys[i]);
        for (char *p = name; *p; p++)
            if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
        const char *v = getenv(name);
        if (!v || !*v) continue;
        dg_error e = {0};
        if ((r = apply(&c, env_keys[i], v, &e)) < 0) {
            dg_error_set(err, r, "%s: %s", name, e.msg);
            dg_error_clear(&e);
            goto fail;
        }
    }
    const char *tok = getenv("DAGD_TOKEN");
    if (tok && *tok) c.token = xstrdup(tok);
    c.connections = json_object();
    if (c.connections_file && (r = load_connections(&c, c.connections_file, err)) < 0) goto fail;
    env_connections(&c);
    if (!c.dags_folder) c.dags_folder = xstrdup("dags");
    if (!c.state_dir) c.state_dir = dg_config_default_state_dir();
    if (!c.listen) c.listen = xstrdup("127.0.0.1:8080");
    if (!c.backend) c.backend = xstrdup("local");
    if (!c.log) c.log = xstrdup("auto");
    if (!c.container_log_max_size) c.container_log_max_size = xstrdup("1g");
    *ret = c;
    return 0;
fail:
    dg_config_free(&c);
    return r;
}

void dg_config_set_pools(dg_config *c, const dg_config_pool *pools, size_t n) {
    for (size_t i = 0; i < c->n_pools; i++) free(c->pools[i].name);
    free(c->pools);
    c->pools = xcalloc(n + 1, sizeof *c->pools);
    for (size_t i = 0; i < n; i++) {
        c->pools[i].name = xstrdup(pools[i].name);
        c->pools[i].slots = pools[i].slots;
    }
    c->n_pools = n;
}

void dg_config_copy(dg_config *dst, const dg_config *src) {
    *dst = *src;
    dst->dags_folder = xstrdup(src->dags_folder);
    dst->state_dir = xstrdup(src->state_dir);
    dst->listen = xstrdup(src->listen);
    dst->token_file = xstrdup(src->token_file);
    dst->token = xstrdup(src->token);
    dst->pools = NULL;
    dst->n_pools = 0;
    dg_config_set_pools(dst, src->pools, src->n_pools);
    dst->backend = xstrdup(src->backend);
    dst->docker_host = xstrdup(src->docker_host);
    dst->container_log_max_size = xstrdup(src->container_log_max_size);
    dst->smtp_url = xstrdup(src->smtp_url);
    dst->smtp_from = xstrdup(src->smtp_from);
    dst->smtp_user = xstrdup(src->smtp_user);
    dst->smtp_password = xstrdup(src->smtp_password);
    dst->connections = src->connections ? json_deep_copy(src->connections) : NULL;
    dst->connections_file = xstrdup(src->connections_file);
    dst->allowed_volume_prefixes = dg_strv_copy(src->allowed_volume_prefixes);
    dst->allowed_sensitive_paths = dg_strv_copy(src->allowed_sensitive_paths);
    dst->log = xstrdup(src->log);
}

void dg_config_free(dg_config *c) {
    if (!c) return;
    free(c->dags_folder);
    free(c->state_dir);
    free(c->listen);
    free(c->token_file);
    free(c->token);
    for (size_t i = 0; i < c->n_pools; i++) free(c->pools[i].name);
    free(c->pools);
    free(c->backend);
    free(c->docker_host);
    free(c->container_log_max_size);
    free(c->smtp_url);
    free(c->smtp_from);
    free(c->smtp_user);
    free(c->smtp_password);
    json_decref(c->connections);
    free(c->connections_file);
    dg_strv_free(c->allowed_volume_prefixes);
    dg_strv_free(c->allowed_sensitive_paths);
    free(c->log);
    memset(c, 0, sizeof *c);
}
