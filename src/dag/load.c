/* dag/load — walks the marked YAML tree (include/dagd/yaml.h) of one DAG file (docs/dags.md), checks
 * every key and value, and builds the immutable dg_dag: defaults applied, notification,
 * connection and pool names checked, templates judged (through tmpl), dependencies linked,
 * cycles found, topological order computed. Every problem becomes a dg_diag at the
 * line:col of the offending node and the walk goes on, so one pass reports everything.
 * The dg_dag is handed out only when there was no problem at all. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dagd/cron.h"
#include "dagd/dag.h"
#include "dagd/tmpl.h"
#include "dagd/yaml.h"

#define MAX_FILE_SIZE (8 * 1024 * 1024)
#define MAX_ERRORS 500
#define ZONEINFO_DIR "/usr/share/zoneinfo"

typedef dg_ynode node;

typedef struct ctx {
    const char *file;
    dg_diags *diags;
    size_t first_diag; /* diags before this index are the caller's */
    size_t n_errors;
    const dg_dag_opts *opts;
    dg_dag *dag;
    const node *notifications; /* the `notifications` mapping, for name checks */
    const node **deps;         /* per task: its depends_on node, for marks */
} ctx;

/* Defaults are checked once on their own and again for each task they apply to; the
 * repeat lands on the same node with the same text and is dropped here. */
static void err_at(ctx *c, const node *n, const char *fmt, ...) _printf_(3, 4);
static void err_at(ctx *c, const node *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0) abort();
    va_end(ap);
    int line = n ? n->line : 0, col = n ? n->col : 0;
    for (size_t i = c->first_diag; i < c->diags->n; i++) {
        const dg_diag *d = &c->diags->v[i];
        if (d->line == line && d->col == col && strcmp(d->msg, msg) == 0) {
            free(msg);
            return;
        }
    }
    if (c->n_errors < MAX_ERRORS)
        dg_diags_add(c->diags, c->file, line, col, "%s", msg);
    else if (c->n_errors == MAX_ERRORS)
        dg_diags_add(c->diags, c->file, line, col, "too many errors (%d); stopping here",
                     MAX_ERRORS);
    c->n_errors++;
    free(msg);
}

/* ---- scalar resolution (YAML 1.2 core schema; quoted scalars are always strings) ---- */

static bool is_null(const node *n) {
    return n->type == DG_YSCALAR && !n->quoted &&
           (!*n->str || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
            strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0);
}

static bool scalar_bool(const node *n, bool *ret) {
    if (n->type != DG_YSCALAR || n->quoted) return false;
    if (!strcmp(n->str, "true") || !strcmp(n->str, "True") || !strcmp(n->str, "TRUE"))
        return *ret = true, true;
    if (!strcmp(n->str, "false") || !strcmp(n->str, "False") || !strcmp(n->str, "FALSE"))
        return *ret = false, true;
    return false;
}

static bool scalar_int(const node *n, long long *ret) {
    if (n->type != DG_YSCALAR || n->quoted) return false;
    const char *s = n->str;
    if (*s == '-' || *s == '+') s++;
    if (!*s || strspn(s, "0123456789") != strlen(s)) return false;
    errno = 0;
    long long v = strtoll(n->str, NULL, 10);
    if (errno) return false;
    *ret = v;
    return true;
}

static bool scalar_float(const node *n, double *ret) {
    if (n->type != DG_YSCALAR || n->quoted || !*n->str) return false;
    if (strspn(n->str, "0123456789.eE+-") != strlen(n->str)) return false;
    char *end;
    double v = strtod(n->str, &end);
    if (*end || !isfinite(v)) return false;
    *ret = v;
    return true;
}

static const char *type_name(const node *n) {
    long long i;
    double d;
    bool b;
    if (n->type == DG_YMAP) return "a mapping";
    if (n->type == DG_YSEQ) return "a list";
    if (is_null(n)) return "null";
    if (scalar_bool(n, &b)) return "a boolean";
    if (scalar_int(n, &i)) return "an integer";
    if (scalar_float(n, &d)) return "a number";
    return "a string";
}

/* ---- typed getters: each reports its own error and says whether it succeeded ---- */

static bool get_str(ctx *c, const node *n, const char *key, char **ret) {
    if (n->type != DG_YSCALAR) {
        err_at(c, n, "'%s' must be a string, not %s", key, type_name(n));
        return false;
    }
    free(*ret);
    *ret = xstrdup(n->str);
    return true;
}

static bool get_int(ctx *c, const node *n, const char *key, long long min, long long max,
                    int *ret) {
    long long v;
    if (!scalar_int(n, &v)) {
        err_at(c, n, "'%s' must be an integer, not %s", key, type_name(n));
        return false;
    }
    if (v < min) {
        err_at(c, n, "'%s' must be at least %lld, got %lld", key, min, v);
        return false;
    }
    if (v > max) {
        err_at(c, n, "'%s' must be at most %lld, got %lld", key, max, v);
        return false;
    }
    *ret = (int)v;
    return true;
}

static bool get_bool(ctx *c, const node *n, const char *key, bool *ret) {
    if (!scalar_bool(n, ret)) {
        err_at(c, n, "'%s' must be true or false, not %s", key, type_name(n));
        return false;
    }
    return true;
}

static bool get_duration(ctx *c, const node *n, const char *key, bool positive, int64_t *ret) {
    int64_t ms;
    if (n->type != DG_YSCALAR || dg_parse_duration(n->str, &ms) < 0) {
        if (n->type == DG_YSCALAR)
            err_at(c, n, "bad duration '%.100s' for '%s' (use e.g. 500ms, 30s, 5m, 2h, 1d, 1h30m)",
                   n->str, key);
        else
            err_at(c, n, "'%s' must be a duration like 30s or 5m, not %s", key, type_name(n));
        return false;
    }
    if (positive && ms <= 0) {
        err_at(c, n, "'%s' must be longer than 0", key);
        return false;
    }
    *ret = ms;
    return true;
}

static bool get_size(ctx *c, const node *n, const char *key, int64_t *ret) {
    int64_t v;
    if (n->type != DG_YSCALAR || dg_parse_size(n->str, &v) < 0) {
        if (n->type == DG_YSCALAR)
            err_at(c, n, "bad size '%.100s' for '%s' (use e.g. 512m, 2g)", n->str, key);
        else
            err_at(c, n, "'%s' must be a size like 512m or 2g, not %s", key, type_name(n));
        return false;
    }
    *ret = v;
    return true;
}

/* A list of scalars as strings; with single, a lone scalar counts as a one-item list. */
static bool get_strv(ctx *c, const node *n, const char *key, bool single, char ***ret) {
    if (n->type == DG_YSCALAR && single) {
        char **v = xcalloc(2, sizeof(char *));
        v[0] = xstrdup(n->str);
        dg_strv_free(*ret);
        *ret = v;
        return true;
    }
    if (n->type != DG_YSEQ) {
        err_at(c, n, "'%s' must be a list%s, not %s", key, single ? " or a string" : "",
               type_name(n));
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < n->n; i++) {
        const node *it = n->kids[i];
        if (it->type != DG_YSCALAR || is_null(it)) {
            err_at(c, it, "items of '%s' must be strings, not %s", key, type_name(it));
            ok = false;
        }
    }
    if (!ok) return false;
    char **v = xcalloc(n->n + 1, sizeof(char *));
    for (size_t i = 0; i < n->n; i++) v[i] = xstrdup(n->kids[i]->str);
    dg_strv_free(*ret);
    *ret = v;
    return true;
}

/* `command`/`entrypoint`: a list is the exec form; a string is split like a shell would. */
static bool get_argv(ctx *c, const node *n, const char *key, char ***ret) {
    if (n->type == DG_YSCALAR) {
        char **v;
        if (dg_split_words(n->str, &v, NULL) < 0) {
            err_at(c, n, "'%s' has an unbalanced quote", key);
            return false;
        }
        dg_strv_free(*ret);
        *ret = v;
        return true;
    }
    return get_strv(c, n, key, false, ret);
}

static void report_unknown(ctx *c, const node *key, const char *where, const char *const *cands,
                           size_t n) {
    if (strcmp(key->str, "<<") == 0) {
        err_at(c, key, "merge keys ('<<') are not supported%s; use 'defaults' for shared settings",
               where);
        return;
    }
    const char *s = strlen(key->str) <= 64 ? dg_suggest(key->str, cands, n) : NULL;
    if (s)
        err_at(c, key, "unknown key '%.100s'%s (did you mean '%s'?)", key->str, where, s);
    else
        err_at(c, key, "unknown key '%.100s'%s", key->str, where);
}

/* Sorts a mapping's values into slots by key; keys[i] == NULL marks a slot not allowed
 * here. Null values count as absent. Unknown keys are reported with a suggestion. */
static void collect(ctx *c, const node *map, const char *const *keys, size_t n_keys,
                    const node **ret_keys, const node **ret_vals, const char *where) {
    _cleanup_free_ const char **cands = xcalloc(n_keys, sizeof(char *));
    size_t n_cands = 0;
    for (size_t i = 0; i < n_keys; i++)
        if (keys[i]) cands[n_cands++] = keys[i];
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const node *k = map->kids[i], *v = map->kids[i + 1];
        if (k->type != DG_YSCALAR || k->dup) continue;
        size_t j;
        for (j = 0; j < n_keys; j++)
            if (keys[j] && strcmp(keys[j], k->str) == 0) break;
        if (j == n_keys) {
            report_unknown(c, k, where, cands, n_cands);
            continue;
        }
        if (ret_keys) ret_keys[j] = k;
        ret_vals[j] = is_null(v) ? NULL : v;
    }
}

static bool valid_id(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 200) return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static bool templated(const char *s) { return strstr(s, "{{") != NULL; }

/* Templates are judged with the rest of the file (docs/dags.md, "Validation"), so a typo
 * fails validation and not a try at 3 a.m.; the error points at the value holding it. */
static bool check_template(ctx *c, const node *n, const char *key, const char *src, dg_tmpl_use use) {
    dg_error e = {0};
    bool ok = dg_tmpl_check(src, use, &e) >= 0;
    if (!ok) err_at(c, n, "%s: %s", key, e.msg ? e.msg : "bad template");
    dg_error_clear(&e);
    return ok;
}

/* `command`/`entrypoint`: each word is rendered on its own. A list's items are checked
 * even when another item is not a string; a string is split into words first, which cuts
 * a `{{ ds }}` written with spaces apart: say so. */
static void check_argv_templates(ctx *c, const node *n, const char *key, char **words) {
    if (n->type == DG_YSEQ) {
        for (size_t i = 0; i < n->n; i++)
            if (n->kids[i]->type == DG_YSCALAR && !is_null(n->kids[i]))
                check_template(c, n->kids[i], key, n->kids[i]->str, DG_TMPL_TASK);
        return;
    }
    for (size_t i = 0; words && words[i]; i++) {
        dg_error e = {0};
        if (dg_tmpl_check(words[i], DG_TMPL_TASK, &e) < 0) {
            dg_error whole = {0};
            if (dg_tmpl_check(n->str, DG_TMPL_TASK, &whole) >= 0)
                err_at(c, n, "%s: %s (a string '%s' is split into words before rendering: write it as "
                             "a list, or with no spaces inside {{ }})",
                       key, e.msg, key);
            else
                err_at(c, n, "%s: %s", key, whole.msg);
            dg_error_clear(&whole);
            dg_error_clear(&e);
            return;
        }
    }
}

/* ---- names defined elsewhere in the file or by the server ---- */

static bool notification_exists(ctx *c, const char *name) {
    const node *m = c->notifications;
    if (!m) return false;
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (m->kids[i]->type == DG_YSCALAR && strcmp(m->kids[i]->str, name) == 0) return true;
    return false;
}

static void check_notification(ctx *c, const node *n, const char *name, const char *key) {
    if (notification_exists(c, name)) return;
    const node *m = c->notifications;
    size_t k = 0;
    _cleanup_free_ const char **names = xcalloc(m ? m->n / 2 + 1 : 1, sizeof(char *));
    for (size_t i = 0; m && i + 1 < m->n; i += 2)
        if (m->kids[i]->type == DG_YSCALAR) names[k++] = m->kids[i]->str;
    const char *s = strlen(name) <= 64 ? dg_suggest(name, names, k) : NULL;
    if (s)
        err_at(c, n, "unknown notification '%.100s' in '%s' (did you mean '%s'?)", name, key, s);
    else
        err_at(c, n, "unknown notification '%.100s' in '%s' (define it under 'notifications')",
               name, key);
}

/* Names a list (or single string) of notifications; checks each against `notifications`. */
static void get_notify_list(ctx *c, const node *n, const char *key, char ***ret) {
    if (!get_strv(c, n, key, true, ret)) return;
    for (size_t i = 0; (*ret)[i]; i++)
        check_notification(c, n->type == DG_YSEQ ? n->kids[i] : n, (*ret)[i], key);
}

static void check_name_in(ctx *c, const node *n, const char *name, const char *what,
                          const char *const *known) {
    size_t k = dg_strv_len((char *const *)known);
    for (size_t i = 0; i < k; i++)
        if (strcmp(known[i], name) == 0) return;
    const char *s = strlen(name) <= 64 ? dg_suggest(name, known, k) : NULL;
    if (s)
        err_at(c, n, "unknown %s '%.100s' (did you mean '%s'?)", what, name, s);
    else
        err_at(c, n, "unknown %s '%.100s'", what, name);
}

/* A pool the configuration does not define would bound nothing: name the ones there are,
 * and how to add one (docs/daemon.md, "Configuration"). */
static void check_pool(ctx *c, const node *n, const char *name, const char *const *known) {
    size_t k = dg_strv_len((char *const *)known);
    for (size_t i = 0; i < k; i++)
        if (strcmp(known[i], name) == 0) return;
    dg_buf b = {0};
    for (size_t i = 0; i < k; i++) dg_buf_printf(&b, "%s%s", i == 0 ? "" : i + 1 == k ? " and " : ", ", known[i]);
    const char *s = strlen(name) <= 64 ? dg_suggest(name, known, k) : NULL;
    if (s)
        err_at(c, n, "unknown pool '%.100s' (did you mean '%s'? the pools are %s)", name, s, b.data);
    else
        err_at(c, n, "unknown pool '%.100s' (%s %s; define it under 'pools' in the configuration file, "
                     "or in DAGD_POOLS as %.100s=SLOTS)",
               name, k > 1 ? "the pools are" : "no pools are configured, only", b.data ? b.data : "", name);
    dg_buf_free(&b);
}

static void check_timezone(ctx *c, const node *n, const char *tz) {
    if (strcmp(tz, "UTC") == 0) return;
    bool ok = *tz && tz[0] != '/' && !strstr(tz, "..") && strlen(tz) < 200 &&
              strspn(tz, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") ==
                  strlen(tz);
    if (ok) {
        _cleanup_free_ char *path = xasprintf("%s/%s", ZONEINFO_DIR, tz);
        char magic[4] = {0};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        ok = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
             read(fd, magic, 4) == 4 && memcmp(magic, "TZif", 4) == 0;
        if (fd >= 0) close(fd);
    }
    if (!ok) err_at(c, n, "unknown timezone '%.100s' (use an IANA name like Europe/Paris, or UTC)", tz);
}

/* ---- values with a shape of their own ---- */

static json_t *to_json(const node *n) {
    if (n->type == DG_YMAP) {
        json_t *o = json_object();
        for (size_t i = 0; i + 1 < n->n; i += 2)
            if (n->kids[i]->type == DG_YSCALAR)
                json_object_set_new(o, n->kids[i]->str, to_json(n->kids[i + 1]));
        return o;
    }
    if (n->type == DG_YSEQ) {
        json_t *a = json_array();
        for (size_t i = 0; i < n->n; i++) json_array_append_new(a, to_json(n->kids[i]));
        return a;
    }
    long long i;
    double d;
    bool b;
    if (is_null(n)) return json_null();
    if (scalar_bool(n, &b)) return json_boolean(b);
    if (scalar_int(n, &i)) return json_integer(i);
    if (scalar_float(n, &d)) return json_real(d);
    return json_string(n->str);
}

static void kv_push(dg_kv **v, size_t *n, const char *key, const char *value, bool secret) {
    *v = xrealloc(*v, (*n + 1) * sizeof(dg_kv));
    (*v)[(*n)++] = (dg_kv){xstrdup(key), xstrdup(value), secret};
}

static void kv_reset(dg_kv **v, size_t *n) {
    for (size_t i = 0; i < *n; i++) {
        free((*v)[i].key);
        free((*v)[i].value);
    }
    free(*v);
    *v = NULL;
    *n = 0;
}

static void get_env(ctx *c, const node *n, dg_task *t) {
    if (n->type != DG_YMAP) {
        err_at(c, n, "'env' must be a mapping of NAME: value, not %s", type_name(n));
        return;
    }
    kv_reset(&t->env, &t->n_env);
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const node *k = n->kids[i], *v = n->kids[i + 1];
        if (k->type != DG_YSCALAR || k->dup) continue;
        if (!*k->str || strchr(k->str, '=')) {
            err_at(c, k, "bad environment variable name '%.100s'", k->str);
            continue;
        }
        _cleanup_free_ char *key = xasprintf("env '%.100s'", k->str);
        if (v->type == DG_YSCALAR && !is_null(v)) {
            kv_push(&t->env, &t->n_env, k->str, v->str, false);
            check_template(c, v, key, v->str, DG_TMPL_TASK);
            continue;
        }
        if (v->type == DG_YMAP && v->n == 2 && v->kids[0]->type == DG_YSCALAR &&
            strcmp(v->kids[0]->str, "secret") == 0 && v->kids[1]->type == DG_YSCALAR &&
            !is_null(v->kids[1])) {
            kv_push(&t->env, &t->n_env, k->str, v->kids[1]->str, true);
            check_template(c, v->kids[1], key, v->kids[1]->str, DG_TMPL_TASK);
            continue;
        }
        err_at(c, v, "env '%.100s' must be a string or {secret: value}", k->str);
    }
}

static void get_labels(ctx *c, const node *n, dg_task *t) {
    kv_reset(&t->labels, &t->n_labels);
    if (n->type == DG_YMAP) {
        for (size_t i = 0; i + 1 < n->n; i += 2) {
            const node *k = n->kids[i], *v = n->kids[i + 1];
            if (k->type != DG_YSCALAR || k->dup) continue;
            if (v->type != DG_YSCALAR) {
                err_at(c, v, "label '%.100s' must be a string, not %s", k->str, type_name(v));
                continue;
            }
            kv_push(&t->labels, &t->n_labels, k->str, is_null(v) ? "" : v->str, false);
        }
        return;
    }
    if (n->type == DG_YSEQ) {
        for (size_t i = 0; i < n->n; i++) {
            const node *it = n->kids[i];
            const char *eq = it->type == DG_YSCALAR ? strchr(it->str, '=') : NULL;
            if (!eq || eq == it->str) {
                err_at(c, it, "labels given as a list must be \"key=value\" strings");
                continue;
            }
            _cleanup_free_ char *k = xstrndup(it->str, (size_t)(eq - it->str));
            kv_push(&t->labels, &t->n_labels, k, eq + 1, false);
        }
        return;
    }
    err_at(c, n, "'labels' must be a mapping or a list of \"key=value\", not %s", type_name(n));
}

static bool abs_or_templated(const char *s) { return s[0] == '/' || templated(s); }

/* Compose short syntax: "dst", "src:dst" or "src:dst:ro|rw". */
static void check_volume(ctx *c, const node *n, const char *v) {
    _cleanup_free_ char *s = xstrdup(v);
    char *parts[4];
    size_t k = 0;
    for (char *p = s, *colon; k < 4; p = colon + 1) {
        parts[k++] = p;
        colon = strchr(p, ':');
        if (!colon) break;
        *colon = 0;
        if (k == 4) break;
    }
    bool ok;
    if (k == 1)
        ok = abs_or_templated(parts[0]);
    else if (k == 2 || k == 3)
        ok = *parts[0] && abs_or_templated(parts[1]) &&
             (k == 2 || strcmp(parts[2], "ro") == 0 || strcmp(parts[2], "rw") == 0);
    else
        ok = false;
    if (!ok)
        err_at(c, n,
               "bad volume '%.100s' (use \"/host/path:/container/path[:ro|rw]\", "
               "\"name:/container/path\" or \"/container/path\")",
               v);
}

static void check_extra_host(ctx *c, const node *n, const char *v) {
    const char *colon = strchr(v, ':');
    bool ok = colon && colon != v;
    if (ok) {
        const char *ip = colon + 1;
        unsigned char buf[16];
        ok = strcmp(ip, "host-gateway") == 0 || inet_pton(AF_INET, ip, buf) == 1 ||
             inet_pton(AF_INET6, ip, buf) == 1;
    }
    if (!ok) err_at(c, n, "bad extra_hosts entry '%.100s' (use \"host:ip\")", v);
}

static void get_skip_codes(ctx *c, const node *n, dg_task *t) {
    size_t count = n->type == DG_YSEQ ? n->n : 1;
    _cleanup_free_ int *codes = xcalloc(count ? count : 1, sizeof(int));
    bool ok = true;
    for (size_t i = 0; i < count; i++) {
        const node *it = n->type == DG_YSEQ ? n->kids[i] : n;
        if (it->type == DG_YMAP || it->type == DG_YSEQ) {
            err_at(c, it, "'skip_on_exit_code' must be a list of integers 0-255");
            ok = false;
            continue;
        }
        if (!get_int(c, it, "skip_on_exit_code", 0, 255, &codes[i])) ok = false;
    }
    if (!ok) return;
    free(t->skip_on_exit_code);
    t->skip_on_exit_code = TAKE_PTR(codes);
    t->n_skip_on_exit_code = count;
}

static const char *const resource_keys[] = {"cpus", "memory"};

static void get_resources(ctx *c, const node *n, dg_task *t) {
    if (n->type != DG_YMAP) {
        err_at(c, n, "'resources' must be a mapping {cpus, memory}, not %s", type_name(n));
        return;
    }
    const node *v[2] = {0};
    collect(c, n, resource_keys, 2, NULL, v, " in resources");
    double cpus;
    if (v[0]) {
        if (!scalar_float(v[0], &cpus) || cpus <= 0 || cpus > 1e6)
            err_at(c, v[0], "'cpus' must be a number greater than 0, not %s%s%.50s%s",
                   type_name(v[0]), v[0]->type == DG_YSCALAR ? " '" : "",
                   v[0]->type == DG_YSCALAR ? v[0]->str : "", v[0]->type == DG_YSCALAR ? "'" : "");
        else
            t->cpus = cpus;
    }
    if (v[1]) get_size(c, v[1], "memory", &t->memory);
}

/* placement: {constraints: [...], preferences: [...]}, for the swarm backend
 * (docs/dags.md, "Placement"); the local backend has one node and ignores it. */
static void get_placement(ctx *c, const node *n, dg_task *t) {
    if (n->type != DG_YMAP) {
        err_at(c, n, "'placement' must be a mapping {constraints, preferences}, not %s", type_name(n));
        return;
    }
    static const char *const keys[] = {"constraints", "preferences"};
    const node *v[2] = {0};
    collect(c, n, keys, 2, NULL, v, " in placement");
    if (v[0] && get_strv(c, v[0], "constraints", false, &t->placement_constraints))
        for (size_t i = 0; t->placement_constraints[i]; i++) {
            const char *x = t->placement_constraints[i];
            if (!strstr(x, "==") && !strstr(x, "!="))
                err_at(c, v[0]->type == DG_YSEQ ? v[0]->kids[i] : v[0],
                       "bad placement constraint '%.100s' (use \"node.hostname==NAME\", \"node.role!=manager\", "
                       "\"node.labels.KEY==VALUE\")", x);
        }
    if (v[1] && get_strv(c, v[1], "preferences", false, &t->placement_preferences))
        for (size_t i = 0; t->placement_preferences[i]; i++)
            if (strncmp(t->placement_preferences[i], "spread=", 7) != 0 || !t->placement_preferences[i][7])
                err_at(c, v[1]->type == DG_YSEQ ? v[1]->kids[i] : v[1],
                       "bad placement preference '%.100s' (use \"spread=node.labels.KEY\")",
                       t->placement_preferences[i]);
}

static void get_output(ctx *c, const node *n, dg_task *t) {
    if (n->type != DG_YMAP) {
        err_at(c, n, "'output' must be a mapping {file: /absolute/path}, not %s", type_name(n));
        return;
    }
    static const char *const keys[] = {"file"};
    const node *v[1] = {0};
    collect(c, n, keys, 1, NULL, v, " in output");
    if (!v[0]) {
        err_at(c, n, "'output' needs a 'file' (an absolute path in the container)");
        return;
    }
    if (!get_str(c, v[0], "file", &t->output_file)) return;
    if (t->output_file[0] != '/')
        err_at(c, v[0], "output file must be an absolute path, got '%.100s'", t->output_file);
}

/* One of a few fixed words; reports the nearest when the word is unknown. */
static int get_enum(ctx *c, const node *n, const char *key, const char *const *words, size_t nw) {
    if (n->type != DG_YSCALAR) {
        err_at(c, n, "'%s' must be a string, not %s", key, type_name(n));
        return -1;
    }
    for (size_t i = 0; i < nw; i++)
        if (strcmp(n->str, words[i]) == 0) return (int)i;
    dg_buf b = {0};
    for (size_t i = 0; i < nw; i++) dg_buf_printf(&b, "%s%s", i ? ", " : "", words[i]);
    const char *s = strlen(n->str) <= 64 ? dg_suggest(n->str, words, nw) : NULL;
    if (s)
        err_at(c, n, "bad %s '%.100s' (did you mean '%s'?)", key, n->str, s);
    else
        err_at(c, n, "bad %s '%.100s' (expected one of: %s)", key, n->str, b.data);
    dg_buf_free(&b);
    return -1;
}

enum {
    S_FILE, S_DAG, S_HTTP, S_COMMAND, S_IMAGE, S_TASK, S_ALLOWED_STATES, S_FAILED_STATES, S_DELTA,
    S_STATUS, S_BODY, S_REQUEST_TIMEOUT, S_INTERVAL, S_TIMEOUT, S_MODE, S_SOFT_FAIL, S__MAX
};
static const char *const sensor_keys[S__MAX] = {
    "file", "dag", "http", "command", "image", "task", "allowed_states", "failed_states", "delta",
    "status", "body", "request_timeout", "interval", "timeout", "mode", "soft_fail",
};
/* which kind each key belongs to (-1: every kind) */
static const int sensor_key_kind[S__MAX] = {
    DG_SENSOR_FILE, DG_SENSOR_DAG, DG_SENSOR_HTTP, DG_SENSOR_COMMAND, DG_SENSOR_COMMAND,
    DG_SENSOR_DAG, DG_SENSOR_DAG, DG_SENSOR_DAG, DG_SENSOR_DAG,
    DG_SENSOR_HTTP, DG_SENSOR_HTTP, DG_SENSOR_HTTP, -1, -1, -1, -1,
};
static const char *const sensor_kind_names[] = {"file", "dag", "http", "command"};
/* the states a dag sensor may name: a run's, and a task instance's */
static const char *const run_state_words[] = {"queued", "running", "success", "failed"};
static const char *const ti_state_words[] = {"none", "scheduled", "queued", "running", "success", "failed",
                                             "up_for_retry", "upstream_failed", "skipped"};

static void get_states(ctx *c, const node *n, const char *key, bool of_task, char ***ret) {
    if (!get_strv(c, n, key, true, ret)) return;
    const char *const *words = of_task ? ti_state_words : run_state_words;
    size_t nw = of_task ? ARRAY_SIZE(ti_state_words) : ARRAY_SIZE(run_state_words);
    for (size_t i = 0; (*ret)[i]; i++)
        get_enum(c, n->type == DG_YSEQ ? n->kids[i] : n, of_task ? "task state" : "run state", words, nw);
}

static void get_sensor(ctx *c, const node *n, dg_task *t, const char *where) {
    dg_sensor *se = &t->sensor;
    if (n->type != DG_YMAP) {
        err_at(c, n, "'sensor' must be a mapping with one of file, dag, http or command, not %s", type_name(n));
        return;
    }
    const node *v[S__MAX] = {0}, *k[S__MAX] = {0};
    collect(c, n, sensor_keys, S__MAX, k, v, where);
    int kinds = !!v[S_FILE] + !!v[S_DAG] + !!v[S_HTTP] + !!v[S_COMMAND];
    if (kinds == 0) {
        err_at(c, n, "sensor needs one of 'file', 'dag', 'http' or 'command' (what it checks)");
        return;
    }
    if (kinds > 1) {
        dg_buf b = {0};
        for (int i = S_FILE; i <= S_COMMAND; i++)
            if (v[i]) dg_buf_printf(&b, "%s%s", b.len ? " and " : "", sensor_keys[i]);
        err_at(c, n, "sensor checks more than one thing (%s): set exactly one of file, dag, http or command",
               b.data);
        dg_buf_free(&b);
        return;
    }
    se->kind = v[S_FILE] ? DG_SENSOR_FILE : v[S_DAG] ? DG_SENSOR_DAG : v[S_HTTP] ? DG_SENSOR_HTTP : DG_SENSOR_COMMAND;
    for (int i = 0; i < S__MAX; i++)
        if (v[i] && sensor_key_kind[i] >= 0 && sensor_key_kind[i] != (int)se->kind)
            err_at(c, k[i], "key '%s' does not apply to %s %s sensor", sensor_keys[i],
                   se->kind == DG_SENSOR_HTTP ? "an" : "a", sensor_kind_names[se->kind]);
    switch (se->kind) {
    case DG_SENSOR_FILE:
        if (get_str(c, v[S_FILE], "file", &se->file))
            check_template(c, v[S_FILE], "sensor file", se->file, DG_TMPL_TASK);
        break;
    case DG_SENSOR_DAG:
        if (get_str(c, v[S_DAG], "dag", &se->dag_id) && !valid_id(se->dag_id))
            err_at(c, v[S_DAG], "bad DAG id '%.100s' in sensor 'dag'", se->dag_id);
        if (v[S_TASK] && get_str(c, v[S_TASK], "task", &se->task_id) && !valid_id(se->task_id))
            err_at(c, v[S_TASK], "bad task id '%.100s' in sensor 'task'", se->task_id);
        if (v[S_ALLOWED_STATES])
            get_states(c, v[S_ALLOWED_STATES], "allowed_states", v[S_TASK] != NULL, &se->allowed_states);
        if (v[S_FAILED_STATES])
            get_states(c, v[S_FAILED_STATES], "failed_states", v[S_TASK] != NULL, &se->failed_states);
        if (!se->allowed_states) {
            se->allowed_states = xcalloc(2, sizeof(char *));
            se->allowed_states[0] = xstrdup("success");
        }
        for (size_t i = 0; se->failed_states && se->failed_states[i]; i++)
            for (size_t j = 0; se->allowed_states[j]; j++)
                if (strcmp(se->failed_states[i], se->allowed_states[j]) == 0)
                    err_at(c, v[S_FAILED_STATES] ? v[S_FAILED_STATES] : n,
                           "state '%s' is both allowed and failed", se->failed_states[i]);
        if (v[S_DELTA]) {
            /* a duration, or minus one: the other run is `delta` before (after) this one's date */
            const node *d = v[S_DELTA];
            bool neg = d->type == DG_YSCALAR && d->str[0] == '-';
            node tmp = *d;
            if (neg) tmp.str = d->str + 1;
            if (get_duration(c, &tmp, "delta", false, &se->delta_ms) && neg) se->delta_ms = -se->delta_ms;
        }
        break;
    case DG_SENSOR_HTTP:
        if (get_str(c, v[S_HTTP], "http", &se->url)) {
            if (!check_template(c, v[S_HTTP], "sensor http", se->url, DG_TMPL_TASK)) break;
            if (!templated(se->url) && strncmp(se->url, "http://", 7) != 0 && strncmp(se->url, "https://", 8) != 0)
                err_at(c, v[S_HTTP], "sensor 'http' must be an http:// or https:// URL, got '%.100s'", se->url);
        }
        if (v[S_STATUS]) get_int(c, v[S_STATUS], "status", 100, 599, &se->status);
        if (v[S_BODY] && get_str(c, v[S_BODY], "body", &se->body) &&
            check_template(c, v[S_BODY], "sensor body", se->body, DG_TMPL_TASK) && !templated(se->body)) {
            regex_t re;
            int r = regcomp(&re, se->body, REG_EXTENDED | REG_NOSUB | REG_NEWLINE);
            if (r != 0) {
                char msg[128];
                regerror(r, &re, msg, sizeof msg);
                err_at(c, v[S_BODY], "sensor 'body' is not a valid regular expression: %s", msg);
            } else {
                regfree(&re);
            }
        }
        if (v[S_REQUEST_TIMEOUT]) get_duration(c, v[S_REQUEST_TIMEOUT], "request_timeout", true, &se->request_timeout_ms);
        break;
    case DG_SENSOR_COMMAND:
        if (!v[S_IMAGE]) {
            err_at(c, n, "a command sensor needs an 'image' for its probe container");
        } else if (get_str(c, v[S_IMAGE], "image", &t->image)) {
            if (!*t->image) err_at(c, v[S_IMAGE], "'image' is empty");
            else check_template(c, v[S_IMAGE], "image", t->image, DG_TMPL_TASK);
        }
        if (get_argv(c, v[S_COMMAND], "command", &t->command) || v[S_COMMAND]->type == DG_YSEQ)
            check_argv_templates(c, v[S_COMMAND], "command", t->command);
        break;
    }
    if (v[S_INTERVAL]) get_duration(c, v[S_INTERVAL], "interval", true, &se->interval_ms);
    if (v[S_TIMEOUT]) get_duration(c, v[S_TIMEOUT], "timeout", true, &se->timeout_ms);
    if (v[S_MODE]) {
        static const char *const modes[] = {"poke", "reschedule"};
        int r = get_enum(c, v[S_MODE], "sensor mode", modes, 2);
        if (r >= 0) se->reschedule = r == 1;
    }
    if (v[S_SOFT_FAIL]) get_bool(c, v[S_SOFT_FAIL], "soft_fail", &se->soft_fail);
}

/* ---- tasks ---- */

enum {
    K_IMAGE, K_SENSOR, K_NOTIFY,
    K_COMMAND, K_ENTRYPOINT, K_ENV, K_ENV_FILE, K_WORKING_DIR, K_USER, K_NETWORK, K_VOLUMES,
    K_RESOURCES, K_PULL, K_REMOVE, K_SKIP_ON_EXIT_CODE, K_PRIVILEGED, K_LABELS, K_HOSTNAME,
    K_EXTRA_HOSTS, K_SHM_SIZE, K_CONNECTIONS, K_PLACEMENT, K_OUTPUT,
    K_DEPENDS_ON, K_TRIGGER_RULE, K_RETRIES, K_RETRY_DELAY, K_RETRY_EXPONENTIAL_BACKOFF,
    K_MAX_RETRY_DELAY, K_TIMEOUT, K_POOL, K_PRIORITY_WEIGHT, K_DEPENDS_ON_PAST, K_ON_FAILURE,
    K_ON_SUCCESS, K_ON_RETRY, K_DOC,
    K__MAX
};
#define K_FIRST_CONTAINER K_COMMAND
#define K_LAST_CONTAINER K_OUTPUT

static const char *const task_keys[K__MAX] = {
    "image", "sensor", "notify",
    "command", "entrypoint", "env", "env_file", "working_dir", "user", "network", "volumes",
    "resources", "pull", "remove", "skip_on_exit_code", "privileged", "labels", "hostname",
    "extra_hosts", "shm_size", "connections", "placement", "output",
    "depends_on", "trigger_rule", "retries", "retry_delay", "retry_exponential_backoff",
    "max_retry_delay", "timeout", "pool", "priority_weight", "depends_on_past", "on_failure",
    "on_success", "on_retry", "doc",
};

static const char *const pull_words[] = {"missing", "always", "never"};
static const char *const remove_words[] = {"always", "on_success", "never"};

/* A command sensor's probe container takes the container keys but its command (in the
 * sensor) and what only a task's own container has (its exit codes, output, removal). */
static bool key_applies(int k, const dg_task *t) {
    if (k >= K_FIRST_CONTAINER && k <= K_LAST_CONTAINER) {
        if (t->kind == DG_KIND_CONTAINER) return true;
        return t->kind == DG_KIND_SENSOR && t->sensor.kind == DG_SENSOR_COMMAND && k != K_COMMAND &&
               k != K_OUTPUT && k != K_SKIP_ON_EXIT_CODE && k != K_REMOVE;
    }
    return true;
}

static const char *kind_name(dg_task_kind k) {
    return k == DG_KIND_CONTAINER ? "container" : k == DG_KIND_SENSOR ? "sensor" : "notify";
}

static void task_set_defaults(dg_task *t) {
    t->trigger_rule = DG_TR_ALL_SUCCESS;
    t->retry_delay_ms = 5 * 60 * 1000;
    t->priority_weight = 1;
    t->pull = DG_PULL_MISSING;
    t->remove = DG_REMOVE_ALWAYS;
    t->sensor.interval_ms = 60 * 1000;
    t->sensor.timeout_ms = 7LL * 24 * 3600 * 1000;
    t->sensor.status = 200;
    t->sensor.request_timeout_ms = 10 * 1000;
}

/* Messages name the key, not the task: the node's line:col already says where, and a
 * value that came from `defaults` is then reported once, at its place in `defaults`. */
static void task_value(ctx *c, dg_task *t, int k, const node *v, const char *where) {
    const char *key = task_keys[k];
    int r;
    switch (k) {
    case K_IMAGE:
        if (get_str(c, v, key, &t->image)) {
            if (!*t->image) err_at(c, v, "'image' is empty");
            else check_template(c, v, key, t->image, DG_TMPL_TASK);
        }
        break;
    case K_SENSOR: get_sensor(c, v, t, where); break;
    case K_NOTIFY:
        if (get_str(c, v, key, &t->notify)) check_notification(c, v, t->notify, key);
        break;
    case K_COMMAND:
        if (get_argv(c, v, key, &t->command) || v->type == DG_YSEQ) check_argv_templates(c, v, key, t->command);
        break;
    case K_ENTRYPOINT:
        if (get_argv(c, v, key, &t->entrypoint) || v->type == DG_YSEQ)
            check_argv_templates(c, v, key, t->entrypoint);
        break;
    case K_ENV: get_env(c, v, t); break;
    case K_ENV_FILE: get_str(c, v, key, &t->env_file); break;
    case K_WORKING_DIR:
        if (get_str(c, v, key, &t->working_dir)) check_template(c, v, key, t->working_dir, DG_TMPL_TASK);
        break;
    case K_USER: get_str(c, v, key, &t->user); break;
    case K_NETWORK: get_str(c, v, key, &t->network); break;
    case K_VOLUMES:
        get_strv(c, v, key, false, &t->volumes);
        for (size_t i = 0; v->type == DG_YSEQ && i < v->n; i++) {
            const node *it = v->kids[i];
            if (it->type == DG_YSCALAR && !is_null(it) && check_template(c, it, key, it->str, DG_TMPL_TASK))
                check_volume(c, it, it->str);
        }
        break;
    case K_RESOURCES: get_resources(c, v, t); break;
    case K_PULL:
        if ((r = get_enum(c, v, key, pull_words, ARRAY_SIZE(pull_words))) >= 0) t->pull = r;
        break;
    case K_REMOVE:
        if ((r = get_enum(c, v, key, remove_words, ARRAY_SIZE(remove_words))) >= 0)
            t->remove = r;
        break;
    case K_SKIP_ON_EXIT_CODE: get_skip_codes(c, v, t); break;
    case K_PRIVILEGED: get_bool(c, v, key, &t->privileged); break;
    case K_LABELS: get_labels(c, v, t); break;
    case K_HOSTNAME: get_str(c, v, key, &t->hostname); break;
    case K_EXTRA_HOSTS:
        if (get_strv(c, v, key, false, &t->extra_hosts))
            for (size_t i = 0; t->extra_hosts[i]; i++)
                check_extra_host(c, v->kids[i], t->extra_hosts[i]);
        break;
    case K_SHM_SIZE: get_size(c, v, key, &t->shm_size); break;
    case K_PLACEMENT: get_placement(c, v, t); break;
    case K_CONNECTIONS:
        if (get_strv(c, v, key, true, &t->connections) && c->opts && c->opts->check_connections) {
            static const char *const none[] = {NULL};
            const char *const *known = c->opts->known_connections ? c->opts->known_connections
                                                                   : none;
            for (size_t i = 0; t->connections[i]; i++)
                check_name_in(c, v->type == DG_YSEQ ? v->kids[i] : v, t->connections[i],
                              "connection", known);
        }
        break;
    case K_OUTPUT: get_output(c, v, t); break;
    case K_DEPENDS_ON: get_strv(c, v, key, true, &t->depends_on); break;
    case K_TRIGGER_RULE: {
        const char *names[_DG_TR_MAX];
        for (int i = 0; i < _DG_TR_MAX; i++) names[i] = dg_trigger_rule_name(i);
        if ((r = get_enum(c, v, key, names, _DG_TR_MAX)) >= 0) t->trigger_rule = r;
        break;
    }
    case K_RETRIES: get_int(c, v, key, 0, INT_MAX, &t->retries); break;
    case K_RETRY_DELAY: get_duration(c, v, key, false, &t->retry_delay_ms); break;
    case K_RETRY_EXPONENTIAL_BACKOFF: get_bool(c, v, key, &t->retry_exponential_backoff); break;
    case K_MAX_RETRY_DELAY: get_duration(c, v, key, true, &t->max_retry_delay_ms); break;
    case K_TIMEOUT: get_duration(c, v, key, false, &t->timeout_ms); break;
    case K_POOL:
        if (get_str(c, v, key, &t->pool) && c->opts && c->opts->known_pools)
            check_pool(c, v, t->pool, c->opts->known_pools);
        break;
    case K_PRIORITY_WEIGHT: get_int(c, v, key, -1000000, 1000000, &t->priority_weight); break;
    case K_DEPENDS_ON_PAST: get_bool(c, v, key, &t->depends_on_past); break;
    case K_ON_FAILURE: get_notify_list(c, v, key, &t->on_failure); break;
    case K_ON_SUCCESS: get_notify_list(c, v, key, &t->on_success); break;
    case K_ON_RETRY: get_notify_list(c, v, key, &t->on_retry); break;
    case K_DOC: get_str(c, v, key, &t->doc); break;
    }
}

static void load_task(ctx *c, const node *key, const node *val, const node **defaults,
                      dg_task *t, const node **deps) {
    task_set_defaults(t);
    t->id = xstrdup(key->str);
    t->line = key->line;
    t->col = key->col;
    if (!valid_id(t->id))
        err_at(c, key, "bad task id '%.100s' (use 1-200 characters from A-Z a-z 0-9 _ . -)",
               t->id);
    if (val->type != DG_YMAP && !is_null(val)) {
        err_at(c, val, "task '%.100s' must be a mapping, not %s", t->id, type_name(val));
        return;
    }
    _cleanup_free_ char *where = xasprintf(" in task '%.100s'", t->id);
    const node *vals[K__MAX] = {0}, *keys[K__MAX] = {0};
    if (val->type == DG_YMAP) collect(c, val, task_keys, K__MAX, keys, vals, where);

    int kinds = !!vals[K_IMAGE] + !!vals[K_SENSOR] + !!vals[K_NOTIFY];
    if (kinds == 0) {
        err_at(c, key, "task '%.100s' has no kind: set exactly one of image, sensor or notify",
               t->id);
    } else if (kinds > 1) {
        dg_buf b = {0};
        for (int k = K_IMAGE; k <= K_NOTIFY; k++)
            if (vals[k]) dg_buf_printf(&b, "%s%s", b.len ? " and " : "", task_keys[k]);
        err_at(c, key, "task '%.100s' has more than one kind (%s): set exactly one of image, "
                       "sensor or notify",
               t->id, b.data);
        dg_buf_free(&b);
    } else {
        t->kind = vals[K_IMAGE] ? DG_KIND_CONTAINER
                  : vals[K_SENSOR] ? DG_KIND_SENSOR : DG_KIND_NOTIFY;
    }
    *deps = vals[K_DEPENDS_ON];
    for (int k = 0; k < K__MAX; k++) {
        const node *v = vals[k];
        bool from_defaults = false;
        if (!v && !keys[k] && defaults[k]) v = defaults[k], from_defaults = true;
        if (!v) continue;
        if (t->kind == DG_KIND_NONE && !from_defaults && k > K_NOTIFY) {
            task_value(c, t, k, v, where); /* still check values of a kindless task */
            continue;
        }
        if (!key_applies(k, t)) {
            if (!from_defaults && t->kind != DG_KIND_NONE)
                err_at(c, keys[k], "key '%s' does not apply to %s task '%.100s'%s", task_keys[k],
                       kind_name(t->kind), t->id,
                       t->kind == DG_KIND_SENSOR && t->sensor.kind == DG_SENSOR_COMMAND && k == K_COMMAND
                           ? " (a command sensor's command goes in its 'sensor')"
                       : t->kind == DG_KIND_SENSOR && t->sensor.kind != DG_SENSOR_COMMAND
                           ? " (container keys apply to a command sensor's probe only)"
                           : "");
            continue;
        }
        task_value(c, t, k, v, where); /* with two kinds, both are still checked */
    }
}

/* ---- graph: links, cycles, topological order ---- */

typedef struct id_ix {
    const char *id;
    size_t ix;
} id_ix;

static int cmp_id_ix(const void *a, const void *b) {
    const id_ix *x = a, *y = b;
    int r = strcmp(x->id, y->id);
    return r ? r : (x->ix > y->ix) - (x->ix < y->ix);
}

static ssize_t find_task(const id_ix *ids, size_t n, const char *id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = strcmp(ids[mid].id, id);
        if (r == 0) return (ssize_t)ids[mid].ix;
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static void heap_push(size_t *h, size_t *n, size_t v) {
    size_t i = (*n)++;
    h[i] = v;
    while (i > 0 && h[(i - 1) / 2] > h[i]) {
        size_t p = (i - 1) / 2, tmp = h[p];
        h[p] = h[i], h[i] = tmp, i = p;
    }
}

static size_t heap_pop(size_t *h, size_t *n) {
    size_t top = h[0];
    h[0] = h[--(*n)];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && h[l] < h[m]) m = l;
        if (r < *n && h[r] < h[m]) m = r;
        if (m == i) break;
        size_t tmp = h[m];
        h[m] = h[i], h[i] = tmp, i = m;
    }
    return top;
}

/* Tasks left over by Kahn's algorithm each have an upstream that is also left over, so
 * walking upstream from any of them must come back on itself: that loop is a cycle. */
static void report_cycles(ctx *c, const bool *placed) {
    dg_dag *dag = c->dag;
    size_t n = dag->n_tasks;
    _cleanup_free_ size_t *walk_id = xcalloc(n, sizeof(size_t)); /* 0 = never walked */
    _cleanup_free_ size_t *pos = xcalloc(n, sizeof(size_t));
    _cleanup_free_ size_t *path = xcalloc(n + 1, sizeof(size_t));
    for (size_t start = 0; start < n; start++) {
        if (placed[start] || walk_id[start]) continue;
        size_t len = 0, v = start;
        bool dead_end = false;
        while (!walk_id[v]) {
            walk_id[v] = start + 1;
            pos[v] = len;
            path[len++] = v;
            const dg_task *t = &dag->tasks[v];
            size_t next = SIZE_MAX;
            for (size_t i = 0; i < t->n_upstream && next == SIZE_MAX; i++)
                if (!placed[t->upstream[i]]) next = t->upstream[i];
            if (next == SIZE_MAX) {
                dead_end = true;
                break;
            }
            v = next;
        }
        if (dead_end || walk_id[v] != start + 1) continue; /* that cycle is already reported */
        /* path[pos[v]..len-1] goes upstream; print it downstream from its first task */
        size_t a = pos[v], k = len - a, first = a;
        for (size_t i = a; i < len; i++)
            if (path[i] < path[first]) first = i;
        dg_buf b = {0};
        dg_buf_puts(&b, "cycle: ");
        for (size_t s = 0; s <= k; s++) {
            size_t i = a + (first - a + k - s) % k;
            dg_buf_printf(&b, "%s%s", s ? " -> " : "", dag->tasks[path[i]].id);
        }
        const dg_task *ft = &dag->tasks[path[first]];
        node mark = {.line = ft->line, .col = ft->col};
        err_at(c, &mark, "%s", b.data);
        dg_buf_free(&b);
    }
}

static void link_tasks(ctx *c) {
    dg_dag *dag = c->dag;
    size_t n = dag->n_tasks;
    _cleanup_free_ id_ix *ids = xcalloc(n ? n : 1, sizeof(id_ix));
    _cleanup_free_ const char **names = xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        ids[i] = (id_ix){dag->tasks[i].id, i};
        names[i] = dag->tasks[i].id;
    }
    qsort(ids, n, sizeof(id_ix), cmp_id_ix);

    _cleanup_free_ size_t *n_down = xcalloc(n ? n : 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        dg_task *t = &dag->tasks[i];
        size_t nd = dg_strv_len(t->depends_on);
        t->upstream = xcalloc(nd ? nd : 1, sizeof(size_t));
        for (size_t j = 0; j < nd; j++) {
            const node *dn = c->deps[i];
            const node *mark = dn && dn->type == DG_YSEQ && j < dn->n ? dn->kids[j] : dn;
            const char *dep = t->depends_on[j];
            ssize_t u = find_task(ids, n, dep);
            if (u < 0) {
                const char *s = strlen(dep) <= 64 ? dg_suggest(dep, names, n) : NULL;
                if (s)
                    err_at(c, mark, "unknown task '%.100s' in depends_on (did you mean '%s'?)", dep,
                           s);
                else
                    err_at(c, mark, "unknown task '%.100s' in depends_on", dep);
                continue;
            }
            bool dup = false;
            for (size_t k = 0; k < t->n_upstream; k++) dup |= t->upstream[k] == (size_t)u;
            if (dup) {
                err_at(c, mark, "task '%.100s' is listed twice in depends_on", dep);
                continue;
            }
            t->upstream[t->n_upstream++] = (size_t)u;
            n_down[u]++;
        }
    }
    for (size_t i = 0; i < n; i++) dag->tasks[i].downstream = xcalloc(n_down[i] ? n_down[i] : 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        const dg_task *t = &dag->tasks[i];
        for (size_t j = 0; j < t->n_upstream; j++) {
            dg_task *u = &dag->tasks[t->upstream[j]];
            u->downstream[u->n_downstream++] = i;
        }
    }

    _cleanup_free_ size_t *indeg = xcalloc(n ? n : 1, sizeof(size_t));
    _cleanup_free_ size_t *heap = xcalloc(n ? n : 1, sizeof(size_t));
    _cleanup_free_ bool *placed = xcalloc(n ? n : 1, sizeof(bool));
    size_t hn = 0, done = 0;
    dag->topo = xcalloc(n ? n : 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        indeg[i] = dag->tasks[i].n_upstream;
        if (!indeg[i]) heap_push(heap, &hn, i);
    }
    while (hn) {
        size_t v = heap_pop(heap, &hn);
        placed[v] = true;
        dag->topo[done++] = v;
        const dg_task *t = &dag->tasks[v];
        for (size_t j = 0; j < t->n_downstream; j++)
            if (--indeg[t->downstream[j]] == 0) heap_push(heap, &hn, t->downstream[j]);
    }
    if (done < n) report_cycles(c, placed);
}

/* ---- notifications ---- */

static const char *const email_keys[] = {"to", "subject", "body"};
static const char *const webhook_keys[] = {"url", "body"};
static const char *const notif_kinds[] = {"email", "webhook"};

static void load_notification(ctx *c, const node *key, const node *val, dg_notification *nt) {
    nt->name = xstrdup(key->str);
    _cleanup_free_ char *where = xasprintf(" in notification '%.100s'", nt->name);
    if (val->type != DG_YMAP) {
        err_at(c, val, "notification '%.100s' must be a mapping with email or webhook", nt->name);
        return;
    }
    const node *v[2] = {0};
    collect(c, val, notif_kinds, 2, NULL, v, where);
    if (!v[0] == !v[1]) err_at(c, key, "notification '%.100s' needs exactly one of email or webhook", nt->name);
    /* with both, both are still checked */
    if (v[0] && v[0]->type != DG_YMAP) {
        err_at(c, v[0], "'email' must be a mapping {to, subject, body}, not %s", type_name(v[0]));
    } else if (v[0]) {
        const node *e[3] = {0};
        collect(c, v[0], email_keys, 3, NULL, e, where);
        if (!e[0])
            err_at(c, v[0], "email needs 'to'");
        else if (get_strv(c, e[0], "to", true, &nt->email_to))
            for (size_t i = 0; nt->email_to && nt->email_to[i]; i++)
                check_template(c, e[0], "email to", nt->email_to[i], DG_TMPL_NOTIFICATION);
        if (e[1] && get_str(c, e[1], "subject", &nt->email_subject))
            check_template(c, e[1], "email subject", nt->email_subject, DG_TMPL_NOTIFICATION);
        if (e[2] && get_str(c, e[2], "body", &nt->email_body))
            check_template(c, e[2], "email body", nt->email_body, DG_TMPL_NOTIFICATION);
    }
    if (v[1] && v[1]->type != DG_YMAP) {
        err_at(c, v[1], "'webhook' must be a mapping {url, body}, not %s", type_name(v[1]));
    } else if (v[1]) {
        const node *w[2] = {0};
        collect(c, v[1], webhook_keys, 2, NULL, w, where);
        if (!w[0])
            err_at(c, v[1], "webhook needs a 'url'");
        else if (get_str(c, w[0], "url", &nt->webhook_url))
            check_template(c, w[0], "webhook url", nt->webhook_url, DG_TMPL_NOTIFICATION);
        if (w[1] && get_str(c, w[1], "body", &nt->webhook_body))
            check_template(c, w[1], "webhook body", nt->webhook_body, DG_TMPL_NOTIFICATION);
    }
}

/* ---- the whole file ---- */

enum {
    T_DAG, T_DESCRIPTION, T_SCHEDULE, T_TIMEZONE, T_START_DATE, T_END_DATE, T_CATCHUP,
    T_MAX_ACTIVE_RUNS, T_MAX_ACTIVE_TASKS, T_PAUSED, T_TAGS, T_PARAMS, T_DEFAULTS,
    T_NOTIFICATIONS, T_ON_FAILURE, T_ON_SUCCESS, T_TASKS, T__MAX
};
static const char *const top_keys[T__MAX] = {
    "dag", "description", "schedule", "timezone", "start_date", "end_date", "catchup",
    "max_active_runs", "max_active_tasks", "paused", "tags", "params", "defaults",
    "notifications", "on_failure", "on_success", "tasks",
};

static bool get_time(ctx *c, const node *n, const char *key, int64_t *ret) {
    if (n->type != DG_YSCALAR || dg_parse_time(n->str, ret) < 0) {
        err_at(c, n, "bad %s%s%.100s%s (use a date like 2025-01-01 or an RFC 3339 time)", key,
               n->type == DG_YSCALAR ? " '" : "", n->type == DG_YSCALAR ? n->str : "",
               n->type == DG_YSCALAR ? "'" : "");
        return false;
    }
    return true;
}

static void load_defaults(ctx *c, const node *n, const node **ret) {
    if (n->type != DG_YMAP) {
        err_at(c, n, "'defaults' must be a mapping of task keys, not %s", type_name(n));
        return;
    }
    const char *keys[K__MAX];
    for (int k = 0; k < K__MAX; k++)
        keys[k] = k <= K_NOTIFY || k == K_DEPENDS_ON ? NULL : task_keys[k];
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const node *k = n->kids[i];
        if (k->type != DG_YSCALAR) continue;
        for (int j = 0; j <= K_DEPENDS_ON; j++)
            if ((j <= K_NOTIFY || j == K_DEPENDS_ON) && strcmp(k->str, task_keys[j]) == 0)
                err_at(c, k, "'%s' cannot be set in defaults", task_keys[j]);
    }
    /* forbidden keys were reported above; collect() must not call them unknown too */
    dg_ynode filtered = *n;
    _cleanup_free_ dg_ynode **kids = xcalloc(n->n ? n->n : 1, sizeof(dg_ynode *));
    filtered.kids = kids;
    filtered.n = 0;
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const node *k = n->kids[i];
        bool forbidden = false;
        for (int j = 0; j <= K_DEPENDS_ON && k->type == DG_YSCALAR; j++)
            forbidden |= (j <= K_NOTIFY || j == K_DEPENDS_ON) && !strcmp(k->str, task_keys[j]);
        if (forbidden) continue;
        kids[filtered.n++] = n->kids[i];
        kids[filtered.n++] = n->kids[i + 1];
    }
    collect(c, &filtered, keys, K__MAX, NULL, ret, " in defaults");

    /* check every value once, whether or not some task uses it */
    dg_dag *scratch = xcalloc(1, sizeof(dg_dag));
    scratch->tasks = xcalloc(1, sizeof(dg_task));
    scratch->n_tasks = 1;
    for (int k = 0; k < K__MAX; k++)
        if (ret[k]) task_value(c, &scratch->tasks[0], k, ret[k], " in defaults");
    dg_dag_free(scratch);
}

static void load_tasks(ctx *c, const node *n, const node **defaults) {
    dg_dag *dag = c->dag;
    if (n->type != DG_YMAP) {
        err_at(c, n, "'tasks' must be a mapping of task id to task, not %s", type_name(n));
        return;
    }
    size_t count = 0;
    for (size_t i = 0; i + 1 < n->n; i += 2)
        if (n->kids[i]->type == DG_YSCALAR && !n->kids[i]->dup) count++;
    if (count == 0) {
        err_at(c, n, "'tasks' is empty: a DAG needs at least one task");
        return;
    }
    dag->tasks = xcalloc(count, sizeof(dg_task));
    c->deps = xcalloc(count, sizeof(node *));
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const node *k = n->kids[i];
        if (k->type != DG_YSCALAR || k->dup) continue;
        size_t ix = dag->n_tasks++;
        load_task(c, k, n->kids[i + 1], defaults, &dag->tasks[ix], &c->deps[ix]);
    }
    link_tasks(c);
}

static void load_root(ctx *c, const node *root) {
    dg_dag *dag = c->dag;
    if (root->type != DG_YMAP) {
        err_at(c, root, "the top level must be a mapping with 'dag' and 'tasks', not %s",
               type_name(root));
        return;
    }
    const node *v[T__MAX] = {0}, *keys[T__MAX] = {0};
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        const node *k = root->kids[i];
        if (k->type == DG_YSCALAR && strcmp(k->str, "on_retry") == 0)
            err_at(c, k, "'on_retry' is a task key: set it per task or in defaults");
    }
    dg_ynode filtered = *root;
    _cleanup_free_ dg_ynode **kids = xcalloc(root->n ? root->n : 1, sizeof(dg_ynode *));
    filtered.kids = kids;
    filtered.n = 0;
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        if (root->kids[i]->type == DG_YSCALAR && strcmp(root->kids[i]->str, "on_retry") == 0)
            continue;
        kids[filtered.n++] = root->kids[i];
        kids[filtered.n++] = root->kids[i + 1];
    }
    collect(c, &filtered, top_keys, T__MAX, keys, v, "");

    if (!v[T_DAG]) {
        err_at(c, keys[T_DAG] ? keys[T_DAG] : root, "missing 'dag' (the DAG id)");
    } else if (get_str(c, v[T_DAG], "dag", &dag->dag_id) && !valid_id(dag->dag_id)) {
        err_at(c, v[T_DAG], "bad dag id '%.100s' (use 1-200 characters from A-Z a-z 0-9 _ . -)",
               dag->dag_id);
    }
    if (v[T_DESCRIPTION]) get_str(c, v[T_DESCRIPTION], "description", &dag->description);
    if (v[T_TIMEZONE] && get_str(c, v[T_TIMEZONE], "timezone", &dag->timezone))
        check_timezone(c, v[T_TIMEZONE], dag->timezone);
    if (!dag->timezone) dag->timezone = xstrdup("UTC");
    if (v[T_START_DATE])
        dag->has_start_date = get_time(c, v[T_START_DATE], "start_date", &dag->start_date_ms);
    if (v[T_END_DATE])
        dag->has_end_date = get_time(c, v[T_END_DATE], "end_date", &dag->end_date_ms);
    if (dag->has_start_date && dag->has_end_date && dag->end_date_ms < dag->start_date_ms)
        err_at(c, v[T_END_DATE], "end_date is before start_date");
    if (v[T_SCHEDULE] && get_str(c, v[T_SCHEDULE], "schedule", &dag->schedule)) {
        dg_cron cron;
        dg_error e = {0};
        if (dg_cron_parse(dag->schedule, &cron, &e) < 0)
            err_at(c, v[T_SCHEDULE], "bad schedule '%.100s': %s", dag->schedule, e.msg);
        dg_error_clear(&e);
        if (!v[T_START_DATE])
            err_at(c, v[T_SCHEDULE], "a schedule needs a start_date");
    }
    if (v[T_CATCHUP]) get_bool(c, v[T_CATCHUP], "catchup", &dag->catchup);
    dag->max_active_runs = dag->max_active_tasks = 16;
    if (v[T_MAX_ACTIVE_RUNS])
        get_int(c, v[T_MAX_ACTIVE_RUNS], "max_active_runs", 1, INT_MAX, &dag->max_active_runs);
    if (v[T_MAX_ACTIVE_TASKS])
        get_int(c, v[T_MAX_ACTIVE_TASKS], "max_active_tasks", 1, INT_MAX,
                &dag->max_active_tasks);
    if (v[T_PAUSED]) get_bool(c, v[T_PAUSED], "paused", &dag->paused);
    if (v[T_TAGS]) get_strv(c, v[T_TAGS], "tags", false, &dag->tags);
    if (v[T_PARAMS]) {
        if (v[T_PARAMS]->type != DG_YMAP)
            err_at(c, v[T_PARAMS], "'params' must be a mapping, not %s", type_name(v[T_PARAMS]));
        else
            dag->params = to_json(v[T_PARAMS]);
    }
    if (!dag->params) dag->params = json_object();

    if (v[T_NOTIFICATIONS]) {
        const node *m = v[T_NOTIFICATIONS];
        if (m->type != DG_YMAP) {
            err_at(c, m, "'notifications' must be a mapping of name to target, not %s",
                   type_name(m));
        } else {
            c->notifications = m;
            dag->notifications = xcalloc(m->n / 2 + 1, sizeof(dg_notification));
            for (size_t i = 0; i + 1 < m->n; i += 2) {
                if (m->kids[i]->type != DG_YSCALAR || m->kids[i]->dup) continue;
                load_notification(c, m->kids[i], m->kids[i + 1],
                                  &dag->notifications[dag->n_notifications++]);
            }
        }
    }
    if (v[T_ON_FAILURE]) get_notify_list(c, v[T_ON_FAILURE], "on_failure", &dag->on_failure);
    if (v[T_ON_SUCCESS]) get_notify_list(c, v[T_ON_SUCCESS], "on_success", &dag->on_success);

    const node *defaults[K__MAX] = {0};
    if (v[T_DEFAULTS]) load_defaults(c, v[T_DEFAULTS], defaults);
    if (!v[T_TASKS])
        err_at(c, keys[T_TASKS] ? keys[T_TASKS] : root, "missing 'tasks'");
    else
        load_tasks(c, v[T_TASKS], defaults);
}

/* Errors are found in walk order; users read them in file order. */
static void sort_diags(dg_diags *d, size_t from) {
    for (size_t i = from + 1; i < d->n; i++) {
        dg_diag x = d->v[i];
        size_t j = i;
        while (j > from && (d->v[j - 1].line > x.line ||
                            (d->v[j - 1].line == x.line && d->v[j - 1].col > x.col))) {
            d->v[j] = d->v[j - 1];
            j--;
        }
        d->v[j] = x;
    }
}

int dg_dag_load_string(const char *name, const char *text, size_t len, const dg_dag_opts *opts,
                       dg_dag **ret, dg_diags *diags) {
    dg_diags local = {0};
    if (!diags) diags = &local;
    ctx c = {.file = name ? name : "<input>", .diags = diags, .first_diag = diags->n,
             .opts = opts};
    if (len > MAX_FILE_SIZE) {
        dg_diags_add(diags, c.file, 0, 0, "file is too large (%zu bytes; the limit is %d MiB)",
                     len, MAX_FILE_SIZE / (1024 * 1024));
        dg_diags_free(&local);
        return -EINVAL;
    }
    node *root = dg_yaml_parse(c.file, text, len, diags);
    if (!root) {
        dg_diags_free(&local);
        return -EINVAL;
    }
    c.dag = xcalloc(1, sizeof(dg_dag));
    c.dag->file = xstrdup(c.file);
    load_root(&c, root);
    dg_ynode_free(root);
    if (opts && opts->check_task)
        for (size_t i = 0; i < c.dag->n_tasks; i++)
            if (c.dag->tasks[i].id) opts->check_task(opts->check_ud, c.dag, &c.dag->tasks[i], diags);
    free(c.deps);
    bool ok = diags->n == c.first_diag;
    sort_diags(diags, c.first_diag);
    dg_diags_free(&local);
    if (!ok) {
        dg_dag_free(c.dag);
        return -EINVAL;
    }
    *ret = c.dag;
    return 0;
}

int dg_dag_load(const char *path, const dg_dag_opts *opts, dg_dag **ret, dg_diags *diags) {
    dg_diags local = {0};
    if (!diags) diags = &local;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int r = -errno;
        dg_diags_add(diags, path, 0, 0, "cannot read: %s", strerror(-r));
        dg_diags_free(&local);
        return r;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > MAX_FILE_SIZE) {
        if (S_ISREG(st.st_mode))
            dg_diags_add(diags, path, 0, 0, "file is too large (%lld bytes; the limit is %d MiB)",
                         (long long)st.st_size, MAX_FILE_SIZE / (1024 * 1024));
        else
            dg_diags_add(diags, path, 0, 0, "not a regular file");
        dg_diags_free(&local);
        return -EINVAL;
    }
    dg_buf b = {0};
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int r = -errno;
            dg_buf_free(&b);
            dg_diags_add(diags, path, 0, 0, "cannot read: %s", strerror(-r));
            dg_diags_free(&local);
            return r;
        }
        if (n == 0) break;
        dg_buf_append(&b, chunk, (size_t)n);
        if (b.len > MAX_FILE_SIZE) break;
    }
    dg_buf_append(&b, "", 0);
    int r = dg_dag_load_string(path, b.data, b.len, opts, ret, diags);
    dg_buf_free(&b);
    dg_diags_free(&local);
    return r;
}
