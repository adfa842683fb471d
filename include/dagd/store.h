/* store — durable state in SQLite (WAL) under the state dir: DAG runs, task instances
 * and every try, with a versioned schema (PRAGMA user_version, migrations in order).
 * Records passed in are borrowed; records returned are owned by the caller and freed
 * with the matching *_free. Times are ms since the epoch UTC, 0 = unset. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dagd/util.h"

#define DG_STORE_SCHEMA_VERSION 4

typedef struct dg_store dg_store;

typedef struct dg_run_rec {
    char *dag_id, *run_id, *run_type, *state;
    int64_t logical_ms, interval_start_ms, interval_end_ms, start_ms, end_ms;
    char *conf_json; /* "{}" when none */
} dg_run_rec;

typedef struct dg_ti_rec {
    char *dag_id, *run_id, *task_id, *state;
    int try_number, max_tries;
    int64_t start_ms, end_ms;
    bool has_exit_code;
    int exit_code;
    char *container_id, *container_name, *image, *output, *message;
    /* read only (a put ignores them): the image its current try ran, from that try's record */
    char *image_id, *image_digest;
} dg_ti_rec;

typedef struct dg_try_rec {
    char *dag_id, *run_id, *task_id, *state;
    int try_number;
    int64_t start_ms, end_ms;
    int64_t running_ms; /* the container started running; 0 = not (yet); a put with 0 keeps the stored one */
    bool has_exit_code;
    int exit_code;
    char *container_id, *container_name, *message;
    char *rendered; /* JSON text: the command, entrypoint and env shown by the API; NULL keeps the stored one */
    /* the image the job ran: the engine's id ("sha256:...") and the repository digest
     * ("name@sha256:...", NULL for an image never pushed or pulled); NULL keeps the stored one */
    char *image_id, *image_digest;
} dg_try_rec;

/* Creates state_dir (0700) and state_dir/dagd.db when missing, enables WAL, migrates. */
int dg_store_open(const char *state_dir, dg_store **ret, dg_error *err);
void dg_store_close(dg_store *st);
const char *dg_store_dir(const dg_store *st);

/* Insert-or-replace by primary key (dag_id, run_id[, task_id[, try_number]]). */
int dg_store_put_run(dg_store *st, const dg_run_rec *r);
int dg_store_put_ti(dg_store *st, const dg_ti_rec *r);
int dg_store_put_try(dg_store *st, const dg_try_rec *r);

/* -ENOENT when absent. */
int dg_store_get_run(dg_store *st, const char *dag, const char *run, dg_run_rec **ret);
int dg_store_get_ti(dg_store *st, const char *dag, const char *run, const char *task,
                    dg_ti_rec **ret);
/* Newest first (by logical date, then run_id); limit <= 0 = all; *ret_total = count of all. */
int dg_store_list_runs(dg_store *st, const char *dag, int limit, int offset, dg_run_rec ***ret,
                       size_t *ret_n, size_t *ret_total);
int dg_store_list_tis(dg_store *st, const char *dag, const char *run, dg_ti_rec ***ret,
                      size_t *ret_n);
int dg_store_list_tries(dg_store *st, const char *dag, const char *run, const char *task,
                        dg_try_rec ***ret, size_t *ret_n);
/* The run just before `run` of the same DAG by logical date (for depends_on_past). */
int dg_store_prev_run(dg_store *st, const char *dag, int64_t logical_ms, dg_run_rec **ret);

void dg_run_rec_free(dg_run_rec *r);
void dg_ti_rec_free(dg_ti_rec *r);
void dg_try_rec_free(dg_try_rec *r);
/* A copy owning every string of r, next to dg_try_rec_free so that a new field is copied
 * where it is freed. */
dg_try_rec *dg_try_rec_dup(const dg_try_rec *r);
void dg_run_recs_free(dg_run_rec **v, size_t n);
void dg_ti_recs_free(dg_ti_rec **v, size_t n);
void dg_try_recs_free(dg_try_rec **v, size_t n);

/* The daemon's memory of a DAG: paused or not (-ENOENT when never seen). */
int dg_store_get_dag(dg_store *st, const char *dag, bool *ret_paused);
int dg_store_put_dag(dg_store *st, const char *dag, bool paused, const char *file, int64_t now_ms);
/* Runs left queued or running (crash recovery), oldest first. */
int dg_store_unfinished_runs(dg_store *st, dg_run_rec ***ret, size_t *ret_n);
/* The newest run of a DAG of one run_type ("scheduled"), -ENOENT when none. */
int dg_store_last_run(dg_store *st, const char *dag, const char *run_type, dg_run_rec **ret);
/* The run of a DAG at a logical date, -ENOENT when none: a DAG has at most one run per
 * logical date (docs/daemon.md, "Schedules"); of a state written before that rule, the
 * first by run id. */
int dg_store_run_at(dg_store *st, const char *dag, int64_t logical_ms, dg_run_rec **ret);
/* Instances per state (tasks) or runs per state; states NULL-terminated. */
int dg_store_count_states(dg_store *st, bool tasks, char ***ret_states, int64_t **ret_counts, size_t *ret_n);

/* <state_dir>/logs/<dag>/<run>/<task>/<try>.log ; caller frees. */
char *dg_store_log_path(const char *state_dir, const char *dag, const char *run, const char *task,
                        int try_number);

/* A task try's log file: lines appended in arrival order, stdout and stderr together. */
typedef struct dg_tasklog dg_tasklog;
int dg_tasklog_open(const char *path, dg_tasklog **ret); /* creates parent dirs */
/* Removes the log at path and the streams file beside it (a log to be written anew). */
void dg_tasklog_remove(const char *path);
/* stream: 1 stdout, 2 stderr, DG_TASKLOG_HEADER a line of the header dagd writes first
 * (docs/dags.md, "Tries") */
#define DG_TASKLOG_HEADER 3
void dg_tasklog_line(dg_tasklog *l, int stream, const char *line, size_t len);
void dg_tasklog_close(dg_tasklog *l); /* flushes; NULL is fine */
/* The log at log_path with each line prefixed by the stream it came from: "stdout\t",
 * "stderr\t", or "-\t" when that is not known (a log written before streams were
 * recorded). -ENOENT when there is no log. */
int dg_tasklog_read_streams(const char *log_path, char **ret, size_t *ret_len);
/* The bytes of the log's header lines (at its start, "dagd\t" in read_streams); 0 when none. */
int64_t dg_tasklog_header_len(const char *log_path);

/* Additions by the store module. */

/* Notes on the calls above: a ti needs its run, a try its ti, stored first (a put
 * without its parent fails with -ENOENT); a put whose key field is NULL fails with
 * -EINVAL; other failures are -EBUSY, -ENOSPC, -EIO... with the text in
 * dg_store_errmsg. A run stored with conf_json NULL reads back as "{}". Lists with no
 * rows return *ret NULL and *ret_n 0; list_runs takes dag NULL for the runs of every
 * DAG; list_tis is in insertion order. In log paths, ids equal to "." or ".." and ids
 * containing '/' or '%' are percent-encoded; other characters (':' '+') are kept. */

/* The message of the store's last failed call ("" when none). */
const char *dg_store_errmsg(const dg_store *st);
/* Pushes buffered lines to the file, so followers of a running task see them. */
int dg_tasklog_flush(dg_tasklog *l);
