/* tmpl — the `{{ expr }}` template language of docs/dags.md, a small Jinja subset (no `{% %}`):
 * dotted names, string/integer literals, function calls (ti.xcom_pull, macros.ds_add,
 * macros.ds_format) and filters (| default(x), | upper, | lower, | tojson).
 * Rendering never yields an empty string for an unknown name: it fails, naming it. */
#pragma once
#include <jansson.h>
#include <stdbool.h>

#include "dagd/util.h"

/* What a template can see. `vars` is a JSON object holding the names of docs/dags.md
 * (ds, ts, run_id, params{...}, dag_run{conf{...}}, conn{ID{uri,host,...}} ...);
 * the renderer only reads it. xcom_pull answers ti.xcom_pull('task'): return 0 and a
 * malloc'd string, or a negative code with err set (e.g. no such upstream/no output). */
typedef struct dg_tmpl_ctx {
    const json_t *vars;
    int (*xcom_pull)(void *userdata, const char *task_id, char **ret, dg_error *err);
    void *userdata;
} dg_tmpl_ctx;

/* Render src. On failure returns -EINVAL and err says what and where, e.g.
 * "unknown name 'params.regoin' in '{{ params.regoin }}'". */
int dg_tmpl_render(const char *src, const dg_tmpl_ctx *ctx, char **ret, dg_error *err);

/* Where a template is used decides what it can name: `state` is set only for notifications. */
typedef enum { DG_TMPL_TASK = 0, DG_TMPL_NOTIFICATION } dg_tmpl_use;

/* Everything that can be judged without rendering (for `dagd validate`): the syntax, no
 * `{% %}` statements, and every name read being one dagd sets, with a hint for Airflow's
 * that it does not (next_ds, var, ...). What params.X, dag_run.conf.X and conn.ID.X hold
 * is known only at render time, since a run's conf may add to params. */
int dg_tmpl_check(const char *src, dg_tmpl_use use, dg_error *err);

/* True when src calls ti.xcom_pull (so it cannot be rendered before upstreams end). */
bool dg_tmpl_uses_xcom(const char *src);

/* Build the standard variables for one task try. conns (may be NULL) is what
 * dg_conn_parse_all made of the configured connections: shared, not copied. logical/interval times in ms UTC.
 * params: DAG defaults merged with conf overrides is done by the caller; conf may be NULL.
 * Returns a new object the caller owns. */
json_t *dg_tmpl_vars(const char *dag_id, const char *run_id, const char *task_id, int try_number,
                     int64_t logical_ms, int64_t interval_start_ms, int64_t interval_end_ms,
                     const json_t *params, const json_t *conf, const json_t *conns);

/* One Airflow-style connection URI, `type://login:password@host:port/schema?k=v`, as the
 * object templates see under conn.ID: {conn_type, uri, host, port (absent when the URI has
 * none), login, password, schema, extra{k: v}}. Parts are percent-decoded ('+' is a space
 * in the query); `?__extra__=<json object>` is the whole extra, as in Airflow; an IPv6 host
 * goes in brackets. Returns NULL with err set on a bad URI; messages never repeat it. */
json_t *dg_conn_parse_uri(const char *uri, dg_error *err);

/* {id: uri} as {id: <dg_conn_parse_uri>}, what templates see under "conn"; URIs that do
 * not parse are left out. uris may be NULL (no connections). */
json_t *dg_conn_parse_all(const json_t *uris);
/* The key a connection id has among the configured connections and under `conn.` in
 * templates: lower case, every character but letters and digits as '_'. Caller frees. */
char *dg_conn_id(const char *id);
/* The environment variable that carries connection `id`: DAGD_CONN_<ID upper-cased, other
 * characters as '_'>. Caller frees. */
char *dg_conn_env_name(const char *id);
