/* exec — the local Docker backend: carries out the scheduler's commands on the engine
 * and feeds the outcomes back. For each try it renders the templates, makes the image
 * and network available, creates a uniquely named, labelled container, starts it,
 * follows its logs from the first line into the try's log file, takes the exit code
 * from the engine's `die` event (reconciled by inspect after reconnects), reads the
 * output, reports to the scheduler, and only then removes the container (off the
 * critical path). PREPARE hints create a container before its upstream finishes when
 * its templates do not need upstream outputs.
 * The executor owns its per-run and per-try state; it borrows the loop, the docker
 * client, the scheduler and the store (NULL store = `dagd test`: nothing persisted). */
#pragma once
#include <jansson.h>
#include <uv.h>

#include "dagd/dag.h"
#include "dagd/docker.h"
#include "dagd/sched.h"
#include "dagd/store.h"

#define DG_OUTPUT_MAX (64 * 1024)

typedef struct dg_exec dg_exec;

typedef struct dg_exec_hooks {
    void (*ti_changed)(void *ud, dg_run *run, size_t task);
    void (*run_changed)(void *ud, dg_run *run);
    /* every container log line (after redaction), e.g. for `dagd test` */
    void (*log_line)(void *ud, dg_run *run, size_t task, int stream, const char *line, size_t len);
    /* everything outstanding (tries, removals) has finished: the loop may stop */
    void (*idle)(void *ud);
    /* a run can make no more progress by itself: nothing runs or waits for a time,
     * yet tasks are unfinished (depends_on_past on a previous run that did not succeed) */
    void (*stalled)(void *ud, dg_run *run);
    void *ud;
} dg_exec_hooks;

typedef struct dg_exec_opts {
    uv_loop_t *loop;
    dg_docker *docker;
    dg_sched *sched;
    dg_store *store;       /* may be NULL */
    const char *state_dir; /* for log files; NULL = no log files */
    int stop_grace_s;      /* SIGTERM → SIGKILL, default 10 */
    bool allow_privileged;
    bool allow_docker_socket;               /* bind-mounting the engine's socket */
    char *const *allowed_volume_prefixes;   /* host paths a bind may use; NULL = any */
    const char *instance;  /* io.dagd.instance label value; NULL = random for this process */
    dg_exec_hooks hooks;
} dg_exec_opts;

int dg_exec_new(const dg_exec_opts *opts, dg_exec **ret, dg_error *err);
/* Connects to the engine (version, event stream); the callback says when ready. */
void dg_exec_connect(dg_exec *x, dg_docker_done_cb cb, void *ud);
/* Create and persist a run. conf (borrowed, may be NULL) overrides params. */
dg_run *dg_exec_add_run(dg_exec *x, const dg_dag *dag, const char *run_id, const char *run_type,
                        int64_t logical_ms, int64_t interval_start_ms, int64_t interval_end_ms,
                        const json_t *conf);
/* Let the scheduler act now (after adding runs or cancelling). */
void dg_exec_pump(dg_exec *x);
void dg_exec_cancel_all(dg_exec *x);
/* What the executor knows of a try beyond the scheduler's state. NULL when none. */
const char *dg_exec_container_name(dg_exec *x, dg_run *run, size_t task);
const char *dg_exec_output(dg_exec *x, dg_run *run, size_t task);
/* After restoring a run from the store: write it back, and give back the outputs its
 * finished tasks had (for ti.xcom_pull). */
void dg_exec_persist_run(dg_exec *x, dg_run *run);
/* A new run's task instances, all in state none, so that every task is listed from the
 * start as in Airflow (not for restored runs: the store has their states). */
void dg_exec_persist_new_tis(dg_exec *x, dg_run *run);
void dg_exec_set_output(dg_exec *x, dg_run *run, size_t task, const char *output);
/* Take over a try's container found by label after a restart: follow its logs (the
 * log file is rewritten from the engine's copy, so no line is doubled) and take its exit
 * from the event stream or, if it already exited, from inspect. The task instance must
 * have been restored as running. */
void dg_exec_adopt(dg_exec *x, dg_run *run, size_t task, int try_number, const char *container_id,
                   const char *name);
/* Drop a finished run from memory once nothing of it is in flight; true when done. */
bool dg_exec_forget_run(dg_exec *x, dg_run *run);
const char *dg_exec_instance(const dg_exec *x);
/* While held, the scheduler is not ticked (crash recovery re-adopts first). */
void dg_exec_hold(dg_exec *x, bool hold);
/* The try is the current one of its task and its outcome is not known yet. */
bool dg_exec_try_live(dg_exec *x, dg_run *run, size_t task, int try_number);
typedef struct dg_exec_stats_t {
    uint64_t starts;
    double start_latency_sum; /* seconds from START to the container running */
    /* counts for <= 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 s and above */
    uint64_t start_latency_buckets[8];
} dg_exec_stats_t;
void dg_exec_stats(const dg_exec *x, dg_exec_stats_t *ret);
/* Number of tries and removals still outstanding. */
int dg_exec_outstanding(dg_exec *x);
/* Closes handles; run the loop afterwards. Does not free the docker client. */
void dg_exec_free(dg_exec *x);
