/* exec — carries out the scheduler's commands through a backend and feeds the outcomes
 * back (docs/architecture.md). For each try it renders the templates into a job spec,
 * applies the container policy, asks the backend to create and start the job, writes its
 * output lines (secrets redacted) to the try's log file, takes the exit, reads the task's
 * output, reports to the scheduler, persists every state change, sends notifications, and
 * only then lets the backend remove the job. PREPARE hints create a job before its upstream
 * finishes when its templates do not need upstream outputs. Sensors (docs/dags.md, "Sensor
 * tasks": a file glob on this host, another DAG's run in the store, a GET, a probe job
 * through the backend) and notify tasks run here.
 * The executor owns its per-run and per-try state; it borrows the loop, the backend, the
 * scheduler and the store (NULL store = `dagd test`: nothing persisted). Every setting it
 * uses comes in dg_exec_opts; it reads nothing from the environment. */
#pragma once
#include <jansson.h>
#include <uv.h>

#include "dagd/backend.h"
#include "dagd/dag.h"
#include "dagd/sched.h"
#include "dagd/store.h"

#define DG_OUTPUT_MAX (64 * 1024)

typedef struct dg_exec dg_exec;

typedef struct dg_exec_hooks {
    void (*ti_changed)(void *ud, dg_run *run, size_t task);
    void (*run_changed)(void *ud, dg_run *run);
    /* every output line of a job (after redaction), e.g. for `dagd test` */
    void (*log_line)(void *ud, dg_run *run, size_t task, int stream, const char *line, size_t len);
    /* everything outstanding (tries, removals) has finished: the loop may stop */
    void (*idle)(void *ud);
    /* a run can make no more progress by itself: nothing runs or waits for a time,
     * yet tasks are unfinished (depends_on_past on a previous run that did not succeed) */
    void (*stalled)(void *ud, dg_run *run);
    /* state writes work again after failing (dg_exec_store_error was set): work held
     * back meanwhile (new runs of a schedule) may go on */
    void (*store_ok)(void *ud);
    void *ud;
} dg_exec_hooks;

/* The server's container policy (docs/operations.md, "The container policy"). */
typedef struct dg_exec_policy {
    bool allow_privileged;
    bool allow_docker_socket;             /* binds reaching protected_paths */
    bool allow_host_network;              /* network: host */
    bool allow_container_network;         /* network: container:NAME */
    char *const *allowed_volume_prefixes; /* host paths a bind may use; NULL = any */
    char *const *allowed_sensitive_paths; /* sensitive host paths (and below) a bind may use */
    const char *const *protected_paths;   /* the backend's own socket(s), resolved */
} dg_exec_policy;

/* Where notification email goes. url NULL: email notifications fail with a clear message. */
typedef struct dg_exec_smtp {
    const char *url, *from, *user, *password;
} dg_exec_smtp;

typedef struct dg_exec_opts {
    uv_loop_t *loop;
    dg_backend *backend;
    dg_sched *sched;
    dg_store *store;       /* may be NULL */
    const char *state_dir; /* for log files; NULL = no log files */
    int stop_grace_s;      /* SIGTERM → SIGKILL, default 10 */
    dg_exec_policy policy; /* copied */
    const json_t *connections; /* {id: URI} (dg_conn_id keys); copied; NULL = none */
    dg_exec_smtp smtp;     /* copied */
    const char *instance;  /* io.dagd.instance label value; NULL = random for this process */
    dg_exec_hooks hooks;
} dg_exec_opts;

dg_exec *dg_exec_new(const dg_exec_opts *opts);
/* Connects the backend (engine version, exit events); the callback says when ready. */
void dg_exec_connect(dg_exec *x, void (*cb)(void *ud, const dg_error *err), void *ud);
/* Create and persist a run. conf (borrowed, may be NULL) overrides params. */
dg_run *dg_exec_add_run(dg_exec *x, const dg_dag *dag, const char *run_id, const char *run_type,
                        int64_t logical_ms, int64_t interval_start_ms, int64_t interval_end_ms,
                        const json_t *conf);
/* Let the scheduler act now (after adding runs or cancelling). */
void dg_exec_pump(dg_exec *x);
void dg_exec_cancel_all(dg_exec *x);
/* A finished task's output (XCom), NULL when none. */
const char *dg_exec_output(dg_exec *x, dg_run *run, size_t task);
/* After restoring a run from the store: write it back. */
void dg_exec_persist_run(dg_exec *x, dg_run *run);
/* A new run's task instances, all in state none, so that every task is listed from the
 * start as in Airflow (not for restored runs: the store has their states). */
void dg_exec_persist_new_tis(dg_exec *x, dg_run *run);
/* Give back the output a restored run's finished task had (for ti.xcom_pull). */
void dg_exec_set_output(dg_exec *x, dg_run *run, size_t task, const char *output);
/* Crash recovery of one restored run (its queued and running tries hold slots): ask the
 * backend for the run's jobs by label and, for each try in flight, adopt a job that was
 * started (follow it to its exit), start a job that was only created, create the try's job
 * anew when none was made, and fail the try only when its job had started and is gone.
 * Jobs of the run that no try will use are removed. done runs once, on the loop. */
void dg_exec_recover_run(dg_exec *x, dg_run *run, void (*done)(void *ud), void *ud);
/* Drop a finished run from memory once nothing of it is in flight; true when done. */
bool dg_exec_forget_run(dg_exec *x, dg_run *run);
/* While held, the scheduler is not ticked (crash recovery re-adopts first). */
void dg_exec_hold(dg_exec *x, bool hold);
/* The try is the current one of its task and its outcome is not known yet. */
bool dg_exec_try_live(dg_exec *x, dg_run *run, size_t task, int try_number);
typedef struct dg_exec_stats_t {
    uint64_t starts;
    double start_latency_sum; /* seconds from START to the job running */
    /* counts for <= 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 s and above */
    uint64_t start_latency_buckets[8];
} dg_exec_stats_t;
void dg_exec_stats(const dg_exec *x, dg_exec_stats_t *ret);
/* Why state writes are failing (docs/operations.md, "A full disk"), NULL while they work.
 * Until they work again no try starts, finished jobs are kept until their outcome is
 * written, and the records not written are retried every second. */
const char *dg_exec_store_error(const dg_exec *x);
/* Commits the store writes of this loop iteration now (they are otherwise committed before
 * the loop waits): call it before a write of your own, which must not join them, and
 * before answering for a change (docs/daemon.md, Crash recovery). */
void dg_exec_flush(dg_exec *x);
/* Number of tries and removals still outstanding, plus one while state writes fail. */
int dg_exec_outstanding(dg_exec *x);
/* Closes handles; run the loop afterwards. Does not free the backend. */
void dg_exec_free(dg_exec *x);

/* ---- the policy, also used by validation ---- */

/* The host side of a bind `src:dst[:mode]` as the engine will see it: relative sources
 * (./x, ../x, ~/x) resolved against the DAG file's folder (or $HOME), as compose does.
 * NULL when spec names a volume, not a host path. Caller frees. */
char *dg_exec_bind_source(const char *dag_file, const char *spec);
/* A host path as the policy judges it and the engine is given it: cleaned of "//", "."
 * and ".." as the engine cleans it, then the links of its longest existing part resolved
 * (a path not there yet keeps its missing tail). A relative path is returned as is. */
char *dg_exec_host_path(const char *source);
/* 0, or -EPERM with the reason: a bind reaching the engine's socket or a sensitive host
 * path (/etc, /proc, a runtime's state or socket, or a folder above one), or outside the
 * prefixes. ret_path (may be NULL) gets the judged path, dg_exec_host_path(source). */
int dg_exec_check_bind(const dg_exec_policy *p, const char *source, char **ret_path, dg_error *err);
/* Each thing the task asks for that the policy refuses (privileged: true, network: host,
 * network: container:NAME), one message each through refused; returns how many. */
size_t dg_exec_task_refusals(const dg_exec_policy *p, const dg_task *t,
                             void (*refused)(void *ud, const char *msg), void *ud);
/* 0, or -EPERM with the first of dg_exec_task_refusals. */
int dg_exec_check_task(const dg_exec_policy *p, const dg_task *t, dg_error *err);
