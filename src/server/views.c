/* server/views — what the REST API reads and does (include/dagd/server.h). Reads come
 * from the store, which the executor keeps current on every change; verbs act on the
 * scheduler and let it run. Objects use Airflow's field names (docs/api.md). */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "dagd/log.h"
#include "server_internal.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define BACKFILL_MAX 1000

json_t *dg__json_time(int64_t ms) {
    if (!ms) return json_null();
    char *s = dg_format_time_ms(ms);
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* The significant digits (15 to 17) that read every real of j back exactly: most need
 * 15, which writes a duration of 3.013 s as 3.013 rather than 3.0129999999999999. */
static int real_digits(json_t *j) {
    int p = 0, q;
    const char *k;
    size_t i;
    json_t *v;
    switch (json_typeof(j)) {
    case JSON_REAL:
        for (p = 15; p < 17; p++) {
            char b[64];
            snprintf(b, sizeof b, "%.*g", p, json_real_value(j));
            if (strtod(b, NULL) == json_real_value(j)) break;
        }
        return p;
    case JSON_OBJECT:
        json_object_foreach(j, k, v) {
            if ((q = real_digits(v)) > p) p = q;
        }
        return p;
    case JSON_ARRAY:
        json_array_foreach(j, i, v) {
            if ((q = real_digits(v)) > p) p = q;
        }
        return p;
    default:
        return 0;
    }
}

char *dg_server_json_text(const json_t *doc, size_t flags) {
    int p = real_digits((json_t *)doc);
    return json_dumps(doc, flags | (p ? JSON_REAL_PRECISION(p) : 0));
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

static void page(int *limit, int *offset) {
    if (*limit <= 0) *limit = LIST_DEFAULT;
    if (*limit > LIST_MAX) *limit = LIST_MAX;
    if (*offset < 0) *offset = 0;
}

static json_t *list_doc(const char *key, json_t *items, size_t total) {
    return json_pack("{s:o,s:I}", key, items, "total_entries", (json_int_t)total);
}

/* ---- DAGs ---- */

/* What the schedule clock creates next for e, paused or not: what unpausing would create. A
 * due interval whose logical date has a run already is passed over, as the clock does. */
static bool next_run(dg_server *s, dag_entry *e, dg_interval *ret) {
    int64_t now = dg_now_ms();
    dg_interval iv;
    if (!e->has_schedule || !dg__server_upcoming(e, now, &iv)) return false;
    dg_run_rec *existing = NULL;
    if (iv.end_ms <= now && dg_store_run_at(s->store, e->dag_id, iv.start_ms, &existing) == 0) {
        dg_run_rec_free(existing);
        const dg_dag *d = e->dag;
        dg_interval after;
        if (dg_schedule_next_interval(&e->schedule, d->start_date_ms, d->has_end_date ? d->end_date_ms : 0, &iv,
                                      &after) < 0)
            return false;
        iv = after;
    }
    *ret = iv;
    return true;
}

static json_t *dag_json(dg_server *s, dag_entry *e) {
    const dg_dag *d = e->dag;
    dg_interval next;
    bool have_next = next_run(s, e, &next);
    json_t *tags = json_array();
    for (size_t i = 0; d->tags && d->tags[i]; i++) json_array_append_new(tags, json_string(d->tags[i]));
    json_t *o = json_object();
    json_object_set_new(o, "dag_id", json_string(e->dag_id));
    json_object_set_new(o, "description", str_or_null(d->description));
    json_object_set_new(o, "tags", tags);
    json_object_set_new(o, "schedule", str_or_null(d->schedule));
    json_object_set_new(o, "timezone", json_string(d->timezone));
    json_object_set_new(o, "is_paused", json_boolean(e->paused));
    json_object_set_new(o, "is_active", json_true());
    json_object_set_new(o, "next_run_logical_date", have_next ? dg__json_time(next.start_ms) : json_null());
    json_object_set_new(o, "next_run_after", have_next ? dg__json_time(next.end_ms) : json_null());
    json_object_set_new(o, "file", json_string(e->file));
    json_object_set_new(o, "catchup", json_boolean(d->catchup));
    json_object_set_new(o, "max_active_runs", json_integer(d->max_active_runs));
    json_object_set_new(o, "max_active_tasks", json_integer(d->max_active_tasks));
    json_object_set_new(o, "start_date", d->has_start_date ? dg__json_time(d->start_date_ms) : json_null());
    json_object_set_new(o, "end_date", d->has_end_date ? dg__json_time(d->end_date_ms) : json_null());
    json_t *ids = json_array();
    for (size_t i = 0; i < d->n_tasks; i++) json_array_append_new(ids, json_string(d->tasks[i].id));
    json_object_set_new(o, "task_ids", ids);
    /* What the web UI's graph and trigger form are drawn from (see docs/ui.md). */
    json_t *tasks = json_array();
    for (size_t i = 0; i < d->n_tasks; i++) {
        json_t *up = json_array();
        for (size_t k = 0; k < d->tasks[i].n_upstream; k++)
            json_array_append_new(up, json_string(d->tasks[d->tasks[i].upstream[k]].id));
        json_array_append_new(tasks, json_pack("{s:s, s:o}", "task_id", d->tasks[i].id, "upstream", up));
    }
    json_object_set_new(o, "tasks", tasks);
    json_object_set_new(o, "params", json_deep_copy(d->params));
    return o;
}

/* An unknown DAG whose file is broken says so: the id alone would send people looking
 * for a typo. */
static dag_entry *need_dag(dg_server *s, const char *dag, dg_error *err) {
    dag_entry *e = dag ? dg__server_find(s, dag) : NULL;
    if (e) return e;
    for (size_t i = 0; dag && i < s->n_errors; i++)
        if (s->errors[i].dag_id && strcmp(s->errors[i].dag_id, dag) == 0) {
            dg_error_set(err, -ENOENT, "DAG '%s' is not loaded: its file %s has errors (GET /api/v1/import-errors)",
                         dag, s->errors[i].file);
            return NULL;
        }
    dg_error_set(err, -ENOENT, "no DAG '%s'", dag ? dag : "");
    return NULL;
}

int dg_server_list_dags(dg_server *s, int limit, int offset, json_t **ret, dg_error *err) {
    page(&limit, &offset);
    json_t *items = json_array();
    int i = 0;
    for (dag_entry *e = s->dags; e; e = e->next_entry, i++)
        if (i >= offset && i < offset + limit) json_array_append_new(items, dag_json(s, e));
    *ret = list_doc("dags", items, s->n_dags);
    return 0;
}

int dg_server_get_dag(dg_server *s, const char *dag, json_t **ret, dg_error *err) {
    dag_entry *e = need_dag(s, dag, err);
    if (!e) return -ENOENT;
    *ret = dag_json(s, e);
    return 0;
}

int dg_server_patch_dag(dg_server *s, const char *dag, const json_t *body, json_t **ret, dg_error *err) {
    dag_entry *e = need_dag(s, dag, err);
    if (!e) return -ENOENT;
    if (dg__server_writable(s, err) < 0) return -EAGAIN;
    if (!json_is_object(body)) return dg_error_set(err, -EINVAL, "the body must be a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        if (strcmp(k, "is_paused") != 0) return dg_error_set(err, -EINVAL, "unknown field '%s' (only is_paused)", k);
    }
    json_t *p = json_object_get(body, "is_paused");
    if (!json_is_boolean(p)) return dg_error_set(err, -EINVAL, "is_paused must be true or false");
    if (dg_store_put_dag(s->store, e->dag_id, json_is_true(p), e->file, dg_now_ms()) < 0)
        return dg_error_set(err, -EAGAIN, "the paused state could not be saved: %s", dg_store_errmsg(s->store));
    e->paused = json_is_true(p);
    dg_log_ctx c = {.dag = e->dag_id};
    dg_log(DG_LOG_INFO, &c, "%s", e->paused ? "paused" : "unpaused");
    if (!e->paused) dg__server_kick(s);
    *ret = dag_json(s, e);
    return 0;
}

int dg_server_dag_source(dg_server *s, const char *dag, char **ret, size_t *ret_len, dg_error *err) {
    dag_entry *e = need_dag(s, dag, err);
    if (!e) return -ENOENT;
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = dg_read_file(e->file, &text, &len);
    if (r < 0) return dg_error_set(err, -ENOENT, "%s: %s", e->file, strerror(-r));
    /* inline `{secret: value}` values are not shown (a template is no secret) */
    _cleanup_(dg_strv_freep) char **secrets = NULL;
    size_t n = 0;
    for (size_t i = 0; e->dag && i < e->dag->n_tasks; i++) {
        const dg_task *t = &e->dag->tasks[i];
        for (size_t k = 0; k < t->n_env; k++) {
            const char *v = t->env[k].value;
            if (!t->env[k].secret || !v || strlen(v) < 3 || strstr(v, "{{")) continue;
            secrets = xrealloc(secrets, (n + 2) * sizeof(char *));
            secrets[n++] = xstrdup(v);
            secrets[n] = NULL;
        }
    }
    *ret = dg_redact(secrets, text, len);
    *ret_len = strlen(*ret);
    return 0;
}

json_t *dg_server_import_errors(dg_server *s) {
    json_t *items = json_array();
    for (size_t i = 0; i < s->n_errors; i++) {
        const import_error *ie = &s->errors[i];
        _cleanup_free_ char *trace = xasprintf("%s:%d:%d: error: %s", ie->file, ie->line, ie->col, ie->msg);
        json_array_append_new(items, json_pack("{s:I,s:s,s:i,s:i,s:s,s:s}", "import_error_id", (json_int_t)i + 1,
                                               "filename", ie->file, "line", ie->line, "col", ie->col, "message",
                                               ie->msg, "stack_trace", trace));
    }
    return list_doc("import_errors", items, s->n_errors);
}

/* ---- runs ---- */

json_t *dg__run_json(const dg_run_rec *r) {
    json_t *conf = r->conf_json ? json_loads(r->conf_json, 0, NULL) : NULL;
    json_t *o = json_object();
    json_object_set_new(o, "dag_id", json_string(r->dag_id));
    json_object_set_new(o, "dag_run_id", json_string(r->run_id));
    json_object_set_new(o, "run_type", str_or_null(r->run_type));
    json_object_set_new(o, "state", str_or_null(r->state));
    json_object_set_new(o, "logical_date", dg__json_time(r->logical_ms));
    json_object_set_new(o, "data_interval_start", dg__json_time(r->interval_start_ms));
    json_object_set_new(o, "data_interval_end", dg__json_time(r->interval_end_ms));
    json_object_set_new(o, "start_date", dg__json_time(r->start_ms));
    json_object_set_new(o, "end_date", dg__json_time(r->end_ms));
    json_object_set_new(o, "conf", json_is_object(conf) ? conf : json_object());
    if (conf && !json_is_object(conf)) json_decref(conf);
    return o;
}

static int run_doc(dg_server *s, const char *dag, const char *run, json_t **ret, dg_error *err) {
    dg_run_rec *r = NULL;
    if (dg_store_get_run(s->store, dag, run, &r) < 0)
        return dg_error_set(err, -ENOENT, "DAG '%s' has no run '%s'", dag, run);
    *ret = dg__run_json(r);
    dg_run_rec_free(r);
    return 0;
}

int dg_server_list_runs(dg_server *s, const char *dag, int limit, int offset, json_t **ret, dg_error *err) {
    page(&limit, &offset);
    dg_run_rec **v = NULL;
    size_t n = 0, total = 0;
    if (dg_store_list_runs(s->store, dag, limit, offset, &v, &n, &total) < 0)
        return dg_error_set(err, -EIO, "reading runs failed: %s", dg_store_errmsg(s->store));
    /* a DAG gone from the folder still has its history; one never seen is unknown */
    if (total == 0 && !need_dag(s, dag, err)) {
        dg_run_recs_free(v, n);
        return -ENOENT;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(items, dg__run_json(v[i]));
    dg_run_recs_free(v, n);
    *ret = list_doc("dag_runs", items, total);
    return 0;
}

int dg_server_get_run(dg_server *s, const char *dag, const char *run, json_t **ret, dg_error *err) {
    return run_doc(s, dag, run, ret, err);
}

static int parse_date_field(const json_t *body, const char *field, bool required, int64_t *ret, bool *present,
                            dg_error *err) {
    json_t *v = json_object_get(body, field);
    *present = v && !json_is_null(v);
    if (!*present) return required ? dg_error_set(err, -EINVAL, "'%s' is required", field) : 0;
    if (!json_is_string(v)) return dg_error_set(err, -EINVAL, "'%s' must be a date or RFC 3339 string", field);
    if (dg_parse_time(json_string_value(v), ret) < 0)
        return dg_error_set(err, -EDOM, "'%s': '%s' is not a date or RFC 3339 time", field, json_string_value(v));
    return 0;
}

static int check_fields(const json_t *body, const char *const *allowed, size_t n, dg_error *err) {
    if (!json_is_object(body)) return dg_error_set(err, -EINVAL, "the body must be a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        bool ok = false;
        for (size_t i = 0; i < n; i++) ok |= !strcmp(k, allowed[i]);
        if (!ok) return dg_error_set(err, -EINVAL, "unknown field '%s'", k);
    }
    return 0;
}

static bool conf_same(const dg_run_rec *rr, const json_t *conf) {
    json_t *had = rr->conf_json ? json_loads(rr->conf_json, 0, NULL) : NULL;
    bool same = json_equal(had ? had : json_object(), (json_t *)conf);
    json_decref(had);
    return same;
}

static bool rec_active(dg_server *s, const dg_run_rec *rr) {
    dg_run *rn = dg__server_find_run(s, rr->dag_id, rr->run_id);
    if (rn) return rn->state == DG_RUN_QUEUED || rn->state == DG_RUN_RUNNING;
    return rr->state && (!strcmp(rr->state, "queued") || !strcmp(rr->state, "running"));
}

/* Whether the run rr may be run again, with conf (NULL: its own). A run still queued or
 * running is refused, as clearing a running task is. A new conf reaches the run through
 * the store, so a finished run still in memory leaves it first (as the sweep would). */
static int rerun_check(dg_server *s, dag_entry *e, const dg_run_rec *rr, const json_t *conf, dg_error *err) {
    if (rec_active(s, rr))
        return dg_error_set(err, -EBUSY, "run '%s' is still running: cancel it, or let it end, before running it again",
                            rr->run_id);
    dg_run *rn = dg__server_find_run(s, e->dag_id, rr->run_id);
    if (conf && rn && !conf_same(rr, conf) && !dg_exec_forget_run(s->exec, rn))
        return dg_error_set(err, -EBUSY, "run '%s' is still releasing its containers; try again in a moment",
                            rr->run_id);
    return 0;
}

/* `rerun`: the run rr is cleared to run again, every task back to none; it keeps its id,
 * and its conf unless conf is given (Airflow's backfill --reset-dagruns). */
static int rerun(dg_server *s, dag_entry *e, const dg_run_rec *rr, const json_t *conf, dg_error *err) {
    int r = rerun_check(s, e, rr, conf, err);
    if (r < 0) return r;
    if (conf && !conf_same(rr, conf)) {
        _cleanup_free_ char *text = json_dumps(conf, JSON_COMPACT);
        dg_run_rec copy = *rr;
        copy.conf_json = text;
        if (dg_store_put_run(s->store, &copy) < 0)
            return dg_error_set(err, -EAGAIN, "the run's conf could not be saved: %s", dg_store_errmsg(s->store));
    }
    dg_run *rn;
    if ((r = dg__server_load_run(s, e, rr->run_id, &rn, err)) < 0) return r;
    int64_t now = dg_now_ms();
    for (size_t i = 0; i < rn->dag->n_tasks; i++) dg_sched_clear_ti(s->sched, rn, i, now);
    dg_log_ctx c = {.dag = e->dag_id, .run = rn->run_id};
    dg_log(DG_LOG_NOTICE, &c, "cleared to run again");
    dg_exec_pump(s->exec);
    return 0;
}

static int get_rerun(const json_t *body, bool *ret, dg_error *err) {
    json_t *v = json_object_get(body, "rerun");
    if (v && !json_is_boolean(v)) return dg_error_set(err, -EINVAL, "rerun must be true or false");
    *ret = json_is_true(v);
    return 0;
}

/* One logical date, one run (docs/api.md, "Runs and logical dates"): a date that has a run is
 * refused with 409, naming it, unless a rerun is asked for. */
int dg_server_trigger(dg_server *s, const char *dag, const json_t *body, json_t **ret, dg_error *err) {
    dag_entry *e = need_dag(s, dag, err);
    if (!e) return -ENOENT;
    if (dg__server_writable(s, err) < 0) return -EAGAIN;
    json_t *empty = NULL;
    _cleanup_free_ char *ts = NULL, *run_id = NULL, *when = NULL;
    dg_run_rec *existing = NULL;
    if (!body) body = empty = json_object();
    static const char *const allowed[] = {"conf", "logical_date", "dag_run_id", "note", "rerun"};
    int r = check_fields(body, allowed, ARRAY_SIZE(allowed), err);
    if (r < 0) goto out;
    json_t *conf = json_object_get(body, "conf");
    if (conf && !json_is_null(conf) && !json_is_object(conf)) {
        r = dg_error_set(err, -EINVAL, "conf must be a JSON object");
        goto out;
    }
    bool again = false;
    if ((r = get_rerun(body, &again, err)) < 0) goto out;
    int64_t logical = dg_now_ms();
    bool has_date;
    if ((r = parse_date_field(body, "logical_date", false, &logical, &has_date, err)) < 0) goto out;
    if (!has_date) {
        /* "now" is a date nobody asked for: triggers in the same millisecond each get
         * their own (the next free one), so none is refused as a second run of a date */
        dg_run_rec *taken = NULL;
        while (dg_store_run_at(s->store, e->dag_id, logical, &taken) == 0) {
            dg_run_rec_free(taken);
            taken = NULL;
            logical++;
        }
    }
    json_t *rid = json_object_get(body, "dag_run_id");
    if (rid && !json_is_null(rid) && (!json_is_string(rid) || !*json_string_value(rid) || strlen(json_string_value(rid)) > 250)) {
        r = dg_error_set(err, -EINVAL, "dag_run_id must be a non-empty string");
        goto out;
    }
    ts = dg_format_time(logical, true);
    when = dg_format_time_ms(logical);
    run_id = rid && json_is_string(rid) ? xstrdup(json_string_value(rid)) : xasprintf("manual__%s", ts);
    if (strchr(run_id, '/')) {
        r = dg_error_set(err, -EDOM, "dag_run_id must not contain '/'");
        goto out;
    }
    if (dg_store_get_run(s->store, e->dag_id, run_id, &existing) == 0 && existing->logical_ms != logical) {
        r = dg_error_set(err, -EEXIST, "DAG '%s' already has a run '%s'", e->dag_id, run_id);
        goto out;
    }
    if (!existing) dg_store_run_at(s->store, e->dag_id, logical, &existing);
    if (existing && !again) {
        r = dg_error_set(err, -EEXIST,
                         "DAG '%s' already has a run at %s: '%s'; to clear it and run it again, ask for a rerun "
                         "(\"rerun\": true, dagd trigger --rerun)",
                         e->dag_id, when, existing->run_id);
        goto out;
    }
    if (existing) {
        if ((r = rerun(s, e, existing, json_is_object(conf) ? conf : NULL, err)) < 0) goto out;
        free(run_id);
        run_id = xstrdup(existing->run_id);
    } else {
        dg__server_add_run(s, e, run_id, "manual", logical, NULL, json_is_object(conf) ? conf : NULL);
        if (dg_exec_store_error(s->exec)) {
            /* it is in memory, and is written (then started) once writes work again */
            r = dg_error_set(err, -EAGAIN, "run '%s' was made but could not be saved (%s); it starts once state "
                             "writes work again", run_id, dg_exec_store_error(s->exec));
            goto out;
        }
    }
    r = run_doc(s, e->dag_id, run_id, ret, err);
out:
    dg_run_rec_free(existing);
    json_decref(empty);
    return r;
}

int dg_server_cancel_run(dg_server *s, const char *dag, const char *run, json_t **ret, dg_error *err) {
    if (dg__server_writable(s, err) < 0) return -EAGAIN;
    dg_run *rn = dg__server_find_run(s, dag, run);
    if (!rn) {
        json_t *doc = NULL;
        int r = run_doc(s, dag, run, &doc, err);
        if (r < 0) return r;
        json_decref(doc);
        return dg_error_set(err, -EBUSY, "run '%s' has already finished", run);
    }
    if (rn->state == DG_RUN_SUCCESS || rn->state == DG_RUN_FAILED)
        return dg_error_set(err, -EBUSY, "run '%s' has already finished", run);
    dg_log_ctx c = {.dag = dag, .run = run};
    dg_log(DG_LOG_NOTICE, &c, "cancelled through the API");
    dg_sched_cancel_run(s->sched, rn, dg_now_ms());
    dg_exec_pump(s->exec);
    return run_doc(s, dag, run, ret, err);
}

static void add_downstream(const dg_dag *d, size_t i, bool *sel) {
    for (size_t k = 0; k < d->tasks[i].n_downstream; k++) {
        size_t j = d->tasks[i].downstream[k];
        if (!sel[j]) {
            sel[j] = true;
            add_downstream(d, j, sel);
        }
    }
}

/* Every try of a task instance, for the web UI's task page and Gantt (see docs/api.md). */
static void add_tries(dg_server *s, json_t *o, const char *dag, const char *run, const char *task) {
    dg_try_rec **v = NULL;
    size_t n = 0;
    json_t *tries = json_array();
    if (dg_store_list_tries(s->store, dag, run, task, &v, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            const dg_try_rec *t = v[i];
            json_t *x = json_object();
            json_object_set_new(x, "try_number", json_integer(t->try_number));
            json_object_set_new(x, "state", str_or_null(t->state));
            json_object_set_new(x, "start_date", dg__json_time(t->start_ms));
            json_object_set_new(x, "running_date", dg__json_time(t->running_ms));
            json_object_set_new(x, "end_date", dg__json_time(t->end_ms));
            json_object_set_new(x, "exit_code", t->has_exit_code ? json_integer(t->exit_code) : json_null());
            json_object_set_new(x, "container_name", str_or_null(t->container_name));
            json_object_set_new(x, "message", str_or_null(t->message));
            json_object_set_new(x, "image_id", str_or_null(t->image_id));
            json_object_set_new(x, "image_digest", str_or_null(t->image_digest));
            /* stored redacted, see rendered_json in exec */
            json_t *rd = t->rendered ? json_loads(t->rendered, 0, NULL) : NULL;
            json_object_set_new(x, "command", json_incref(json_object_get(rd, "command")) ?: json_null());
            json_object_set_new(x, "entrypoint", json_incref(json_object_get(rd, "entrypoint")) ?: json_null());
            json_object_set_new(x, "env", json_incref(json_object_get(rd, "env")) ?: json_null());
            json_decref(rd);
            json_array_append_new(tries, x);
        }
        dg_try_recs_free(v, n);
    }
    json_object_set_new(o, "tries", tries);
}

static json_t *ti_doc(dg_server *s, const char *dag, const char *run, const char *task) {
    dg_ti_rec *r = NULL;
    if (dg_store_get_ti(s->store, dag, run, task, &r) < 0) return NULL;
    json_t *o = dg__ti_json(r);
    dg_ti_rec_free(r);
    add_tries(s, o, dag, run, task);
    return o;
}

int dg_server_clear(dg_server *s, const char *dag, const char *run, const json_t *body, json_t **ret,
                    dg_error *err) {
    dag_entry *e = need_dag(s, dag, err);
    if (!e) return -ENOENT;
    if (dg__server_writable(s, err) < 0) return -EAGAIN;
    json_t *empty = NULL;
    if (!body) body = empty = json_object();
    static const char *const allowed[] = {"tasks", "task_ids", "downstream", "include_downstream", "only_failed",
                                          "dry_run"};
    int r = check_fields(body, allowed, ARRAY_SIZE(allowed), err);
    bool *sel = NULL;
    if (r < 0) goto out;
    json_t *tasks = json_object_get(body, "tasks");
    if (!tasks) tasks = json_object_get(body, "task_ids");
    json_t *down = json_object_get(body, "downstream");
    if (!down) down = json_object_get(body, "include_downstream");
    json_t *only = json_object_get(body, "only_failed");
    json_t *dry = json_object_get(body, "dry_run");
    if ((tasks && !json_is_null(tasks) && !json_is_array(tasks)) || (down && !json_is_boolean(down)) ||
        (only && !json_is_boolean(only)) || (dry && !json_is_boolean(dry))) {
        r = dg_error_set(err, -EINVAL, "tasks must be a list of task ids; downstream, only_failed, dry_run booleans");
        goto out;
    }
    dg_run *rn;
    if ((r = dg__server_load_run(s, e, run, &rn, err)) < 0) goto out;
    const dg_dag *d = rn->dag;
    sel = xcalloc(d->n_tasks, sizeof *sel);
    if (json_is_array(tasks) && json_array_size(tasks)) {
        size_t k;
        json_t *t;
        json_array_foreach(tasks, k, t) {
            ssize_t i = json_is_string(t) ? dg_dag_task_index(d, json_string_value(t)) : -1;
            if (i < 0) {
                r = dg_error_set(err, json_is_string(t) ? -ENOENT : -EINVAL, "no task '%s' in DAG '%s'",
                                 json_is_string(t) ? json_string_value(t) : "?", d->dag_id);
                goto out;
            }
            sel[i] = true;
        }
    } else {
        for (size_t i = 0; i < d->n_tasks; i++) sel[i] = true;
    }
    if (json_is_true(down))
        for (size_t i = 0; i < d->n_tasks; i++)
            if (sel[i]) add_downstream(d, i, sel);
    if (json_is_true(only))
        for (size_t i = 0; i < d->n_tasks; i++)
            if (rn->ti[i].state != DG_TI_FAILED && rn->ti[i].state != DG_TI_UPSTREAM_FAILED) sel[i] = false;
    for (size_t i = 0; i < d->n_tasks; i++)
        if (sel[i] && (rn->ti[i].state == DG_TI_QUEUED || rn->ti[i].state == DG_TI_RUNNING)) {
            r = dg_error_set(err, -EBUSY, "task '%s' is running; cancel the run or wait for it", d->tasks[i].id);
            goto out;
        }
    json_t *items = json_array();
    int64_t now = dg_now_ms();
    for (size_t i = 0; i < d->n_tasks; i++) {
        if (!sel[i]) continue;
        if (!json_is_true(dry)) dg_sched_clear_ti(s->sched, rn, i, now);
        json_array_append_new(items, json_pack("{s:s,s:s,s:s}", "dag_id", d->dag_id, "dag_run_id", rn->run_id,
                                               "task_id", d->tasks[i].id));
    }
    if (!json_is_true(dry)) {
        dg_log_ctx c = {.dag = d->dag_id, .run = rn->run_id};
        dg_log(DG_LOG_NOTICE, &c, "cleared %zu task%s", json_array_size(items), json_array_size(items) == 1 ? "" : "s");
        dg_exec_pump(s->exec);
    }
    *ret = list_doc("task_instances", items, json_array_size(items));
    r = 0;
out:
    free(sel);
    json_decref(empty);
    return r;
}

/* The runs of the intervals whose logical date lies in [from, to], oldest first: a date
 * that has a run keeps it ("existing"), or with `rerun` has it cleared to run again
 * ("cleared"); the others get a backfill run ("created"). */
int dg_server_backfill(dg_server *s, const char *dag, const json_t *body, json_t **ret, dg_error *err) {
    dag_entry *e = need_dag(s, dag, err);
    if (!e) return -ENOENT;
    if (dg__server_writable(s, err) < 0) return -EAGAIN;
    static const char *const allowed[] = {"from", "to", "conf", "rerun"};
    int r = check_fields(body, allowed, ARRAY_SIZE(allowed), err);
    if (r < 0) return r;
    int64_t from = 0, to = 0;
    bool p1, p2, again = false;
    if ((r = parse_date_field(body, "from", true, &from, &p1, err)) < 0 ||
        (r = parse_date_field(body, "to", true, &to, &p2, err)) < 0 ||
        (r = get_rerun(body, &again, err)) < 0)
        return r;
    json_t *conf = json_object_get(body, "conf");
    if (conf && !json_is_null(conf) && !json_is_object(conf)) return dg_error_set(err, -EINVAL, "conf must be an object");
    if (!json_is_object(conf)) conf = NULL;
    if (to < from) return dg_error_set(err, -EDOM, "'to' is before 'from'");
    if (!e->has_schedule) return dg_error_set(err, -EDOM, "DAG '%s' has no schedule to backfill", e->dag_id);
    const dg_dag *d = e->dag;
    int64_t end_date = d->has_end_date ? d->end_date_ms : 0;
    /* the schedule's own intervals, aligned to start_date, from the one holding from - 1 */
    dg_interval iv;
    dg_interval *ivs = NULL;
    size_t n = 0;
    bool more = dg_schedule_interval_after(&e->schedule, d->start_date_ms, end_date, from - 1, &iv) == 0;
    while (more && iv.start_ms <= to) {
        if (iv.start_ms >= from) {
            if (n >= BACKFILL_MAX) {
                free(ivs);
                return dg_error_set(err, -EDOM, "the range holds more than %d runs; backfill it in parts", BACKFILL_MAX);
            }
            ivs = xrealloc(ivs, (n + 1) * sizeof *ivs);
            ivs[n++] = iv;
        }
        if (iv.end_ms <= iv.start_ms) break; /* @once */
        dg_interval prev = iv;
        more = dg_schedule_next_interval(&e->schedule, d->start_date_ms, end_date, &prev, &iv) == 0;
    }
    json_t *items = json_array(), *created = json_array(), *existing = json_array(), *cleared = json_array();
    dg_run_rec **had = xcalloc(n ? n : 1, sizeof *had);
    for (size_t i = 0; i < n; i++) dg_store_run_at(s->store, e->dag_id, ivs[i].start_ms, &had[i]);
    /* every rerun is checked before anything is done */
    for (size_t i = 0; again && i < n; i++)
        if (had[i] && (r = rerun_check(s, e, had[i], conf, err)) < 0) goto out;
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *ts = dg_format_time(ivs[i].start_ms, false);
        _cleanup_free_ char *run_id = had[i] ? xstrdup(had[i]->run_id) : xasprintf("backfill__%s", ts);
        if (had[i] && again) {
            if ((r = rerun(s, e, had[i], conf, err)) < 0) goto out;
            json_array_append_new(cleared, json_string(run_id));
        } else if (had[i]) {
            json_array_append_new(existing, json_string(run_id));
        } else {
            dg__server_add_run(s, e, run_id, "backfill", ivs[i].start_ms, &ivs[i], conf);
            json_array_append_new(created, json_string(run_id));
        }
        json_t *doc = NULL;
        if (run_doc(s, e->dag_id, run_id, &doc, NULL) == 0) json_array_append_new(items, doc);
    }
    *ret = json_pack("{s:O,s:I,s:O,s:O,s:O}", "dag_runs", items, "total_entries", (json_int_t)json_array_size(items),
                     "created", created, "existing", existing, "cleared", cleared);
    r = 0;
out:
    json_decref(items);
    json_decref(created);
    json_decref(existing);
    json_decref(cleared);
    for (size_t i = 0; i < n; i++) dg_run_rec_free(had[i]);
    free(had);
    free(ivs);
    return r;
}

/* ---- task instances ---- */

json_t *dg__ti_json(const dg_ti_rec *r) {
    json_t *o = json_object();
    json_object_set_new(o, "dag_id", json_string(r->dag_id));
    json_object_set_new(o, "dag_run_id", json_string(r->run_id));
    json_object_set_new(o, "task_id", json_string(r->task_id));
    json_object_set_new(o, "state", str_or_null(r->state));
    json_object_set_new(o, "try_number", json_integer(r->try_number));
    json_object_set_new(o, "max_tries", json_integer(r->max_tries));
    json_object_set_new(o, "start_date", dg__json_time(r->start_ms));
    json_object_set_new(o, "end_date", dg__json_time(r->end_ms));
    json_object_set_new(o, "duration",
                        r->start_ms && r->end_ms ? json_real((double)(r->end_ms - r->start_ms) / 1000.0) : json_null());
    json_object_set_new(o, "exit_code", r->has_exit_code ? json_integer(r->exit_code) : json_null());
    json_object_set_new(o, "container_id", str_or_null(r->container_id));
    json_object_set_new(o, "container_name", str_or_null(r->container_name));
    json_object_set_new(o, "image", str_or_null(r->image));
    json_object_set_new(o, "image_id", str_or_null(r->image_id));
    json_object_set_new(o, "image_digest", str_or_null(r->image_digest));
    json_object_set_new(o, "output", str_or_null(r->output));
    json_object_set_new(o, "message", str_or_null(r->message));
    return o;
}

int dg_server_list_tasks(dg_server *s, const char *dag, const char *run, json_t **ret, dg_error *err) {
    json_t *doc = NULL;
    int r = run_doc(s, dag, run, &doc, err);
    if (r < 0) return r;
    json_decref(doc);
    dg_ti_rec **v = NULL;
    size_t n = 0;
    if (dg_store_list_tis(s->store, dag, run, &v, &n) < 0)
        return dg_error_set(err, -EIO, "reading task instances failed: %s", dg_store_errmsg(s->store));
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = dg__ti_json(v[i]);
        add_tries(s, o, dag, run, v[i]->task_id);
        json_array_append_new(items, o);
    }
    dg_ti_recs_free(v, n);
    *ret = list_doc("task_instances", items, n);
    return 0;
}

int dg_server_get_task(dg_server *s, const char *dag, const char *run, const char *task, json_t **ret,
                       dg_error *err) {
    json_t *o = ti_doc(s, dag, run, task);
    if (!o) {
        json_t *doc = NULL;
        if (run_doc(s, dag, run, &doc, err) < 0) return -ENOENT;
        json_decref(doc);
        return dg_error_set(err, -ENOENT, "run '%s' has no task '%s'", run, task);
    }
    *ret = o;
    return 0;
}

int dg_server_patch_task(dg_server *s, const char *dag, const char *run, const char *task, const json_t *body,
                         json_t **ret, dg_error *err) {
    dag_entry *e = need_dag(s, dag, err);
    if (!e) return -ENOENT;
    if (dg__server_writable(s, err) < 0) return -EAGAIN;
    static const char *const allowed[] = {"state", "new_state", "dry_run"};
    int r = check_fields(body, allowed, ARRAY_SIZE(allowed), err);
    if (r < 0) return r;
    json_t *st = json_object_get(body, "state");
    if (!st) st = json_object_get(body, "new_state");
    if (!json_is_string(st)) return dg_error_set(err, -EINVAL, "state must be \"success\" or \"failed\"");
    int want = dg_ti_state_from_name(json_string_value(st));
    if (want != DG_TI_SUCCESS && want != DG_TI_FAILED)
        return dg_error_set(err, -EDOM, "state must be \"success\" or \"failed\", not \"%s\"", json_string_value(st));
    dg_run *rn;
    if ((r = dg__server_load_run(s, e, run, &rn, err)) < 0) return r;
    ssize_t i = dg_dag_task_index(rn->dag, task);
    if (i < 0) return dg_error_set(err, -ENOENT, "run '%s' has no task '%s'", run, task);
    if ((r = dg_sched_mark_ti(s->sched, rn, (size_t)i, (dg_ti_state)want, dg_now_ms())) < 0)
        return dg_error_set(err, r, "cannot mark task '%s'", task);
    dg_log_ctx c = {.dag = dag, .run = run, .task = task};
    dg_log(DG_LOG_NOTICE, &c, "marked %s through the API", json_string_value(st));
    dg_exec_pump(s->exec);
    *ret = ti_doc(s, dag, run, task);
    return *ret ? 0 : dg_error_set(err, -ENOENT, "run '%s' has no task '%s'", run, task);
}

int dg_server_log(dg_server *s, const char *dag, const char *run, const char *task, int try_number, char **ret_path,
                  bool *ret_live, dg_error *err) {
    if (try_number < 1) return dg_error_set(err, -ENOENT, "try numbers start at 1");
    json_t *o = NULL;
    int r = dg_server_get_task(s, dag, run, task, &o, err);
    if (r < 0) return r;
    int tries = (int)json_integer_value(json_object_get(o, "try_number"));
    json_decref(o);
    if (try_number > tries) return dg_error_set(err, -ENOENT, "task '%s' has no try %d", task, try_number);
    char *path = dg_store_log_path(s->cfg.state_dir, dag, run, task, try_number);
    struct stat stt;
    bool live = dg_server_log_live(s, dag, run, task, try_number);
    if (stat(path, &stt) < 0 && !live) {
        free(path);
        return dg_error_set(err, -ENOENT, "try %d of '%s' has no log", try_number, task);
    }
    *ret_path = path;
    *ret_live = live;
    return 0;
}

int64_t dg_server_log_header_len(const char *path) { return dg_tasklog_header_len(path); }

int dg_server_log_streams(dg_server *s, const char *dag, const char *run, const char *task, int try_number,
                          bool header, char **ret, size_t *ret_len, dg_error *err) {
    _cleanup_free_ char *path = NULL;
    bool live = false;
    int r = dg_server_log(s, dag, run, task, try_number, &path, &live, err);
    if (r < 0) return r;
    r = dg_tasklog_read_streams(path, ret, ret_len);
    if (r == -ENOENT && live) {
        *ret = xstrdup("");
        *ret_len = 0;
        return 0;
    }
    if (r < 0) return dg_error_set(err, r == -ENOENT ? -ENOENT : -EIO, "try %d of '%s': %s", try_number, task,
                                   strerror(-r));
    if (!header && *ret && *ret_len) { /* the header lines lead */
        size_t skip = 0;
        while (skip < *ret_len && dg_str_has_prefix(*ret + skip, "dagd\t")) {
            const char *nl = memchr(*ret + skip, '\n', *ret_len - skip);
            skip = nl ? (size_t)(nl - *ret) + 1 : *ret_len;
        }
        memmove(*ret, *ret + skip, *ret_len - skip + 1);
        *ret_len -= skip;
    }
    return 0;
}

bool dg_server_log_live(dg_server *s, const char *dag, const char *run, const char *task, int try_number) {
    if (!s->exec) return false;
    dg_run *rn = dg__server_find_run(s, dag, run);
    if (!rn) return false;
    ssize_t i = dg_dag_task_index(rn->dag, task);
    return i >= 0 && dg_exec_try_live(s->exec, rn, (size_t)i, try_number);
}

/* ---- health and metrics ---- */

int dg__server_writable(dg_server *s, dg_error *err) {
    const char *why = s->exec ? dg_exec_store_error(s->exec) : NULL;
    if (!why) return 0;
    return dg_error_set(err, -EAGAIN, "state writes are failing (%s): dagd takes no new work until they work again",
                        why);
}

json_t *dg_server_health(dg_server *s) {
    int runs = 0;
    for (dg_run *r = dg_sched_runs(s->sched); r; r = r->next) runs += r->state == DG_RUN_RUNNING;
    const char *why = s->exec ? dg_exec_store_error(s->exec) : NULL;
    json_t *o = json_pack("{s:s,s:s,s:I,s:i,s:i,s:I,s:b}", "status", s->stopping ? "stopping" : why ? "degraded" : "ok",
                          "version", DAGD_VERSION, "dags", (json_int_t)s->n_dags, "runs_running", runs,
                          "tasks_running", dg_sched_running(s->sched), "import_errors",
                          (json_int_t)dg__server_error_files(s), "ready", s->ready);
    if (why) json_object_set_new(o, "reason", json_string(why));
    return o;
}

static void metric_states(dg_server *s, dg_buf *b, bool tasks, const char *name, const char *help) {
    dg_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    char **states = NULL;
    int64_t *counts = NULL;
    size_t n = 0;
    if (dg_store_count_states(s->store, tasks, &states, &counts, &n) < 0) return;
    for (size_t i = 0; i < n; i++) dg_buf_printf(b, "%s{state=\"%s\"} %lld\n", name, states[i], (long long)counts[i]);
    dg_strv_free(states);
    free(counts);
}

char *dg_server_metrics(dg_server *s) {
    dg_buf b = {0};
    metric_states(s, &b, false, "dagd_dag_runs", "DAG runs by state.");
    metric_states(s, &b, true, "dagd_task_instances", "Task instances by state.");
    dg_buf_printf(&b, "# HELP dagd_dags DAGs loaded from the DAGs folder.\n# TYPE dagd_dags gauge\ndagd_dags %zu\n",
                  s->n_dags);
    dg_buf_printf(&b, "# HELP dagd_import_errors DAG files that failed to load.\n# TYPE dagd_import_errors gauge\n"
                      "dagd_import_errors %zu\n",
                  dg__server_error_files(s));
    dg_buf_printf(&b, "# HELP dagd_tasks_running Task tries holding a slot.\n# TYPE dagd_tasks_running gauge\n"
                      "dagd_tasks_running %d\n",
                  dg_sched_running(s->sched));
    if (s->exec) {
        dg_exec_stats_t st;
        dg_exec_stats(s->exec, &st);
        dg_buf_printf(&b, "# HELP dagd_container_starts_total Containers started.\n"
                          "# TYPE dagd_container_starts_total counter\ndagd_container_starts_total %llu\n",
                      (unsigned long long)st.starts);
        static const char *const le[] = {"0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"};
        dg_buf_printf(&b, "# HELP dagd_task_start_seconds From the scheduler's start decision to the container "
                          "running (image check, create, start).\n# TYPE dagd_task_start_seconds histogram\n");
        uint64_t cum = 0;
        for (size_t i = 0; i < 8; i++) {
            cum += st.start_latency_buckets[i];
            dg_buf_printf(&b, "dagd_task_start_seconds_bucket{le=\"%s\"} %llu\n", le[i], (unsigned long long)cum);
        }
        dg_buf_printf(&b, "dagd_task_start_seconds_sum %.6f\ndagd_task_start_seconds_count %llu\n",
                      st.start_latency_sum, (unsigned long long)cum);
    }
    return dg_buf_steal(&b);
}
