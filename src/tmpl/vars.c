/* tmpl/vars — the standard names of docs/dags.md for one task try, spelled as Airflow spells
 * them so templates written for Airflow keep working. The object returned is a fresh
 * tree the caller owns; nothing in it aliases the params/conf passed in. */
#include <string.h>

#include "dagd/tmpl.h"

/* Airflow's ts is isoformat() with an explicit +00:00 offset, not "Z". */
static char *iso_offset(int64_t ms) {
    _cleanup_free_ char *z = dg_format_time(ms, true);
    size_t n = strlen(z);
    if (n && z[n - 1] == 'Z') z[n - 1] = 0;
    return xasprintf("%s+00:00", z);
}

static void set_str(json_t *o, const char *k, const char *v) {
    if (v) json_object_set_new(o, k, json_string_nocheck(v));
}

static void set_owned_str(json_t *o, const char *k, char *v) {
    set_str(o, k, v);
    free(v);
}

json_t *dg_tmpl_vars(const char *dag_id, const char *run_id, const char *task_id, int try_number,
                     int64_t logical_ms, int64_t interval_start_ms, int64_t interval_end_ms,
                     const json_t *params, const json_t *conf, const json_t *conns) {
    json_t *v = json_object();
    _cleanup_free_ char *t = dg_format_time(logical_ms, false); /* YYYY-MM-DDTHH:MM:SSZ */
    size_t tl = strlen(t);
    /* Years past 9999 would widen the fields; everything below keys off the 'T'. */
    const char *T = strchr(t, 'T');
    size_t dl = T ? (size_t)(T - t) : tl;

    char *ds = xstrndup(t, dl);
    set_str(v, "ds", ds);
    dg_buf b = {0};
    for (const char *x = ds; *x; x++)
        if (*x != '-') dg_buf_append(&b, x, 1);
    set_owned_str(v, "ds_nodash", dg_buf_steal(&b));
    free(ds);

    set_owned_str(v, "ts", iso_offset(logical_ms));
    for (const char *x = t; *x && *x != 'Z'; x++)
        if (*x != '-' && *x != ':') dg_buf_append(&b, x, 1);
    set_owned_str(v, "ts_nodash", dg_buf_steal(&b));
    set_owned_str(v, "logical_date", dg_format_time(logical_ms, true));
    set_owned_str(v, "data_interval_start", dg_format_time(interval_start_ms, true));
    set_owned_str(v, "data_interval_end", dg_format_time(interval_end_ms, true));
    set_str(v, "run_id", run_id);
    set_str(v, "dag_id", dag_id);
    set_str(v, "task_id", task_id);
    json_object_set_new(v, "try_number", json_integer(try_number));

    /* Airflow's dag_run_conf_overrides_params: params.update(conf). */
    json_t *p = json_is_object(params) ? json_deep_copy(params) : json_object();
    json_t *c = json_is_object(conf) ? json_deep_copy(conf) : json_object();
    const char *k;
    json_t *x;
    json_object_foreach(c, k, x) json_object_set_new(p, k, json_deep_copy(x));
    json_object_set_new(v, "params", p);

    json_t *dr = json_object();
    json_object_set_new(dr, "conf", c);
    set_str(dr, "run_id", run_id);
    set_owned_str(dr, "logical_date", dg_format_time(logical_ms, true));
    json_object_set_new(v, "dag_run", dr);

    json_object_set_new(v, "conn", conns ? json_incref((json_t *)conns) : json_object());
    return v;
}
