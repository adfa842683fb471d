/* tmpl — the `{{ expr }}` template language of SPEC §3, a small Jinja subset:
 * dotted names, string/integer literals, function calls (ti.xcom_pull, macros.ds_add,
 * macros.ds_format) and filters (| default(x), | upper, | lower, | tojson).
 * Rendering never yields an empty string for an unknown name: it fails, naming it. */
#pragma once
#include <jansson.h>
#include <stdbool.h>

#include "dagd/util.h"

/* What a template can see. `vars` is a JSON object holding the names of SPEC §3
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

/* Syntax check without rendering (for `dagd validate`). */
int dg_tmpl_check(const char *src, dg_error *err);

/* True when src calls ti.xcom_pull (so it cannot be rendered before upstreams end). */
bool dg_tmpl_uses_xcom(const char *src);

/* Build the standard variables for one task try. logical/interval times in ms UTC.
 * params: DAG defaults merged with conf overrides is done by the caller; conf may be NULL.
 * Returns a new object the caller owns. */
json_t *dg_tmpl_vars(const char *dag_id, const char *run_id, const char *task_id, int try_number,
                     int64_t logical_ms, int64_t interval_start_ms, int64_t interval_end_ms,
                     const json_t *params, const json_t *conf);

/* An Airflow-style connection URI as the object conn.ID holds:
 * {uri, host, port, login, password, schema, extra{...}}. NULL and err set if malformed. */
json_t *dg_conn_parse_uri(const char *uri, dg_error *err);
/* Every DAGD_CONN_<ID>=<uri> of the environment, keyed by lowercased id. */
json_t *dg_conn_from_env(void);
