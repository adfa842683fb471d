/* server — `dagd serve`: the long-running daemon. It owns the loop's parts (docker client,
 * scheduler, executor, store), the DAG bag loaded from the DAGs folder (watched and
 * reloaded), the schedule clock that creates runs, crash recovery at start, and the REST
 * API. The functions below are the API's view of it: they answer with JSON objects shaped
 * as docs/api.md says (Airflow field names, RFC 3339 UTC times) that the caller owns, or fail
 * with a negative errno and err set:
 *   -ENOENT  unknown dag/run/task/try        → 404
 *   -EINVAL  malformed request (types, JSON)  → 400
 *   -EDOM    well-formed but not acceptable   → 422 (unknown state, bad date range)
 *   -EEXIST / -EBUSY  conflicts (run exists, run still running) → 409
 *   -EAGAIN  the state could not be saved (the store's reason in err) → 503 */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "dagd/config.h"
#include "dagd/util.h"

typedef struct dg_server dg_server;

int dg_server_new(uv_loop_t *loop, const dg_config *cfg, dg_server **ret, dg_error *err);
/* Loads DAGs, recovers unfinished runs, starts the API and the schedule clock. */
int dg_server_start(dg_server *s, dg_error *err);
/* SIGHUP: apply a re-read configuration (cfg NULL: none) — dags_folder, parallelism,
 * pools, log — and rescan the DAGs folder. listen and state_dir need a restart. */
void dg_server_reload(dg_server *s, const dg_config *cfg);
/* SIGTERM: stop taking work, leave containers running (re-adopted at next start). */
void dg_server_stop(dg_server *s);
void dg_server_free(dg_server *s);

/* Lists take limit (default 100, max 1000; <= 0 = default) and offset. */
int dg_server_list_dags(dg_server *s, int limit, int offset, json_t **ret, dg_error *err);
int dg_server_get_dag(dg_server *s, const char *dag, json_t **ret, dg_error *err);
/* body {"is_paused": bool} */
int dg_server_patch_dag(dg_server *s, const char *dag, const json_t *body, json_t **ret, dg_error *err);
/* The DAG file's text. */
int dg_server_dag_source(dg_server *s, const char *dag, char **ret, size_t *ret_len, dg_error *err);
/* {"import_errors": [{"filename", "line", "col", "message", "stack_trace"}], "total_entries"} */
json_t *dg_server_import_errors(dg_server *s);

int dg_server_list_runs(dg_server *s, const char *dag, int limit, int offset, json_t **ret, dg_error *err);
int dg_server_get_run(dg_server *s, const char *dag, const char *run, json_t **ret, dg_error *err);
/* body {"conf": {}, "logical_date": "RFC 3339", "rerun": bool} (all optional) → the new run.
 * A logical date that has a run is -EEXIST, unless rerun: then that run is cleared to run
 * again and answered. */
int dg_server_trigger(dg_server *s, const char *dag, const json_t *body, json_t **ret, dg_error *err);
int dg_server_cancel_run(dg_server *s, const char *dag, const char *run, json_t **ret, dg_error *err);
/* body {"tasks": [ids] (default all), "downstream": bool, "only_failed": bool} */
int dg_server_clear(dg_server *s, const char *dag, const char *run, const json_t *body, json_t **ret,
                    dg_error *err);
/* body {"from": date, "to": date, "conf": {}, "rerun": bool} → {"dag_runs": [...],
 * "total_entries", "created": [ids], "existing": [ids], "cleared": [ids]}: the runs of the
 * range, and which were made, left as they were, or cleared to run again (rerun). */
int dg_server_backfill(dg_server *s, const char *dag, const json_t *body, json_t **ret, dg_error *err);

int dg_server_list_tasks(dg_server *s, const char *dag, const char *run, json_t **ret, dg_error *err);
int dg_server_get_task(dg_server *s, const char *dag, const char *run, const char *task, json_t **ret,
                       dg_error *err);
/* body {"state": "success"|"failed"} (mark) */
int dg_server_patch_task(dg_server *s, const char *dag, const char *run, const char *task, const json_t *body,
                         json_t **ret, dg_error *err);

/* A try's log file, and whether more may still be written to it (the try is live). */
int dg_server_log(dg_server *s, const char *dag, const char *run, const char *task, int try_number,
                  char **ret_path, bool *ret_live, dg_error *err);
bool dg_server_log_live(dg_server *s, const char *dag, const char *run, const char *task, int try_number);
/* A try's log so far, each line prefixed "stdout\t", "stderr\t" or "-\t" (not known), and
 * with header, the header lines dagd wrote first prefixed "dagd\t" (see docs/api.md); ""
 * for a live try that wrote nothing yet. */
/* The bytes at the start of the log file at path that are its header (dagd's lines before
 * the command's), which a log is served without unless asked; 0 when none. */
int64_t dg_server_log_header_len(const char *path);
int dg_server_log_streams(dg_server *s, const char *dag, const char *run, const char *task, int try_number,
                          bool header, char **ret, size_t *ret_len, dg_error *err);

/* An API document as text, as json_dumps with flags, each number written with the fewest
 * digits (15 to 17) that read back the same. Caller frees. */
char *dg_server_json_text(const json_t *doc, size_t flags);

/* Prometheus text exposition. Caller frees. */
char *dg_server_metrics(dg_server *s);
/* {"status": "ok", "version", "dags", "runs_running", "tasks_running"} */
json_t *dg_server_health(dg_server *s);
